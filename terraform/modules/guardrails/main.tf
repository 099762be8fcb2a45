# guardrails: the account-wide residency fence. One deny document is used twice: as an
# Organizations SCP (when this account may attach one) and inside the IAM permission boundary
# that every falaj role carries, so a role cannot act outside the UAE even where no SCP exists.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  # Services whose control plane is global (served from us-east-1), so their calls never carry
  # a UAE aws:RequestedRegion. Each is exempt because it holds account metadata, not falaj data.
  global_service_actions = [
    "iam:*",           # identities and policies: IAM is a global service
    "organizations:*", # the organization itself is global
    "account:*",       # account contacts and region opt-in settings
    "support:*",       # AWS Support cases; the API endpoint is us-east-1 only
    "health:*",        # AWS Health's global endpoint (events about our regional resources)
    "budgets:*",       # billing: budgets are global
    "ce:*",            # billing: Cost Explorer's endpoint is us-east-1 only
    "cur:*",           # billing: cost and usage report definitions
    "pricing:*",       # public price list, read-only
    # Deliberately NOT exempt: sts:* (we use the regional STS endpoint in me-central-1, so
    # every STS call carries a UAE aws:RequestedRegion), kms:* (keys must stay regional),
    # s3:* (buckets are regional), cloudfront:*, route53:* and globalaccelerator:* (not used).
  ]

  deny_outside_uae = {
    Sid       = "DenyOutsideUAE"
    Effect    = "Deny"
    NotAction = local.global_service_actions
    Resource  = "*"
    Condition = {
      StringNotEquals = { "aws:RequestedRegion" = var.allowed_regions }
    }
  }

  # Replicas and multi-Region keys copy key material out of the region.
  deny_key_replication = {
    Sid      = "DenyKmsReplication"
    Effect   = "Deny"
    Action   = ["kms:ReplicateKey", "kms:UpdatePrimaryRegion"]
    Resource = "*"
  }

  deny_multi_region_keys = {
    Sid      = "DenyMultiRegionKeyCreation"
    Effect   = "Deny"
    Action   = ["kms:CreateKey"]
    Resource = "*"
    Condition = {
      Bool = { "kms:MultiRegion" = "true" }
    }
  }

  # Object copies to other regions, and the edge network, are forbidden whatever the region.
  deny_data_egress_features = {
    Sid    = "DenyCrossRegionDataFeatures"
    Effect = "Deny"
    Action = [
      "s3:PutReplicationConfiguration",
      "s3:PutAccelerateConfiguration",
      "s3:CreateMultiRegionAccessPoint",
      "dynamodb:CreateTableReplica",
      "dynamodb:UpdateGlobalTable",
      "ecr:PutReplicationConfiguration",
      "secretsmanager:ReplicateSecretToRegions",
    ]
    Resource = "*"
  }

  deny_statements = [
    local.deny_outside_uae,
    local.deny_key_replication,
    local.deny_multi_region_keys,
    local.deny_data_egress_features,
  ]

  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  # The boundary is the most a falaj role may ever do: the services the stack uses, on
  # resources in the allowed regions of this account (plus S3, whose ARNs carry no region),
  # minus everything the deny statements forbid. Each role's own policy narrows it further.
  boundary_allow = [
    {
      Sid    = "AllowFalajServicesInRegion"
      Effect = "Allow"
      Action = [
        "s3:*", "kms:*", "lambda:*", "logs:*", "sqs:*", "events:*", "batch:*", "ecr:*",
        "ssm:*", "ssmmessages:*", "ec2messages:*", "cloudwatch:*", "xray:*", "ecs:*", "ec2:*",
        "autoscaling:*", "sts:*",
      ]
      Resource = concat(
        [for r in var.allowed_regions : "arn:${local.partition}:*:${r}:${local.account_id}:*"],
        ["arn:${local.partition}:s3:::${var.name_prefix}-*"],
      )
    },
    {
      # Actions that accept no resource ARN at all (the API defines Resource "*" only).
      Sid    = "AllowUnscopedReadsAndTelemetry"
      Effect = "Allow"
      Action = [
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "cloudwatch:PutMetricData",
        "ecr:GetAuthorizationToken",
        "ec2:DescribeInstances",
        "ec2:DescribeTags",
        "ecs:DiscoverPollEndpoint",
        "ssm:UpdateInstanceInformation",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
        "ec2messages:GetMessages",
        "sts:GetCallerIdentity",
      ]
      Resource = "*"
    },
  ]
}

resource "aws_iam_policy" "boundary" {
  name        = "${var.name_prefix}-residency-boundary"
  description = "falaj permission boundary: falaj services in the UAE region only; no key replication, no multi-Region keys, no cross-region data features."
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = concat(local.boundary_allow, local.deny_statements)
  })
  tags = var.tags
}

resource "aws_organizations_policy" "region_deny" {
  count = var.scp.enabled ? 1 : 0

  name        = "${var.name_prefix}-uae-only"
  description = "Deny every API call outside the UAE region except global account services; deny key replication and cross-region data features."
  type        = "SERVICE_CONTROL_POLICY"
  content = jsonencode({
    Version   = "2012-10-17"
    Statement = local.deny_statements
  })
  tags = var.tags
}

resource "aws_organizations_policy_attachment" "region_deny" {
  for_each = var.scp.enabled ? toset(var.scp.target_ids) : toset([])

  policy_id = aws_organizations_policy.region_deny[0].id
  target_id = each.value
}
