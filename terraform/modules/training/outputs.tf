output "ecr_repository_url" {
  description = "Push falaj-train images here (tags are immutable)."
  value       = aws_ecr_repository.train.repository_url
}

output "job_queue_arn" {
  description = "ARN of the training job queue."
  value       = aws_batch_job_queue.train.arn
}

output "job_definition_arns" {
  description = "ARNs of the GPU (falaj-train) and CPU (falaj-train-cpu) job definitions."
  value       = { for k, d in aws_batch_job_definition.train : k => d.arn }
}

output "gpu_instance_types" {
  description = "The GPU instance types actually used: the wanted list filtered by what the region offers."
  value       = local.gpu_types
}
