//! `residency check`: the Terraform residency checker.

use falaj_core::AllowedRegions;

use crate::args::*;
use crate::failure::*;
use crate::output::*;

/// Runs one command of this group (`main` sends only these here).
pub(crate) async fn run(cli: &Cli, out: &Out) -> Result<(), Failure> {
    match &cli.command {
        Command::Residency(ResidencyCmd::Check { dir }) => {
            let allowed = AllowedRegions::parse(&cli.allowed_regions);
            let report = falaj_residency::check_dir(dir, &allowed)
                .map_err(|e| fail("invalid_terraform", 1, e.to_string()))?;
            out.print(&report, || {
                let mut s: Vec<String> = report
                    .violations
                    .iter()
                    .map(|v| {
                        format!(
                            "{}:{}: [{}] {}",
                            dir.join(&v.file).display(),
                            v.line,
                            v.rule,
                            v.message
                        )
                    })
                    .collect();
                s.push(format!(
                    "{} file(s) checked, {} violation(s)",
                    report.files_checked,
                    report.violations.len()
                ));
                s.join("\n")
            });
            if !report.violations.is_empty() {
                return Err(fail(
                    "residency_violation",
                    1,
                    format!(
                        "{} residency violation(s) in {}",
                        report.violations.len(),
                        dir.display()
                    ),
                ));
            }
        }
        _ => unreachable!("main sends only this group's commands here"),
    }
    Ok(())
}
