//! The command line: every command, its arguments and its `--help`.

use clap::{Args, Parser, Subcommand};
use falaj::store::{self};
use std::path::PathBuf;

pub(crate) const EXAMPLES: &str = "\
Examples:
  falaj model create wine --description 'wine quality classifier' --owner ml-team
  falaj push wine model.onnx --manifest manifest.json
  falaj versions wine
  falaj show wine@1                 # or wine@production, or wine (latest)
  falaj alias set wine staging 1
  falaj alias set wine production 2 --expect 1   # compare-and-swap: fails if someone moved it
  falaj tag wine@2 reviewed=yes
  falaj audit wine --verify
  falaj --store s3://my-bucket/falaj --json versions wine

Gates, approvals and deployments (docs/gates.md):
  falaj roles grant alice admin       # first grant in a store makes the caller admin
  falaj policy set wine gates.toml
  falaj validate wine@3 --data holdout.csv [--policy gates.toml]   # exit 6 if a gate fails
  falaj approve wine@3 --to production           # as an approver other than the author
  falaj promote wine@3 --to staging
  falaj promote wine@3 --to production [--canary 10 | --blue-green]
  falaj rollout wine --env prod --weight 50      # 100 makes the canary the champion
  falaj rollback wine --env prod
  falaj deployments [--repair]

Stores:
  dir://PATH        a local directory (the default: dir://.falaj)
  s3://BUCKET[/P]   Amazon S3, or an S3-compatible server with FALAJ_S3_ENDPOINT=http://host:port
                    The bucket must be in an allowed region (FALAJ_ALLOWED_REGIONS, default me-central-1).

Exit codes: 0 ok, 1 error, 2 usage, 3 conflict (someone else changed it first), 4 not found,
            5 audit chain broken, 6 gates failed or refused (role, approvals, state).";

