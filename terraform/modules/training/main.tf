# training: AWS Batch for falaj-train. A GPU compute environment (instance types filtered
# against what the region offers) with a CPU fallback, one job queue, the job definitions, the
# trainer's ECR repository, and EventBridge rules that submit a job when a dataset lands under
# datasets/ or a retraining request under retrain/.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# Which of the wanted GPU types the region offers today. GPU families reach me-central-1 late
# and unevenly, so the list is checked at plan time instead of trusted.
data "aws_ec2_instance_type_offerings" "gpu" {
  location_type = "region"
  filter {
    name   = "instance-type"
    values = var.gpu.instance_types
  }
}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  bucket_arn = "arn:${local.partition}:s3:::${var.bucket_name}"
  gpu_types  = [for t in var.gpu.instance_types : t if contains(data.aws_ec2_instance_type_offerings.gpu.instance_types, t)]
  name       = "${var.name_prefix}-train"

  resources = { for k, v in { VCPU = var.job.vcpus, MEMORY = var.job.memory_mib, GPU = var.job.gpus } : k => v if v > 0 }
  container = {
    command = var.job.command
    environment = [
      { name = "FALAJ_STORE", value = "s3://${var.bucket_name}" },
      { name = "FALAJ_ALLOWED_REGIONS", value = join(",", var.allowed_regions) },
      { name = "AWS_REGION", value = var.region },
      # The identity the job uploads as: the version's author (roles.json must let it register).
      { name = "FALAJ_IDENTITY", value = var.job.identity },
    ]
    jobRoleArn       = aws_iam_role.job.arn
    executionRoleArn = aws_iam_role.execution.arn
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.train.name
        "awslogs-region"        = var.region
        "awslogs-stream-prefix" = "train"
      }
    }
    privileged = false
    user       = "1000"
  }
}

# ---------------------------------------------------------------------------------------------
# Image repository

resource "aws_ecr_repository" "train" {
  name                 = local.name
  image_tag_mutability = "IMMUTABLE"
  force_delete         = false

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }

  tags = var.tags
}

resource "aws_ecr_lifecycle_policy" "train" {
  repository = aws_ecr_repository.train.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the 30 most recent images; lineage records name the image digest."
      selection    = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = 30 }
      action       = { type = "expire" }
    }]
  })
}

# ---------------------------------------------------------------------------------------------
# Roles

data "aws_iam_policy_document" "assume" {
  for_each = {
    instance  = "ec2.amazonaws.com"
    task      = "ecs-tasks.amazonaws.com"
    scheduler = "events.amazonaws.com"
  }
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = [each.value]
    }
  }
}

