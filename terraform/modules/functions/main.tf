# functions: the six Lambdas (falaj-fn-<verb>) built from packaged zips, each with its own
# least-privilege role scoped to the store prefixes it touches, a dead-letter queue, X-Ray
# tracing and a KMS-encrypted log group; the webhook behind an HTTP API; EventBridge wiring.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  bucket_arn = "arn:${local.partition}:s3:::${var.bucket_name}"
  verbs      = ["ingest", "validate", "promote", "webhook", "drift", "rollout"]

  defaults = { memory_mb = 512, timeout_s = 60, reserved_concurrency = 5 }
  settings = { for v in local.verbs : v => merge(local.defaults, try(var.functions[v], {})) }
  names    = { for v in local.verbs : v => "${var.name_prefix}-fn-${v}" }

  # What each function may read and write in the store (see docs: the store layout).
  # Every writer appends to audit/ and records idempotency keys; no function may delete.
  access = {
    ingest = {
      read  = ["incoming/*", "blobs/sha256/*", "models/*", "audit/*", "idempotency/*"]
      write = ["blobs/sha256/*", "models/*", "audit/*", "idempotency/*", "tmp/*"]
      list  = ["incoming/*", "blobs/*", "models/*", "audit/*"]
    }
    # Runs the gates: reads the artifact, the holdout and roles.json; writes only gate reports
    # (gates.json, gates-2.json, ...) and its audit events.
    validate = {
      read  = ["blobs/sha256/*", "models/*", "datasets/*", "audit/*", "roles.json"]
      write = ["models/*/versions/*/gates*.json", "audit/*"]
      list  = ["models/*", "audit/*", "deployments/*"]
    }
    # The only holder of the signing key: approvals, aliases, archive markers, deployments.
    # The canary judge runs here too (a look from the rollout function): it reads the edge's
    # live windows and the labels that arrived as feedback.
    promote = {
      read  = ["models/*", "deployments/*", "audit/*", "roles.json", "keys/*", "telemetry/*", "datasets/*/feedback/*"]
      write = ["models/*/aliases/*", "models/*/approvals/*", "models/*/versions/*/archived.json", "deployments/*", "audit/*", "keys/deploy.pub"]
      list  = ["models/*", "deployments/*", "audit/*", "telemetry/*", "datasets/*"]
    }
    # Reads everything it reports; registers from incoming/ and runs gates itself (register and
    # validate routes); records feedback labels (create-only files); approvals and promotions
    # go to the promote function.
    webhook = {
      read  = ["incoming/*", "blobs/sha256/*", "models/*", "datasets/*", "deployments/*", "audit/*", "roles.json", "idempotency/*"]
      write = ["blobs/sha256/*", "models/*/model.json", "models/*/versions/*", "datasets/*/feedback/*", "audit/*", "idempotency/*", "tmp/*"]
      list  = ["models/*", "deployments/*", "audit/*", "blobs/*"]
    }
    # Reads the edge's sketches, the verified deployment (keys/deploy.pub), the version and its
    # training manifest; writes retraining requests (create-only) and their audit events.
    drift = {
      read  = ["telemetry/*", "deployments/*", "keys/*", "models/*", "blobs/sha256/*", "retrain/*", "audit/*"]
      write = ["retrain/*", "audit/*"]
      list  = ["telemetry/*", "deployments/*", "models/*", "retrain/*", "audit/*"]
    }
    # Finds the deployments that run a challenger and asks promote (the key holder) for a look
    # of the canary judge at each; it writes nothing itself.
    rollout = {
      read  = ["deployments/*", "keys/*", "models/*"]
      write = []
      list  = ["deployments/*", "models/*"]
    }
  }

  common_env = {
    FALAJ_STORE                = "s3://${var.bucket_name}"
    FALAJ_ALLOWED_REGIONS      = join(",", var.allowed_regions)
    FALAJ_AUDIT_RETENTION_DAYS = tostring(var.audit_retention_days)
    RUST_LOG                   = "info"
  }

  extra_env = {
    ingest = {}
    # The gates measure each model in a child process under these limits
    # (falaj::gates::sandbox): three quarters of the function's memory, and the function's
    # timeout less 10 s so the failed report is still written.
    validate = {
      FALAJ_GATES_MAX_MEMORY_BYTES = tostring(floor(local.settings["validate"].memory_mb * 3 / 4) * 1048576)
      FALAJ_GATES_DEADLINE_SECS    = tostring(max(local.settings["validate"].timeout_s - 10, 5))
    }
    promote  = { FALAJ_SIGNING_KEY_PARAM = var.secret_parameters.signing_key }
    webhook = {
      FALAJ_PROMOTE_FUNCTION     = local.names["promote"]
      FALAJ_VALIDATE_FUNCTION    = local.names["validate"]
      FALAJ_WEBHOOK_SECRET_PARAM = var.secret_parameters.webhook_secret
    }
    drift   = {}
    rollout = { FALAJ_PROMOTE_FUNCTION = local.names["promote"] }
  }
}

