provider "aws" {
  region = var.region

  # Regional STS: the global endpoint is served from us-east-1 and the region-deny policy
  # refuses it.
  sts_region = var.region
  endpoints {
    sts = "https://sts.${var.region}.amazonaws.com"
  }

  allowed_account_ids = var.account_id == null ? null : [var.account_id]

  default_tags {
    tags = merge(var.tags, {
      project   = "falaj"
      residency = "uae"
    })
  }
}
