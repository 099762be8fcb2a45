//! What every command reads: who is asking, the store, the signing key, and references as
//! typed on the command line.

use falaj::Registry;
use falaj::store::{self, OpenOptions};
use falaj_core::AllowedRegions;
use falaj_core::promotion::{Actor, Role};
use falaj_core::version::ModelRef;

use crate::args::Cli;
use crate::failure::{Failure, fail};

/// The identity typed for a command: `--as` (or FALAJ_IDENTITY), else `$USER`, and where it
/// came from.
fn typed_identity(cli: &Cli) -> (String, &'static str) {
    if let Some(id) = cli.identity.clone().filter(|s| !s.is_empty()) {
        return (id, "--as");
    }
    match std::env::var("USER").ok().filter(|s| !s.is_empty()) {
        Some(u) => (u, "$USER"),
        None => ("local-user".into(), "default"),
    }
}

/// Who a command acts as, and who vouched for it.
pub(crate) struct Caller {
    /// Identity, principal, verified.
    pub(crate) actor: Actor,
    /// Where the identity came from: `sts`, `--as`, `$USER` or `default`.
    pub(crate) from: &'static str,
    /// Something the person should know (printed on stderr in text mode).
    pub(crate) note: Option<String>,
}

/// Who the command line acts as.
///
/// On a `dir://` store (one machine) it is what is typed, `--as` or `$USER`, and nothing
/// vouches for it. On an `s3://` store it is who AWS says the caller is: STS
/// `GetCallerIdentity`'s ARN, mapped to an identity by `roles.json`. There `--as` is refused
/// unless the mapped identity is admin, and even then the ARN stays the principal, so an
/// admin's approval under another name still counts as the admin's. Until `roles.json`
/// exists, an unmapped ARN may act (as `--as`, else its session or user name) so the first
/// `falaj roles grant` can bootstrap the store and map it.
pub(crate) async fn caller(cli: &Cli, reg: &Registry) -> Result<Caller, Failure> {
    let (typed, from) = typed_identity(cli);
    if !cli.store.starts_with("s3://") {
        let note = (from == "--as").then(|| {
            "identities are not verified on a dir:// store (one-machine use): --as is taken as typed"
                .to_string()
        });
        return Ok(Caller {
            actor: Actor::unverified(typed),
            from,
            note,
        });
    }
    let arn = caller_arn().await?;
    let bindings = falaj::promotion::roles(reg).await?;
    let bootstrap = bindings.bindings.is_empty() && bindings.principals.is_empty();
    let mapped = match bindings.identity_of(&arn) {
        Some(id) => id.to_string(),
        None if bootstrap => {
            let id = if from == "--as" {
                typed.clone()
            } else {
                arn_name(&arn)
            };
            return Ok(Caller {
                actor: Actor::verified(id, arn.clone()),
                from: "sts",
                note: Some(format!(
                    "this store has no roles.json yet: the first `falaj roles grant` makes you admin and maps {arn} to your identity"
                )),
            });
        }
        None => {
            return Err(fail(
                "unknown_principal",
                6,
                format!(
                    "AWS says you are {arn}, and this store's roles.json maps no identity to it; ask an admin to run `falaj roles map {arn} IDENTITY`"
                ),
            ));
        }
    };
    if from != "--as" || typed == mapped {
        return Ok(Caller {
            actor: Actor::verified(mapped, arn),
            from: "sts",
            note: None,
        });
    }
    if !bindings.has(&mapped, Role::Admin) {
        return Err(fail(
            "forbidden",
            6,
            format!(
                "--as {typed} is refused on an s3:// store: AWS says you are {arn} ({mapped}), and only an admin may act as another identity; drop --as (and FALAJ_IDENTITY)"
            ),
        ));
    }
    Ok(Caller {
        note: Some(format!(
            "{mapped} (admin, {arn}) acts as {typed}; approvals and authorship still count as {arn}"
        )),
        actor: Actor::verified(typed, arn),
        from: "--as",
    })
}

