//! Live evidence for the canary controller: what an edge node records per variant
//! (champion, challenger, shadow) of a deployment generation, the labels that arrive later,
//! and how the two are joined into the judge's counts.
//!
//! The edge writes one [`VariantWindow`] per (version, slot, generation) each flush to
//! `telemetry/<env>/<node>/<model>/<stamp>-v<version>-<slot>-g<generation>.live.json`. A window
//! holds exact counters (requests, answers by status, a latency histogram, the prediction
//! distribution) and a log of single requests: the request id the caller got in
//! `x-falaj-request-id`, the latency, the status and the predictions. The log is bounded
//! ([`LOG_CAP`] per window): past it, a uniform reservoir sample is kept and the rest are
//! counted in `log_dropped`, so memory stays bounded under any load and the sample stays
//! fair between variants.
//!
//! Labels come as CSV under `datasets/<model>/feedback/`: `request_id,label` (the first
//! row of the request) or `request_id,row,label`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Schema of [`VariantWindow`].
pub const SCHEMA: u32 = 1;

/// Requests logged per window before the log becomes a reservoir sample.
pub const LOG_CAP: usize = 20_000;

/// Upper bounds (ms) of the latency histogram's buckets; the last bucket is open.
pub const LATENCY_BOUNDS_MS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    10000.0,
];

/// Distinct predicted values kept in a window's distribution; the rest count as `other`.
pub const MAX_PREDICTION_KEYS: usize = 256;

/// Which side of a deployment served (or shadowed) a request.
pub const SLOTS: [&str; 3] = ["champion", "challenger", "shadow"];

/// One request in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logged {
    /// The request id returned in `x-falaj-request-id`.
    pub id: String,
    /// Time inside the node, milliseconds.
    pub ms: f64,
    /// HTTP status of the answer.
    pub status: u16,
    /// One prediction per row: the class label (or class index), or the value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pred: Vec<String>,
}

/// What one node saw of one variant of one deployment generation in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantWindow {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Environment.
    pub env: String,
    /// Node.
    pub node: String,
    /// Model.
    pub model: String,
    /// Version served.
    pub version: u64,
    /// `champion`, `challenger` or `shadow`.
    pub slot: String,
    /// Deployment generation the requests were routed under.
    pub generation: u64,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub ended_at: String,
    /// Requests answered.
    pub requests: u64,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests per latency bucket ([`LATENCY_BOUNDS_MS`], then one open bucket).
    pub latency_buckets: Vec<u64>,
    /// Rows predicted per class label (or per value bucket, for regression).
    pub predictions: BTreeMap<String, u64>,
    /// Logged requests (all of them up to [`LOG_CAP`], then a uniform sample).
    pub log: Vec<Logged>,
    /// Requests not in the log (the reservoir's rejects).
    pub log_dropped: u64,
}

impl VariantWindow {
    /// An empty window.
    pub fn new(
        (env, node, model): (&str, &str, &str),
        version: u64,
        slot: &str,
        generation: u64,
        now: &str,
    ) -> Self {
        Self {
            schema: SCHEMA,
            env: env.into(),
            node: node.into(),
            model: model.into(),
            version,
            slot: slot.into(),
            generation,
            started_at: now.into(),
            ended_at: String::new(),
            requests: 0,
            statuses: BTreeMap::new(),
            latency_buckets: vec![0; LATENCY_BOUNDS_MS.len() + 1],
            predictions: BTreeMap::new(),
            log: Vec::new(),
            log_dropped: 0,
        }
    }

    /// Adds one answered request. `pick` draws a uniform integer below its argument (the
    /// reservoir's coin).
    pub fn add(&mut self, entry: Logged, pick: impl FnOnce(u64) -> u64) {
        self.requests += 1;
        *self.statuses.entry(entry.status).or_default() += 1;
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| entry.ms <= *b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.latency_buckets[bucket] += 1;
        for p in &entry.pred {
            let key = if self.predictions.contains_key(p)
                || self.predictions.len() < MAX_PREDICTION_KEYS
            {
                p.clone()
            } else {
                "other".into()
            };
            *self.predictions.entry(key).or_default() += 1;
        }
        if self.log.len() < LOG_CAP {
            self.log.push(entry);
        } else {
            // Algorithm R: the i-th request replaces a random entry with chance CAP/i.
            let j = pick(self.requests) as usize;
            if j < LOG_CAP {
                self.log[j] = entry;
            }
            self.log_dropped += 1;
        }
    }

    /// Adds a window that could not be written to this (newer) one.
    pub fn merge(&mut self, older: VariantWindow) {
        self.started_at = older.started_at;
        self.requests += older.requests;
        for (s, n) in older.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        for (a, b) in self.latency_buckets.iter_mut().zip(&older.latency_buckets) {
            *a += b;
        }
        for (k, n) in older.predictions {
            *self.predictions.entry(k).or_default() += n;
        }
        let room = LOG_CAP.saturating_sub(self.log.len());
        self.log_dropped += older.log_dropped + older.log.len().saturating_sub(room) as u64;
        self.log.extend(older.log.into_iter().take(room));
    }
}

