# What `provision()` in jwo/aws_resources.py creates on the embedded emulator, for a real account.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

provider "aws" {
  region = var.region
}

locals {
  queues = {
    events    = var.events_queue
    reports   = var.reports_queue
    eventfeed = var.eventfeed_queue
  }
}

# --- queues, each with a dead-letter queue --------------------------------------------------------

resource "aws_sqs_queue" "dlq" {
  for_each                  = local.queues
  name                      = "${each.value}${var.dlq_suffix}"
  message_retention_seconds = 1209600 # 14 days, so a dead letter outlives its source message
}

resource "aws_sqs_queue" "main" {
  for_each                   = local.queues
  name                       = each.value
  visibility_timeout_seconds = var.visibility_timeout_seconds
  receive_wait_time_seconds  = var.receive_wait_seconds
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq[each.key].arn
    maxReceiveCount     = var.max_receive_count
  })
}

# --- buckets ----------------------------------------------------------------------------------------

resource "aws_s3_bucket" "reports" {
  bucket = var.reports_bucket
}

resource "aws_s3_bucket" "lake" {
  bucket = var.lake_bucket
}

resource "aws_s3_bucket_public_access_block" "all" {
  for_each                = { reports = aws_s3_bucket.reports.id, lake = aws_s3_bucket.lake.id }
  bucket                  = each.value
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# --- report notifications: S3 -> SNS -> SQS ---------------------------------------------------------

resource "aws_sns_topic" "reports" {
  name = var.reports_topic
}

resource "aws_sns_topic_policy" "reports_from_s3" {
  arn = aws_sns_topic.reports.arn
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "Allow-s3-Publish"
      Effect    = "Allow"
      Principal = { Service = "s3.amazonaws.com" }
      Action    = "sns:Publish"
      Resource  = aws_sns_topic.reports.arn
      Condition = { ArnLike = { "aws:SourceArn" = aws_s3_bucket.reports.arn } }
    }]
  })
}

resource "aws_s3_bucket_notification" "reports" {
  bucket = aws_s3_bucket.reports.id
  topic {
    topic_arn = aws_sns_topic.reports.arn
    events    = ["s3:ObjectCreated:*"]
  }
  depends_on = [aws_sns_topic_policy.reports_from_s3]
}

resource "aws_sns_topic_subscription" "reports" {
  topic_arn            = aws_sns_topic.reports.arn
  protocol             = "sqs"
  endpoint             = aws_sqs_queue.main["reports"].arn
  raw_message_delivery = false # the consumer unwraps the SNS envelope (SPEC §3.1)
}

resource "aws_sqs_queue_policy" "reports_from_sns" {
  queue_url = aws_sqs_queue.main["reports"].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "Allow-sns-SendMessage"
      Effect    = "Allow"
      Principal = { Service = "sns.amazonaws.com" }
      Action    = "sqs:SendMessage"
      Resource  = aws_sqs_queue.main["reports"].arn
      Condition = { ArnEquals = { "aws:SourceArn" = aws_sns_topic.reports.arn } }
    }]
  })
}

# --- event feed: EventBridge CART / PAYMENT -> SQS --------------------------------------------------

resource "aws_cloudwatch_event_bus" "feed" {
  name = var.event_bus
}

resource "aws_cloudwatch_event_rule" "feed" {
  name           = var.event_rule
  event_bus_name = aws_cloudwatch_event_bus.feed.name
  description    = "Amazon JWO Event Feed (CART, PAYMENT, anything new) to the eventfeed queue"
  # Every detail-type of the feed's source: an unknown one is recorded by ingest, not dropped here.
  event_pattern = jsonencode({
    source = [var.event_source]
  })
}

resource "aws_cloudwatch_event_target" "feed" {
  rule           = aws_cloudwatch_event_rule.feed.name
  event_bus_name = aws_cloudwatch_event_bus.feed.name
  target_id      = "eventfeed-queue"
  arn            = aws_sqs_queue.main["eventfeed"].arn
}

resource "aws_sqs_queue_policy" "eventfeed_from_events" {
  queue_url = aws_sqs_queue.main["eventfeed"].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "Allow-events-SendMessage"
      Effect    = "Allow"
      Principal = { Service = "events.amazonaws.com" }
      Action    = "sqs:SendMessage"
      Resource  = aws_sqs_queue.main["eventfeed"].arn
      Condition = { ArnEquals = { "aws:SourceArn" = aws_cloudwatch_event_rule.feed.arn } }
    }]
  })
}
