terraform {
  # 1.10 brings the S3 backend's native lockfile (use_lockfile) used by envs/uae.
  required_version = ">= 1.10.0, < 2.0.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Child modules accept any 5.x from 5.90; envs/uae pins the exact release.
      version = ">= 5.90.0, < 6.0.0"
    }
  }
}
