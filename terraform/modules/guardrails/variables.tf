variable "region" {
  description = "The AWS region falaj runs in. Only UAE regions are accepted (me-central-1 is the only AWS region in the UAE; me-south-1 is Bahrain)."
  type        = string
  default     = "me-central-1"

  validation {
    condition     = contains(["me-central-1"], var.region)
    error_message = "falaj keeps every byte in the UAE: region must be me-central-1."
  }
}

variable "allowed_regions" {
  description = "Regions the deny policy lets API calls reach. Every entry must be a UAE region."
  type        = list(string)
  default     = ["me-central-1"]

  validation {
    condition     = length(var.allowed_regions) > 0 && alltrue([for r in var.allowed_regions : contains(["me-central-1"], r)])
    error_message = "allowed_regions must be a non-empty list of UAE regions (me-central-1)."
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

variable "scp" {
  description = "Attach the region-deny document as an AWS Organizations SCP. Needs the organization's management (or delegated) account; leave disabled in a member account and hand the scp_json output to whoever runs the organization."
  type = object({
    enabled    = optional(bool, false)
    target_ids = optional(list(string), [])
  })
  default = {}

  validation {
    condition     = !var.scp.enabled || length(var.scp.target_ids) > 0
    error_message = "scp.enabled needs at least one target id (an account id, OU id or the root id)."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
