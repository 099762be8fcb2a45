# edge-fleet: CPU instances in the region running falaj-edge as a systemd service. Each node
# reads deployments/, blobs/ and the version records (what to serve, and the verified
# artifacts) and may write only under telemetry/. Every node pins the deployment key. No SSH: operators reach nodes through SSM Session Manager.

data "aws_partition" "current" {}

data "aws_ssm_parameter" "al2023" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.fleet.architecture}"
}

locals {
  partition  = data.aws_partition.current.partition
  bucket_arn = "arn:${local.partition}:s3:::${var.bucket_name}"
  name       = "${var.name_prefix}-edge-${var.env}"
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name                 = local.name
  description          = "falaj-edge nodes (${var.env}): read deployments/ and blobs/, write telemetry/"
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

data "aws_iam_policy_document" "node" {
  statement {
    sid     = "ReadDesiredStateAndArtifacts"
    actions = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = [
      "${local.bucket_arn}/deployments/*",
      "${local.bucket_arn}/blobs/*",
      "${local.bucket_arn}/models/*/versions/*",
      "${local.bucket_arn}/keys/*",
    ]
  }

  statement {
    sid       = "ListDeployments"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["deployments/*", "deployments/", "blobs/*", "models/*", "keys/*"]
    }
  }

  statement {
    sid       = "WriteTelemetryOnly"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arn}/telemetry/*"]
  }

  statement {
    sid       = "UseRegistryKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "node" {
  name   = "store-access"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.node.json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "node" {
  name = local.name
  role = aws_iam_role.node.name
  tags = var.tags
}

resource "aws_security_group" "node" {
  name        = local.name
  description = "falaj-edge nodes: inference port from listed CIDRs only; HTTPS out to regional AWS endpoints."
  vpc_id      = var.network.vpc_id

  dynamic "ingress" {
    for_each = length(var.network.ingress_cidrs) > 0 ? [var.network.ingress_cidrs] : []
    content {
      description = "falaj-edge inference"
      from_port   = var.inference_port
      to_port     = var.inference_port
      protocol    = "tcp"
      cidr_blocks = ingress.value
    }
  }

  egress {
    description = "HTTPS to S3, SSM and CloudWatch in the region"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  tags = var.tags
}

resource "aws_launch_template" "node" {
  name          = local.name
  description   = "falaj-edge node (${var.env})"
  image_id      = data.aws_ssm_parameter.al2023.value
  instance_type = var.fleet.instance_type
  ebs_optimized = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.node.arn
  }

  vpc_security_group_ids = [aws_security_group.node.id]

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.fleet.root_volume_gib
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  user_data = base64encode(templatefile("${path.module}/user_data.sh.tftpl", {
    region          = var.region
    bucket          = var.bucket_name
    sha256          = var.edge_binary.sha256
    component       = var.edge_binary.component_sha256
    trust_key       = var.trust_key
    env             = var.env
    allowed_regions = join(",", var.allowed_regions)
    port            = var.inference_port
  }))

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = local.name })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = local.name })
  }

  tags = var.tags
}

resource "aws_autoscaling_group" "node" {
  name                      = local.name
  min_size                  = var.fleet.min_size
  max_size                  = var.fleet.max_size
  desired_capacity          = var.fleet.desired_capacity
  vpc_zone_identifier       = var.network.subnet_ids
  health_check_type         = "EC2"
  health_check_grace_period = 120

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  dynamic "tag" {
    for_each = merge(var.tags, { Name = local.name })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
