variable "region" {
  description = "The AWS region of the whole stack. Only UAE regions are accepted (me-central-1 is the only AWS region in the UAE; me-south-1 is Bahrain)."
  type        = string
  default     = "me-central-1"

  validation {
    condition     = contains(["me-central-1"], var.region)
    error_message = "falaj keeps every byte in the UAE: region must be me-central-1."
  }
}

variable "account_id" {
  description = "The AWS account this stack must be applied to; the provider refuses any other. Null skips the check."
  type        = string
  default     = null

  validation {
    condition     = var.account_id == null || can(regex("^[0-9]{12}$", var.account_id))
    error_message = "account_id must be 12 digits."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "falaj"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name_prefix))
    error_message = "name_prefix must be 2-21 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "env" {
  description = "Deployment environment served by the edge fleet (deployments/<env>/, telemetry/<env>/)."
  type        = string
  default     = "production"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.env))
    error_message = "env must be lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "network" {
  description = "An existing VPC in the region and its private subnets (with a route to S3, ECR, SSM and CloudWatch: a NAT gateway or VPC endpoints) for Batch and the edge fleet; ingress_cidrs may call the edge inference port."
  type = object({
    vpc_id        = string
    subnet_ids    = list(string)
    ingress_cidrs = optional(list(string), [])
  })
}

variable "lambda_dist_dir" {
  description = "Directory with the packaged functions (<verb>.zip). Null means dist/lambda at the repository root."
  type        = string
  default     = null
}

variable "edge_binary_sha256" {
  description = "SHA-256 of the falaj-edge binary uploaded to blobs/sha256/<digest> in the registry bucket."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.edge_binary_sha256))
    error_message = "edge_binary_sha256 must be 64 lowercase hex characters."
  }
}

variable "edge_component_sha256" {
  description = "SHA-256 of the inference component (scripts/wasm-component.sh) uploaded to blobs/sha256/<digest> in the registry bucket."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.edge_component_sha256))
    error_message = "edge_component_sha256 must be 64 lowercase hex characters."
  }
}

variable "deploy_public_key" {
  description = "The deployment public key the edge nodes pin (64 hex digits: public_key of keys/deploy.pub, checked out of band)."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.deploy_public_key))
    error_message = "deploy_public_key must be 64 lowercase hex characters."
  }
}

variable "scp" {
  description = "Attach the region-deny SCP (needs the organization management account). See the guardrails module."
  type = object({
    enabled    = optional(bool, false)
    target_ids = optional(list(string), [])
  })
  default = {}
}

variable "gpu_instance_types" {
  description = "GPU instance types wanted for training, filtered at plan time against what the region offers."
  type        = list(string)
  default     = ["g6.xlarge", "g6.2xlarge", "g5.xlarge", "g5.2xlarge", "g4dn.xlarge", "g4dn.2xlarge"]

  validation {
    condition     = length(var.gpu_instance_types) > 0
    error_message = "gpu_instance_types must not be empty."
  }
}

variable "trainer_image_tag" {
  description = "Tag of the falaj-train image in the training ECR repository."
  type        = string
  default     = "latest"
}

variable "webhook_jwt_authorizer" {
  description = "Optional API Gateway JWT authorizer for CI's OIDC tokens (one issuer, its audiences); see the functions module. Null: the function alone authenticates."
  type = object({
    issuer    = string
    audiences = list(string)
  })
  default = null
}

variable "oidc_key_sets" {
  description = "CI OIDC key sets to pin, issuer host => JSON Web Key Set document (or use `falaj oidc refresh ISSUER`)."
  type        = map(string)
  default     = {}
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
