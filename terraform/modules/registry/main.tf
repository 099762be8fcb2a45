# registry: the one bucket that is falaj's database. Content-addressed blobs, model versions,
# aliases, deployments, the audit chain and edge telemetry all live here; consistency comes
# from S3 conditional writes (If-None-Match / If-Match), so there is no DynamoDB table.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_id  = data.aws_caller_identity.current.account_id
  partition   = data.aws_partition.current.partition
  bucket_name = coalesce(var.bucket_name, "${var.name_prefix}-registry-${local.account_id}")
  bucket_arn  = "arn:${local.partition}:s3:::${local.bucket_name}"
}

# One customer-managed key for the bucket, the function logs and environment, the queues and
# the trainer repository. Single-Region on purpose: a multi-Region key could be replicated.
resource "aws_kms_key" "registry" {
  description             = "${var.name_prefix} registry and logs (${var.region} only)"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = 30
  multi_region            = false
  policy                  = jsonencode(local.key_policy)
  tags                    = var.tags
}

resource "aws_kms_alias" "registry" {
  name          = "alias/${var.name_prefix}-registry"
  target_key_id = aws_kms_key.registry.key_id
}

locals {
  # A key policy's Resource "*" means "this key" (it is attached to one key), so it is written
  # as a plain document rather than an aws_iam_policy_document, whose identity-policy checks
  # would read "*" as "every resource". The root statement hands control to IAM: the roles' own
  # policies and the permission boundary then decide who may use the key.
  key_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = concat(["arn:${local.partition}:iam::${local.account_id}:root"], var.key_admin_arns) }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsInRegion"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
        Resource  = "*"
        Condition = {
          ArnLike = { "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.region}:${local.account_id}:*" }
        }
      },
      {
        # EventBridge puts undeliverable events into the functions' KMS-encrypted queues.
        Sid       = "EventBridgeDeadLetters"
        Effect    = "Allow"
        Principal = { Service = "events.amazonaws.com" }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource  = "*"
        Condition = {
          StringEquals = { "aws:SourceAccount" = local.account_id }
        }
      },
    ]
  }
}

resource "aws_s3_bucket" "registry" {
  bucket = local.bucket_name
  # Object Lock must be switched on when the bucket is created; it is used for audit/ only.
  object_lock_enabled = true
  tags                = var.tags
}

resource "aws_s3_bucket_ownership_controls" "registry" {
  bucket = aws_s3_bucket.registry.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "registry" {
  bucket                  = aws_s3_bucket.registry.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "registry" {
  bucket = aws_s3_bucket.registry.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "registry" {
  bucket = aws_s3_bucket.registry.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.registry.arn
    }
    bucket_key_enabled = true
  }
}

# No default retention: a bucket-wide default would lock blobs/, tmp/ and telemetry/ too.
# The audit writer sets COMPLIANCE mode per object, and the bucket policy refuses any audit/
# write that does not (see DenyAuditWithoutComplianceLock).
resource "aws_s3_bucket_object_lock_configuration" "registry" {
  bucket              = aws_s3_bucket.registry.id
  object_lock_enabled = "Enabled"
  depends_on          = [aws_s3_bucket_versioning.registry]
}

resource "aws_s3_bucket_lifecycle_configuration" "registry" {
  bucket = aws_s3_bucket.registry.id

  rule {
    id     = "abort-incomplete-multipart"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.lifecycle_days.abort_incomplete_multipart
    }
  }

  rule {
    id     = "expire-tmp"
    status = "Enabled"
    filter {
      prefix = "tmp/"
    }
    expiration {
      days = var.lifecycle_days.tmp_expiry
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "expire-idempotency"
    status = "Enabled"
    filter {
      prefix = "idempotency/"
    }
    expiration {
      days = var.lifecycle_days.idempotency_expiry
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "expire-telemetry"
    status = "Enabled"
    filter {
      prefix = "telemetry/"
    }
    expiration {
      days = var.lifecycle_days.telemetry_expiry
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  # Aliases and deployments are rewritten by compare-and-swap, which leaves old versions.
  rule {
    id     = "trim-noncurrent-pointers"
    status = "Enabled"
    filter {
      prefix = "deployments/"
    }
    noncurrent_version_expiration {
      noncurrent_days = var.lifecycle_days.noncurrent_version_expiry
    }
  }

  depends_on = [aws_s3_bucket_versioning.registry]
}

# Object Created events go to EventBridge, where the functions and training modules route
# incoming/, models/, datasets/ and retrain/ keys.
resource "aws_s3_bucket_notification" "registry" {
  bucket      = aws_s3_bucket.registry.id
  eventbridge = true
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      local.bucket_arn,
      "${local.bucket_arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid     = "DenyOldTls"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      local.bucket_arn,
      "${local.bucket_arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }

  statement {
    sid       = "DenyOtherKmsKeys"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "StringNotEqualsIfExists"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = [aws_kms_key.registry.arn]
    }
  }

  statement {
    sid       = "DenyAuditWithoutComplianceLock"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arn}/audit/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "StringNotEquals"
      variable = "s3:object-lock-mode"
      values   = ["COMPLIANCE"]
    }
  }

  statement {
    sid       = "DenyAuditShortRetention"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arn}/audit/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "NumericLessThan"
      variable = "s3:object-lock-remaining-retention-days"
      values   = [tostring(var.audit_retention_days)]
    }
  }
}

resource "aws_s3_bucket_policy" "registry" {
  bucket     = aws_s3_bucket.registry.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.registry]
}
