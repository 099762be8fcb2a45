output "permissions_boundary_arn" {
  description = "ARN of the IAM permission boundary every falaj role must carry."
  value       = aws_iam_policy.boundary.arn
}

output "scp_json" {
  description = "The region-deny SCP document, for an organization administrator to attach when this account cannot."
  value = jsonencode({
    Version   = "2012-10-17"
    Statement = local.deny_statements
  })
}

output "sts_endpoint" {
  description = "The regional STS endpoint; SDKs and the AWS provider must use it (the global endpoint is us-east-1 and the SCP denies it)."
  value       = "https://sts.${var.region}.amazonaws.com"
}
