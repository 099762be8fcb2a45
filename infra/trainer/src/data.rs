//! Datasets: where they are read from, the exact bytes and their digest, the CSV parsing and
//! checks, the seeded train/validation split, and the statistics computed on the training
//! split (standardisation and drift histograms).
//!
//! A dataset is named by one of:
//! - a plain path (`tests/fixtures/datasets/wine.csv`);
//! - `dir://STORE/KEY`: a key in a local falaj store. The store root is the nearest directory
//!   on the path that holds `.falaj-store.json` (so `dir://.falaj/datasets/wine.csv` is key
//!   `datasets/wine.csv` of store `dir://.falaj`);
//! - `s3://BUCKET/KEY`: key `KEY` of the store `s3://BUCKET`.
//!
//! Reading through the store means the store's residency check applies: a dataset whose
//! store lives outside the allowed regions is refused before a byte is read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use falaj_core::StoreKey;
use falaj_core::manifest::Task;
use falaj_store::{self as store, OpenOptions};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::error::DataError;

/// Where a dataset comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetLocation {
    /// A local file, read directly.
    Path(PathBuf),
    /// A key in a falaj store.
    Store {
        /// Store URI (`dir://…` or `s3://BUCKET`).
        store: String,
        /// Object key.
        key: String,
    },
}

/// Marker file at the root of a `dir://` store.
const STORE_MARKER: &str = ".falaj-store.json";

impl DatasetLocation {
    /// Parses a dataset URI or path (see the module documentation for the forms).
    pub fn parse(uri: &str) -> Result<Self, DataError> {
        let bad = |reason: &str| DataError::BadUri {
            uri: uri.into(),
            reason: reason.into(),
        };
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .ok_or_else(|| bad("an s3:// dataset needs a key: s3://BUCKET/path/to/data.csv"))?;
            if bucket.is_empty() || key.is_empty() {
                return Err(bad(
                    "an s3:// dataset needs a bucket and a key: s3://BUCKET/path/to/data.csv",
                ));
            }
            return Ok(Self::Store {
                store: format!("s3://{bucket}"),
                key: key.into(),
            });
        }
        if let Some(rest) = uri.strip_prefix("dir://") {
            let path = Path::new(rest);
            let mut root = path.parent();
            while let Some(dir) = root {
                let probe = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                if probe.join(STORE_MARKER).is_file() {
                    let key = path
                        .strip_prefix(dir)
                        .map_err(|_| bad("cannot split the path into store and key"))?;
                    let key = key.to_string_lossy().replace('\\', "/");
                    return Ok(Self::Store {
                        store: format!("dir://{}", probe.display()),
                        key,
                    });
                }
                root = dir.parent();
            }
            return Err(bad(
                "no falaj store (a directory holding .falaj-store.json) on this path; use dir://STORE/KEY with an existing store, or a plain file path",
            ));
        }
        if uri.contains("://") {
            return Err(bad(
                "unknown scheme; use a file path, dir://STORE/KEY or s3://BUCKET/KEY",
            ));
        }
        if uri.is_empty() {
            return Err(bad("the path is empty"));
        }
        Ok(Self::Path(PathBuf::from(uri)))
    }
}

/// The bytes of a dataset, exactly as read, with where they came from.
#[derive(Debug, Clone)]
pub struct DatasetBytes {
    /// URI as given.
    pub uri: String,
    /// Content.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// Region of the store it was read from (`None` for a local path).
    pub region: Option<String>,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Reads the dataset named by `uri`, through the store when it names one.
pub async fn read_dataset(uri: &str, opts: &OpenOptions) -> Result<DatasetBytes, DataError> {
    let (bytes, region) = match DatasetLocation::parse(uri)? {
        DatasetLocation::Path(path) => {
            let bytes = std::fs::read(&path).map_err(|source| DataError::Io {
                path: path.clone(),
                source,
            })?;
            (bytes, None)
        }
        DatasetLocation::Store {
            store: store_uri,
            key,
        } => {
            let key_ok = StoreKey::new(key.clone()).map_err(|e| DataError::Store {
                uri: uri.into(),
                source: store::StoreError::InvalidKey(e),
            })?;
            let opts = OpenOptions {
                create: false,
                ..opts.clone()
            };
            let s = store::open(&store_uri, &opts)
                .await
                .map_err(|source| DataError::Store {
                    uri: uri.into(),
                    source,
                })?;
            let obj = s
                .get(&key_ok)
                .await
                .map_err(|source| DataError::Store {
                    uri: uri.into(),
                    source,
                })?
                .ok_or_else(|| DataError::NotFound {
                    uri: uri.into(),
                    store: store_uri.clone(),
                    key: key.clone(),
                })?;
            (obj.bytes.to_vec(), Some(s.region().to_string()))
        }
    };
    Ok(DatasetBytes {
        uri: uri.into(),
        digest: sha256_digest(&bytes),
        bytes,
        region,
    })
}

/// A parsed, checked table: numeric features and the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Feature names, in model input order.
    pub features: Vec<String>,
    /// Row-major `[rows, features]`.
    pub x: Vec<f64>,
    /// Class index (classification) or value (regression) per row.
    pub y: Vec<f64>,
    /// Class labels in output order (classification only).
    pub classes: Vec<String>,
    /// Rows.
    pub rows: usize,
}

