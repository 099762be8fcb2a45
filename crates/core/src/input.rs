//! Request bodies for `POST /predict`, parsed and checked into a row-major f32 batch: the
//! inference component answers with it and the edge host sketches what it served with it.
//!
//! Three shapes are accepted:
//!
//! * `{"inputs": [[1.0, 2.0, ...], ...]}`: rows of values in the model's feature order;
//! * `{"inputs": [{"feature_name": 1.0, ...}, ...]}`: rows by feature name (names from
//!   `manifest.json`; every feature exactly once, nothing else);
//! * a raw tensor, `Content-Type: application/octet-stream`: little-endian f32, rows ×
//!   features, row-major.
//!
//! Every problem is an [`InputError`] with the HTTP status to answer: 400 for a body that is
//! not what it claims to be, 413 for one over [`MAX_BODY_BYTES`], 415 for a content type we do
//! not read, 422 for well-formed input the model cannot take (wrong number of features,
//! unknown or missing names, a value that is not a finite number, no rows).

use std::collections::HashMap;

use serde_json::Value;

/// Largest request body read, in bytes (4 MiB: a million f32 values).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// A request the component refuses, with the status and a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// HTTP status.
    pub status: u16,
    /// Stable code (`malformed_json`, `wrong_feature_count`, ...).
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

impl InputError {
    /// A new error.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

/// The 413 for a body over the limit (`len` is what was seen so far, or the declared length).
pub fn too_large(len: u64) -> InputError {
    InputError::new(
        413,
        "body_too_large",
        format!("request body of {len} bytes or more is over the limit of {MAX_BODY_BYTES} bytes"),
    )
}

/// Rows of features, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `rows * n_features` values.
    pub x: Vec<f32>,
    /// Number of rows.
    pub rows: usize,
}

/// How a body is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// JSON (`application/json`, `+json`, or no content type at all).
    Json,
    /// Raw little-endian f32 (`application/octet-stream`).
    Raw,
    /// One encoded image (`image/png`, `image/jpeg`), for a model whose manifest says how
    /// images become its input.
    Image,
}

/// The body kind for a `Content-Type` header value.
pub fn body_kind(content_type: Option<&str>) -> Result<BodyKind, InputError> {
    let Some(ct) = content_type else {
        return Ok(BodyKind::Json);
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/octet-stream" => Ok(BodyKind::Raw),
        "image/png" | "image/jpeg" | "image/jpg" => Ok(BodyKind::Image),
        // curl -d sends form-urlencoded by default; the body is still ours to parse as JSON.
        ""
        | "application/json"
        | "text/json"
        | "text/plain"
        | "application/x-www-form-urlencoded" => Ok(BodyKind::Json),
        m if m.ends_with("+json") => Ok(BodyKind::Json),
        _ => Err(InputError::new(
            415,
            "unsupported_media_type",
            format!(
                "content type {ct:?} is not read here: send application/json \
                 ({{\"inputs\": [...]}}, or {{\"images\": [base64, ...]}} for an image model), \
                 application/octet-stream (little-endian f32 rows), or image/png or image/jpeg"
            ),
        )),
    }
}

/// Parses `body` of `kind` into a batch for a model of `n_features` (named `features`, which
/// may be empty when there is no manifest).
pub fn parse(
    kind: BodyKind,
    body: &[u8],
    features: &[String],
    n_features: usize,
) -> Result<Batch, InputError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large(body.len() as u64));
    }
    match kind {
        BodyKind::Json => parse_json(body, features, n_features),
        BodyKind::Raw => parse_raw(body, n_features),
        BodyKind::Image => Err(InputError::new(
            415,
            "not_an_image_model",
            "an image body needs a model whose manifest says how images become its input",
        )),
    }
}

