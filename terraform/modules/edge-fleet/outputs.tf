output "autoscaling_group_name" {
  description = "Name of the edge fleet's autoscaling group."
  value       = aws_autoscaling_group.node.name
}

output "node_role_arn" {
  description = "ARN of the edge node role (read deployments/ and blobs/, write telemetry/)."
  value       = aws_iam_role.node.arn
}

output "security_group_id" {
  description = "Security group of the edge nodes."
  value       = aws_security_group.node.id
}
