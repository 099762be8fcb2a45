//! `falaj`: the command line of the falaj registry.
//!
//! Each subcommand turns its arguments into library calls and prints the result, as text for
//! people or as JSON (`--json`) for scripts. `args.rs` is the command line and its `--help`;
//! `commands/` one module per command group; `output.rs` what is printed; `failure.rs` the
//! error codes and the one exit-status rule; `context.rs` what every command reads (who is
//! asking, the store, the signing key, references). This file opens the store, sends each command to
//! its group and turns a failure into its exit status.

use std::process::ExitCode;

use clap::Parser;

mod args;
mod commands;
mod context;
mod failure;
mod fetch;
mod output;

use args::*;
use failure::*;
use output::*;

async fn run(cli: Cli) -> Result<(), Failure> {
    let out = Out { json: cli.json };
    match &cli.command {
        Command::Alias(_)
        | Command::Audit { .. }
        | Command::Model(_)
        | Command::Push { .. }
        | Command::Show { .. }
        | Command::Tag { .. }
        | Command::Versions { .. } => commands::registry::run(&cli, &out).await,
        Command::Policy(_) | Command::Validate { .. } | Command::Manifest(_) => {
            commands::gates::run(&cli, &out).await
        }
        Command::Approve { .. }
        | Command::Deployments { .. }
        | Command::Promote { .. }
        | Command::Roles(_)
        | Command::Oidc(_)
        | Command::Whoami
        | Command::Rollback { .. }
        | Command::Rollout { .. } => commands::promotion::run(&cli, &out).await,
        Command::Demo { .. } | Command::Drift { .. } | Command::Serve { .. } => {
            commands::embedded::run(&cli, &out).await
        }
        Command::Residency(_) => commands::residency::run(&cli, &out).await,
    }
}

fn main() -> ExitCode {
    // `falaj __falaj-gates-worker`: measure one model under the gates' limits, then exit.
    falaj_gates::sandbox::serve_worker_if_asked();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FALAJ_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let json = cli.json;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({"error": {"code": f.code, "message": f.message}})
                );
            } else {
                eprintln!("error: {}", f.message);
            }
            ExitCode::from(f.exit)
        }
    }
}