/// A batch from images: one PNG or JPEG body (`BodyKind::Image`), or JSON
/// `{"images": ["<base64>", ...]}`, each turned into the model's input by `rule` (the
/// manifest's `image`).
pub fn parse_images(
    kind: BodyKind,
    body: &[u8],
    rule: Option<&crate::image::ImagePreprocess>,
) -> Result<Batch, InputError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large(body.len() as u64));
    }
    let Some(rule) = rule else {
        return Err(InputError::new(
            415,
            "not_an_image_model",
            "this model's manifest has no `image` section, so images cannot be turned into its input; send its input tensor (application/octet-stream or JSON \"inputs\")",
        ));
    };
    let images: Vec<Vec<u8>> = match kind {
        BodyKind::Image => vec![body.to_vec()],
        _ => {
            let doc = json_doc(body)?;
            let Some(list) = doc.get("images").and_then(Value::as_array) else {
                return Err(InputError::new(
                    400,
                    "bad_request",
                    "expected {\"images\": [\"<base64 PNG or JPEG>\", ...]}",
                ));
            };
            list.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().and_then(base64_decode).ok_or_else(|| {
                        InputError::new(
                            400,
                            "bad_request",
                            format!("images[{i}] is not a base64 string"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };
    if images.is_empty() {
        return Err(InputError::new(422, "no_rows", "\"images\" is empty"));
    }
    let mut x = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let t = rule
            .apply(img)
            .map_err(|e| InputError::new(422, "bad_image", format!("image {i}: {e}")))?;
        x.extend(t);
    }
    Ok(Batch {
        x,
        rows: images.len(),
    })
}

/// Standard base64 (padding optional); `None` for anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

fn feature_label(features: &[String], j: usize) -> String {
    match features.get(j) {
        Some(name) => format!("feature {j} ({name})"),
        None => format!("feature {j}"),
    }
}

fn list(names: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

fn wrong_count(row: usize, got: usize, features: &[String], n: usize) -> InputError {
    let names = if features.is_empty() {
        String::new()
    } else {
        format!(": {}", list(features))
    };
    InputError::new(
        422,
        "wrong_feature_count",
        format!("row {row} has {got} values; the model takes {n} features{names}"),
    )
}

fn number(v: &Value, row: usize, j: usize, features: &[String]) -> Result<f32, InputError> {
    let Some(f) = v.as_f64() else {
        let kind = match v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
            Value::Number(_) => "a number out of range",
        };
        return Err(InputError::new(
            422,
            "not_a_number",
            format!(
                "row {row}, {}: expected a number, got {kind}",
                feature_label(features, j)
            ),
        ));
    };
    let x = f as f32;
    if !x.is_finite() {
        return Err(non_finite(row, j, features, f as f32));
    }
    Ok(x)
}

fn non_finite(row: usize, j: usize, features: &[String], x: f32) -> InputError {
    InputError::new(
        422,
        "not_finite",
        format!(
            "row {row}, {}: {x} is not a finite f32 (NaN, infinite, or beyond ±3.4e38)",
            feature_label(features, j)
        ),
    )
}

/// The body as JSON, or the 400 that says it is not.
fn json_doc(body: &[u8]) -> Result<Value, InputError> {
    serde_json::from_slice(body).map_err(|e| {
        InputError::new(
            400,
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Parses a JSON body.
pub fn parse_json(body: &[u8], features: &[String], n: usize) -> Result<Batch, InputError> {
    let doc = json_doc(body)?;
    let expected = "expected a JSON object {\"inputs\": [[...], ...]} or \
                    {\"inputs\": [{\"feature\": value, ...}, ...]}";
    let Some(inputs) = doc.as_object().and_then(|o| o.get("inputs")) else {
        return Err(InputError::new(400, "bad_request", expected));
    };
    let Some(rows) = inputs.as_array() else {
        return Err(InputError::new(
            400,
            "bad_request",
            format!("\"inputs\" must be an array of rows; {expected}"),
        ));
    };
    if rows.is_empty() {
        return Err(InputError::new(422, "no_rows", "\"inputs\" has no rows"));
    }
    let mut x = Vec::with_capacity(rows.len() * n);
    let mut index: Option<HashMap<&str, usize>> = None;
    for (r, row) in rows.iter().enumerate() {
        match row {
            Value::Array(values) => {
                if values.len() != n {
                    return Err(wrong_count(r, values.len(), features, n));
                }
                for (j, v) in values.iter().enumerate() {
                    x.push(number(v, r, j, features)?);
                }
            }
            Value::Object(named) => {
                if features.is_empty() {
                    return Err(InputError::new(
                        422,
                        "feature_names_unknown",
                        "this model has no manifest.json, so its feature names are unknown: \
                         send each row as an array of values",
                    ));
                }
                let index = index.get_or_insert_with(|| {
                    features
                        .iter()
                        .enumerate()
                        .map(|(j, f)| (f.as_str(), j))
                        .collect()
                });
                let unknown: Vec<String> = named
                    .keys()
                    .filter(|k| !index.contains_key(k.as_str()))
                    .cloned()
                    .collect();
                if !unknown.is_empty() {
                    return Err(InputError::new(
                        422,
                        "unknown_feature",
                        format!(
                            "row {r}: unknown feature name{} {}; the model's features are {}",
                            if unknown.len() == 1 { "" } else { "s" },
                            list(&unknown),
                            list(features)
                        ),
                    ));
                }
                if named.len() != n {
                    let missing: Vec<String> = features
                        .iter()
                        .filter(|f| !named.contains_key(f.as_str()))
                        .cloned()
                        .collect();
                    return Err(InputError::new(
                        422,
                        "missing_feature",
                        format!(
                            "row {r} has {} of the model's {n} features; missing {}",
                            named.len(),
                            list(&missing)
                        ),
                    ));
                }
                let start = x.len();
                x.resize(start + n, 0.0);
                for (k, v) in named {
                    let j = index[k.as_str()];
                    x[start + j] = number(v, r, j, features)?;
                }
            }
            _ => {
                return Err(InputError::new(
                    400,
                    "bad_request",
                    format!("row {r} is neither an array of values nor an object of features"),
                ));
            }
        }
    }
    Ok(Batch {
        x,
        rows: rows.len(),
    })
}

/// Parses a raw little-endian f32 body.
pub fn parse_raw(body: &[u8], n: usize) -> Result<Batch, InputError> {
    if body.is_empty() {
        return Err(InputError::new(422, "no_rows", "the tensor body is empty"));
    }
    if !body.len().is_multiple_of(4) {
        return Err(InputError::new(
            400,
            "bad_tensor",
            format!(
                "a raw body of {} bytes is not a whole number of little-endian f32 values",
                body.len()
            ),
        ));
    }
    let values = body.len() / 4;
    if !values.is_multiple_of(n) {
        return Err(InputError::new(
            422,
            "wrong_feature_count",
            format!(
                "the tensor has {values} f32 values, not a whole number of rows of the model's \
                 {n} features"
            ),
        ));
    }
    let mut x = Vec::with_capacity(values);
    for (i, c) in body.chunks_exact(4).enumerate() {
        let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if !v.is_finite() {
            return Err(non_finite(i / n, i % n, &[], v));
        }
        x.push(v);
    }
    Ok(Batch {
        x,
        rows: values / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn rows_by_position_and_by_name_give_the_same_batch() {
        let by_pos = parse_json(br#"{"inputs": [[1, 2, 3], [4, 5.5, -6]]}"#, &names(), 3);
        let by_name = parse_json(
            br#"{"inputs": [{"c": 3, "a": 1, "b": 2}, {"b": 5.5, "a": 4, "c": -6}]}"#,
            &names(),
            3,
        );
        let want = Batch {
            x: vec![1.0, 2.0, 3.0, 4.0, 5.5, -6.0],
            rows: 2,
        };
        assert_eq!(by_pos.unwrap(), want);
        assert_eq!(by_name.unwrap(), want);
    }

    #[test]
    fn raw_tensor_is_little_endian_f32_rows() {
        let body: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b = parse_raw(&body, 3).unwrap();
        assert_eq!(b.rows, 2);
        assert_eq!(b.x[5], 6.0);
    }

    #[test]
    fn each_bad_input_has_its_status_and_code() {
        let n = names();
        let case = |body: &str| parse_json(body.as_bytes(), &n, 3).unwrap_err();
        assert_eq!(case("{\"inputs\": [[1, 2").code, "malformed_json");
        assert_eq!(case("{\"inputs\": [[1, 2",).status, 400);
        assert_eq!(case("[[1, 2, 3]]").status, 400);
        assert_eq!(case("{\"inputs\": 3}").status, 400);
        assert_eq!(case("{\"inputs\": [3]}").status, 400);
        let e = case("{\"inputs\": [[1, 2]]}");
        assert_eq!((e.status, e.code), (422, "wrong_feature_count"));
        assert!(e.message.contains("\"a\", \"b\", \"c\""), "{e}");
        let e = case("{\"inputs\": [{\"a\": 1, \"b\": 2, \"zz\": 3}]}");
        assert_eq!((e.status, e.code), (422, "unknown_feature"));
        assert!(e.message.contains("\"zz\""), "{e}");
        let e = case("{\"inputs\": [{\"a\": 1, \"b\": 2}]}");
        assert_eq!((e.status, e.code), (422, "missing_feature"));
        assert!(e.message.contains("\"c\""), "{e}");
        let e = case("{\"inputs\": [[1, \"2\", 3]]}");
        assert_eq!((e.status, e.code), (422, "not_a_number"));
        assert!(e.message.contains("feature 1 (b)"), "{e}");
        assert_eq!(case("{\"inputs\": [[1, null, 3]]}").code, "not_a_number");
        assert_eq!(case("{\"inputs\": [[1, 1e39, 3]]}").code, "not_finite");
        // JSON has no NaN literal: it is malformed JSON, still a 400 with a clear message.
        assert_eq!(case("{\"inputs\": [[1, NaN, 3]]}").code, "malformed_json");
        assert_eq!(case("{\"inputs\": []}").code, "no_rows");

        let nan: Vec<u8> = [1.0f32, f32::NAN, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(parse_raw(&nan, 3).unwrap_err().code, "not_finite");
        assert_eq!(parse_raw(&nan[..7], 3).unwrap_err().code, "bad_tensor");
        assert_eq!(
            parse_raw(&nan[..8], 3).unwrap_err().code,
            "wrong_feature_count"
        );
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(parse(BodyKind::Json, &big, &n, 3).unwrap_err().status, 413);
    }

    #[test]
    fn content_types() {
        assert_eq!(body_kind(None).unwrap(), BodyKind::Json);
        assert_eq!(
            body_kind(Some("application/json; charset=utf-8")).unwrap(),
            BodyKind::Json
        );
        assert_eq!(
            body_kind(Some("Application/Octet-Stream")).unwrap(),
            BodyKind::Raw
        );
        assert_eq!(body_kind(Some("image/png")).unwrap(), BodyKind::Image);
        assert_eq!(body_kind(Some("image/gif")).unwrap_err().status, 415);
    }

    #[test]
    fn images_come_as_png_bodies_or_base64_json_and_bad_ones_are_named() {
        // A 2x2 grey PNG, by hand: signature, IHDR (8-bit grey), IDAT, IEND.
        let png: Vec<u8> = {
            fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
                let mut crc_in = kind.to_vec();
                crc_in.extend_from_slice(data);
                let mut out = (data.len() as u32).to_be_bytes().to_vec();
                out.extend_from_slice(&crc_in);
                out.extend_from_slice(&crc32(&crc_in).to_be_bytes());
                out
            }
            fn crc32(b: &[u8]) -> u32 {
                let mut c = 0xFFFF_FFFFu32;
                for x in b {
                    c ^= u32::from(*x);
                    for _ in 0..8 {
                        c = if c & 1 != 0 {
                            0xEDB8_8320 ^ (c >> 1)
                        } else {
                            c >> 1
                        };
                    }
                }
                !c
            }
            // zlib stream of two stored rows [0, 128, 128] (filter 0): a stored deflate block.
            let raw = [0u8, 128, 128, 0, 128, 128];
            let mut z = vec![0x78, 0x01, 0x01, 6, 0, !6u8, 0xFF];
            z.extend_from_slice(&raw);
            let (mut a, mut b) = (1u32, 0u32);
            for x in raw {
                a = (a + u32::from(x)) % 65521;
                b = (b + a) % 65521;
            }
            z.extend_from_slice(&((b << 16) | a).to_be_bytes());
            let mut p = b"\x89PNG\r\n\x1a\n".to_vec();
            p.extend(chunk(b"IHDR", &[0, 0, 0, 2, 0, 0, 0, 2, 8, 0, 0, 0, 0]));
            p.extend(chunk(b"IDAT", &z));
            p.extend(chunk(b"IEND", &[]));
            p
        };
        let rule = crate::image::ImagePreprocess {
            resize: None,
            crop: [2, 2],
            scale: 1.0,
            mean: vec![],
            std: vec![],
            channel_order: crate::image::ChannelOrder::Rgb,
        };
        let one = parse_images(BodyKind::Image, &png, Some(&rule)).unwrap();
        assert_eq!((one.rows, one.x.len()), (1, 12));
        assert!(one.x.iter().all(|v| *v == 128.0), "{:?}", one.x);
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b64: String = png
            .chunks(3)
            .flat_map(|c| {
                let n = (u32::from(c[0]) << 16)
                    | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                    | u32::from(*c.get(2).unwrap_or(&0));
                (0..=c.len()).map(move |i| B64[((n >> (18 - 6 * i)) & 63) as usize] as char)
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({"images": [b64.clone(), b64]})).unwrap();
        let two = parse_images(BodyKind::Json, &body, Some(&rule)).unwrap();
        assert_eq!(two.rows, 2);
        assert_eq!(two.x, [one.x.clone(), one.x].concat());
        let e = parse_images(BodyKind::Image, b"GIF89a....", Some(&rule)).unwrap_err();
        assert_eq!((e.status, e.code), (422, "bad_image"));
        let e = parse_images(BodyKind::Image, &png, None).unwrap_err();
        assert_eq!((e.status, e.code), (415, "not_an_image_model"));
        let e = parse_images(BodyKind::Json, br#"{"images": [42]}"#, Some(&rule)).unwrap_err();
        assert_eq!(e.status, 400);
    }
}
