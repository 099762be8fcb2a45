# The falaj stack in the UAE: every module in me-central-1, every role inside the residency
# permission boundary.

locals {
  allowed_regions = [var.region]
}

module "guardrails" {
  source = "../../modules/guardrails"

  region          = var.region
  allowed_regions = local.allowed_regions
  name_prefix     = var.name_prefix
  scp             = var.scp
  tags            = var.tags
}

module "registry" {
  source = "../../modules/registry"

  region      = var.region
  name_prefix = var.name_prefix
  tags        = var.tags
}

module "functions" {
  source = "../../modules/functions"

  region                   = var.region
  name_prefix              = var.name_prefix
  bucket_name              = module.registry.bucket_name
  kms_key_arn              = module.registry.kms_key_arn
  audit_retention_days     = module.registry.audit_retention_days
  lambda_dist_dir          = coalesce(var.lambda_dist_dir, "${path.root}/../../../dist/lambda")
  allowed_regions          = local.allowed_regions
  permissions_boundary_arn = module.guardrails.permissions_boundary_arn
  webhook_jwt_authorizer   = var.webhook_jwt_authorizer
  oidc_key_sets            = var.oidc_key_sets
  tags                     = var.tags
}

module "training" {
  source = "../../modules/training"

  region                   = var.region
  name_prefix              = var.name_prefix
  bucket_name              = module.registry.bucket_name
  kms_key_arn              = module.registry.kms_key_arn
  network                  = { vpc_id = var.network.vpc_id, subnet_ids = var.network.subnet_ids }
  gpu                      = { instance_types = var.gpu_instance_types }
  job                      = { image_tag = var.trainer_image_tag }
  allowed_regions          = local.allowed_regions
  permissions_boundary_arn = module.guardrails.permissions_boundary_arn
  tags                     = var.tags
}

module "edge_fleet" {
  source = "../../modules/edge-fleet"

  region                   = var.region
  name_prefix              = var.name_prefix
  env                      = var.env
  bucket_name              = module.registry.bucket_name
  kms_key_arn              = module.registry.kms_key_arn
  network                  = var.network
  edge_binary              = { sha256 = var.edge_binary_sha256, component_sha256 = var.edge_component_sha256 }
  trust_key                = var.deploy_public_key
  allowed_regions          = local.allowed_regions
  permissions_boundary_arn = module.guardrails.permissions_boundary_arn
  tags                     = var.tags
}
