//! Image holdouts, both zips:
//! - NumPy `.npz`: `x` as float32 `[N, C, H, W]` (any rank ≥ 2) and `y` as integer class
//!   indices `[N]` (`np.savez` or `np.savez_compressed`; each `.npy` header is a Python dict
//!   literal with `descr`, `fortran_order` and `shape`), already preprocessed;
//! - a folder of PNG or JPEG files with `labels.csv` (`file,label`), packed into a zip (a
//!   local folder by [`pack_folder`], or a `.zip` object in the store), turned into the
//!   model's input by the manifest's image rule, the one the edge applies to image bodies.

use std::io::Read;

/// Zip files start with this.
pub const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// One array: its shape and its values as f64 (or f32 for `x`).
struct Npy {
    descr: String,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn parse_npy(name: &str, b: &[u8]) -> Result<Npy, String> {
    let bad = |why: &str| format!("{name}: {why}");
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy array"));
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(bad(&format!(".npy version {v} is not supported"))),
    };
    let header = b
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}':"))? + key.len() + 3;
        Some(header[at..].trim_start())
    };
    let descr = field("descr")
        .and_then(|s| s.strip_prefix('\'')?.split('\'').next())
        .ok_or_else(|| bad("no descr in the header"))?
        .to_string();
    if field("fortran_order").is_some_and(|s| s.starts_with("True")) {
        return Err(bad(
            "Fortran order is not supported: save a C-contiguous array",
        ));
    }
    let shape_text = field("shape")
        .and_then(|s| s.strip_prefix('(')?.split(')').next())
        .ok_or_else(|| bad("no shape in the header"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad("a shape entry is not a number"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Npy {
        descr,
        shape,
        data: b[start + hlen..].to_vec(),
    })
}

/// An image holdout: rows of `item` values each, and their class indices.
#[derive(Debug, Clone)]
pub struct ImageHoldout {
    /// Row-major items.
    pub x: Vec<f32>,
    /// The shape of one item (`[C, H, W]`).
    pub item: Vec<usize>,
    /// Class index per row.
    pub y: Vec<usize>,
}

/// A zip holdout's members, read with one budget for everything they unpack to
/// (`FALAJ_MAX_HOLDOUT_BYTES`, as for the packed bytes): a zip bomb is refused, not unpacked.
struct Members<'a> {
    zip: zip::ZipArchive<std::io::Cursor<&'a [u8]>>,
    left: u64,
    max: u64,
}

impl<'a> Members<'a> {
    fn open(bytes: &'a [u8]) -> Result<Self, String> {
        let max = crate::holdout::limit("FALAJ_MAX_HOLDOUT_BYTES", crate::MAX_HOLDOUT_BYTES);
        Ok(Self {
            zip: zip::ZipArchive::new(std::io::Cursor::new(bytes))
                .map_err(|e| format!("not a readable zip: {e}"))?,
            left: max,
            max,
        })
    }

    /// The bytes of `name`; `missing` says what to do when it is absent.
    fn read(&mut self, name: &str, missing: &str) -> Result<Vec<u8>, String> {
        let f = self
            .zip
            .by_name(name)
            .map_err(|_| format!("{name}: {missing}"))?;
        let mut b = Vec::new();
        f.take(self.left + 1)
            .read_to_end(&mut b)
            .map_err(|e| format!("{name}: {e}"))?;
        if b.len() as u64 > self.left {
            return Err(format!(
                "the holdout unpacks to more than {} bytes (FALAJ_MAX_HOLDOUT_BYTES): sample it down",
                self.max
            ));
        }
        self.left -= b.len() as u64;
        Ok(b)
    }
}

