//! The gates: `validate` and `policy`.

use crate::args::*;
use crate::context::{actor, parse_ref, registry};
use crate::failure::*;
use crate::output::*;

/// Runs one command of this group (`main` sends only these here).
pub(crate) async fn run(cli: &Cli, out: &Out) -> Result<(), Failure> {
    match &cli.command {
        Command::Validate {
            reference,
            data,
            policy,
        } => {
            let r = parse_ref(reference)?;
            let reg = registry(cli, false).await?;
            let me = actor(cli, &reg).await?.identity;
            let v = reg.resolve(&r).await?;
            let policy = match policy {
                Some(p) => Some((
                    p.display().to_string(),
                    std::fs::read_to_string(p).map_err(|e| {
                        fail(
                            "invalid_policy",
                            1,
                            format!("cannot read policy {}: {e}", p.display()),
                        )
                    })?,
                )),
                None => None,
            };
            let report = falaj_gates::validate(
                &reg,
                falaj::reports::Validation {
                    model: v.model.clone(),
                    version: v.version,
                    holdout: falaj::reports::Holdout::parse(data)?,
                    policy,
                    actor: me.clone(),
                },
            )
            .await?;
            out.print(&report, || report_text(&report));
            if !report.passed {
                return Err(fail(
                    "gates_failed",
                    6,
                    format!(
                        "{}@{} is rejected: {} gate(s) failed{}",
                        report.model,
                        report.version,
                        report.failures().len(),
                        report
                            .error
                            .as_ref()
                            .map_or(String::new(), |e| format!(" ({e})"))
                    ),
                ));
            }
        }
        Command::Policy(PolicyCmd::Set { model, file }) => {
            let src = std::fs::read_to_string(file).map_err(|e| {
                fail(
                    "invalid_policy",
                    1,
                    format!("cannot read policy {}: {e}", file.display()),
                )
            })?;
            let reg = registry(cli, false).await?;
            let me = actor(cli, &reg).await?.identity;
            let p =
                falaj::promotion::set_policy(&reg, model, &file.display().to_string(), &src, &me)
                    .await?;
            out.print(&p, || format!("attached {} to {model}", file.display()));
        }
        Command::Policy(PolicyCmd::Show { model }) => {
            let reg = registry(cli, false).await?;
            let rec = reg.model(model).await?;
            let src = rec.gate_policy.unwrap_or_default();
            out.print(&serde_json::json!({"model": model, "policy": src}), || {
                if src.is_empty() {
                    format!("{model} has no gate policy; attach one with `falaj policy set {model} gates.toml`")
                } else {
                    src.trim_end().to_string()
                }
            });
        }
        _ => unreachable!("main sends only this group's commands here"),
    }
    Ok(())
}