# ---------------------------------------------------------------------------------------------
# Roles

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "fn" {
  for_each = toset(local.verbs)

  name                 = local.names[each.key]
  description          = "Execution role of ${local.names[each.key]}"
  assume_role_policy   = data.aws_iam_policy_document.assume_lambda.json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

data "aws_iam_policy_document" "fn" {
  for_each = toset(local.verbs)

  statement {
    sid       = "ReadStore"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = [for p in local.access[each.key].read : "${local.bucket_arn}/${p}"]
  }

  # A function that writes nothing (rollout) gets no write statement at all.
  dynamic "statement" {
    for_each = length(local.access[each.key].write) > 0 ? [local.access[each.key].write] : []
    content {
      sid       = "WriteStore"
      actions   = ["s3:PutObject"]
      resources = [for p in statement.value : "${local.bucket_arn}/${p}"]
    }
  }

  # audit/ objects are written with an Object Lock retention in COMPLIANCE mode.
  dynamic "statement" {
    for_each = contains(local.access[each.key].write, "audit/*") ? ["audit"] : []
    content {
      sid       = "LockAuditEntries"
      actions   = ["s3:PutObjectRetention"]
      resources = ["${local.bucket_arn}/audit/*"]
    }
  }

  statement {
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = local.access[each.key].list
    }
  }

  statement {
    sid       = "UseRegistryKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.fn[each.key].arn}:*"]
  }

  statement {
    sid       = "Tracing"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }

  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dlq[each.key].arn]
  }

  dynamic "statement" {
    # validate reaches promote as its on-success destination; webhook invokes promote for
    # approvals and promotions, and validate for POST .../validate (it links no tract).
    # rollout invokes promote for each look of the canary judge.
    for_each = contains(["validate", "rollout"], each.key) ? ["promote"] : each.key == "webhook" ? ["promote", "validate"] : []
    content {
      sid       = "Invoke${title(statement.value)}"
      actions   = ["lambda:InvokeFunction"]
      resources = ["arn:${local.partition}:lambda:${var.region}:${local.account_id}:function:${local.names[statement.value]}"]
    }
  }

  dynamic "statement" {
    for_each = each.key == "webhook" ? [var.secret_parameters.webhook_secret] : each.key == "promote" ? [var.secret_parameters.signing_key] : []
    content {
      sid       = "ReadSecret"
      actions   = ["ssm:GetParameter"]
      resources = ["arn:${local.partition}:ssm:${var.region}:${local.account_id}:parameter${statement.value}"]
    }
  }
}

resource "aws_iam_role_policy" "fn" {
  for_each = toset(local.verbs)

  name   = "store-access"
  role   = aws_iam_role.fn[each.key].id
  policy = data.aws_iam_policy_document.fn[each.key].json
}

# ---------------------------------------------------------------------------------------------
# Functions