/// What to take from the CSV.
#[derive(Debug, Clone)]
pub struct Columns<'a> {
    /// Target column.
    pub target: &'a str,
    /// Feature columns in order; `None`: every other column, in file order.
    pub features: Option<&'a [String]>,
    /// Task (decides how the target is read).
    pub task: Task,
}

fn parse_number(cell: &str) -> Option<f64> {
    cell.trim().parse::<f64>().ok()
}

/// Parses and checks CSV `bytes` (`source` names the dataset in errors).
pub fn parse_csv(source: &str, bytes: &[u8], cols: &Columns<'_>) -> Result<Table, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes);
    let csv_err = |e: csv::Error| DataError::Csv {
        dataset: source.into(),
        line: e.position().map_or(0, |p| p.line()),
        reason: e.to_string(),
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header.is_empty() || header.iter().all(|h| h.is_empty()) {
        return Err(DataError::Empty {
            dataset: source.into(),
            detail: "there is no header row".into(),
        });
    }
    let mut seen = BTreeSet::new();
    for h in &header {
        if !seen.insert(h.as_str()) {
            return Err(DataError::DuplicateColumn {
                dataset: source.into(),
                column: h.clone(),
            });
        }
    }
    let find = |name: &str, role: &'static str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DataError::MissingColumn {
                dataset: source.into(),
                role,
                column: name.into(),
                available: header.join(", "),
            })
    };
    let target_idx = find(cols.target, "target")?;
    let feature_idx: Vec<usize> = match cols.features {
        Some(list) => list
            .iter()
            .map(|f| find(f, "feature"))
            .collect::<Result<_, _>>()?,
        None => (0..header.len()).filter(|i| *i != target_idx).collect(),
    };
    if feature_idx.is_empty() {
        return Err(DataError::NoFeatures {
            dataset: source.into(),
            target: cols.target.into(),
        });
    }
    let mut x = Vec::new();
    let mut labels = Vec::new();
    let mut rows = 0usize;
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() == 1 && record.get(0).is_some_and(|c| c.trim().is_empty()) {
            continue; // a blank line
        }
        if record.len() != header.len() {
            return Err(DataError::Ragged {
                dataset: source.into(),
                line,
                expected: header.len(),
                found: record.len(),
            });
        }
        let numeric = |i: usize| -> Result<f64, DataError> {
            let cell = &record[i];
            let column = header[i].clone();
            match parse_number(cell) {
                Some(v) if v.is_finite() => Ok(v),
                Some(_) => Err(DataError::NonFinite {
                    dataset: source.into(),
                    line,
                    column,
                    value: cell.into(),
                }),
                None if cell.trim().is_empty() => Err(DataError::NonFinite {
                    dataset: source.into(),
                    line,
                    column,
                    value: cell.into(),
                }),
                None => Err(DataError::NotNumeric {
                    dataset: source.into(),
                    line,
                    column,
                    value: cell.into(),
                }),
            }
        };
        for &i in &feature_idx {
            x.push(numeric(i)?);
        }
        match cols.task {
            Task::Regression => labels.push(LabelCell::Value(numeric(target_idx)?)),
            Task::Classification => {
                let cell = record[target_idx].trim();
                if cell.is_empty() {
                    return Err(DataError::NonFinite {
                        dataset: source.into(),
                        line,
                        column: header[target_idx].clone(),
                        value: String::new(),
                    });
                }
                labels.push(LabelCell::Class(cell.to_string()));
            }
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(DataError::Empty {
            dataset: source.into(),
            detail: "there are no data rows after the header".into(),
        });
    }
    let (y, classes) = match cols.task {
        Task::Regression => (labels.iter().map(LabelCell::value).collect(), Vec::new()),
        Task::Classification => {
            let classes = sorted_classes(labels.iter().map(LabelCell::class));
            if classes.len() < 2 {
                return Err(DataError::SingleClass {
                    dataset: source.into(),
                    column: cols.target.into(),
                    class: classes.first().cloned().unwrap_or_default(),
                });
            }
            let index: BTreeMap<&str, usize> = classes
                .iter()
                .enumerate()
                .map(|(i, c)| (c.as_str(), i))
                .collect();
            (
                labels.iter().map(|l| index[l.class()] as f64).collect(),
                classes,
            )
        }
    };
    Ok(Table {
        features: feature_idx.iter().map(|&i| header[i].clone()).collect(),
        x,
        y,
        classes,
        rows,
    })
}

