//! Approvals, promotion and deployments: `approve`, `promote`, `rollout`, `rollback`, `deployments`, `roles`.

use falaj::Expect;

use crate::args::*;
use crate::context::{actor, caller, numbered, parse_ref, parse_stage, registry, signing_key};
use crate::failure::*;
use crate::output::*;

/// The `jwks_uri` of `issuer`'s discovery document, which must name `issuer` exactly.
async fn jwks_uri(issuer: &str) -> Result<String, Failure> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc: serde_json::Value = serde_json::from_slice(&crate::fetch::get(&url).await?)
        .map_err(|e| fail("fetch_failed", 1, format!("{url} is not JSON: {e}")))?;
    if doc["issuer"] != issuer {
        return Err(fail(
            "invalid_issuer",
            1,
            format!(
                "{url} names the issuer {} , not {issuer}; give the issuer exactly as tokens name it",
                doc["issuer"]
            ),
        ));
    }
    match doc["jwks_uri"].as_str() {
        Some(u) if u.starts_with("https://") => Ok(u.to_string()),
        other => Err(fail(
            "fetch_failed",
            1,
            format!("{url} has no https jwks_uri (it says {other:?}); pass --jwks-url"),
        )),
    }
}

/// Runs one command of this group (`main` sends only these here).
pub(crate) async fn run(cli: &Cli, out: &Out) -> Result<(), Failure> {
    match &cli.command {
        Command::Approve {
            reference,
            to,
            comment,
        } => {
            let r = parse_ref(reference)?;
            let n = numbered(&r)?;
            let reg = registry(cli, false).await?;
            let me = actor(cli, &reg).await?;
            let a = falaj::promotion::approve(&reg, &r.model, n, parse_stage(to)?, comment, &me)
                .await?;
            out.print(&a, || {
                format!(
                    "{} approved {}@{} for {}",
                    a.by, a.model, a.version, a.stage
                )
            });
        }
        Command::Promote {
            reference,
            to,
            canary,
            blue_green,
            runtime,
            expect,
        } => {
            let r = parse_ref(reference)?;
            let n = numbered(&r)?;
            let expect = match expect.as_deref() {
                None => Expect::Any,
                Some("none") => Expect::Absent,
                Some(x) => Expect::Version(x.parse().map_err(|_| {
                    fail(
                        "invalid_name",
                        2,
                        format!("--expect takes a version number or 'none', got {x:?}"),
                    )
                })?),
            };
            let reg = registry(cli, false).await?;
            let me = actor(cli, &reg).await?.identity;
            let key = signing_key()?;
            let p = falaj::promotion::promote(
                &reg,
                &key,
                falaj::promotion::Promotion {
                    model: r.model.clone(),
                    version: n,
                    to: parse_stage(to)?,
                    canary: *canary,
                    blue_green: *blue_green,
                    runtime: runtime
                        .parse()
                        .map_err(|e: String| fail("invalid_name", 2, e))?,
                    expect,
                    actor: me.clone(),
                },
            )
            .await?;
            out.print(&p, || {
                let d = &p.deployment;
                let mut s = String::new();
                if let Some(r) = &p.repaired {
                    s += &format!("repaired first: {r}\n");
                }
                s += &format!(
                    "{}@{} -> {}@{}; deployment {}/{} generation {}: champion {}{}",
                    r.model,
                    p.alias.alias,
                    r.model,
                    n,
                    d.env,
                    d.model,
                    d.generation,
                    d.champion.version,
                    d.challenger.as_ref().map_or(String::new(), |c| format!(
                        ", challenger {} at {}%",
                        c.version, d.challenger_weight
                    ))
                );
                s
            });
        }
        Command::Rollout {
            model,
            env,
            weight,
            auto,
            shadow,
            split_key,
        } => {
            let reg = registry(cli, false).await?;
            let me = actor(cli, &reg).await?.identity;
            let key = signing_key()?;
            if *auto {
                let look = falaj::canary::look(&reg, &key, model, env, &me).await?;
                out.print(&look, || look_lines(&look));
                return Ok(());
            }
            let c = match (weight, shadow, split_key) {
                (Some(w), _, _) => falaj::deploy::rollout(&reg, &key, model, env, *w, &me).await?,
                (None, true, _) => falaj::deploy::shadow(&reg, &key, model, env, &me).await?,
                (None, false, Some(k)) => {
                    let k = (k != "none").then_some(k.as_str());
                    falaj::deploy::split_key(&reg, &key, model, env, k, &me).await?
                }
                (None, false, None) => unreachable!("clap requires one of them"),
            };
            out.print(&c, || deployment_line(&c.deployment, c.repaired.as_deref()));
        }
        Command::Rollback { model, env } => {
            let reg = registry(cli, false).await?;
            let me = actor(cli, &reg).await?.identity;
            let key = signing_key()?;
            let c = falaj::deploy::rollback(&reg, &key, model, env, &me).await?;
            out.print(&c, || deployment_line(&c.deployment, c.repaired.as_deref()));
        }
        Command::Deployments { repair } => {
            let reg = registry(cli, false).await?;
            if *repair {
                let me = actor(cli, &reg).await?.identity;
                let key = signing_key()?;
                for st in falaj::deploy::list(&reg).await? {
                    if st.divergence.is_some() {
                        falaj::deploy::repair_as_admin(&reg, &key, &st.model, &st.env, &me).await?;
                    }
                }
            }
            let all = falaj::deploy::list(&reg).await?;
            out.print(&all, || {
                if all.is_empty() {
                    return "no deployments yet; promote a version with `falaj promote MODEL@N --to production`".into();
                }
                all.iter()
                    .map(|st| {
                        let m = st.manifest.as_ref();
                        format!(
                            "{:<8} {:<20} gen {:<4} champion {:<4} challenger {:<8} {}",
                            st.env,
                            st.model,
                            m.map_or(0, |m| m.generation),
                            m.map_or("-".into(), |m| m.champion.version.to_string()),
                            m.and_then(|m| m.challenger.as_ref().map(|c| format!("{}@{}%", c.version, m.challenger_weight)))
                                .unwrap_or_else(|| "-".into()),
                            st.divergence
                                .as_ref()
                                .map_or("ok".to_string(), |d| format!("DIVERGED: {d} (run `falaj deployments --repair`)"))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            if all.iter().any(|s| s.divergence.is_some()) {
                return Err(fail(
                    "diverged",
                    1,
                    "a deployment differs from its aliases; run `falaj deployments --repair`",
                ));
            }
        }
        Command::Roles(RolesCmd::Grant { who, role }) => {
            let role = falaj_core::promotion::Role::parse(role).ok_or_else(|| {
                fail("invalid_name", 2, format!("unknown role {role:?}: use viewer, data-scientist, ml-engineer, approver or admin"))
            })?;
            let reg = registry(cli, true).await?;
            let me = actor(cli, &reg).await?;
            let b = falaj::promotion::grant(&reg, &me, who, role).await?;
            out.print(&b, || format!("granted {role} to {who}"));
        }
        Command::Roles(RolesCmd::Map {
            principal,
            mapped_to,
        }) => {
            let reg = registry(cli, false).await?;
            let me = actor(cli, &reg).await?;
            let b = falaj::promotion::map_principal(&reg, &me, principal, mapped_to).await?;
            out.print(&b, || format!("{principal} now acts as {mapped_to}"));
        }
        Command::Oidc(OidcCmd::Refresh {
            issuer,
            jwks_url,
            jwks_file,
        }) => {
            let reg = registry(cli, false).await?;
            let me = actor(cli, &reg).await?;
            let (from, bytes) = match (jwks_file, jwks_url) {
                (Some(f), _) => (
                    f.display().to_string(),
                    std::fs::read(f).map_err(|e| {
                        fail(
                            "invalid_keys",
                            1,
                            format!("cannot read {}: {e}", f.display()),
                        )
                    })?,
                ),
                (None, Some(u)) => (u.clone(), crate::fetch::get(u).await?),
                (None, None) => {
                    let u = jwks_uri(issuer).await?;
                    let b = crate::fetch::get(&u).await?;
                    (u, b)
                }
            };
            let p = falaj_webhook::oidc::pin_keys(&reg, &me, issuer, &from, &bytes)
                .await
                .map_err(|e| fail(e.code(), exit_for(e.code()), e.to_string()))?;
            out.print(&p, || {
                format!(
                    "pinned {} key(s) of {} at {} ({}): {}{}",
                    p.kids.len(),
                    p.issuer,
                    p.key,
                    p.digest,
                    p.kids.join(", "),
                    if p.previous.is_empty() {
                        String::new()
                    } else {
                        format!("\nbefore: {}", p.previous.join(", "))
                    }
                )
            });
        }
        Command::Roles(RolesCmd::List) => {
            let reg = registry(cli, false).await?;
            let b = falaj::promotion::roles(&reg).await?;
            out.print(&b, || {
                let roles = b.bindings.iter().map(|(w, rs)| {
                    format!(
                        "{w:<24} {}",
                        rs.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
                    )
                });
                let principals = b
                    .principals
                    .iter()
                    .map(|(p, id)| format!("{id:<24} <- {p}"));
                roles.chain(principals).collect::<Vec<_>>().join("\n")
            });
        }
        Command::Whoami => {
            let reg = registry(cli, false).await?;
            let c = caller(cli, &reg).await?;
            let bindings = falaj::promotion::roles(&reg).await?;
            let me = &c.actor.identity;
            let roles: Vec<&str> = bindings.roles_of(me).iter().map(|r| r.name()).collect();
            let v = serde_json::json!({
                "identity": me,
                "principal": c.actor.principal,
                "verified": c.actor.verified,
                "roles": roles,
                "from": c.from,
                "note": c.note,
                "store": cli.store,
            });
            out.print(&v, || {
                let how = if c.actor.verified {
                    format!("verified: AWS says {}", c.actor.principal)
                } else {
                    format!("from {}, not verified", c.from)
                };
                let mut text = format!(
                    "{me} ({how}) in {}\nroles: {}",
                    cli.store,
                    if roles.is_empty() {
                        "none: ask an admin for one with `falaj roles grant IDENTITY ROLE`"
                            .to_string()
                    } else {
                        roles.join(", ")
                    }
                );
                if let Some(n) = &c.note {
                    text.push_str(&format!("\nnote: {n}"));
                }
                text
            });
        }
        _ => unreachable!("main sends only this group's commands here"),
    }
    Ok(())
}

/// `falaj rollout --auto` for a person: the decision, then the evidence per side and metric.
fn look_lines(l: &falaj::canary::Look) -> String {
    let mut s = format!(
        "{}/{} generation {}: {} ({}% -> {}%): {}",
        l.env,
        l.model,
        l.generation,
        serde_json::to_value(l.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        l.weight.0,
        l.weight.1,
        l.reason
    );
    for (slot, t) in &l.tallies {
        s += &format!(
            "\n  {slot:<10} requests {:<7} errors {:<5} slow {:<5} of {:<7} wrong {} of {} labelled",
            t.requests, t.errors, t.slow, t.logged, t.wrong, t.labelled
        );
    }
    if let Some(a) = l.agreement {
        s += &format!(
            "\n  shadow agreed with the champion on {:.1}% of rows",
            a * 100.0
        );
    }
    if let Some(j) = &l.judgement {
        for m in &j.metrics {
            s += &format!(
                "\n  {:<18} rates {:.4} vs {:.4}  evidence of harm {:.2}, of no harm {:.2} (decides at {:.0})",
                m.metric, m.rates.0, m.rates.1, m.harm, m.no_harm, j.threshold
            );
        }
    }
    for k in &l.skipped {
        s += &format!("\n  skipped feedback: {k}");
    }
    s
}