resource "aws_cloudwatch_log_group" "fn" {
  for_each = toset(local.verbs)

  name              = "/aws/lambda/${local.names[each.key]}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_sqs_queue" "dlq" {
  for_each = toset(local.verbs)

  name                      = "${local.names[each.key]}-dlq"
  message_retention_seconds = 1209600
  kms_master_key_id         = var.kms_key_arn
  tags                      = var.tags
}

resource "aws_lambda_function" "fn" {
  for_each = toset(local.verbs)

  function_name                  = local.names[each.key]
  description                    = "falaj ${each.key}"
  role                           = aws_iam_role.fn[each.key].arn
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = [var.architecture]
  filename                       = "${var.lambda_dist_dir}/${each.key}.zip"
  source_code_hash               = filebase64sha256("${var.lambda_dist_dir}/${each.key}.zip")
  memory_size                    = local.settings[each.key].memory_mb
  timeout                        = local.settings[each.key].timeout_s
  reserved_concurrent_executions = local.settings[each.key].reserved_concurrency
  kms_key_arn                    = var.kms_key_arn

  environment {
    variables = merge(local.common_env, local.extra_env[each.key])
  }

  tracing_config {
    mode = "Active"
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.dlq[each.key].arn
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.fn[each.key].name
  }

  tags       = var.tags
  depends_on = [aws_iam_role_policy.fn]
}

# ---------------------------------------------------------------------------------------------
# Triggers: S3 Object Created events arrive through EventBridge (registry module enables them).

resource "aws_cloudwatch_event_rule" "incoming" {
  name        = "${var.name_prefix}-incoming-to-ingest"
  description = "A model uploaded under incoming/ is ingested into the registry."
  event_pattern = jsonencode({
    source        = ["aws.s3"]
    "detail-type" = ["Object Created"]
    detail = {
      bucket = { name = [var.bucket_name] }
      object = { key = [{ prefix = "incoming/" }] }
    }
  })
  tags = var.tags
}

# A new version record (models/<m>/versions/<n>.json) is validated; the function ignores the
# other objects the wildcard also matches (tags, gate reports).
resource "aws_cloudwatch_event_rule" "versions" {
  name        = "${var.name_prefix}-versions-to-validate"
  description = "A newly registered version is validated against its model's gate policy."
  event_pattern = jsonencode({
    source        = ["aws.s3"]
    "detail-type" = ["Object Created"]
    detail = {
      bucket = { name = [var.bucket_name] }
      object = { key = [{ wildcard = "models/*/versions/*.json" }] }
    }
  })
  tags = var.tags
}

# Versions that pass with `auto_staging` in their policy go to the promote function, which
# holds the signing key, as the validate function's on-success destination.
resource "aws_lambda_function_event_invoke_config" "validate" {
  function_name                = aws_lambda_function.fn["validate"].function_name
  maximum_retry_attempts       = 2
  maximum_event_age_in_seconds = 3600

  destination_config {
    on_success {
      destination = aws_lambda_function.fn["promote"].arn
    }
    on_failure {
      destination = aws_sqs_queue.dlq["validate"].arn
    }
  }
}

resource "aws_cloudwatch_event_rule" "drift" {
  name                = "${var.name_prefix}-drift-schedule"
  description         = "Periodic drift check over edge telemetry."
  schedule_expression = var.drift_schedule
  tags                = var.tags
}

resource "aws_cloudwatch_event_rule" "rollout" {
  name                = "${var.name_prefix}-rollout-schedule"
  description         = "Periodic look of the canary judge at every running challenger."
  schedule_expression = var.rollout_schedule
  tags                = var.tags
}

locals {
  event_targets = {
    ingest   = aws_cloudwatch_event_rule.incoming
    validate = aws_cloudwatch_event_rule.versions
    drift    = aws_cloudwatch_event_rule.drift
    rollout  = aws_cloudwatch_event_rule.rollout
  }
}

resource "aws_cloudwatch_event_target" "fn" {
  for_each = local.event_targets

  rule = each.value.name
  arn  = aws_lambda_function.fn[each.key].arn

  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 8
  }

  dead_letter_config {
    arn = aws_sqs_queue.dlq[each.key].arn
  }
}

resource "aws_lambda_permission" "events" {
  for_each = local.event_targets

  statement_id  = "AllowEventBridge"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.fn[each.key].function_name
  principal     = "events.amazonaws.com"
  source_arn    = each.value.arn
}

