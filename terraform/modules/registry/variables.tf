variable "region" {
  description = "The AWS region of every resource in this module. Only UAE regions are accepted (me-central-1 is the only AWS region in the UAE; me-south-1 is Bahrain)."
  type        = string
  default     = "me-central-1"

  validation {
    condition     = contains(["me-central-1"], var.region)
    error_message = "falaj keeps every byte in the UAE: region must be me-central-1."
  }
}

variable "name_prefix" {
  description = "Prefix of every name this module creates."
  type        = string
  default     = "falaj"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name_prefix))
    error_message = "name_prefix must be 2-21 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}

variable "bucket_name" {
  description = "Name of the registry bucket. Null derives <name_prefix>-registry-<account id>."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)."
  }
}

variable "audit_retention_days" {
  description = "Minimum Object Lock (compliance mode) retention every audit/ object must carry. The bucket policy refuses audit writes with a shorter or no retention."
  type        = number
  default     = 2555

  validation {
    condition     = var.audit_retention_days >= 1 && var.audit_retention_days <= 36500
    error_message = "audit_retention_days must be between 1 and 36500."
  }
}

variable "lifecycle_days" {
  description = "Object lifetimes. tmp/ and idempotency/ are scratch; telemetry/ is kept for drift history; incomplete multipart uploads are aborted; noncurrent versions outside audit/ are removed."
  type = object({
    abort_incomplete_multipart = optional(number, 2)
    tmp_expiry                 = optional(number, 1)
    idempotency_expiry         = optional(number, 7)
    telemetry_expiry           = optional(number, 400)
    noncurrent_version_expiry  = optional(number, 90)
  })
  default = {}

  validation {
    condition = alltrue([
      for d in values(var.lifecycle_days) : d >= 1
    ])
    error_message = "Every lifecycle_days entry must be at least 1."
  }
}

variable "key_admin_arns" {
  description = "IAM principals allowed to administer the registry KMS key besides the account root."
  type        = list(string)
  default     = []
}