/// The store key of a window.
pub fn window_key(w: &VariantWindow, stamp: &str) -> String {
    format!(
        "{}{}/{}/{stamp}-v{}-{}-g{}.live.json",
        crate::layout::telemetry_prefix(&w.env),
        w.node,
        w.model,
        w.version,
        w.slot,
        w.generation
    )
}

/// Whether a telemetry key is a live window of `model` (and which generation).
pub fn window_generation(key: &str, model: &str) -> Option<u64> {
    let mut parts = key.split('/');
    let (Some("telemetry"), Some(_env), Some(_node), Some(m), Some(file), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if m != model {
        return None;
    }
    let stem = file.strip_suffix(".live.json")?;
    stem.rsplit_once("-g")?.1.parse().ok()
}

/// A label that arrived later for one row of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The request id.
    pub request_id: String,
    /// Row of the request (0 for a one-row request).
    pub row: usize,
    /// The true class label (or value).
    pub label: String,
}

/// Reads a feedback CSV: a header with `request_id` and `label` (and optionally `row`).
pub fn parse_feedback(text: &str, source: &str) -> Result<Vec<Label>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| format!("{source} is empty: it needs a header `request_id,label`"))?
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    let col = |name: &str| header.iter().position(|c| c == name);
    let (Some(id), Some(label)) = (col("request_id"), col("label")) else {
        return Err(format!(
            "{source}: the header is {:?}; it needs `request_id` and `label` columns (and `row` for a request with several rows)",
            header.join(",")
        ));
    };
    let row = col("row");
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let cells: Vec<&str> = line
            .split(',')
            .map(|c| c.trim().trim_matches('"'))
            .collect();
        let get = |c: usize| cells.get(c).copied().unwrap_or("");
        let line_no = i + 2;
        if get(id).is_empty() || get(label).is_empty() {
            return Err(format!(
                "{source} line {line_no}: request_id and label must not be empty"
            ));
        }
        let r = match row {
            Some(c) => get(c).parse::<usize>().map_err(|_| {
                format!(
                    "{source} line {line_no}: row {:?} is not a row number",
                    get(c)
                )
            })?,
            None => 0,
        };
        out.push(Label {
            request_id: get(id).into(),
            row: r,
            label: get(label).into(),
        });
    }
    Ok(out)
}

/// What the judge needs of one variant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Requests answered.
    pub requests: u64,
    /// Answers with a 5xx status (the variant failed, not the caller).
    pub errors: u64,
    /// Requests in the log (the latency sample).
    pub logged: u64,
    /// Logged requests slower than the policy's bound.
    pub slow: u64,
    /// Predicted rows with a label.
    pub labelled: u64,
    /// Of those, wrong (a different class, or a value off by more than the bound).
    pub wrong: u64,
    /// Shadow only: rows answered by both, and how many agreed.
    pub compared: u64,
    /// Shadow only: agreeing rows.
    pub agreed: u64,
}

/// How a prediction is judged against its label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grading {
    /// A request slower than this counts as slow.
    pub slow_ms: Option<f64>,
    /// A regression prediction off by more than this is wrong; without it, predictions and
    /// labels are compared as class labels.
    pub max_abs_error: Option<f64>,
}

fn is_wrong(pred: &str, label: &str, g: &Grading) -> bool {
    match (g.max_abs_error, pred.parse::<f64>(), label.parse::<f64>()) {
        // NaN is never within the bound.
        (Some(tol), Ok(p), Ok(l)) => !matches!(
            (p - l).abs().partial_cmp(&tol),
            Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
        ),
        _ => pred != label,
    }
}

