output "queue_urls" {
  value = { for k, q in aws_sqs_queue.main : k => q.url }
}

output "dead_letter_queue_urls" {
  value = { for k, q in aws_sqs_queue.dlq : k => q.url }
}

output "reports_topic_arn" {
  value = aws_sns_topic.reports.arn
}

output "event_bus_name" {
  value = aws_cloudwatch_event_bus.feed.name
}
