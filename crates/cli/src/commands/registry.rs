//! Models, versions, aliases, tags and the audit chain: `model`, `push`, `versions`, `show`, `alias`, `tag`, `audit`.

use falaj::{Artifact, Expect, NewModel, Registration, RegistryError, VersionFilter};

use crate::args::*;
use crate::context::{actor, parse_ref, registry};
use crate::failure::*;
use crate::output::*;

/// Runs one command of this group (`main` sends only these here).
pub(crate) async fn run(cli: &Cli, out: &Out) -> Result<(), Failure> {
    match &cli.command {
        Command::Model(ModelCmd::Create(a)) => {
            let reg = registry(cli, true).await?;
            let me = actor(cli, &reg).await?.identity;
            let rec = reg
                .create_model(
                    NewModel {
                        name: a.name.clone(),
                        description: a.description.clone(),
                        owner: a.owner.clone(),
                        tags: a.tags.iter().cloned().collect(),
                    },
                    &me,
                )
                .await?;
            out.print(&rec, || {
                format!("created model {} in {}", rec.name, cli.store)
            });
        }
        Command::Model(ModelCmd::Show { name }) => {
            let reg = registry(cli, false).await?;
            let rec = reg.model(name).await?;
            let latest = reg.latest_version(name).await?;
            let aliases = reg.aliases(name).await?;
            let view =
                serde_json::json!({"model": rec, "latest_version": latest, "aliases": aliases});
            out.print(&view, || {
                let mut s = format!(
                    "{}\n  description  {}\n  owner        {}\n  created      {} by {}\n  versions     {}\n",
                    rec.name, rec.description, rec.owner, rec.created_at, rec.created_by, latest
                );
                for a in &aliases {
                    s += &format!("  alias        {} -> {}\n", a.alias, a.version.unwrap_or(0));
                }
                for (k, v) in &rec.tags {
                    s += &format!("  tag          {k}={v}\n");
                }
                s.trim_end().into()
            });
        }
        Command::Model(ModelCmd::List) => {
            let reg = registry(cli, false).await?;
            let models = reg.models().await?;
            out.print(&models, || {
                if models.is_empty() {
                    return "no models yet; create one with `falaj model create NAME`".into();
                }
                models
                    .iter()
                    .map(|m| format!("{:<24} {:<16} {}", m.name, m.owner, m.description))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Push {
            model,
            file,
            manifest,
            semver,
            create,
            spec,
        } => {
            let reg = registry(cli, true).await?;
            let actor = actor(cli, &reg).await?;
            let me = actor.identity.clone();
            if *create
                && matches!(
                    reg.model(model).await,
                    Err(RegistryError::ModelNotFound { .. })
                )
            {
                reg.create_model(
                    NewModel {
                        name: model.clone(),
                        ..Default::default()
                    },
                    &me,
                )
                .await?;
            }
            let manifest = match manifest {
                Some(p) => Some((
                    p.display().to_string(),
                    bytes::Bytes::from(std::fs::read(p).map_err(|e| {
                        fail(
                            "invalid_manifest",
                            1,
                            format!("cannot read manifest {}: {e}", p.display()),
                        )
                    })?),
                )),
                None => crate::commands::gates::manifest_from_spec(file, model, spec)?.map(|m| {
                    (
                        "manifest written from --holdout and --target".to_string(),
                        bytes::Bytes::from(serde_json::to_vec(&m).expect("a manifest serialises")),
                    )
                }),
            };
            if !file.is_file() {
                return Err(fail(
                    "invalid_artifact",
                    1,
                    format!("{} is not a file", file.display()),
                ));
            }
            let (progress, bar) = progress_bar(file, !cli.json);
            let started = std::time::Instant::now();
            let r = falaj::access::register(
                &reg,
                Registration {
                    model: model.clone(),
                    artifact: Artifact::File(file.clone()),
                    artifact_name: file.display().to_string(),
                    manifest,
                    semver: semver.clone(),
                    author: me.clone(),
                    author_principal: actor.verified.then(|| actor.principal.clone()),
                    source: Some(file.display().to_string()),
                },
                progress,
            )
            .await;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let r = r?;
            out.print(&r, || {
                format!(
                    "registered {}@{} ({}, {}{}) in {:.2}s",
                    r.version.model,
                    r.version.version,
                    r.version.digest,
                    human_size(r.version.size),
                    if r.blob_created {
                        ""
                    } else {
                        ", artifact already stored"
                    },
                    started.elapsed().as_secs_f64()
                )
            });
        }
        Command::Versions {
            model,
            tags,
            author,
        } => {
            let reg = registry(cli, false).await?;
            let vs = reg
                .versions(
                    model,
                    &VersionFilter {
                        tags: tags.clone(),
                        author: author.clone(),
                    },
                )
                .await?;
            out.print(&vs, || {
                if vs.is_empty() {
                    return format!(
                        "no versions match; register one with `falaj push {model} model.onnx`"
                    );
                }
                let mut s = format!(
                    "{:>4}  {:<10} {:<12}  {:>10}  {:<16} {}\n",
                    "N", "SEMVER", "DIGEST", "SIZE", "AUTHOR", "CREATED"
                );
                s += &vs.iter().map(version_line).collect::<Vec<_>>().join("\n");
                s
            });
        }
        Command::Show { reference } => {
            let r = parse_ref(reference)?;
            let reg = registry(cli, false).await?;
            let v = reg.resolve(&r).await?;
            let tags = reg.version_tags(&v.model, v.version).await?;
            let report = falaj::reports::latest_report(&reg, &v.model, v.version).await?;
            let state = falaj::promotion::version_state(&reg, &v.model, v.version).await?;
            let view = serde_json::json!({"version": v, "tags": tags, "state": state, "gate_report": report});
            out.print(&view, || {
                let mut s = show_version(&v, &tags);
                s += &format!("\n  state     {state}");
                if let Some(r) = &report {
                    s += &format!("\n{}", report_text(r));
                }
                s
            });
        }
        Command::Alias(AliasCmd::Set {
            model,
            alias,
            version,
            expect,
        }) => {
            let expect = match expect.as_deref() {
                None => Expect::Any,
                Some("none") => Expect::Absent,
                Some(n) => Expect::Version(n.parse().map_err(|_| {
                    fail(
                        "invalid_name",
                        2,
                        format!("--expect takes a version number or 'none', got {n:?}"),
                    )
                })?),
            };
            let reg = registry(cli, false).await?;
            let me = actor(cli, &reg).await?.identity;
            let rec = reg
                .move_alias(model, alias, Some(*version), expect, &me)
                .await?;
            out.print(&rec, || {
                format!(
                    "{model}@{alias} -> {version} (was {}, generation {})",
                    rec.previous.map_or("unset".into(), |p| p.to_string()),
                    rec.generation
                )
            });
        }
        Command::Alias(AliasCmd::Rm {
            model,
            alias,
            expect,
        }) => {
            let reg = registry(cli, false).await?;
            let me = actor(cli, &reg).await?.identity;
            let rec = reg
                .move_alias(
                    model,
                    alias,
                    None,
                    expect.map_or(Expect::Any, Expect::Version),
                    &me,
                )
                .await?;
            out.print(&rec, || {
                format!(
                    "removed {model}@{alias} (was {})",
                    rec.previous.unwrap_or(0)
                )
            });
        }
        Command::Alias(AliasCmd::List { model }) => {
            let reg = registry(cli, false).await?;
            let aliases = reg.aliases(model).await?;
            out.print(&aliases, || {
                aliases
                    .iter()
                    .map(|a| {
                        format!(
                            "{:<16} -> {:<4} (generation {}, moved by {} at {})",
                            a.alias,
                            a.version.unwrap_or(0),
                            a.generation,
                            a.moved_by,
                            a.moved_at
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Tag {
            reference,
            set,
            remove,
        } => {
            if set.is_empty() && remove.is_empty() {
                return Err(fail(
                    "invalid_name",
                    2,
                    "nothing to do: give KEY=VALUE pairs and/or --rm KEY",
                ));
            }
            let r = parse_ref(reference)?;
            let reg = registry(cli, false).await?;
            let me = actor(cli, &reg).await?.identity;
            let tags = match r.version {
                falaj_core::version::VersionRef::Latest if !reference.contains('@') => {
                    reg.tag_model(&r.model, set, remove, &me).await?.tags
                }
                _ => {
                    let v = reg.resolve(&r).await?;
                    reg.tag_version(&v.model, v.version, set, remove, &me)
                        .await?
                }
            };
            out.print(&tags, || {
                tags.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Audit { model, verify } => {
            let reg = registry(cli, false).await?;
            // `_roles` is the store-wide chain (role grants, principal maps, OIDC key pins).
            if model != falaj::promotion::ROLES_AUDIT {
                reg.model(model).await?;
            }
            if *verify {
                let (problems, rolled) = reg.verify_audit_settled(model).await?;
                let n = reg.audit_events(model).await?.len();
                let msgs: Vec<String> = problems.iter().map(ToString::to_string).collect();
                out.print(&serde_json::json!({"model": model, "events": n, "ok": problems.is_empty(), "problems": msgs, "rolled_forward": rolled}), || {
                    let mut text = rolled
                        .iter()
                        .map(|k| format!("rolled forward {k}: its audit event was written but the object was not (a writer stopped between the two)\n"))
                        .collect::<String>();
                    if problems.is_empty() {
                        text += &format!("audit chain of {model} intact: {n} events, every alias, approval, archive marker and deployment explained");
                    } else {
                        text += &format!("audit chain of {model} is BROKEN:\n  {}", msgs.join("\n  "));
                    }
                    text
                });
                if !problems.is_empty() {
                    return Err(fail(
                        "audit_broken",
                        5,
                        format!(
                            "{} problem(s) in the audit chain of {model}",
                            problems.len()
                        ),
                    ));
                }
            } else {
                let events: Vec<_> = reg
                    .audit_events(model)
                    .await?
                    .into_iter()
                    .map(|(_, _, e)| e)
                    .collect();
                out.print(&events, || {
                    events
                        .iter()
                        .map(|e| {
                            format!(
                                "{:>5}  {}  {:<16} {:<20} {}  {}",
                                e.seq, e.at, e.actor, e.action, e.subject, e.details
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            }
        }
        _ => unreachable!("main sends only this group's commands here"),
    }
    Ok(())
}
