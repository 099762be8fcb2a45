output "registry_bucket" {
  description = "The registry bucket: FALAJ_STORE=s3://<this>."
  value       = module.registry.bucket_name
}

output "kms_key_arn" {
  description = "The registry KMS key."
  value       = module.registry.kms_key_arn
}

output "webhook_url" {
  description = "Base URL of falaj's HTTP API (<url>v1/...): where CI systems and people call."
  value       = module.functions.webhook_url
}

output "mlflow_tracking_uri" {
  description = "MLFLOW_TRACKING_URI for MLflow clients (docs/mlflow.md)."
  value       = module.functions.mlflow_tracking_uri
}

output "trainer_repository_url" {
  description = "Push falaj-train images here."
  value       = module.training.ecr_repository_url
}

output "gpu_instance_types" {
  description = "GPU instance types in use after filtering by the region's offerings."
  value       = module.training.gpu_instance_types
}

output "permissions_boundary_arn" {
  description = "The residency permission boundary; attach it to any role added by hand."
  value       = module.guardrails.permissions_boundary_arn
}

output "scp_json" {
  description = "The region-deny SCP document, for an organization administrator."
  value       = module.guardrails.scp_json
}

output "edge_autoscaling_group" {
  description = "The edge fleet's autoscaling group."
  value       = module.edge_fleet.autoscaling_group_name
}

output "console_url" {
  description = "The registry console: approvers see the evidence and decide in a browser (docs/console.md)."
  value       = module.functions.console_url
}
