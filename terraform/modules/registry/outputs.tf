output "bucket_name" {
  description = "Name of the registry bucket (FALAJ_STORE=s3://<name>)."
  value       = aws_s3_bucket.registry.bucket
}

output "bucket_arn" {
  description = "ARN of the registry bucket."
  value       = aws_s3_bucket.registry.arn
}

output "kms_key_arn" {
  description = "ARN of the customer-managed KMS key (rotation on, single-Region)."
  value       = aws_kms_key.registry.arn
}

output "audit_retention_days" {
  description = "Object Lock retention, in days, that audit/ writes must request in COMPLIANCE mode."
  value       = var.audit_retention_days
}
