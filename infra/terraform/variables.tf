# Defaults match jwo/aws_resources.py: ResourceNames, so `jwo` finds them without configuration.

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "events_queue" {
  type    = string
  default = "jwo-events"
}

variable "reports_queue" {
  type    = string
  default = "jwo-report-notifications"
}

variable "eventfeed_queue" {
  type    = string
  default = "jwo-eventfeed"
}

variable "dlq_suffix" {
  type    = string
  default = "-dlq"
}

variable "max_receive_count" {
  description = "receives before a message is moved to its dead-letter queue"
  type        = number
  default     = 5
}

variable "visibility_timeout_seconds" {
  type    = number
  default = 30
}

variable "receive_wait_seconds" {
  type    = number
  default = 20
}

variable "reports_bucket" {
  type    = string
  default = "jwo-reports"
}

variable "lake_bucket" {
  type    = string
  default = "jwo-lake"
}

variable "reports_topic" {
  type    = string
  default = "jwo-report-notifications"
}

variable "event_bus" {
  type    = string
  default = "jwo-eventfeed"
}

variable "event_source" {
  description = "the EventBridge source Amazon's JWO event feed publishes with"
  type        = string
  default     = "jwo.eventfeed"
}

variable "event_rule" {
  type    = string
  default = "jwo-eventfeed-to-sqs"
}