/// Per slot, the counts of the windows of one generation joined with the labels.
pub fn tally(windows: &[VariantWindow], labels: &[Label], g: &Grading) -> BTreeMap<String, Tally> {
    let by_id: HashMap<(&str, usize), &str> = labels
        .iter()
        .map(|l| ((l.request_id.as_str(), l.row), l.label.as_str()))
        .collect();
    let mut out: BTreeMap<String, Tally> = BTreeMap::new();
    let mut champion_preds: HashMap<&str, &[String]> = HashMap::new();
    for w in windows.iter().filter(|w| w.slot == "champion") {
        for e in &w.log {
            champion_preds.insert(e.id.as_str(), &e.pred);
        }
    }
    for w in windows {
        let t = out.entry(w.slot.clone()).or_default();
        t.requests += w.requests;
        t.errors += w
            .statuses
            .iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, n)| n)
            .sum::<u64>();
        for e in &w.log {
            t.logged += 1;
            if g.slow_ms.is_some_and(|b| e.ms > b) {
                t.slow += 1;
            }
            for (row, p) in e.pred.iter().enumerate() {
                if let Some(label) = by_id.get(&(e.id.as_str(), row)) {
                    t.labelled += 1;
                    if is_wrong(p, label, g) {
                        t.wrong += 1;
                    }
                }
            }
            if w.slot == "shadow"
                && let Some(theirs) = champion_preds.get(e.id.as_str())
            {
                for (a, b) in e.pred.iter().zip(theirs.iter()) {
                    t.compared += 1;
                    if !is_wrong(a, b, g) {
                        t.agreed += 1;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, ms: f64, status: u16, pred: &[&str]) -> Logged {
        Logged {
            id: id.into(),
            ms,
            status,
            pred: pred.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_window_counts_everything_and_its_log_stays_bounded_and_uniform() {
        let mut w = VariantWindow::new(("prod", "n1", "m"), 3, "challenger", 7, "t0");
        let mut s: u64 = 1;
        for i in 0..(LOG_CAP as u64 * 3) {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = s >> 11;
            w.add(entry(&format!("r{i}"), 0.3, 200, &["a"]), |n| r % n);
        }
        w.add(entry("bad", 30.0, 503, &[]), |n| n);
        assert_eq!(w.requests, LOG_CAP as u64 * 3 + 1);
        assert_eq!(w.log.len(), LOG_CAP);
        assert_eq!(w.log_dropped, w.requests - LOG_CAP as u64);
        assert_eq!(w.statuses[&503], 1);
        assert_eq!(w.latency_buckets[2], LOG_CAP as u64 * 3);
        assert_eq!(w.latency_buckets[8], 1);
        // A uniform sample: about a third of it comes from each third of the stream.
        let first_third = w
            .log
            .iter()
            .filter(|e| e.id[1..].parse::<usize>().is_ok_and(|i| i < LOG_CAP))
            .count();
        assert!(
            (LOG_CAP / 3 - 600..LOG_CAP / 3 + 600).contains(&first_third),
            "{first_third}"
        );
    }

    #[test]
    fn keys_name_their_generation_and_are_not_drift_sketches() {
        let w = VariantWindow::new(("prod", "n1", "m"), 3, "shadow", 12, "t0");
        let k = window_key(&w, "20261204T100000Z");
        assert_eq!(
            k,
            "telemetry/prod/n1/m/20261204T100000Z-v3-shadow-g12.live.json"
        );
        assert_eq!(window_generation(&k, "m"), Some(12));
        assert_eq!(window_generation(&k, "other"), None);
        assert_eq!(
            window_generation("telemetry/prod/n1/m/20261204T100000Z-v3.json", "m"),
            None
        );
    }

    #[test]
    fn feedback_is_joined_by_request_and_row() {
        let labels = parse_feedback(
            "request_id,row,label\nA,0,cat\nA,1,dog\nB,0,dog\nZ,0,cat\n",
            "f.csv",
        )
        .unwrap();
        let mut champ = VariantWindow::new(("p", "n", "m"), 1, "champion", 2, "t");
        champ.add(entry("A", 1.0, 200, &["cat", "cat"]), |_| 0);
        champ.add(entry("C", 9.0, 500, &[]), |_| 0);
        let mut chall = VariantWindow::new(("p", "n", "m"), 2, "challenger", 2, "t");
        chall.add(entry("B", 3.0, 200, &["dog"]), |_| 0);
        let g = Grading {
            slow_ms: Some(2.0),
            max_abs_error: None,
        };
        let t = tally(&[champ, chall], &labels, &g);
        let c = t["champion"];
        assert_eq!((c.requests, c.errors, c.slow), (2, 1, 1));
        assert_eq!((c.labelled, c.wrong), (2, 1));
        let d = t["challenger"];
        assert_eq!((d.labelled, d.wrong, d.slow), (1, 0, 1));
    }

    #[test]
    fn regression_labels_are_wrong_past_the_bound_and_shadows_are_compared() {
        let g = Grading {
            slow_ms: None,
            max_abs_error: Some(0.5),
        };
        assert!(!is_wrong("1.2", "1.5", &g));
        assert!(is_wrong("1.2", "2.5", &g));
        assert!(is_wrong("NaN", "1", &g));
        let mut champ = VariantWindow::new(("p", "n", "m"), 1, "champion", 2, "t");
        champ.add(entry("A", 1.0, 200, &["1.0", "2.0"]), |_| 0);
        let mut shadow = VariantWindow::new(("p", "n", "m"), 2, "shadow", 2, "t");
        shadow.add(entry("A", 1.0, 200, &["1.1", "9.0"]), |_| 0);
        let t = tally(&[champ, shadow], &[], &g);
        assert_eq!((t["shadow"].compared, t["shadow"].agreed), (2, 1));
    }

    #[test]
    fn bad_feedback_is_named() {
        assert!(parse_feedback("", "f.csv").unwrap_err().contains("empty"));
        assert!(
            parse_feedback("id,label\n", "f.csv")
                .unwrap_err()
                .contains("request_id")
        );
        assert!(
            parse_feedback("request_id,row,label\nA,x,1\n", "f.csv")
                .unwrap_err()
                .contains("line 2")
        );
    }
}
