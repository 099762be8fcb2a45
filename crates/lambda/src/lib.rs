//! What the Lambda functions share: JSON log lines that CloudWatch Logs Insights can query, one
//! registry opened from the environment at cold start and reused by every invocation, secrets
//! from SSM, other functions called over Lambda's Invoke API ([`LambdaFunction`]), and the
//! API Gateway / Function URL adapter of the webhook ([`apigw`]).

use falaj::Registry;
use falaj::calls::{PromoteError, PromoteRequest, Promoter, ValidateCall, Validator};
use falaj::deploy::DeployKey;
use falaj::store::{self, OpenOptions};
use falaj_core::AllowedRegions;
use falaj_core::policy::GateReport;

pub mod apigw;

/// How the promote function reports a [`PromoteError`] to Lambda (`falaj::calls`).
pub use falaj::calls::promote_error_message;

/// JSON log lines on stderr, filtered by `FALAJ_LOG` or `RUST_LOG` (from `falaj-runtime`).
pub use falaj_runtime::init_json_logs;

/// Why a function could not start: its environment names no store or secret, or what it
/// names cannot be read. Each message names the variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A required variable is unset.
    #[error("{var} is not set (e.g. {example})")]
    Unset {
        /// The variable.
        var: &'static str,
        /// What it usually holds.
        example: &'static str,
    },
    /// The store cannot be opened.
    #[error("cannot open the store {uri} (FALAJ_STORE): {source}")]
    Store {
        /// As given.
        uri: String,
        /// Why.
        #[source]
        source: store::StoreError,
    },
    /// The SSM parameter cannot be read.
    #[error("cannot read SSM parameter {name} ({var}): {reason}")]
    Ssm {
        /// Parameter name.
        name: String,
        /// The variable that named it.
        var: String,
        /// The service's answer.
        reason: String,
    },
    /// The secret file cannot be read.
    #[error("cannot read {path} ({var}): {source}")]
    File {
        /// Path.
        path: String,
        /// The variable that named it.
        var: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither the parameter nor the file variable is set.
    #[error("neither {param_var} (an SSM parameter) nor {file_var} (a file) is set")]
    NoSecret {
        /// The SSM variable.
        param_var: String,
        /// The file variable.
        file_var: String,
    },
    /// The signing key does not parse.
    #[error("the signing key: {reason}")]
    SigningKey {
        /// Why.
        reason: String,
    },
}

/// Opens the registry named by `FALAJ_STORE` (`s3://bucket[/prefix]` in AWS), checking the
/// bucket's region against `FALAJ_ALLOWED_REGIONS` (default `me-central-1`).
pub async fn registry_from_env() -> Result<Registry, StartError> {
    let uri = std::env::var("FALAJ_STORE").map_err(|_| StartError::Unset {
        var: "FALAJ_STORE",
        example: "s3://falaj-registry-123456789012",
    })?;
    let allowed =
        AllowedRegions::parse(&std::env::var("FALAJ_ALLOWED_REGIONS").unwrap_or_default());
    let opts = OpenOptions {
        allowed,
        create: false,
        endpoint: None,
    };
    let store = store::open(&uri, &opts)
        .await
        .map_err(|source| StartError::Store { uri, source })?;
    Ok(Registry::new(store))
}

/// A secret for a function: the SSM SecureString parameter named by `param_var` (how AWS
/// deployments hold it; `terraform/modules/functions` grants `ssm:GetParameter` on exactly
/// that parameter), else the file named by `file_var` (embedded mode and tests).
pub async fn secret_from_env(param_var: &str, file_var: &str) -> Result<String, StartError> {
    if let Some(name) = std::env::var(param_var).ok().filter(|v| !v.is_empty()) {
        let conf = aws_config::load_from_env().await;
        let ssm = |reason: String| StartError::Ssm {
            name: name.clone(),
            var: param_var.into(),
            reason,
        };
        let out = aws_sdk_ssm::Client::new(&conf)
            .get_parameter()
            .name(&name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| ssm(aws_sdk_ssm::error::DisplayErrorContext(&e).to_string()))?;
        return out
            .parameter
            .and_then(|p| p.value)
            .ok_or_else(|| ssm("it has no value".into()));
    }
    if let Some(path) = std::env::var_os(file_var).filter(|v| !v.is_empty()) {
        return std::fs::read_to_string(&path).map_err(|source| StartError::File {
            path: path.to_string_lossy().into_owned(),
            var: file_var.into(),
            source,
        });
    }
    Err(StartError::NoSecret {
        param_var: param_var.into(),
        file_var: file_var.into(),
    })
}