# EventBridge delivers undeliverable events to the function's DLQ: the queue policy lets the
# rule send, and the registry key policy lets EventBridge encrypt (EventBridgeDeadLetters).
data "aws_iam_policy_document" "dlq" {
  for_each = local.event_targets

  statement {
    sid       = "EventBridgeDeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dlq[each.key].arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [each.value.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "dlq" {
  for_each = local.event_targets

  queue_url = aws_sqs_queue.dlq[each.key].id
  policy    = data.aws_iam_policy_document.dlq[each.key].json
}

# ---------------------------------------------------------------------------------------------
# Webhook: a regional HTTP API in front of falaj-fn-webhook. The function authenticates each
# request (a CI job's OIDC token, an HMAC signature or a bearer token); the API adds
# throttling, access logs and, optionally, a JWT authorizer for one CI issuer.

resource "aws_apigatewayv2_api" "webhook" {
  name          = "${var.name_prefix}-webhook"
  description   = "falaj's HTTP API: /v1 for CI and people (register, approve, promote, rollback), MLflow's REST API, and the console under /ui"
  protocol_type = "HTTP"
  tags          = var.tags
}

resource "aws_apigatewayv2_integration" "webhook" {
  api_id                 = aws_apigatewayv2_api.webhook.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.fn["webhook"].invoke_arn
  payload_format_version = "2.0"
}

# Optional: API Gateway checks a CI token's signature, issuer, audience and expiry before the
# function runs. The function still verifies the token against the pinned key set, claims its
# jti once and maps its immutable claims to an identity: the authorizer only turns away
# tokenless traffic early.
resource "aws_apigatewayv2_authorizer" "ci_oidc" {
  count            = var.webhook_jwt_authorizer == null ? 0 : 1
  api_id           = aws_apigatewayv2_api.webhook.id
  name             = "${var.name_prefix}-ci-oidc"
  authorizer_type  = "JWT"
  identity_sources = ["$request.header.Authorization"]

  jwt_configuration {
    issuer   = var.webhook_jwt_authorizer.issuer
    audience = var.webhook_jwt_authorizer.audiences
  }
}

# The webhook API lives under /v1 (docs/webhook.md); the route forwards every path below it.
resource "aws_apigatewayv2_route" "webhook" {
  api_id             = aws_apigatewayv2_api.webhook.id
  route_key          = "ANY /v1/{proxy+}"
  target             = "integrations/${aws_apigatewayv2_integration.webhook.id}"
  authorization_type = var.webhook_jwt_authorizer == null ? "NONE" : "JWT"
  authorizer_id      = var.webhook_jwt_authorizer == null ? null : aws_apigatewayv2_authorizer.ci_oidc[0].id
}

# MLflow's REST API (docs/mlflow.md), answered by the same function: MLflow clients send a
# falaj bearer token or Basic credentials, which the function checks, so no JWT authorizer.
# Artifact uploads through API Gateway and Lambda are limited to 6 MB a request.
resource "aws_apigatewayv2_route" "mlflow" {
  for_each = var.mlflow_api ? toset([
    "ANY /api/2.0/mlflow/{proxy+}",
    "ANY /api/2.0/mlflow-artifacts/{proxy+}",
    "ANY /api/3.0/mlflow/{proxy+}",
  ]) : toset([])
  api_id             = aws_apigatewayv2_api.webhook.id
  route_key          = each.key
  target             = "integrations/${aws_apigatewayv2_integration.webhook.id}"
  authorization_type = "NONE"
}

# The registry console (docs/console.md), answered by the same function: people sign in with
# their bearer token, which the function checks, so no JWT authorizer.
resource "aws_apigatewayv2_route" "console" {
  for_each           = var.console ? toset(["GET /ui", "ANY /ui/{proxy+}"]) : toset([])
  api_id             = aws_apigatewayv2_api.webhook.id
  route_key          = each.key
  target             = "integrations/${aws_apigatewayv2_integration.webhook.id}"
  authorization_type = "NONE"
}

# CI OIDC key sets, pinned where the webhook reads them (keys/oidc/<issuer host>.json).
resource "aws_s3_object" "oidc_keys" {
  for_each     = var.oidc_key_sets
  bucket       = var.bucket_name
  key          = "keys/oidc/${each.key}.json"
  content      = each.value
  content_type = "application/json"
  kms_key_id   = var.kms_key_arn
  tags         = var.tags
}

resource "aws_cloudwatch_log_group" "webhook_api" {
  name              = "/aws/apigateway/${var.name_prefix}-webhook"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_apigatewayv2_stage" "webhook" {
  api_id      = aws_apigatewayv2_api.webhook.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_burst_limit = var.webhook_throttle.burst_limit
    throttling_rate_limit  = var.webhook_throttle.rate_limit
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.webhook_api.arn
    format = jsonencode({
      requestId = "$context.requestId"
      ip        = "$context.identity.sourceIp"
      time      = "$context.requestTime"
      route     = "$context.routeKey"
      status    = "$context.status"
      latency   = "$context.integrationLatency"
    })
  }

  tags = var.tags
}

resource "aws_lambda_permission" "webhook_api" {
  statement_id  = "AllowHttpApi"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.fn["webhook"].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.webhook.execution_arn}/*/*"
}