# Batch's EC2 instances: the ECS agent and image pulls.
resource "aws_iam_role" "instance" {
  name                 = "${local.name}-instance"
  description          = "Batch compute instances for ${local.name}"
  assume_role_policy   = data.aws_iam_policy_document.assume["instance"].json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

resource "aws_iam_role_policy_attachment" "instance_ecs" {
  role       = aws_iam_role.instance.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_instance_profile" "instance" {
  name = "${local.name}-instance"
  role = aws_iam_role.instance.name
  tags = var.tags
}

# The container's ECS execution role: pulls the KMS-encrypted image and writes its logs.
resource "aws_iam_role" "execution" {
  name                 = "${local.name}-execution"
  description          = "ECS execution role of ${local.name} jobs"
  assume_role_policy   = data.aws_iam_policy_document.assume["task"].json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "PullTrainerImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [aws_ecr_repository.train.arn]
  }
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "DecryptImage"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
  statement {
    sid       = "WriteJobLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.train.arn}:*"]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-and-log"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# The trainer itself: reads datasets and retraining requests, uploads the trained model under
# incoming/ (which the ingest function registers), scratch under tmp/.
resource "aws_iam_role" "job" {
  name                 = "${local.name}-job"
  description          = "Role of the falaj-train container"
  assume_role_policy   = data.aws_iam_policy_document.assume["task"].json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

data "aws_iam_policy_document" "job" {
  statement {
    sid     = "ReadInputs"
    actions = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = [
      "${local.bucket_arn}/datasets/*",
      "${local.bucket_arn}/retrain/*",
      "${local.bucket_arn}/models/*",
      "${local.bucket_arn}/blobs/sha256/*",
    ]
  }
  statement {
    sid     = "WriteOutputs"
    actions = ["s3:PutObject"]
    resources = [
      "${local.bucket_arn}/incoming/*",
      "${local.bucket_arn}/tmp/*",
    ]
  }
  statement {
    sid       = "ListInputs"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["datasets/*", "retrain/*", "models/*"]
    }
  }
  statement {
    sid       = "UseRegistryKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "job" {
  name   = "store-access"
  role   = aws_iam_role.job.id
  policy = data.aws_iam_policy_document.job.json
}

# ---------------------------------------------------------------------------------------------
# Compute

resource "aws_security_group" "batch" {
  name        = "${local.name}-batch"
  description = "Batch training instances: no inbound; HTTPS out to S3, ECR and CloudWatch in the region."
  vpc_id      = var.network.vpc_id

  egress {
    description = "HTTPS to regional AWS endpoints"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  tags = var.tags
}

resource "aws_launch_template" "batch" {
  name        = "${local.name}-batch"
  description = "IMDSv2 and encrypted volumes for Batch training instances"

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    # 1: job containers get credentials from their task role, never from the instance.
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = 100
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = var.tags
  }

  tags = var.tags
}

resource "aws_batch_compute_environment" "gpu" {
  compute_environment_name_prefix = "${local.name}-gpu-"
  type                            = "MANAGED"

  compute_resources {
    type                = "EC2"
    allocation_strategy = "BEST_FIT_PROGRESSIVE"
    min_vcpus           = 0
    max_vcpus           = var.gpu.max_vcpus
    instance_type       = local.gpu_types
    instance_role       = aws_iam_instance_profile.instance.arn
    security_group_ids  = [aws_security_group.batch.id]
    subnets             = var.network.subnet_ids

    ec2_configuration {
      image_type = var.gpu.image_type
    }

    launch_template {
      launch_template_id = aws_launch_template.batch.id
      version            = aws_launch_template.batch.latest_version
    }

    tags = var.tags
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = length(local.gpu_types) > 0
      error_message = "None of gpu.instance_types is offered in ${var.region}. Run `aws ec2 describe-instance-type-offerings --region ${var.region} --filters Name=instance-type,Values=g*` and set gpu.instance_types, or set job.gpus = 0 to train on CPU."
    }
  }
}

resource "aws_batch_compute_environment" "cpu" {
  compute_environment_name_prefix = "${local.name}-cpu-"
  type                            = "MANAGED"

  compute_resources {
    type                = "EC2"
    allocation_strategy = "BEST_FIT_PROGRESSIVE"
    min_vcpus           = 0
    max_vcpus           = var.cpu.max_vcpus
    instance_type       = var.cpu.instance_types
    instance_role       = aws_iam_instance_profile.instance.arn
    security_group_ids  = [aws_security_group.batch.id]
    subnets             = var.network.subnet_ids

    ec2_configuration {
      image_type = "ECS_AL2023"
    }

    launch_template {
      launch_template_id = aws_launch_template.batch.id
      version            = aws_launch_template.batch.latest_version
    }

    tags = var.tags
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

# GPU first; the CPU environment takes jobs that ask for no GPU (falaj-train-cpu, or
# falaj-train with job.gpus = 0). A job asking for a GPU waits for GPU capacity.
resource "aws_batch_job_queue" "train" {
  name     = local.name
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.gpu.arn
  }

  compute_environment_order {
    order               = 2
    compute_environment = aws_batch_compute_environment.cpu.arn
  }

  tags = var.tags
}

resource "aws_cloudwatch_log_group" "train" {
  name              = "/aws/batch/${local.name}"
  retention_in_days = var.job.log_retention_day
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_batch_job_definition" "train" {
  for_each = {
    (local.name)        = local.resources
    "${local.name}-cpu" = { for k, v in local.resources : k => v if k != "GPU" }
  }

  name                  = each.key
  type                  = "container"
  platform_capabilities = ["EC2"]
  propagate_tags        = true
  parameters            = { trigger_key = "" }

  retry_strategy {
    attempts = var.job.attempts
  }

  timeout {
    attempt_duration_seconds = var.job.timeout_s
  }

  container_properties = jsonencode(merge(local.container, {
    image                = "${aws_ecr_repository.train.repository_url}:${var.job.image_tag}"
    resourceRequirements = [for k, v in each.value : { type = k, value = tostring(v) }]
  }))

  tags = var.tags
}

# ---------------------------------------------------------------------------------------------
# Triggers: a dataset upload or a retraining request submits falaj-train.

resource "aws_cloudwatch_event_rule" "train" {
  for_each = {
    datasets = "A dataset uploaded under datasets/ starts a training job."
    retrain  = "A retraining request under retrain/ (written by the drift function) starts a training job."
  }

  name        = "${local.name}-on-${each.key}"
  description = each.value
  event_pattern = jsonencode({
    source        = ["aws.s3"]
    "detail-type" = ["Object Created"]
    detail = {
      bucket = { name = [var.bucket_name] }
      object = { key = [{ prefix = "${each.key}/" }] }
    }
  })
  tags = var.tags
}

resource "aws_iam_role" "submit" {
  name                 = "${local.name}-submit"
  description          = "EventBridge submits ${local.name} jobs"
  assume_role_policy   = data.aws_iam_policy_document.assume["scheduler"].json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

data "aws_iam_policy_document" "submit" {
  statement {
    sid     = "SubmitTrainingJobs"
    actions = ["batch:SubmitJob"]
    resources = [
      aws_batch_job_queue.train.arn,
      "arn:${local.partition}:batch:${var.region}:${local.account_id}:job-definition/${local.name}:*",
    ]
  }
}

resource "aws_iam_role_policy" "submit" {
  name   = "submit-training"
  role   = aws_iam_role.submit.id
  policy = data.aws_iam_policy_document.submit.json
}

resource "aws_cloudwatch_event_target" "train" {
  for_each = aws_cloudwatch_event_rule.train

  rule     = each.value.name
  arn      = aws_batch_job_queue.train.arn
  role_arn = aws_iam_role.submit.arn

  batch_target {
    job_definition = aws_batch_job_definition.train[local.name].arn
    job_name       = "${local.name}-${each.key}"
    job_attempts   = var.job.attempts
  }

  # The object key becomes the job's trigger_key parameter (Ref::trigger_key in the command).
  input_transformer {
    input_paths = {
      key = "$.detail.object.key"
    }
    input_template = <<-EOT
      {"Parameters": {"trigger_key": <key>}}
    EOT
  }

  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 8
  }
}
