terraform {
  required_version = ">= 1.10.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.100.0"
    }
  }

  # State lives in the UAE too. The bucket is created once by hand (terraform/README.md) and
  # named at init: terraform init -backend-config="bucket=<state bucket>".
  # use_lockfile takes the lock with an S3 conditional write: no DynamoDB table.
  backend "s3" {
    key          = "falaj/uae/terraform.tfstate"
    region       = "me-central-1"
    encrypt      = true
    use_lockfile = true
  }
}
