//! Approvals, promotion and deployments: `approve`, `promote`, `rollout`, `rollback`, `deployments`, `roles`.

use falaj::Expect;

use crate::args::*;
use crate::context::{identity, numbered, parse_ref, parse_stage, registry, signing_key};
use crate::failure::*;
use crate::output::*;

/// Runs one command of this group (`main` sends only these here).
pub(crate) async fn run(cli: &Cli, out: &Out) -> Result<(), Failure> {
    let me = identity(cli);
    match &cli.command {
        Command::Approve {
            reference,
            to,
            comment,
        } => {
            let r = parse_ref(reference)?;
            let n = numbered(&r)?;
            let reg = registry(cli, false).await?;
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
        Command::Rollout { model, env, weight } => {
            let reg = registry(cli, false).await?;
            let key = signing_key()?;
            let c = falaj::deploy::rollout(&reg, &key, model, env, *weight, &me).await?;
            out.print(&c, || deployment_line(&c.deployment, c.repaired.as_deref()));
        }
        Command::Rollback { model, env } => {
            let reg = registry(cli, false).await?;
            let key = signing_key()?;
            let c = falaj::deploy::rollback(&reg, &key, model, env, &me).await?;
            out.print(&c, || deployment_line(&c.deployment, c.repaired.as_deref()));
        }
        Command::Deployments { repair } => {
            let reg = registry(cli, false).await?;
            if *repair {
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
            let b = falaj::promotion::grant(&reg, &me, who, role).await?;
            out.print(&b, || format!("granted {role} to {who}"));
        }
        Command::Roles(RolesCmd::List) => {
            let reg = registry(cli, false).await?;
            let b = falaj::promotion::roles(&reg).await?;
            out.print(&b, || {
                b.bindings
                    .iter()
                    .map(|(w, rs)| {
                        format!(
                            "{w:<24} {}",
                            rs.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Whoami => {
            let reg = registry(cli, false).await?;
            let bindings = falaj::promotion::roles(&reg).await?;
            let roles: Vec<&str> = bindings.roles_of(&me).iter().map(|r| r.name()).collect();
            let source = if cli.identity.is_some() {
                "--as"
            } else if std::env::var("USER").is_ok_and(|u| !u.is_empty()) {
                "$USER"
            } else {
                "default"
            };
            let v = serde_json::json!({
                "identity": me,
                "roles": roles,
                "from": source,
                "verified": false,
                "store": cli.store,
            });
            out.print(&v, || {
                format!(
                    "{me} (from {source}, not verified) in {}\nroles: {}",
                    cli.store,
                    if roles.is_empty() {
                        "none: ask an admin for one with `falaj roles grant IDENTITY ROLE`"
                            .to_string()
                    } else {
                        roles.join(", ")
                    }
                )
            });
        }
        _ => unreachable!("main sends only this group's commands here"),
    }
    Ok(())
}
