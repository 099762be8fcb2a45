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
  description = "Name of the registry bucket (output of the registry module)."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the registry KMS key: encrypts the image repository, job logs and objects."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:me-central-1:[0-9]{12}:key/", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN in me-central-1."
  }
}

variable "network" {
  description = "Where Batch instances run: a VPC and private subnets in the region with a route to S3 and ECR (NAT, or VPC endpoints)."
  type = object({
    vpc_id     = string
    subnet_ids = list(string)
  })

  validation {
    condition     = length(var.network.subnet_ids) > 0
    error_message = "network.subnet_ids needs at least one subnet."
  }
}

variable "gpu" {
  description = "The GPU compute environment. Instance families must be offered in the region: the module filters the list against the region's offerings at plan time and fails if none is left. Availability of g5/g6 in me-central-1 is not confirmed (see terraform/README.md)."
  type = object({
    instance_types = optional(list(string), ["g6.xlarge", "g6.2xlarge", "g5.xlarge", "g5.2xlarge", "g4dn.xlarge", "g4dn.2xlarge"])
    max_vcpus      = optional(number, 16)
    image_type     = optional(string, "ECS_AL2_NVIDIA")
  })
  default = {}

  validation {
    condition     = var.gpu.max_vcpus >= 4 && length(var.gpu.instance_types) > 0
    error_message = "gpu.max_vcpus must be at least 4 and gpu.instance_types non-empty."
  }
}

variable "cpu" {
  description = "The CPU fallback compute environment, used when no GPU capacity is available and for falaj-train-cpu jobs."
  type = object({
    instance_types = optional(list(string), ["c5.2xlarge", "c5.4xlarge", "m5.2xlarge"])
    max_vcpus      = optional(number, 32)
  })
  default = {}

  validation {
    condition     = var.cpu.max_vcpus >= 2 && length(var.cpu.instance_types) > 0
    error_message = "cpu.max_vcpus must be at least 2 and cpu.instance_types non-empty."
  }
}

variable "job" {
  description = "The falaj-train job: image tag in the module's ECR repository, command (Ref::trigger_key is the S3 key that started the job), resources (gpus = 0 runs on CPU), timeout, retries, log retention, and the falaj identity it uploads as (the author of the versions it trains; grant it data-scientist)."
  type = object({
    image_tag         = optional(string, "latest")
    command           = optional(list(string), ["falaj-train", "--trigger-key", "Ref::trigger_key"])
    vcpus             = optional(number, 4)
    memory_mib        = optional(number, 15000)
    gpus              = optional(number, 1)
    timeout_s         = optional(number, 21600)
    attempts          = optional(number, 2)
    log_retention_day = optional(number, 365)
    identity          = optional(string, "falaj-trainer")
  })
  default = {}

  validation {
    condition     = var.job.vcpus >= 1 && var.job.memory_mib >= 512 && var.job.gpus >= 0 && var.job.timeout_s >= 60 && var.job.attempts >= 1 && var.job.attempts <= 10
    error_message = "job needs vcpus >= 1, memory_mib >= 512, gpus >= 0, timeout_s >= 60 and 1-10 attempts."
  }

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.job.log_retention_day)
    error_message = "job.log_retention_day must be a CloudWatch Logs retention value of at least 365."
  }

  validation {
    condition     = can(regex("^[A-Za-z0-9_@+-][A-Za-z0-9._@+-]{0,127}$", var.job.identity))
    error_message = "job.identity must be 1-128 letters, digits or ._@+- (a falaj identity), not starting with a dot."
  }
}

variable "allowed_regions" {
  description = "Value of FALAJ_ALLOWED_REGIONS given to the trainer."
  type        = list(string)
  default     = ["me-central-1"]

  validation {
    condition     = length(var.allowed_regions) > 0 && alltrue([for r in var.allowed_regions : contains(["me-central-1"], r)])
    error_message = "allowed_regions must be a non-empty list of UAE regions (me-central-1)."
  }
}

variable "permissions_boundary_arn" {
  description = "IAM permission boundary for the job, instance and EventBridge roles (guardrails module output). Null leaves them without one."
  type        = string
  default     = null
}