/// falaj: an MLOps registry whose database is an object store, kept in the UAE.
#[derive(Parser, Debug)]
#[command(
    name = "falaj",
    version,
    about = "falaj: the model registry of the falaj MLOps platform. Registers ONNX versions, runs their gates, promotes them through approvals to signed deployments, and keeps every move in an audit chain.",
    after_help = EXAMPLES
)]
pub(crate) struct Cli {
    /// Store URI: dir://PATH or s3://BUCKET[/PREFIX].
    #[arg(long, global = true, env = "FALAJ_STORE", default_value = store::DEFAULT_STORE)]
    pub(crate) store: String,
    /// Print JSON instead of tables (errors too, on stderr).
    #[arg(long, global = true, env = "FALAJ_JSON", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true", default_value = "false")]
    pub(crate) json: bool,
    /// Identity to act as (defaults to $USER). On a dir:// store it is taken as typed; on an
    /// s3:// store you are who AWS STS says you are, and --as is refused unless that is admin.
    #[arg(long = "as", global = true, env = "FALAJ_IDENTITY")]
    pub(crate) identity: Option<String>,
    /// Comma-separated regions data may live in.
    #[arg(
        long,
        global = true,
        env = "FALAJ_ALLOWED_REGIONS",
        default_value = "me-central-1"
    )]
    pub(crate) allowed_regions: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create, show, list and tag models.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Register a new version from an ONNX file (and its training manifest).
    #[command(
        after_help = "Example:\n  falaj push wine out/model.onnx --manifest out/manifest.json --semver 1.2.0"
    )]
    Push {
        /// Model name.
        model: String,
        /// The ONNX file.
        file: PathBuf,
        /// The training manifest written by falaj-train.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Semantic version (default: the manifest's, else <n>.0.0).
        #[arg(long)]
        semver: Option<String>,
        /// Create the model first if it does not exist.
        #[arg(long)]
        create: bool,
        /// Without --manifest: write it from --holdout and --target, as `falaj manifest init`.
        #[command(flatten)]
        spec: ManifestSpec,
    },
    /// List a model's versions.
    Versions {
        /// Model name.
        model: String,
        /// Only versions with this tag (KEY=VALUE), repeatable.
        #[arg(long = "tag", value_parser = parse_kv)]
        tags: Vec<(String, String)>,
        /// Only versions by this author.
        #[arg(long)]
        author: Option<String>,
    },
    /// Show one version: MODEL@N, MODEL@ALIAS or MODEL (latest).
    Show {
        /// MODEL@N | MODEL@ALIAS | MODEL
        reference: String,
    },
    /// Move, remove and list aliases (staging, production, champion, ...).
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Set or remove tags on a version (MODEL@N) or on a model (MODEL).
    #[command(
        after_help = "Examples:\n  falaj tag wine@3 dataset=2026-11 reviewed=yes\n  falaj tag wine@3 --rm reviewed"
    )]
    Tag {
        /// MODEL@N or MODEL.
        reference: String,
        /// KEY=VALUE pairs to set.
        #[arg(value_parser = parse_kv)]
        set: Vec<(String, String)>,
        /// Keys to remove.
        #[arg(long = "rm")]
        remove: Vec<String>,
    },
    /// Show a model's audit log; --verify checks its hash chain and the state it explains.
    ///
    /// --verify first completes any move a crashed writer left half-made (its event was
    /// written, its alias, approval or deployment was not), then checks that no event was
    /// edited, removed, reordered or cut off the end (the head, audit/<model>/head.json), and
    /// that every alias, approval, archive marker and deployment is exactly what the event
    /// it names wrote. Exit 5 names each problem by store key.
    Audit {
        /// Model name, or `_roles` for the store-wide chain (role grants, principal maps,
        /// OIDC key pins).
        model: String,
        /// Verify the chain and the state (exit 5 on any problem).
        #[arg(long)]
        verify: bool,
    },
    /// Residency checks.
    #[command(subcommand)]
    Residency(ResidencyCmd),
    /// Run the gates of MODEL@N on a holdout and write its gate report.
    Validate {
        /// MODEL@N (or MODEL@ALIAS).
        reference: String,
        /// Holdout CSV: a path, or store:KEY for an object in the store.
        #[arg(long)]
        data: String,
        /// Gate policy file to use instead of the model's attached one.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Approve MODEL@N for a stage (approvers only, never the author).
    Approve {
        /// MODEL@N.
        reference: String,
        /// Stage: production (or staging).
        #[arg(long, default_value = "production")]
        to: String,
        /// Free text recorded with the approval.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Promote MODEL@N to staging or production and write the signed deployment.
    Promote {
        /// MODEL@N.
        reference: String,
        /// staging | production.
        #[arg(long)]
        to: String,
        /// Start a canary with this percentage of traffic (production only).
        #[arg(long, conflicts_with = "blue_green")]
        canary: Option<u8>,
        /// Switch at once and keep the previous champion as standby.
        #[arg(long)]
        blue_green: bool,
        /// Where edge nodes run the graph: sandbox (tract inside WebAssembly, the default) or
        /// host (the node's native tract through wasi:nn, for artifacts the node verified;
        /// the version's policy must say `[edge] allow_host_runtime = true`).
        #[arg(long, default_value = "sandbox", value_parser = ["sandbox", "host"])]
        runtime: String,
        /// Only promote if the alias is now at this version ('none': only if unset).
        #[arg(long)]
        expect: Option<String>,
    },
    /// Move a running challenger: set its weight by hand, let the canary judge decide
    /// (--auto), shadow it, or make its split sticky on a header or cookie.
    ///
    /// `--auto` looks once at the live evidence (the edge nodes' windows of the current
    /// generation and the labels under datasets/MODEL/feedback/) and, by the model's
    /// `[canary]` policy, steps the challenger up, rolls it back, or holds. Run it from cron,
    /// CI or the falaj-fn-rollout schedule; it keeps no state, so it may run at any time.
    #[command(
        after_help = "Examples:\n  falaj rollout wine --weight 50\n  falaj rollout wine --auto --json\n  falaj rollout wine --shadow\n  falaj rollout wine --split-key header:x-user-id"
    )]
    Rollout {
        /// Model name.
        model: String,
        /// Environment: prod | staging.
        #[arg(long, default_value = "prod")]
        env: String,
        /// Percentage 0-100; 100 makes the challenger the champion.
        #[arg(long, required_unless_present_any = ["auto", "shadow", "split_key"], conflicts_with_all = ["auto", "shadow"])]
        weight: Option<u32>,
        /// Let the canary judge decide the next step from live evidence.
        #[arg(long, conflicts_with_all = ["shadow", "split_key"])]
        auto: bool,
        /// Shadow mode: the champion answers everything, the challenger gets a copy.
        #[arg(long, conflicts_with = "split_key")]
        shadow: bool,
        /// Make the split sticky on `header:<name>` or `cookie:<name>` ('none' clears it).
        #[arg(long, value_name = "header:NAME|cookie:NAME")]
        split_key: Option<String>,
    },
    /// Abort a canary, or go back to the previous champion in one compare-and-swap.
    Rollback {
        /// Model name.
        model: String,
        /// Environment: prod | staging.
        #[arg(long, default_value = "prod")]
        env: String,
    },
    /// List deployments and whether each matches its aliases.
    Deployments {
        /// Rebuild diverged manifests from their aliases (after an interrupted change).
        #[arg(long)]
        repair: bool,
    },
    /// Compare the edge's input sketches with the training distribution (PSI per feature,
    /// binned KS); on drift, write a retraining request (retrain/<model>/<stamp>.json) and an
    /// audit event. Reads the sketches falaj-edge writes to telemetry/<env>/ for the version
    /// the environment serves, since the model's last retraining request.
    Drift {
        /// Model name.
        model: String,
        /// Environment: prod | staging.
        #[arg(long, default_value = "prod")]
        env: String,
        /// PSI above which a feature drifts (0.1 moderate, 0.25 large).
        #[arg(long, default_value_t = 0.25)]
        psi: f64,
        /// Binned Kolmogorov-Smirnov statistic above which a feature drifts (off by default).
        #[arg(long)]
        ks: Option<f64>,
        /// Fewer rows than this decide nothing.
        #[arg(long, default_value_t = 200)]
        min_rows: u64,
    },
    /// Attach a gate policy to a model.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Grant and list roles (viewer, data-scientist, ml-engineer, approver, admin), and map
    /// AWS principals to identities.
    #[command(subcommand)]
    Roles(RolesCmd),
    /// Write the training manifest of a model trained elsewhere (PyTorch, scikit-learn).
    #[command(subcommand)]
    Manifest(ManifestCmd),
    /// Pin a CI platform's OIDC signing keys in the store (keys/oidc/<host>.json), which the
    /// webhook verifies CI tokens against, offline.
    #[command(subcommand)]
    Oidc(OidcCmd),
    /// Print the identity this command line acts as and the roles the store gives it.
    ///
    /// On an s3:// store it is who AWS says you are: STS GetCallerIdentity's ARN, mapped to
    /// an identity by roles.json (`falaj roles map ARN IDENTITY`); `verified` is true. On a
    /// dir:// store it is `--as` (or FALAJ_IDENTITY), else $USER, and `verified` is false.
    Whoami,
    /// Run the serverless flow on this machine: the webhook API on loopback, and a watcher
    /// that registers uploads to incoming/, validates them and stages them per policy.
    ///
    /// Uploads (model.onnx, then manifest.json, under incoming/<model>/<run>/) go through the
    /// same ingest and validate handlers as the Lambda functions. The webhook needs a
    /// configuration of CI secrets and token digests (docs/webhook.md); without one only
    /// /v1/health answers. Signing uses the local deployment key (FALAJ_SIGNING_KEY).
    ///
    /// MLflow clients use the same port: MLFLOW_TRACKING_URI=http://<listen> with
    /// MLFLOW_TRACKING_TOKEN set to a configured bearer token logs runs and registers models
    /// as falaj versions; production is still decided by the gates and approvals
    /// (docs/mlflow.md).
    ///
    /// The registry console is on the same port too: http://<listen>/ui/, signed in with a
    /// configured bearer token. Approvers see each version's evidence there (gates, fairness,
    /// training curve, lineage, audit) and approve, reject or promote through the same checks
    /// (docs/console.md).
    ///
    /// Connection limits: a client must send a request's headers within
    /// FALAJ_HTTP_HEADER_TIMEOUT_MS (default 10000) and at most FALAJ_HTTP_MAX_CONNECTIONS
    /// (default 512) connections are served at once; others wait for a slot.
    Serve {
        /// Address to listen on (loopback by default; port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8787", env = "FALAJ_LISTEN")]
        listen: std::net::SocketAddr,
        /// Webhook configuration (TOML or JSON): CI secrets, token digests, limits.
        #[arg(long, env = "FALAJ_WEBHOOK_CONFIG")]
        webhook_config: Option<std::path::PathBuf>,
        /// How often to look for new uploads, in milliseconds.
        #[arg(long, default_value_t = 500)]
        poll_ms: u64,
        /// Handle what is in incoming/ and retrain/ now, then exit (no HTTP).
        #[arg(long)]
        once: bool,
        /// The falaj-train binary that retraining requests run [default: next to falaj].
        #[arg(long, env = "FALAJ_TRAINER")]
        trainer: Option<PathBuf>,
        /// Where retraining runs write their outputs and logs.
        #[arg(long, default_value = "target/retrain")]
        retrain_dir: PathBuf,
        /// Leave retraining requests to another consumer (in AWS: the Batch rule).
        #[arg(long)]
        no_retrain: bool,
    },
    /// Run the whole loop on this machine, printing each step: train → incoming/ → ingest →
    /// gates → two approvals → production → falaj-edge serves the WASM component →
    /// predictions → shifted traffic → drift → retraining request → retrain → gates.
    ///
    /// Needs falaj-train and falaj-edge (built beside falaj by `cargo build --workspace
    /// --bins`) and the inference component (scripts/wasm-component.sh); `bash
    /// scripts/demo.sh` builds all three and runs this. Re-running adds versions to the same
    /// store (a canary then goes out); --clean starts from an empty store.
    #[command(
        after_help = "Examples:\n  falaj demo                       # on dir://.falaj\n  falaj demo --clean --epochs 15   # afresh, quicker\n  falaj --store dir:///tmp/d --json demo   # JSON lines, e.g. for CI"
    )]
    Demo {
        /// Remove the store (dir:// only) and the demo's work directory first.
        #[arg(long)]
        clean: bool,
        /// Training epochs (the retrain repeats them).
        #[arg(long, default_value_t = 30, env = "FALAJ_DEMO_EPOCHS")]
        epochs: usize,
        /// Model name.
        #[arg(long, default_value = "breast-cancer", env = "FALAJ_DEMO_MODEL")]
        model: String,
        /// Run outputs, logs and the edge's cache.
        #[arg(long, default_value = "target/demo")]
        work_dir: PathBuf,
        /// The falaj-train binary [default: next to falaj].
        #[arg(long, env = "FALAJ_TRAINER")]
        trainer: Option<PathBuf>,
        /// The falaj-edge binary [default: next to falaj].
        #[arg(long, env = "FALAJ_EDGE")]
        edge: Option<PathBuf>,
        /// The inference component.
        #[arg(
            long,
            env = "FALAJ_EDGE_COMPONENT",
            default_value = "target/wasm/falaj-inference.wasm"
        )]
        component: PathBuf,
        /// Compiled-component cache shared with other falaj-edge nodes on this machine.
        #[arg(long, env = "FALAJ_EDGE_CODE_CACHE")]
        code_cache: Option<PathBuf>,
        /// Rows of shifted traffic to send.
        #[arg(long, default_value_t = 400)]
        shifted_rows: usize,
        /// Factor on the size features of the shifted traffic.
        #[arg(long, default_value_t = 1.6)]
        shift: f64,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    /// Check and attach a policy file (TOML) to a model.
    Set {
        /// Model name.
        model: String,
        /// Policy file.
        file: PathBuf,
    },
    /// Print a model's policy.
    Show {
        /// Model name.
        model: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ManifestCmd {
    /// Write manifest.json for MODEL.onnx from its signature and a holdout CSV's header.
    ///
    /// The features are the holdout's columns other than --target, in header order, and must
    /// be as many as the model's input width; a classifier's output width must equal its
    /// number of classes (the target's values, sorted, unless --classes gives them in the
    /// model's output order), a regressor's must be 1. The model must take one float input
    /// [batch, features] of raw (unscaled) features and give one float output. What disagrees
    /// is named. docs/manifest.md describes every field.
    #[command(after_help = "Examples:
  falaj manifest init model.onnx --model clinic --holdout holdout.csv --target diagnosis --out manifest.json
  falaj manifest init model.onnx --model price --holdout test.csv --target price --task regression --param lr=0.01 --code-commit $(git rev-parse HEAD)")]
    Init {
        /// The ONNX file.
        file: PathBuf,
        #[command(flatten)]
        spec: ManifestSpec,
        /// Model name recorded in the manifest.
        #[arg(long)]
        model: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// How to write a manifest for a model trained elsewhere (`manifest init`, `push`).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ManifestSpec {
    /// Holdout CSV with a header: the model's features and the target.
    #[arg(long)]
    pub(crate) holdout: Option<PathBuf>,
    /// The column the model predicts.
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// classification or regression (default: from the output width).
    #[arg(long)]
    pub(crate) task: Option<String>,
    /// Class names in the model's output order, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) classes: Option<Vec<String>>,
    /// The training dataset's URI, recorded as lineage.
    #[arg(long)]
    pub(crate) dataset: Option<String>,
    /// The region that dataset is stored in (the residency gate refuses a remote dataset
    /// without one).
    #[arg(long, requires = "dataset")]
    pub(crate) dataset_region: Option<String>,
    /// The code commit that trained it.
    #[arg(long)]
    pub(crate) code_commit: Option<String>,
    /// A hyperparameter, KEY=VALUE (repeatable).
    #[arg(long = "param", value_parser = parse_kv)]
    pub(crate) params: Vec<(String, String)>,
    /// Image models: resize the shorter side to this many pixels before the centre crop (the
    /// crop is the model's H x W).
    #[arg(long)]
    pub(crate) image_resize: Option<u32>,
    /// Image models: multiply 0-255 values by this (default 1/255).
    #[arg(long)]
    pub(crate) image_scale: Option<f32>,
    /// Image models: per-channel mean after scaling, e.g. 0.485,0.456,0.406.
    #[arg(long, value_delimiter = ',')]
    pub(crate) image_mean: Vec<f32>,
    /// Image models: per-channel std, e.g. 0.229,0.224,0.225.
    #[arg(long, value_delimiter = ',')]
    pub(crate) image_std: Vec<f32>,
    /// Image models: rgb (default) or bgr.
    #[arg(long)]
    pub(crate) channel_order: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum OidcCmd {
    /// Fetch ISSUER's JSON Web Key Set once and pin it (admins only; audited).
    ///
    /// By default the set is found through ISSUER/.well-known/openid-configuration (its
    /// `issuer` must be ISSUER exactly; its `jwks_uri` must be https). Run it again when the
    /// platform rotates its keys: the audit event lists the key ids before and after. Only
    /// RS256 signing keys with a kid are kept.
    #[command(
        after_help = "Examples:\n  falaj oidc refresh https://token.actions.githubusercontent.com\n  falaj oidc refresh https://gitlab.example.com\n  falaj oidc refresh https://gitlab.example.com --jwks-file keys.json   # air-gapped"
    )]
    Refresh {
        /// The issuer, exactly as tokens name it in `iss`.
        issuer: String,
        /// Fetch the key set from this URL instead of the discovery document's `jwks_uri`
        /// (https; http only on loopback, for a local mirror).
        #[arg(long, conflicts_with = "jwks_file")]
        jwks_url: Option<String>,
        /// Read the key set from this file instead of fetching it.
        #[arg(long)]
        jwks_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum RolesCmd {
    /// Grant ROLE to IDENTITY (admins only; the first grant in a store makes the caller admin).
    Grant {
        /// Identity to grant the role to.
        #[arg(value_name = "IDENTITY")]
        who: String,
        /// Role.
        role: String,
    },
    /// Map a verified principal (an AWS ARN, as `aws sts get-caller-identity` prints it) to
    /// the identity it acts as on an s3:// store (admins only).
    ///
    /// Map each person's own session ARN, e.g.
    /// arn:aws:sts::123456789012:assumed-role/falaj-approver/ann, and make the role's trust
    /// policy (or IAM Identity Center) fix the session name to the person, so that nobody can
    /// pick someone else's.
    Map {
        /// The ARN STS returns for the person.
        principal: String,
        /// The identity it acts as.
        #[arg(value_name = "IDENTITY")]
        mapped_to: String,
    },
    /// List role bindings (and mapped principals).
    List,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ModelCmd {
    /// Register a new model name.
    Create(CreateArgs),
    /// Show a model.
    Show {
        /// Model name.
        name: String,
    },
    /// List models.
    List,
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    /// Model name: 1-64 chars of a-z, 0-9, '-', '_', '.'.
    pub(crate) name: String,
    /// Free text.
    #[arg(long, default_value = "")]
    pub(crate) description: String,
    /// Owning team or person.
    #[arg(long, default_value = "")]
    pub(crate) owner: String,
    /// Tag KEY=VALUE, repeatable.
    #[arg(long = "tag", value_parser = parse_kv)]
    pub(crate) tags: Vec<(String, String)>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AliasCmd {
    /// Point an alias at a version (compare-and-swap).
    Set {
        /// Model name.
        model: String,
        /// Alias name.
        alias: String,
        /// Version number.
        version: u64,
        /// Only move if the alias is now at this version ('none': only if unset).
        #[arg(long)]
        expect: Option<String>,
    },
    /// Remove an alias (kept as a tombstone; the move is audited).
    Rm {
        /// Model name.
        model: String,
        /// Alias name.
        alias: String,
        /// Only remove if the alias is now at this version.
        #[arg(long)]
        expect: Option<u64>,
    },
    /// List a model's aliases.
    List {
        /// Model name.
        model: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ResidencyCmd {
    /// Check Terraform sources for resources or regions outside the allowed list.
    #[command(after_help = "Example:\n  falaj residency check terraform/")]
    Check {
        /// Directory with .tf files (searched recursively).
        dir: PathBuf,
    },
}

pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}
