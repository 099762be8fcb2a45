//! What every command reads: who is asking, the store, the signing key, and references as
//! typed on the command line.

use falaj::Registry;
use falaj::store::{self, OpenOptions};
use falaj_core::AllowedRegions;
use falaj_core::version::ModelRef;

use crate::args::Cli;
use crate::failure::{Failure, fail};

/// The identity a command acts as: `--as`, else `$USER`.
pub(crate) fn identity(cli: &Cli) -> String {
    cli.identity
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local-user".into())
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
