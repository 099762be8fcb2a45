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

variable "env" {
  description = "Deployment environment the fleet serves: it reads deployments/<env>/ and writes telemetry/<env>/."
  type        = string
  default     = "production"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.env))
    error_message = "env must be lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "bucket_name" {
  description = "Name of the registry bucket (output of the registry module)."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the registry KMS key (objects are encrypted with it)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:me-central-1:[0-9]{12}:key/", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN in me-central-1."
  }
}

variable "network" {
  description = "VPC and subnets (in the region) the edge nodes run in, and the CIDRs allowed to call the inference port. An empty list opens no inbound port."
  type = object({
    vpc_id        = string
    subnet_ids    = list(string)
    ingress_cidrs = optional(list(string), [])
  })

  validation {
    condition     = length(var.network.subnet_ids) > 0 && !contains(var.network.ingress_cidrs, "0.0.0.0/0")
    error_message = "network.subnet_ids needs at least one subnet, and the inference port must not be open to 0.0.0.0/0."
  }
}

variable "fleet" {
  description = "Instance type, architecture and size of the autoscaling group. The type must be offered in the region; the AMI is the latest Amazon Linux 2023 for the architecture."
  type = object({
    instance_type    = optional(string, "c5.large")
    architecture     = optional(string, "x86_64")
    min_size         = optional(number, 1)
    max_size         = optional(number, 3)
    desired_capacity = optional(number, 2)
    root_volume_gib  = optional(number, 20)
  })
  default = {}

  validation {
    condition     = contains(["x86_64", "arm64"], var.fleet.architecture)
    error_message = "fleet.architecture must be x86_64 or arm64."
  }

  validation {
    condition     = var.fleet.min_size <= var.fleet.desired_capacity && var.fleet.desired_capacity <= var.fleet.max_size
    error_message = "fleet sizes must satisfy min_size <= desired_capacity <= max_size."
  }
}

variable "edge_binary" {
  description = "The falaj-edge binary and the inference component (falaj-inference-nn.wasm, which can take the host inference path for slots signed runtime = host; the plain falaj-inference.wasm serves every version in the sandbox), each stored in the registry as a content-addressed blob (blobs/sha256/<sha256>): nodes download them with their read-only access and refuse either if its digest differs."
  type = object({
    sha256           = string
    component_sha256 = string
  })

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.edge_binary.sha256)) && can(regex("^[0-9a-f]{64}$", var.edge_binary.component_sha256))
    error_message = "edge_binary.sha256 and edge_binary.component_sha256 must be 64 lowercase hex characters."
  }
}

variable "trust_key" {
  description = "The deployment public key every node pins (FALAJ_TRUST_KEY): 64 hex digits, the public_key of keys/deploy.pub, checked out of band. Nodes never take it from the store, so write access to the bucket is not enough to deploy."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.trust_key))
    error_message = "trust_key must be 64 lowercase hex characters (an ed25519 public key)."
  }
}

variable "inference_port" {
  description = "TCP port falaj-edge listens on."
  type        = number
  default     = 8080

  validation {
    condition     = var.inference_port > 1024 && var.inference_port < 65536
    error_message = "inference_port must be an unprivileged port (1025-65535)."
  }
}

variable "allowed_regions" {
  description = "Value of FALAJ_ALLOWED_REGIONS on the nodes."
  type        = list(string)
  default     = ["me-central-1"]

  validation {
    condition     = length(var.allowed_regions) > 0 && alltrue([for r in var.allowed_regions : contains(["me-central-1"], r)])
    error_message = "allowed_regions must be a non-empty list of UAE regions (me-central-1)."
  }
}

variable "permissions_boundary_arn" {
  description = "IAM permission boundary for the node role (guardrails module output). Null leaves it without one."
  type        = string
  default     = null
}