/// Reads `x` and `y` from an `.npz`; every value of `x` must be finite.
pub fn parse_npz(bytes: &[u8]) -> Result<ImageHoldout, String> {
    let mut zip = Members::open(bytes)?;
    let mut read = |name: &str| -> Result<Npy, String> {
        let missing = "the .npz lacks it (save it with np.savez(path, x=images, y=labels))";
        parse_npy(name, &zip.read(name, missing)?)
    };
    let x = read("x.npy")?;
    let y = read("y.npy")?;
    if x.descr != "<f4" {
        return Err(format!(
            "x.npy holds {}; save it as float32 (x.astype(np.float32))",
            x.descr
        ));
    }
    if x.shape.len() < 2 {
        return Err("x.npy must be [N, ...] with at least one item dimension".into());
    }
    let n = x.shape[0];
    let item: Vec<usize> = x.shape[1..].to_vec();
    let per: usize = item.iter().product();
    if x.data.len() != n * per * 4 {
        return Err(format!(
            "x.npy has {} bytes for shape {:?}",
            x.data.len(),
            x.shape
        ));
    }
    let xs: Vec<f32> = x
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(i) = xs.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "x.npy: item {}, value {} is {} (NaN or infinite)",
            i / per,
            i % per,
            xs[i]
        ));
    }
    if y.shape != [n] {
        return Err(format!(
            "y.npy has shape {:?}; it must be [{n}], one class index per item of x",
            y.shape
        ));
    }
    let width = match y.descr.as_str() {
        "<i8" | "<u8" => 8,
        "<i4" | "<u4" => 4,
        "<i2" | "<u2" => 2,
        "|i1" | "|u1" => 1,
        other => {
            return Err(format!(
                "y.npy holds {other}; save the labels as integers (class indices)"
            ));
        }
    };
    let signed = y.descr.contains('i');
    let ys = y
        .data
        .chunks_exact(width)
        .take(n)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..width].copy_from_slice(c);
            if signed && c[width - 1] & 0x80 != 0 {
                b[width..].fill(0xff);
            }
            let v = i64::from_le_bytes(b);
            usize::try_from(v).map_err(|_| format!("y.npy holds the negative label {v}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ImageHoldout { x: xs, item, y: ys })
}

/// Whether a zip holds an image folder (`labels.csv`) rather than an `.npz`.
pub fn is_image_folder(bytes: &[u8]) -> bool {
    zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .is_ok_and(|mut z| z.by_name("labels.csv").is_ok() && z.by_name("x.npy").is_err())
}

/// The `file,label` rows of a `labels.csv`; a file must be a plain name in the folder.
fn label_rows(csv_bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(csv_bytes);
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| format!("labels.csv: {e}"))?;
        let (Some(file), Some(label)) = (rec.get(0), rec.get(1)) else {
            return Err(format!("labels.csv row {}: expected file,label", i + 1));
        };
        let file = file.trim();
        let plain = !file.is_empty()
            && !file.starts_with('.')
            && !file.contains(['/', '\\'])
            && file != "labels.csv";
        if !plain {
            return Err(format!(
                "labels.csv row {}: {file:?} is not a file name in the folder (no paths, no hidden files)",
                i + 1
            ));
        }
        rows.push((file.to_string(), label.trim().to_string()));
    }
    if rows.is_empty() {
        return Err("labels.csv lists no images".into());
    }
    Ok(rows)
}

/// Packs `dir/labels.csv` and the images it lists into a zip (at most `max` bytes read).
/// Symbolic links and paths out of the folder are refused.
pub fn pack_folder(dir: &std::path::Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let read = |name: &str| -> Result<Vec<u8>, String> {
        let p = dir.join(name);
        let meta = std::fs::symlink_metadata(&p).map_err(|e| format!("{name}: {e}"))?;
        if !meta.is_file() {
            return Err(format!(
                "{name} is not a regular file (links are not followed)"
            ));
        }
        std::fs::read(&p).map_err(|e| format!("{name}: {e}"))
    };
    let labels = read("labels.csv").map_err(|e| {
        format!("{e}; a folder holdout needs labels.csv (file,label) beside its images")
    })?;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut total = labels.len() as u64;
    w.start_file("labels.csv", stored)
        .map_err(|e| e.to_string())?;
    w.write_all(&labels).map_err(|e| e.to_string())?;
    for (file, _) in label_rows(&labels)? {
        let b = read(&file)?;
        total += b.len() as u64;
        if total > max {
            return Err(format!(
                "the folder's images pass {max} bytes (FALAJ_MAX_HOLDOUT_BYTES): sample them down"
            ));
        }
        w.start_file(file, stored).map_err(|e| e.to_string())?;
        w.write_all(&b).map_err(|e| e.to_string())?;
    }
    Ok(w.finish().map_err(|e| e.to_string())?.into_inner())
}

