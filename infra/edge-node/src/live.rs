//! Live evidence per variant for the canary controller (`falaj_core::live`): every predict
//! request gets a request id, and its variant, latency, status and predictions go into the
//! open window of its (model, version, slot, generation); windows are written to
//! `telemetry/<env>/<node>/<model>/` with the sketches and started afresh.

use std::collections::BTreeMap;
use std::sync::Mutex;

use falaj_core::live::{Logged, VariantWindow, window_key};
use falaj_store::Store;

/// `x-falaj-request-id`: returned with every model answer; feedback names it.
pub const REQUEST_ID: &str = "x-falaj-request-id";

/// A fresh request id: 128 random bits, hex.
pub fn request_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// One prediction per row of a `POST /predict` answer: the label, else the class index,
/// else the value; empty when the body has none (an error, or a model without a manifest).
pub fn predictions(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let Some(rows) = v.get("predictions").and_then(|p| p.as_array()) else {
        return Vec::new();
    };
    rows.iter()
        .map(|p| {
            if let Some(l) = p.get("label").and_then(|l| l.as_str()) {
                l.to_owned()
            } else if let Some(c) = p.get("class").and_then(|c| c.as_u64()) {
                c.to_string()
            } else if let Some(x) = p.get("value").and_then(|x| x.as_f64()) {
                x.to_string()
            } else {
                String::new()
            }
        })
        .collect()
}

type WindowId = (String, u64, &'static str, u64);

/// Open windows of one node.
pub struct Live {
    env: String,
    node: String,
    windows: Mutex<BTreeMap<WindowId, VariantWindow>>,
}

impl Live {
    /// Windows for `node` in `env`.
    pub fn new(env: &str, node: &str) -> Self {
        Self {
            env: env.into(),
            node: node.into(),
            windows: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one answered request of `model` `version` in `slot` under `generation`.
    pub fn record(
        &self,
        (model, version, slot, generation): (&str, u64, &'static str, u64),
        entry: Logged,
    ) {
        let mut windows = self.windows.lock().expect("live lock");
        let w = windows
            .entry((model.to_owned(), version, slot, generation))
            .or_insert_with(|| {
                VariantWindow::new(
                    (&self.env, &self.node, model),
                    version,
                    slot,
                    generation,
                    &falaj_runtime::now(),
                )
            });
        w.add(entry, |n| rand::random_range(0..n));
    }

    /// Writes every window to the store and starts new ones. Returns the keys written; a
    /// window that could not be written is merged into the next one.
    pub async fn flush(&self, store: &dyn Store) -> Vec<String> {
        crate::metrics::write_windows(
            store,
            &self.windows,
            |w: &mut VariantWindow, now, stamp| {
                w.ended_at = now.to_owned();
                window_key(w, stamp)
            },
            |newer, w| newer.merge(w),
            "live",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_are_read_as_labels_classes_or_values() {
        let body = br#"{"predictions":[{"class":1,"label":"malignant"},{"class":0},{"value":2.5},{"output":[1.0]}]}"#;
        assert_eq!(predictions(body), ["malignant", "0", "2.5", ""]);
        assert!(predictions(b"{\"error\":\"x\"}").is_empty());
        assert!(predictions(b"not json").is_empty());
        let id = request_id();
        assert_eq!(id.len(), 32);
        assert_ne!(id, request_id());
    }
}
