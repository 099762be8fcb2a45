//! Prometheus metrics (`GET /metrics`) and feature sketches (`telemetry/<env>/<node>/`).
//!
//! Metrics, per model and version: requests by status code, errors (5xx from the host or
//! the component, and refusals by the host), and a latency histogram of the whole request
//! as the node served it. Sketches: per model version, a [`SketchWindow`] of the inputs of
//! JSON and raw-f32 predictions, written to the store every window and started afresh.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use falaj_core::input::Batch;
use falaj_core::sketch::{SketchWindow, telemetry_key};
use falaj_store::{Precondition, Store};

use crate::fleet::Served;

/// Latency histogram buckets, seconds.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Series {
    by_code: BTreeMap<u16, u64>,
    errors: u64,
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Counters of one node.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String), Series>>,
}

impl Metrics {
    /// Records one request to `model` served by `version` (`"none"` when refused before a
    /// version was chosen).
    pub fn observe(&self, model: &str, version: &str, code: u16, took: Duration) {
        let mut all = self.series.lock().expect("metrics lock");
        let s = all.entry((model.into(), version.into())).or_default();
        *s.by_code.entry(code).or_default() += 1;
        if code >= 500 {
            s.errors += 1;
        }
        let secs = took.as_secs_f64();
        for (b, le) in s.buckets.iter_mut().zip(BUCKETS) {
            if secs <= le {
                *b += 1;
            }
        }
        s.sum += secs;
        s.count += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self, extra: &[(String, u64, u64)]) -> String {
        let all = self.series.lock().expect("metrics lock");
        let mut out = String::new();
        out.push_str("# HELP falaj_edge_requests_total Requests served, by model, version and status code.\n# TYPE falaj_edge_requests_total counter\n");
        for ((m, v), s) in all.iter() {
            for (code, n) in &s.by_code {
                let _ = writeln!(
                    out,
                    "falaj_edge_requests_total{{model=\"{m}\",version=\"{v}\",code=\"{code}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP falaj_edge_request_errors_total Requests answered with a 5xx.\n# TYPE falaj_edge_request_errors_total counter\n");
        for ((m, v), s) in all.iter() {
            let _ = writeln!(
                out,
                "falaj_edge_request_errors_total{{model=\"{m}\",version=\"{v}\"}} {}",
                s.errors
            );
        }
        out.push_str("# HELP falaj_edge_request_duration_seconds Time to answer a request at the node.\n# TYPE falaj_edge_request_duration_seconds histogram\n");
        for ((m, v), s) in all.iter() {
            for (b, le) in s.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "falaj_edge_request_duration_seconds_bucket{{model=\"{m}\",version=\"{v}\",le=\"{le}\"}} {b}"
                );
            }
            let _ = writeln!(
                out,
                "falaj_edge_request_duration_seconds_bucket{{model=\"{m}\",version=\"{v}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "falaj_edge_request_duration_seconds_sum{{model=\"{m}\",version=\"{v}\"}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "falaj_edge_request_duration_seconds_count{{model=\"{m}\",version=\"{v}\"}} {}",
                s.count
            );
        }
        out.push_str("# HELP falaj_edge_deployment_generation Generation of the deployment manifest served.\n# TYPE falaj_edge_deployment_generation gauge\n");
        for (m, generation, _) in extra {
            let _ = writeln!(
                out,
                "falaj_edge_deployment_generation{{model=\"{m}\"}} {generation}"
            );
        }
        out.push_str("# HELP falaj_edge_deployment_refusals_total Deployment manifests or versions refused.\n# TYPE falaj_edge_deployment_refusals_total counter\n");
        for (m, _, refusals) in extra {
            let _ = writeln!(
                out,
                "falaj_edge_deployment_refusals_total{{model=\"{m}\"}} {refusals}"
            );
        }
        out
    }
}

/// Open sketch windows, one per model version.
pub struct Sketches {
    env: String,
    node: String,
    windows: Mutex<BTreeMap<(String, u64), SketchWindow>>,
}

impl Sketches {
    /// Sketches for `node` in `env`.
    pub fn new(env: &str, node: &str) -> Self {
        Self {
            env: env.into(),
            node: node.into(),
            windows: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds the rows of a prediction served by `served`, as [`read_batch`] read them.
    pub fn observe(&self, served: &Served, batch: &Batch) {
        let Some(n) = served.n_features.filter(|n| *n > 0) else {
            return;
        };
        let mut windows = self.windows.lock().expect("sketch lock");
        let w = windows
            .entry((served.model.clone(), served.version))
            .or_insert_with(|| {
                SketchWindow::for_model(
                    served.manifest.as_ref(),
                    n,
                    (&self.env, &self.node, &served.model, served.version),
                    falaj_runtime::now(),
                )
            });
        let mut row = Vec::with_capacity(n);
        for x in batch.x.chunks(n) {
            row.clear();
            row.extend(x.iter().map(|&v| f64::from(v)));
            w.add_row(&row);
        }
    }

    /// Writes every non-empty window to the store and starts new ones. Returns the keys
    /// written; a window that could not be written is kept and tried again next time.
    pub async fn flush(&self, store: &dyn Store) -> Vec<String> {
        let (env, node) = (self.env.clone(), self.node.clone());
        write_windows(
            store,
            &self.windows,
            |w: &mut SketchWindow, now, stamp| {
                w.ended_at = now.to_owned();
                telemetry_key(&env, &node, &w.model, stamp, w.version)
            },
            |newer, w| {
                newer.rows += w.rows;
                newer.rejected_rows += w.rejected_rows;
                for (a, b) in newer.features.iter_mut().zip(&w.features) {
                    let _ = a.merge(b);
                }
                newer.started_at = w.started_at;
            },
            "feature sketch",
        )
        .await
    }
}

/// Takes every open window out of `windows` and writes each create-only, as JSON, under the
/// key `finish` gives it (after stamping its end).
/// A window that could not be written goes back, merged into a newer one of the same id if
/// one has opened since, and is tried again at the next flush. Returns the keys written.
pub(crate) async fn write_windows<K: Ord, W: serde::Serialize>(
    store: &dyn Store,
    windows: &Mutex<BTreeMap<K, W>>,
    finish: impl Fn(&mut W, &str, &str) -> String,
    merge: impl Fn(&mut W, W),
    what: &str,
) -> Vec<String> {
    let taken = std::mem::take(&mut *windows.lock().expect("window lock"));
    let now = falaj_runtime::now();
    let stamp: String = now.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let mut written = Vec::new();
    for (id, mut w) in taken {
        let key = finish(&mut w, &now, &stamp);
        let bytes = serde_json::to_vec(&w).expect("windows serialise");
        let result = match falaj_core::StoreKey::new(key.clone()) {
            Ok(k) => store
                .put(&k, bytes.into(), Precondition::IfAbsent)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(_) => written.push(key),
            Err(e) => {
                tracing::warn!(key, error = %e, "writing a {what} window failed; kept for the next flush");
                let mut open = windows.lock().expect("window lock");
                match open.get_mut(&id) {
                    Some(newer) => merge(newer, w),
                    None => {
                        open.insert(id, w);
                    }
                }
            }
        }
    }
    written
}

/// The rows of a prediction body for `served`, read on the host by the component's own parser
/// (JSON `{"inputs": [...]}` by position or by feature name, or raw little-endian f32): what
/// the sketches record and the batcher sends. `None` when the host cannot read it (an image,
/// a malformed body, a model whose width is unknown): the component answers those. Read once
/// per request.
pub fn read_batch(served: &Served, content_type: Option<&str>, body: &[u8]) -> Option<Batch> {
    let n = served.n_features?;
    let names = served
        .manifest
        .as_ref()
        .map_or(&[][..], |m| &m.features[..]);
    parse_batch(content_type, body, n, names)
}

fn parse_batch(
    content_type: Option<&str>,
    body: &[u8],
    n: usize,
    names: &[String],
) -> Option<Batch> {
    use falaj_core::input;
    input::body_kind(content_type)
        .and_then(|kind| input::parse(kind, body, names, n))
        .ok()
        .filter(|_| n > 0)
}

/// [`parse_batch`] as one `Vec` per row (tests).
#[cfg(test)]
fn parse_rows(
    content_type: Option<&str>,
    body: &[u8],
    n: usize,
    names: &[String],
) -> Vec<Vec<f64>> {
    parse_batch(content_type, body, n, names).map_or_else(Vec::new, |b| {
        b.x.chunks(n)
            .map(|row| row.iter().map(|&v| f64::from(v)).collect())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_from_positional_named_and_raw_bodies() {
        let names = vec!["a".to_string(), "b".to_string()];
        let pos = parse_rows(None, br#"{"inputs": [[1, 2], [3, 4]]}"#, 2, &names);
        assert_eq!(pos, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        let named = parse_rows(
            Some("application/json"),
            br#"{"inputs": [{"b": 2, "a": 1}]}"#,
            2,
            &names,
        );
        assert_eq!(named, vec![vec![1.0, 2.0]]);
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            parse_rows(Some("application/octet-stream"), &raw, 2, &names),
            vec![vec![1.5, -2.0]]
        );
        assert!(parse_rows(None, b"not json", 2, &names).is_empty());
        assert!(parse_rows(Some("application/octet-stream"), &raw[..6], 2, &names).is_empty());
    }

    #[test]
    fn the_exposition_counts_codes_errors_and_buckets() {
        let m = Metrics::default();
        m.observe("iris", "3", 200, Duration::from_micros(700));
        m.observe("iris", "3", 200, Duration::from_millis(30));
        m.observe("iris", "3", 504, Duration::from_secs(3));
        let text = m.render(&[("iris".into(), 7, 1)]);
        assert!(
            text.contains("falaj_edge_requests_total{model=\"iris\",version=\"3\",code=\"200\"} 2")
        );
        assert!(text.contains("falaj_edge_request_errors_total{model=\"iris\",version=\"3\"} 1"));
        assert!(text.contains(
            "falaj_edge_request_duration_seconds_bucket{model=\"iris\",version=\"3\",le=\"0.001\"} 1"
        ));
        assert!(text.contains(
            "falaj_edge_request_duration_seconds_bucket{model=\"iris\",version=\"3\",le=\"0.05\"} 2"
        ));
        assert!(text.contains(
            "falaj_edge_request_duration_seconds_bucket{model=\"iris\",version=\"3\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("falaj_edge_deployment_generation{model=\"iris\"} 7"));
    }
}