/// A zipped image folder turned into the model's input by `rule`; labels are class names
/// (`classes`) or indices.
pub fn parse_image_folder(
    bytes: &[u8],
    rule: &falaj_core::image::ImagePreprocess,
    classes: &[String],
) -> Result<ImageHoldout, String> {
    let mut zip = Members::open(bytes)?;
    let mut read = |name: &str| zip.read(name, "it is listed in labels.csv but not in the folder");
    let rows = label_rows(&read("labels.csv")?)?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (file, label) in rows {
        let class = classes
            .iter()
            .position(|c| *c == label)
            .or_else(|| label.parse::<usize>().ok().filter(|i| *i < classes.len()))
            .ok_or_else(|| format!("{file}: label {label:?} is not one of the model's classes"))?;
        let t = rule
            .apply(&read(&file)?)
            .map_err(|e| format!("{file}: {e}"))?;
        x.extend(t);
        y.push(class);
    }
    let [h, w] = rule.crop;
    Ok(ImageHoldout {
        x,
        item: vec![3, h as usize, w as usize],
        y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let dims = shape.iter().map(|d| format!("{d},")).collect::<String>();
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    fn npz(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, bytes) in files {
            w.start_file(*name, zip::write::FileOptions::default())
                .unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn floats(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    #[test]
    fn reads_x_and_y_and_names_what_is_wrong() {
        let x = npy(
            "<f4",
            &[2, 1, 2, 2],
            &floats(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]),
        );
        let y = npy(
            "<i8",
            &[2],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        let h = parse_npz(&npz(&[("x.npy", x.clone()), ("y.npy", y.clone())])).unwrap();
        assert_eq!(h.item, vec![1, 2, 2]);
        assert_eq!(h.y, vec![1, 0]);
        assert_eq!(h.x[7], 7.0);

        let nan = npy(
            "<f4",
            &[2, 1, 2, 2],
            &floats(&[0.0, f32::NAN, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]),
        );
        type Files<'a> = Vec<(&'a str, Vec<u8>)>;
        let cases: Vec<(Files, &str)> = vec![
            (vec![("x.npy", x.clone())], "y.npy: the .npz lacks it"),
            (
                vec![("x.npy", nan), ("y.npy", y.clone())],
                "NaN or infinite",
            ),
            (
                vec![
                    ("x.npy", npy("<f8", &[1, 1], &[0; 8])),
                    ("y.npy", y.clone()),
                ],
                "save it as float32",
            ),
            (
                vec![
                    ("x.npy", x.clone()),
                    ("y.npy", npy("<f4", &[2], &floats(&[1.0, 0.0]))),
                ],
                "save the labels as integers",
            ),
            (
                vec![("x.npy", x.clone()), ("y.npy", npy("<i8", &[3], &[0; 24]))],
                "it must be [2]",
            ),
            (
                vec![("x.npy", x), ("y.npy", npy("<i8", &[2], &[0xff; 16]))],
                "negative label -1",
            ),
        ];
        for (files, needle) in cases {
            let e = parse_npz(&npz(&files)).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(parse_npz(b"PK\x03\x04 not a zip").is_err());
    }

    /// A zip bomb: 64 MiB of zeros deflate to a few KiB; what it unpacks to is capped by the
    /// holdout limit, so it is refused before it is unpacked whole.
    #[test]
    fn a_zip_bomb_is_refused_by_what_it_unpacks_to() {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let deflated =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        w.start_file("x.npy", deflated).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            w.write_all(&zeros).unwrap();
        }
        let bomb = w.finish().unwrap().into_inner();
        assert!(bomb.len() < 1 << 20, "{} bytes packed", bomb.len());
        // SAFETY: set before anything reads it in this test binary; no other test reads it.
        unsafe { std::env::set_var("FALAJ_MAX_HOLDOUT_BYTES", (16u64 << 20).to_string()) };
        let e = parse_npz(&bomb).unwrap_err();
        unsafe { std::env::remove_var("FALAJ_MAX_HOLDOUT_BYTES") };
        assert!(e.contains("unpacks to more than 16777216 bytes"), "{e}");
    }
}
