//! The gates: `validate` and `policy`.

use crate::args::*;
use crate::context::{actor, parse_ref, registry};
use crate::failure::*;
use crate::output::*;

/// The manifest `spec` describes for the ONNX `file` of `model`, or `None` when it names no
/// holdout and no target (then the user gives a manifest, or none).
pub(crate) fn manifest_from_spec(
    file: &std::path::Path,
    model: &str,
    spec: &ManifestSpec,
) -> Result<Option<falaj_core::manifest::TrainingManifest>, Failure> {
    let (holdout, target) = match (&spec.holdout, &spec.target) {
        (None, None) => return Ok(None),
        (Some(h), Some(t)) => (h, t.clone()),
        // An image holdout holds its labels as y.
        (Some(h), None) if h.extension().is_some_and(|e| e == "npz") => (h, String::new()),
        (Some(_), None) => {
            return Err(fail(
                "invalid_manifest",
                2,
                "--holdout needs --target: the column the model predicts (an .npz image holdout needs none)",
            ));
        }
        (None, Some(_)) => {
            return Err(fail(
                "invalid_manifest",
                2,
                "--target needs --holdout: a CSV with the model's features and the target",
            ));
        }
    };
    let task = match spec.task.as_deref() {
        None => None,
        Some("classification") => Some(falaj_core::manifest::Task::Classification),
        Some("regression") => Some(falaj_core::manifest::Task::Regression),
        Some(other) => {
            return Err(fail(
                "invalid_manifest",
                2,
                format!("unknown task {other:?}: use classification or regression"),
            ));
        }
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| {
            fail(
                "invalid_manifest",
                1,
                format!("cannot read {}: {e}", p.display()),
            )
        })
    };
    let lineage = falaj_core::version::Lineage {
        datasets: spec
            .dataset
            .iter()
            .map(|uri| falaj_core::version::DatasetRef {
                uri: uri.clone(),
                digest: String::new(),
                region: spec.dataset_region.clone(),
            })
            .collect(),
        code_commit: spec.code_commit.clone(),
        hyperparameters: spec
            .params
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect(),
        ..Default::default()
    };
    let channel_order = match spec.channel_order.as_deref() {
        None | Some("rgb") => falaj_core::image::ChannelOrder::Rgb,
        Some("bgr") => falaj_core::image::ChannelOrder::Bgr,
        Some(other) => {
            return Err(fail(
                "invalid_manifest",
                2,
                format!("unknown channel order {other:?}: use rgb or bgr"),
            ));
        }
    };
    let image = falaj_gates::ImageRule {
        resize: spec.image_resize,
        scale: spec.image_scale,
        mean: spec.image_mean.clone(),
        std: spec.image_std.clone(),
        channel_order,
    };
    falaj_gates::init_manifest(
        &read(file)?,
        &read(holdout)?,
        &holdout.display().to_string(),
        falaj_gates::ManifestInit {
            model: model.into(),
            target,
            task,
            classes: spec.classes.clone(),
            lineage,
            semver: None,
            image,
        },
    )
    .map(Some)
    .map_err(|e| fail("invalid_manifest", 1, format!("{}: {e}", file.display())))
}

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
        Command::Manifest(ManifestCmd::Init {
            file,
            spec,
            model,
            out: dest,
        }) => {
            if spec.holdout.is_none() {
                return Err(fail(
                    "invalid_manifest",
                    2,
                    "manifest init needs --holdout: FILE.csv with --target COLUMN, or an image holdout FILE.npz",
                ));
            }
            let m = manifest_from_spec(file, model, spec)?.expect("a holdout was given");
            let text = serde_json::to_string_pretty(&m).expect("a manifest serialises");
            match dest {
                Some(p) => {
                    std::fs::write(p, format!("{text}\n")).map_err(|e| {
                        fail(
                            "invalid_manifest",
                            1,
                            format!("cannot write {}: {e}", p.display()),
                        )
                    })?;
                    out.print(&m, || {
                        format!(
                            "wrote {}: {} {:?}, {} features, target {:?}{}",
                            p.display(),
                            m.model,
                            m.task,
                            m.features.len(),
                            m.target,
                            if m.classes.is_empty() {
                                String::new()
                            } else {
                                format!(", classes {}", m.classes.join(", "))
                            }
                        )
                    });
                }
                None => println!("{text}"),
            }
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