enum LabelCell {
    Value(f64),
    Class(String),
}

impl LabelCell {
    fn value(&self) -> f64 {
        match self {
            Self::Value(v) => *v,
            Self::Class(_) => f64::NAN,
        }
    }
    fn class(&self) -> &str {
        match self {
            Self::Class(c) => c,
            Self::Value(_) => "",
        }
    }
}

/// Distinct labels, in numeric order when all are numbers (`2` before `10`), else text order.
fn sorted_classes<'a>(labels: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<&str> = labels.collect();
    let mut v: Vec<String> = set.into_iter().map(String::from).collect();
    if v.iter().all(|c| parse_number(c).is_some()) {
        v.sort_by(|a, b| {
            parse_number(a)
                .unwrap_or(0.0)
                .total_cmp(&parse_number(b).unwrap_or(0.0))
        });
    }
    v
}

/// Row indices of the training and validation splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training rows.
    pub train: Vec<usize>,
    /// Validation rows.
    pub validation: Vec<usize>,
}

/// Shuffles the rows with `rng` and holds out `val_fraction` of them (at least one row each).
pub fn split(
    source: &str,
    rows: usize,
    val_fraction: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Split, DataError> {
    if rows < 2 {
        return Err(DataError::TooFewRows {
            dataset: source.into(),
            rows,
            needed: 2,
        });
    }
    let mut idx: Vec<usize> = (0..rows).collect();
    idx.shuffle(rng);
    let n_val = ((rows as f64 * val_fraction).round() as usize).clamp(1, rows - 1);
    let validation = idx.split_off(rows - n_val);
    Ok(Split {
        train: idx,
        validation,
    })
}

/// Summary of one feature on the training split, for standardisation and drift detection.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FeatureStats {
    /// Feature name.
    pub name: String,
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// `bins + 1` ascending edges; the first and last bins are open-ended for drift checks.
    pub bin_edges: Vec<f64>,
    /// Share of training rows per bin (sums to 1).
    pub proportions: Vec<f64>,
}

/// Number of histogram bins recorded per feature.
pub const HISTOGRAM_BINS: usize = 10;

/// Computes per-feature statistics over `rows` of `table`.
pub fn feature_stats(table: &Table, rows: &[usize]) -> Vec<FeatureStats> {
    let n = table.features.len();
    (0..n)
        .map(|j| {
            let values: Vec<f64> = rows.iter().map(|&r| table.x[r * n + j]).collect();
            let count = values.len() as f64;
            let mean = values.iter().sum::<f64>() / count;
            let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count).sqrt();
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let width = (max - min) / HISTOGRAM_BINS as f64;
            let bin_edges: Vec<f64> = if width > 0.0 {
                (0..=HISTOGRAM_BINS)
                    .map(|i| min + width * i as f64)
                    .collect()
            } else {
                vec![min, max]
            };
            let bins = bin_edges.len() - 1;
            let mut counts = vec![0usize; bins];
            for v in &values {
                let b = if width > 0.0 {
                    (((v - min) / width) as usize).min(bins - 1)
                } else {
                    0
                };
                counts[b] += 1;
            }
            FeatureStats {
                name: table.features[j].clone(),
                mean,
                std,
                min,
                max,
                bin_edges,
                proportions: counts.iter().map(|c| *c as f64 / count).collect(),
            }
        })
        .collect()
}

/// Divisor used for a feature: its standard deviation, or 1 for a constant feature (which
/// then only gets centred instead of dividing by zero).
pub fn safe_scale(std: f64) -> f64 {
    if std > 1e-12 { std } else { 1.0 }
}
