//! What a command prints: JSON for scripts (`--json`), text for people, and a progress bar
//! for large uploads on a terminal.

use falaj::store::{self};
use falaj_core::ModelVersion;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;

pub(crate) struct Out {
    pub(crate) json: bool,
}

impl Out {
    pub(crate) fn print<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("output serialises")
            );
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }
}

pub(crate) fn report_text(r: &falaj_core::policy::GateReport) -> String {
    let mut s = format!(
        "gates of {}@{} (run {}): {}\n  evaluator {}\n  at        {} by {}\n",
        r.model,
        r.version,
        r.run,
        if r.passed { "PASSED" } else { "FAILED" },
        r.evaluator,
        r.evaluated_at,
        r.evaluated_by
    );
    if let Some(h) = &r.holdout {
        s += &format!("  holdout   {} ({} rows, {})\n", h.uri, h.rows, h.digest);
    }
    if let Some(e) = &r.error {
        s += &format!("  error     {e}\n");
    }
    for g in &r.gates {
        let bound = match g.bound {
            Some(falaj_core::policy::Bound::Min(t)) => format!(">= {t}"),
            Some(falaj_core::policy::Bound::Max(t)) => format!("<= {t}"),
            None => String::new(),
        };
        s += &format!(
            "  {} {:<28} {:>12} {:<10} {}\n",
            if g.passed { "ok  " } else { "FAIL" },
            g.gate,
            g.measured.map_or("-".into(), |m| format!("{m:.4}")),
            bound,
            g.detail
        );
    }
    s.trim_end().to_string()
}

pub(crate) fn drift_text(o: &falaj::drift::DriftOutcome) -> String {
    use falaj::drift::DriftOutcome as O;
    let table = |r: &falaj_core::drift::DriftReport| {
        let mut s = format!(
            "{} v{}: {} rows in {} windows (rule: PSI > {}{})\n",
            r.model,
            r.version,
            r.rows,
            r.windows,
            r.rule.psi,
            r.rule.ks.map_or(String::new(), |k| format!(" or KS > {k}"))
        );
        for f in &r.features {
            s.push_str(&format!(
                "  {} {:<24} PSI {:>7.4}  KS {:>6.4}  mean {:>10.4} (training {:.4})\n",
                if f.drifted { "DRIFT" } else { "ok   " },
                f.feature,
                f.psi,
                f.ks,
                f.observed_mean.unwrap_or(f64::NAN),
                f.training_mean
            ));
        }
        s
    };
    match o {
        O::NoData { reason } => format!("no verdict: {reason}"),
        O::Stable { report } => format!(
            "{}{}",
            table(report),
            if report.enough_rows {
                "stable: no retraining needed"
            } else {
                "too few rows to decide"
            }
        ),
        O::RetrainRequested { key, request } => format!(
            "{}drift in {}: retraining requested at {key}",
            table(&request.report),
            request.drifted.join(", ")
        ),
        O::AlreadyRequested { key } => {
            format!("drift; the retraining request {key} already exists")
        }
    }
}

pub(crate) fn version_line(v: &ModelVersion) -> String {
    format!(
        "{:>4}  {:<10} {}  {:>10}  {:<16} {}",
        v.version,
        v.semver,
        &v.digest_hex()[..12.min(v.digest_hex().len())],
        human_size(v.size),
        v.author,
        v.created_at
    )
}

pub(crate) fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn show_version(v: &ModelVersion, tags: &BTreeMap<String, String>) -> String {
    let mut s = format!(
        "{}@{} (semver {})\n  digest    {}\n  size      {} ({} bytes)\n  format    {} opset {} (IR {}), produced by {}\n  author    {}\n  created   {}\n  region    {}\n",
        v.model,
        v.version,
        v.semver,
        v.digest,
        human_size(v.size),
        v.size,
        v.format.kind,
        v.format.opset,
        v.format.ir_version,
        v.format.producer,
        v.author,
        v.created_at,
        v.region
    );
    for (dir, specs) in [
        ("input ", &v.signature.inputs),
        ("output", &v.signature.outputs),
    ] {
        for t in specs {
            s += &format!(
                "  {dir}    {}: {}[{}]\n",
                t.name,
                t.dtype,
                t.shape.join(", ")
            );
        }
    }
    for d in &v.lineage.datasets {
        s += &format!("  dataset   {} ({})\n", d.uri, d.digest);
    }
    if let Some(c) = &v.lineage.code_commit {
        s += &format!("  commit    {c}\n");
    }
    if let Some(p) = v.lineage.parent_version {
        s += &format!("  parent    {}@{p}\n", v.model);
    }
    for (k, m) in &v.metrics {
        s += &format!("  metric    {k} = {m}\n");
    }
    for (k, t) in tags {
        s += &format!("  tag       {k}={t}\n");
    }
    if let Some(src) = &v.source {
        s += &format!("  source    {src}\n");
    }
    s.trim_end().to_string()
}

pub(crate) fn deployment_line(
    d: &falaj_core::deployment::DeploymentManifest,
    repaired: Option<&str>,
) -> String {
    let mut s = repaired.map_or(String::new(), |r| format!("repaired first: {r}\n"));
    s += &format!(
        "{}/{} generation {}: champion {}{}",
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
}

pub(crate) fn progress_bar(
    file: &std::path::Path,
    enabled: bool,
) -> (store::Progress, Option<indicatif::ProgressBar>) {
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    // Only large uploads on a terminal get a bar; scripts and small files stay quiet.
    if !enabled || size < 16 * 1024 * 1024 || !std::io::stderr().is_terminal() {
        return (store::no_progress(), None);
    }
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("template is valid")
        .progress_chars("=> "),
    );
    bar.set_message("uploading");
    let b = bar.clone();
    (Arc::new(move |n| b.set_position(n)), Some(bar))
}
