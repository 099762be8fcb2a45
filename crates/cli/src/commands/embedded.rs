//! The pipeline on one machine: `serve`, `demo` and `drift`.

use crate::args::*;
use crate::context::{registry, signing_key};
use crate::failure::*;
use crate::output::*;

/// Runs one command of this group (`main` sends only these here).
pub(crate) async fn run(cli: &Cli, out: &Out) -> Result<(), Failure> {
    match &cli.command {
        Command::Serve {
            listen,
            webhook_config,
            poll_ms,
            once,
            trainer,
            retrain_dir,
            no_retrain,
        } => {
            let reg = std::sync::Arc::new(registry(cli, true).await?);
            let key = signing_key()?;
            let promoter: std::sync::Arc<dyn falaj_webhook::Promoter> =
                std::sync::Arc::new(falaj_webhook::LocalPromoter::new(reg.clone(), key));
            let json = out.json;
            let report = move |ev: &falaj_cli::serve::WatchEvent| {
                if json {
                    println!("{}", serde_json::to_string(ev).unwrap_or_default());
                } else {
                    println!("{}", ev.line());
                }
            };
            let mut watcher = falaj_cli::serve::Watcher::new(reg.clone(), promoter.clone());
            let retrainer = (!*no_retrain).then(|| {
                let mut cfg = falaj_cli::retrain::RetrainConfig::beside_current_exe();
                if let Some(t) = trainer {
                    cfg.trainer = t.clone();
                }
                cfg.work_dir = retrain_dir.clone();
                falaj_cli::retrain::Retrainer::new(reg.clone(), cfg)
            });
            let retrain_report = move |ev: &falaj_cli::retrain::RetrainEvent| {
                report(&falaj_cli::serve::WatchEvent::Retrain { event: ev.clone() })
            };
            if *once {
                for ev in watcher.poll_once().await? {
                    report(&ev);
                }
                if let Some(mut r) = retrainer {
                    let trained = r.poll_once(&retrain_report).await?;
                    // A retrain uploaded to incoming/: register and validate it too.
                    if trained
                        .iter()
                        .any(|e| matches!(e, falaj_cli::retrain::RetrainEvent::Trained { .. }))
                    {
                        for ev in watcher.poll_once().await? {
                            report(&ev);
                        }
                    }
                }
                return Ok(());
            }
            let auth = match webhook_config {
                Some(p) => falaj_webhook::WebhookAuth::load(p)
                    .map_err(|e| fail("invalid_config", 2, e.to_string()))?,
                None => {
                    eprintln!(
                        "falaj serve: no --webhook-config: every route but /v1/health answers 401 (see docs/webhook.md)"
                    );
                    falaj_webhook::WebhookAuth::default()
                }
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| fail("io_error", 1, format!("cannot listen on {listen}: {e}")))?;
            let addr = listener
                .local_addr()
                .map_err(|e| fail("io_error", 1, e.to_string()))?;
            let hook = std::sync::Arc::new(
                falaj_webhook::Webhook::new(reg.clone(), promoter, auth)
                    .with_validator(std::sync::Arc::new(falaj_gates::LocalValidator)),
            );
            if json {
                println!(
                    "{}",
                    serde_json::json!({"listening": format!("http://{addr}"), "console": format!("http://{addr}/ui/"), "store": cli.store})
                );
            } else {
                println!(
                    "falaj serve: webhook on http://{addr}, console on http://{addr}/ui/, watching {}/incoming/",
                    cli.store
                );
            }
            let limits = falaj_runtime::httpd::Limits::from_env()
                .map_err(|e| fail("usage", 2, e.to_string()))?;
            tokio::spawn(falaj_cli::serve::serve_http(listener, hook, limits));
            let every = std::time::Duration::from_millis(*poll_ms);
            if let Some(r) = retrainer {
                tokio::spawn(falaj_cli::retrain::watch(r, every, retrain_report));
            }
            // Expired idempotency claims go (dir://; S3 has its lifecycle rule), every 10 min.
            let sweeper = reg.clone();
            tokio::spawn(async move {
                let every = std::time::Duration::from_secs(600);
                loop {
                    match falaj::ingest::expire_claims(&sweeper, every).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(expired = n, "idempotency claims expired"),
                        Err(e) => tracing::warn!(error = %e, "expiring idempotency claims failed"),
                    }
                    tokio::time::sleep(every).await;
                }
            });
            falaj_cli::serve::watch(watcher, every, report).await;
        }
        Command::Demo {
            clean,
            epochs,
            model,
            work_dir,
            trainer,
            edge,
            component,
            code_cache,
            shifted_rows,
            shift,
        } => {
            if *epochs == 0 {
                return Err(fail("usage", 2, "--epochs must be at least 1"));
            }
            if !(shift.is_finite() && *shift > 0.0) {
                return Err(fail(
                    "usage",
                    2,
                    format!("--shift must be a positive factor, not {shift}"),
                ));
            }
            if *clean {
                let Some(dir) = cli.store.strip_prefix("dir://") else {
                    return Err(fail(
                        "usage",
                        2,
                        format!(
                            "--clean removes a dir:// store only; {} is not one",
                            cli.store
                        ),
                    ));
                };
                for d in [std::path::Path::new(dir), work_dir.as_path()] {
                    match std::fs::remove_dir_all(d) {
                        Ok(()) => eprintln!("cleaned {}", d.display()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(fail(
                                "io_error",
                                1,
                                format!("cannot remove {}: {e}", d.display()),
                            ));
                        }
                    }
                }
            }
            let reg = std::sync::Arc::new(registry(cli, true).await?);
            let key = signing_key()?;
            let cfg = falaj_cli::demo::DemoConfig {
                model: model.clone(),
                epochs: *epochs,
                work_dir: work_dir.clone(),
                trainer: trainer
                    .clone()
                    .unwrap_or_else(|| falaj_cli::retrain::sibling_binary("falaj-train")),
                edge: edge
                    .clone()
                    .unwrap_or_else(|| falaj_cli::retrain::sibling_binary("falaj-edge")),
                component: component.clone(),
                code_cache: code_cache.clone(),
                shifted_rows: *shifted_rows,
                shift: *shift,
                json: out.json,
            };
            let summary = falaj_cli::demo::run(reg, key, cfg)
                .await
                .map_err(|e| fail("demo_failed", 1, e.to_string()))?;
            out.print(&summary, || falaj_cli::demo::summary_text(&summary));
        }
        Command::Drift {
            model,
            env,
            psi,
            ks,
            min_rows,
        } => {
            if psi.is_nan() || *psi <= 0.0 {
                return Err(fail(
                    "usage",
                    2,
                    format!("--psi must be positive, not {psi}"),
                ));
            }
            let reg = registry(cli, false).await?;
            let rule = falaj_core::drift::DriftRule {
                psi: *psi,
                ks: *ks,
                min_rows: *min_rows,
            };
            let outcome =
                falaj::drift::check(&reg, env, model, rule)
                    .await
                    .map_err(|e| match e {
                        falaj::drift::DriftCheckError::Registry(r) => Failure::from(r),
                        falaj::drift::DriftCheckError::Deployment(p) => Failure::from(p),
                        other => fail("drift", 1, other.to_string()),
                    })?;
            out.print(&outcome, || drift_text(&outcome));
        }
        _ => unreachable!("main sends only this group's commands here"),
    }
    Ok(())
}