/// The identity a command acts as (see [`caller`]); a note is printed on stderr.
pub(crate) async fn actor(cli: &Cli, reg: &Registry) -> Result<Actor, Failure> {
    let c = caller(cli, reg).await?;
    if let (Some(n), false) = (&c.note, cli.json) {
        eprintln!("note: {n}");
    }
    Ok(c.actor)
}

/// The caller's ARN, from STS `GetCallerIdentity` (endpoint: `FALAJ_STS_ENDPOINT`, else the
/// S3 endpoint override, else AWS's regional endpoint).
async fn caller_arn() -> Result<String, Failure> {
    let region = aws_config::meta::region::RegionProviderChain::default_provider().or_else(
        aws_config::Region::new(falaj_core::residency::DEFAULT_ALLOWED[0]),
    );
    let mut conf = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(region);
    let endpoint = ["FALAJ_STS_ENDPOINT", "FALAJ_S3_ENDPOINT"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    if let Some(ep) = &endpoint {
        conf = conf.endpoint_url(ep);
    }
    let sts = aws_sdk_sts::Client::new(&conf.load().await);
    let out = sts.get_caller_identity().send().await.map_err(|e| {
        fail(
            "no_identity",
            1,
            format!(
                "could not ask AWS STS who you are ({}: {}); on an s3:// store falaj acts as the caller AWS names. Sign in (aws sso login, or AWS_PROFILE), or point FALAJ_STS_ENDPOINT at your STS",
                endpoint.as_deref().unwrap_or("AWS STS"),
                aws_sdk_sts::error::DisplayErrorContext(&e)
            ),
        )
    })?;
    out.arn.ok_or_else(|| {
        fail(
            "no_identity",
            1,
            "AWS STS answered GetCallerIdentity without an ARN",
        )
    })
}

/// A readable name for an unmapped ARN: an assumed role's session name, a user's name.
fn arn_name(arn: &str) -> String {
    let name = arn.rsplit(['/', ':']).next().unwrap_or(arn);
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@+-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        "aws-user".into()
    } else {
        clean
    }
}

/// The deployment signing key (`FALAJ_SIGNING_KEY`, else the default path), created once.
pub(crate) fn signing_key() -> Result<falaj::deploy::DeployKey, Failure> {
    Ok(falaj::deploy::DeployKey::load_or_create(
        &falaj::deploy::DeployKey::default_path(),
    )?)
}

/// `staging` or `production`.
pub(crate) fn parse_stage(s: &str) -> Result<falaj_core::promotion::Stage, Failure> {
    falaj_core::promotion::Stage::parse(s).ok_or_else(|| {
        fail(
            "invalid_name",
            2,
            format!("unknown stage {s:?}: use staging or production"),
        )
    })
}

/// The version number of `MODEL@N` (an alias is refused where a number is needed).
pub(crate) fn numbered(r: &ModelRef) -> Result<u64, Failure> {
    match r.version {
        falaj_core::version::VersionRef::Number(n) => Ok(n),
        _ => Err(fail(
            "invalid_name",
            2,
            format!("{r}: give a version number, MODEL@N"),
        )),
    }
}

/// `MODEL@N`, `MODEL@ALIAS` or `MODEL`.
pub(crate) fn parse_ref(s: &str) -> Result<ModelRef, Failure> {
    s.parse::<ModelRef>().map_err(|e| {
        fail(
            "invalid_name",
            2,
            format!("{e} (expected MODEL@N, MODEL@ALIAS or MODEL)"),
        )
    })
}

/// The registry of `--store`; `create` makes a `dir://` store that does not exist yet.
pub(crate) async fn registry(cli: &Cli, create: bool) -> Result<Registry, Failure> {
    let opts = OpenOptions {
        allowed: AllowedRegions::parse(&cli.allowed_regions),
        create,
        endpoint: None,
    };
    Ok(Registry::new(store::open(&cli.store, &opts).await?))
}
