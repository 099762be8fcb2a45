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
  description = "ARN of the registry KMS key: encrypts objects, function logs and environment variables."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:me-central-1:[0-9]{12}:key/", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN in me-central-1."
  }
}

variable "lambda_dist_dir" {
  description = "Directory holding the packaged functions, one <verb>.zip per function (ingest, validate, promote, webhook, drift, rollout), each containing a `bootstrap` binary for provided.al2023."
  type        = string
  default     = "dist/lambda"
}

variable "architecture" {
  description = "CPU architecture the zips were built for: scripts/package-functions.sh writes x86_64 zips to dist/lambda/ and arm64 zips to dist/lambda/arm64/."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "functions" {
  description = "Per-function overrides of memory (MB), timeout (s) and reserved concurrency, keyed by verb."
  type = map(object({
    memory_mb            = optional(number, 512)
    timeout_s            = optional(number, 60)
    reserved_concurrency = optional(number, 5)
  }))
  default = {}

  validation {
    condition     = alltrue([for k in keys(var.functions) : contains(["ingest", "validate", "promote", "webhook", "drift", "rollout"], k)])
    error_message = "functions keys must be among ingest, validate, promote, webhook, drift, rollout."
  }

  validation {
    condition     = alltrue([for f in values(var.functions) : f.memory_mb >= 128 && f.memory_mb <= 10240 && f.timeout_s >= 1 && f.timeout_s <= 900 && f.reserved_concurrency >= 1])
    error_message = "memory_mb must be 128-10240, timeout_s 1-900 and reserved_concurrency at least 1."
  }
}

variable "allowed_regions" {
  description = "Value of FALAJ_ALLOWED_REGIONS given to every function: the runtime refuses buckets, datasets and endpoints elsewhere."
  type        = list(string)
  default     = ["me-central-1"]

  validation {
    condition     = length(var.allowed_regions) > 0 && alltrue([for r in var.allowed_regions : contains(["me-central-1"], r)])
    error_message = "allowed_regions must be a non-empty list of UAE regions (me-central-1)."
  }
}

variable "log_retention_days" {
  description = "Retention of the function and API access logs. At least a year, so an audit can follow a promotion."
  type        = number
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value of at least 365."
  }
}

variable "drift_schedule" {
  description = "EventBridge schedule expression on which the drift function runs."
  type        = string
  default     = "rate(1 hour)"

  validation {
    condition     = can(regex("^(rate|cron)\\(.+\\)$", var.drift_schedule))
    error_message = "drift_schedule must be a rate(...) or cron(...) expression."
  }
}

variable "rollout_schedule" {
  description = "EventBridge schedule expression on which the rollout function asks the canary judge to look at every running challenger."
  type        = string
  default     = "rate(5 minutes)"

  validation {
    condition     = can(regex("^(rate|cron)\\(.+\\)$", var.rollout_schedule))
    error_message = "rollout_schedule must be a rate(...) or cron(...) expression."
  }
}

variable "secret_parameters" {
  description = "SSM Parameter Store names (SecureString) the functions read: the webhook's HMAC secret and the deployment-manifest signing key. Created outside Terraform so no secret lands in state."
  type = object({
    webhook_secret = optional(string, "/falaj/webhook-secret")
    signing_key    = optional(string, "/falaj/signing-key")
  })
  default = {}

  validation {
    condition     = startswith(var.secret_parameters.webhook_secret, "/") && startswith(var.secret_parameters.signing_key, "/")
    error_message = "Parameter names must start with /."
  }
}

variable "permissions_boundary_arn" {
  description = "IAM permission boundary every function role carries (guardrails module output). Null leaves the roles without one."
  type        = string
  default     = null
}

variable "mlflow_api" {
  description = "Serve MLflow's REST API (/api/2.0/mlflow, /api/2.0/mlflow-artifacts, /api/3.0/mlflow) from the webhook function, so MLFLOW_TRACKING_URI can point at the HTTP API (output mlflow_tracking_uri). Callers authenticate with a falaj bearer token or Basic credentials, checked by the function."
  type        = bool
  default     = true
}

variable "console" {
  description = "Serve the registry console (/ui: models, version evidence, deployments, drift, audit; approve and promote in a browser) from the webhook function (output console_url). People sign in with their falaj bearer token, checked by the function; the session cookie is HttpOnly, SameSite=Strict and Secure."
  type        = bool
  default     = true
}

variable "webhook_jwt_authorizer" {
  description = "Optional API Gateway JWT authorizer on the webhook route: one CI OIDC issuer (exactly as tokens name it in iss) and the audiences its jobs ask for. API Gateway then refuses requests without a valid token from that issuer before the function runs; the function still verifies every token against the key set pinned in the store and applies the claim policy of its [[oidc]] entries. With it set, HMAC and bearer callers cannot reach the webhook: use it when CI signs in with OIDC only."
  type = object({
    issuer    = string
    audiences = list(string)
  })
  default = null

  validation {
    condition     = var.webhook_jwt_authorizer == null ? true : (startswith(var.webhook_jwt_authorizer.issuer, "https://") && length(var.webhook_jwt_authorizer.audiences) > 0)
    error_message = "webhook_jwt_authorizer needs an https:// issuer and at least one audience (GitLab has no default audience; GitHub's default is the repository owner's URL: set a falaj-specific one)."
  }
}

variable "oidc_key_sets" {
  description = "CI OIDC key sets to pin in the store, by issuer host (token.actions.githubusercontent.com, gitlab.example.com) to the JSON Web Key Set document; written to keys/oidc/<host>.json, where the webhook verifies tokens offline. `falaj oidc refresh ISSUER` writes the same object (and audits it) when you would rather not keep keys in Terraform."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for h, doc in var.oidc_key_sets : can(regex("^[A-Za-z0-9.-]+$", h)) && can(jsondecode(doc).keys)])
    error_message = "oidc_key_sets maps an issuer host (letters, digits, dots, dashes) to a JSON Web Key Set document ({\"keys\": [...]})."
  }
}

variable "webhook_throttle" {
  description = "Rate limits of the webhook HTTP API."
  type = object({
    burst_limit = optional(number, 20)
    rate_limit  = optional(number, 10)
  })
  default = {}
}

variable "audit_retention_days" {
  description = "Object Lock retention (COMPLIANCE) the functions request on every audit/ write; must be at least the registry's minimum."
  type        = number
  default     = 2555

  validation {
    condition     = var.audit_retention_days >= 1
    error_message = "audit_retention_days must be at least 1."
  }
}