/// The deployment signing key of the promote function.
pub async fn signing_key_from_env() -> Result<DeployKey, StartError> {
    let text = secret_from_env("FALAJ_SIGNING_KEY_PARAM", "FALAJ_SIGNING_KEY").await?;
    DeployKey::from_hex(&text).map_err(|e| StartError::SigningKey {
        reason: e.to_string(),
    })
}

/// Invokes the function `function` (RequestResponse) with `payload`: its JSON answer, or the
/// [`PromoteError`] it reported (as JSON in `errorMessage`, see [`promote_error_message`]);
/// `what` names the function in the messages ("promote", "validate").
async fn invoke_function(
    client: &aws_sdk_lambda::Client,
    function: &str,
    what: &str,
    payload: &serde_json::Value,
) -> Result<serde_json::Value, PromoteError> {
    let payload = serde_json::to_vec(payload)
        .map_err(|e| PromoteError::new("internal", 500, e.to_string()))?;
    let out = client
        .invoke()
        .function_name(function)
        .payload(aws_sdk_lambda::primitives::Blob::new(payload))
        .send()
        .await
        .map_err(|e| {
            PromoteError::new(
                format!("{what}_unavailable"),
                503,
                format!(
                    "cannot invoke the {what} function {function}: {}",
                    aws_sdk_lambda::error::DisplayErrorContext(&e)
                ),
            )
        })?;
    let body: serde_json::Value = out
        .payload
        .map(|b| serde_json::from_slice(b.as_ref()).unwrap_or(serde_json::Value::Null))
        .unwrap_or(serde_json::Value::Null);
    if out.function_error.is_none() {
        return Ok(body);
    }
    Err(body["errorMessage"]
        .as_str()
        .and_then(|m| serde_json::from_str::<PromoteError>(m).ok())
        .unwrap_or_else(|| {
            PromoteError::new(
                format!("{what}_failed"),
                502,
                format!("the {what} function failed: {body}"),
            )
        }))
}

/// Another function, invoked over Lambda's Invoke API: the webhook's [`Promoter`] (the
/// promote function, `FALAJ_PROMOTE_FUNCTION`, the only holder of the signing key) and its
/// [`Validator`] (the validate function, `FALAJ_VALIDATE_FUNCTION`, which links tract: sent
/// `{"webhook_validate": call}`). Answers come back as JSON, failures as [`PromoteError`].
pub struct LambdaFunction {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl LambdaFunction {
    /// Invokes `function` (name or ARN) with the default AWS configuration;
    /// `AWS_ENDPOINT_URL_LAMBDA` points it elsewhere (tests).
    pub async fn new(function: String) -> Self {
        let conf = aws_config::load_from_env().await;
        Self {
            client: aws_sdk_lambda::Client::new(&conf),
            function,
        }
    }

    /// Another function through the same client: the AWS configuration is loaded once per
    /// cold start, not once per function.
    pub fn sibling(&self, function: String) -> Self {
        Self {
            client: self.client.clone(),
            function,
        }
    }
}

#[async_trait::async_trait]
impl Promoter for LambdaFunction {
    async fn apply(&self, req: PromoteRequest) -> Result<serde_json::Value, PromoteError> {
        let payload = serde_json::to_value(&req)
            .map_err(|e| PromoteError::new("internal", 500, e.to_string()))?;
        invoke_function(&self.client, &self.function, "promote", &payload).await
    }
}

#[async_trait::async_trait]
impl Validator for LambdaFunction {
    async fn validate(
        &self,
        _reg: &Registry,
        call: ValidateCall,
    ) -> Result<GateReport, PromoteError> {
        let payload = serde_json::json!({ "webhook_validate": call });
        let v = invoke_function(&self.client, &self.function, "validate", &payload).await?;
        serde_json::from_value(v.clone()).map_err(|e| {
            PromoteError::new(
                "validate_failed",
                502,
                format!(
                    "the validate function answered something that is not a gate report ({e}): {v}"
                ),
            )
        })
    }
}
