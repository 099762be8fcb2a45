output "function_arns" {
  description = "ARN of each function, keyed by verb."
  value       = { for k, f in aws_lambda_function.fn : k => f.arn }
}

output "role_arns" {
  description = "ARN of each function's execution role, keyed by verb."
  value       = { for k, r in aws_iam_role.fn : k => r.arn }
}

output "dead_letter_queue_urls" {
  description = "URL of each function's dead-letter queue, keyed by verb."
  value       = { for k, q in aws_sqs_queue.dlq : k => q.url }
}

output "webhook_url" {
  description = "Base URL of falaj's HTTP API: CI systems and people call <url>v1/... (docs/webhook.md)."
  value       = aws_apigatewayv2_stage.webhook.invoke_url
}

output "mlflow_tracking_uri" {
  description = "What to set MLFLOW_TRACKING_URI to (with MLFLOW_TRACKING_TOKEN a falaj bearer token): MLflow's REST API on falaj (docs/mlflow.md)."
  value       = var.mlflow_api ? trimsuffix(aws_apigatewayv2_stage.webhook.invoke_url, "/") : null
}

output "console_url" {
  description = "The registry console (docs/console.md): sign in with a falaj bearer token."
  value       = var.console ? "${aws_apigatewayv2_stage.webhook.invoke_url}ui/" : null
}
