//! The holdout: where it comes from, its size limit, and its CSV parsed against a model's
//! manifest (every column present, every value a finite number).

use bytes::Bytes;
use falaj::RegistryError;
use falaj::registry::Registry;
use falaj_core::TrainingManifest;
use falaj_core::manifest::Task;

use falaj::reports::{GateError, Holdout};

/// Largest holdout the gates read (`FALAJ_MAX_HOLDOUT_BYTES` overrides): it is held in
/// memory whole, so a bigger one is refused before a byte is read.
pub const MAX_HOLDOUT_BYTES: u64 = 512 << 20;
/// Largest artifact the gates load into tract (`FALAJ_MAX_ARTIFACT_BYTES` overrides).
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 30;

pub(crate) fn limit(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How the gates name and read a [`Holdout`].
pub(crate) trait HoldoutSource {
    /// How messages name it.
    fn name(&self) -> String;
    /// Its bytes, refused above the holdout limit.
    async fn read(&self, reg: &Registry) -> Result<Bytes, GateError>;
}

impl HoldoutSource for Holdout {
    fn name(&self) -> String {
        match self {
            Self::Path(p) => p.display().to_string(),
            Self::Store(k) => format!("store:{k}"),
            Self::Bytes { name, .. } => name.clone(),
        }
    }

    async fn read(&self, reg: &Registry) -> Result<Bytes, GateError> {
        let name = self.name();
        let max = limit("FALAJ_MAX_HOLDOUT_BYTES", MAX_HOLDOUT_BYTES);
        let too_big = |len: u64| GateError::Holdout {
            source_name: name.clone(),
            reason: format!(
                "it is {len} bytes; the gates read holdouts of at most {max} bytes (FALAJ_MAX_HOLDOUT_BYTES): sample it down"
            ),
        };
        match self {
            Self::Path(p) if p.is_dir() => {
                // A folder of images with labels.csv: packed as the zip a store object of
                // the same files would be, and read like one.
                let dir = p.clone();
                let packed =
                    tokio::task::spawn_blocking(move || crate::npz::pack_folder(&dir, max))
                        .await
                        .map_err(|e| GateError::Holdout {
                            source_name: name.clone(),
                            reason: e.to_string(),
                        })?;
                packed
                    .map(Bytes::from)
                    .map_err(|reason| GateError::Holdout {
                        source_name: name,
                        reason,
                    })
            }
            Self::Path(p) => {
                if let Ok(m) = tokio::fs::metadata(p).await
                    && m.len() > max
                {
                    return Err(too_big(m.len()));
                }
                tokio::fs::read(p)
                    .await
                    .map(Bytes::from)
                    .map_err(|e| GateError::Holdout {
                        source_name: name,
                        reason: format!("cannot read: {e}"),
                    })
            }
            Self::Store(k) => match reg.store().get(k).await.map_err(RegistryError::from)? {
                Some(o) if o.bytes.len() as u64 > max => Err(too_big(o.bytes.len() as u64)),
                Some(o) => Ok(o.bytes),
                None => Err(GateError::Holdout {
                    source_name: name,
                    reason: "no such object in the store".into(),
                }),
            },
            Self::Bytes { bytes, .. } => Ok(bytes.clone()),
        }
    }
}

/// A holdout parsed against a model's manifest.
#[derive(Debug, Clone)]
pub struct HoldoutData {
    /// Row-major features, `rows x n_features`, in the manifest's order.
    pub x: Vec<f32>,
    /// Number of features.
    pub n_features: usize,
    /// Targets: class index (classification) or value (regression).
    pub y: Vec<f64>,
    /// Sensitive attribute per row, when the policy has a fairness gate.
    pub groups: Option<Vec<String>>,
    /// Rows.
    pub rows: usize,
    /// The shape of one row as the model takes it: `[n_features]` for a table, `[C, H, W]`
    /// for an image holdout (`.npz`).
    pub item_shape: Vec<usize>,
}

/// Parses a holdout CSV for `manifest`, checking every column is present and numeric.
pub fn parse_holdout(
    csv_bytes: &[u8],
    manifest: &TrainingManifest,
    sensitive: Option<&str>,
) -> Result<HoldoutData, HoldoutParseError> {
    if csv_bytes.starts_with(crate::npz::ZIP_MAGIC) {
        return parse_image_holdout(csv_bytes, manifest, sensitive);
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(csv_bytes);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| HoldoutParseError::Read(e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let pos = |c: &str| headers.iter().position(|h| h == c);
    let mut missing: Vec<String> = manifest
        .features
        .iter()
        .filter(|f| pos(f).is_none())
        .cloned()
        .collect();
    if pos(&manifest.target).is_none() {
        missing.push(manifest.target.clone());
    }
    if !missing.is_empty() {
        return Err(HoldoutParseError::Missing(missing));
    }
    let sens_idx = match sensitive {
        Some(c) => Some(pos(c).ok_or_else(|| HoldoutParseError::NoSensitive(headers.clone()))?),
        None => None,
    };
    let feat_idx: Vec<usize> = manifest.features.iter().filter_map(|f| pos(f)).collect();
    let target_idx = pos(&manifest.target).unwrap_or(0);
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut groups = sens_idx.map(|_| Vec::new());
    let mut rec = csv::ByteRecord::new();
    let mut row = 0usize;
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(HoldoutParseError::Read(e.to_string())),
        }
        row += 1;
        let field = |i: usize| {
            std::str::from_utf8(rec.get(i).unwrap_or(b""))
                .unwrap_or("")
                .trim()
        };
        for (fi, &i) in feat_idx.iter().enumerate() {
            let v: f32 = field(i)
                .parse()
                .map_err(|_| HoldoutParseError::NotNumeric {
                    row,
                    column: manifest.features[fi].clone(),
                    value: field(i).to_string(),
                })?;
            if !v.is_finite() {
                return Err(HoldoutParseError::NotFinite {
                    row,
                    column: manifest.features[fi].clone(),
                    value: field(i).to_string(),
                });
            }
            x.push(v);
        }
        let t = field(target_idx);
        let target = match manifest.task {
            Task::Regression => t
                .parse::<f64>()
                .map_err(|_| HoldoutParseError::NotNumeric {
                    row,
                    column: manifest.target.clone(),
                    value: t.to_string(),
                })?,
            Task::Classification => match manifest.classes.iter().position(|c| c == t) {
                Some(i) => i as f64,
                None if manifest.classes.is_empty() => {
                    t.parse::<u32>().map(f64::from).map_err(|_| {
                        HoldoutParseError::UnknownClass {
                            row,
                            value: t.to_string(),
                            classes: manifest.classes.clone(),
                        }
                    })?
                }
                None => {
                    return Err(HoldoutParseError::UnknownClass {
                        row,
                        value: t.to_string(),
                        classes: manifest.classes.clone(),
                    });
                }
            },
        };
        if !target.is_finite() {
            return Err(HoldoutParseError::NotFinite {
                row,
                column: manifest.target.clone(),
                value: t.to_string(),
            });
        }
        y.push(target);
        if let (Some(g), Some(i)) = (groups.as_mut(), sens_idx) {
            g.push(field(i).to_string());
        }
    }
    if row == 0 {
        return Err(HoldoutParseError::Read("it has no data rows".into()));
    }
    if row > 1 && y.iter().all(|t| *t == y[0]) {
        return Err(HoldoutParseError::ConstantTarget {
            column: manifest.target.clone(),
            rows: row,
        });
    }
    Ok(HoldoutData {
        x,
        n_features: feat_idx.len(),
        y,
        groups,
        rows: row,
        item_shape: vec![feat_idx.len()],
    })
}

/// An image holdout (`.npz`: `x` float32 `[N, C, H, W]`, `y` class indices) for an image
/// classifier's manifest.
fn parse_image_holdout(
    bytes: &[u8],
    manifest: &TrainingManifest,
    sensitive: Option<&str>,
) -> Result<HoldoutData, HoldoutParseError> {
    if sensitive.is_some() {
        return Err(HoldoutParseError::Read(
            "an .npz holdout has no groups: a fairness gate needs a CSV holdout".into(),
        ));
    }
    if manifest.task != Task::Classification {
        return Err(HoldoutParseError::Read(
            "an .npz holdout is for image classifiers; this model's manifest says regression"
                .into(),
        ));
    }
    let h = if crate::npz::is_image_folder(bytes) {
        let rule = manifest.image.as_ref().ok_or_else(|| {
            HoldoutParseError::Read(
                "a folder of images needs the manifest's image rule (how an image becomes the model's input); write it with `falaj manifest init ... --image-resize ... --image-mean ... --image-std ...`".into(),
            )
        })?;
        crate::npz::parse_image_folder(bytes, rule, &manifest.classes)
            .map_err(HoldoutParseError::Read)?
    } else {
        crate::npz::parse_npz(bytes).map_err(HoldoutParseError::Read)?
    };
    let k = manifest.classes.len();
    if let Some((row, bad)) = h.y.iter().enumerate().find(|(_, c)| k > 0 && **c >= k) {
        return Err(HoldoutParseError::UnknownClass {
            row: row + 1,
            value: bad.to_string(),
            classes: manifest.classes.clone(),
        });
    }
    let rows = h.y.len();
    if rows == 0 {
        return Err(HoldoutParseError::Read("it has no items".into()));
    }
    if rows > 1 && h.y.iter().all(|c| *c == h.y[0]) {
        return Err(HoldoutParseError::ConstantTarget {
            column: "y".into(),
            rows,
        });
    }
    Ok(HoldoutData {
        n_features: h.item.iter().product(),
        x: h.x,
        y: h.y.iter().map(|c| *c as f64).collect(),
        groups: None,
        rows,
        item_shape: h.item,
    })
}

/// Why a holdout could not be parsed (see [`parse_holdout`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HoldoutParseError {
    /// CSV-level problem.
    #[error("{0}")]
    Read(String),
    /// Feature or target columns missing.
    #[error("missing columns {0:?}")]
    Missing(Vec<String>),
    /// The sensitive column is missing; holds the columns present.
    #[error("sensitive column missing (columns: {0:?})")]
    NoSensitive(Vec<String>),
    /// A value is not a number.
    #[error("row {row}, column {column:?}: {value:?} is not a number")]
    NotNumeric {
        /// 1-based data row.
        row: usize,
        /// Column.
        column: String,
        /// Value.
        value: String,
    },
    /// NaN or an infinity: the model would score it as some class and the gates would count it.
    #[error(
        "row {row}, column {column:?}: {value:?} is not a finite number; remove or impute the row"
    )]
    NotFinite {
        /// 1-based data row.
        row: usize,
        /// Column.
        column: String,
        /// Value.
        value: String,
    },
    /// Every row has the same target: accuracy would measure nothing.
    #[error(
        "column {column:?} holds the same target in all {rows} rows; a holdout must hold more than one class or value"
    )]
    ConstantTarget {
        /// Target column.
        column: String,
        /// Rows.
        rows: usize,
    },
    /// A target label the model does not know.
    #[error("row {row}: target {value:?} is not one of the model's classes {classes:?}")]
    UnknownClass {
        /// 1-based data row.
        row: usize,
        /// Value.
        value: String,
        /// Known classes.
        classes: Vec<String>,
    },
}
