//! Images into an image classifier's input: PNG or JPEG bytes decoded to RGB, resized,
//! centre-cropped, scaled and normalised into a `[C, H, W]` float tensor, by the rule the
//! model's manifest states (`image` in `manifest.json`). The edge component applies it to
//! image request bodies; the rule lives here once, so a model is served the way its manifest
//! says it was trained.
//!
//! The resize is bilinear with half-pixel centres and no antialiasing (OpenCV's
//! `INTER_LINEAR`; `scripts/make-byo-cases.py` has the same in NumPy for the reference
//! outputs), so any trainer can reproduce it exactly.

use serde::{Deserialize, Serialize};

/// Largest image decoded, in pixels (a 4096 x 4096 photo).
pub const MAX_PIXELS: u64 = 4096 * 4096;

/// Channel order the model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue (torchvision, PIL).
    #[default]
    Rgb,
    /// Blue, green, red (OpenCV, Caffe).
    Bgr,
}

fn one() -> f32 {
    1.0
}

/// How an image becomes the model's input (`image` in the manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePreprocess {
    /// Resize so the shorter side is this many pixels, keeping the aspect ratio, before the
    /// crop; absent: no resize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<u32>,
    /// Centre crop `[height, width]`: the model's H and W.
    pub crop: [u32; 2],
    /// Each 0-255 value is multiplied by this first (`1/255` for `[0, 1]`).
    #[serde(default = "one")]
    pub scale: f32,
    /// Per-channel mean subtracted after scaling (in `channel_order`).
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after the mean.
    #[serde(default)]
    pub std: Vec<f32>,
    /// Channel order of the tensor.
    #[serde(default)]
    pub channel_order: ChannelOrder,
}

/// An image that cannot be used, with what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ImageError(pub String);

/// A decoded 8-bit RGB image.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb8 {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Row-major RGB bytes.
    pub data: Vec<u8>,
}

/// Whether `bytes` look like a PNG or a JPEG.
pub fn is_image(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Decodes a PNG or JPEG (told apart by their first bytes) to RGB.
pub fn decode(bytes: &[u8]) -> Result<Rgb8, ImageError> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        decode_jpeg(bytes)
    } else {
        Err(ImageError(
            "the image is neither a PNG nor a JPEG (by its first bytes)".into(),
        ))
    }
}

fn check_size(w: u64, h: u64) -> Result<(), ImageError> {
    if w == 0 || h == 0 || w * h > MAX_PIXELS {
        return Err(ImageError(format!(
            "the image is {w}x{h}; images of 1 to {MAX_PIXELS} pixels are read"
        )));
    }
    Ok(())
}

fn decode_png(bytes: &[u8]) -> Result<Rgb8, ImageError> {
    let bad = |e: png::DecodingError| ImageError(format!("the PNG cannot be decoded: {e}"));
    let mut d = png::Decoder::new(std::io::Cursor::new(bytes));
    d.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut r = d.read_info().map_err(bad)?;
    let info = r.info();
    check_size(u64::from(info.width), u64::from(info.height))?;
    let mut buf = vec![
        0;
        r.output_buffer_size()
            .ok_or_else(|| ImageError("the PNG is too large".into()))?
    ];
    let out = r.next_frame(&mut buf).map_err(bad)?;
    let (w, h) = (out.width, out.height);
    let px = (w as usize) * (h as usize);
    let src = &buf[..out.buffer_size()];
    let data: Vec<u8> = match out.color_type {
        png::ColorType::Rgb => src.to_vec(),
        png::ColorType::Rgba => src
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Grayscale => src.iter().flat_map(|g| [*g, *g, *g]).collect(),
        png::ColorType::GrayscaleAlpha => src
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        png::ColorType::Indexed => {
            return Err(ImageError("an indexed PNG was not expanded".into()));
        }
    };
    if data.len() != px * 3 {
        return Err(ImageError("the PNG's pixel data is truncated".into()));
    }
    Ok(Rgb8 {
        width: w,
        height: h,
        data,
    })
}

fn decode_jpeg(bytes: &[u8]) -> Result<Rgb8, ImageError> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    d.decode_headers()
        .map_err(|e| ImageError(format!("the JPEG cannot be decoded: {e:?}")))?;
    let (w, h) = d
        .dimensions()
        .ok_or_else(|| ImageError("the JPEG has no dimensions".into()))?;
    check_size(w as u64, h as u64)?;
    let data = d
        .decode()
        .map_err(|e| ImageError(format!("the JPEG cannot be decoded: {e:?}")))?;
    if data.len() != w * h * 3 {
        return Err(ImageError("the JPEG did not decode to RGB".into()));
    }
    Ok(Rgb8 {
        width: w as u32,
        height: h as u32,
        data,
    })
}

/// Bilinear resize (half-pixel centres, edges clamped, no antialiasing) of one channel
/// plane stored interleaved in `src` at offset `c` of `3`.
fn resize(img: &Rgb8, ow: u32, oh: u32) -> Rgb8 {
    let (iw, ih) = (img.width as usize, img.height as usize);
    let (ow_, oh_) = (ow as usize, oh as usize);
    let (sx, sy) = (iw as f32 / ow as f32, ih as f32 / oh as f32);
    let mut out = vec![0u8; ow_ * oh_ * 3];
    for y in 0..oh_ {
        let fy = ((y as f32 + 0.5) * sy - 0.5).max(0.0);
        let y0 = (fy.floor() as usize).min(ih - 1);
        let y1 = (y0 + 1).min(ih - 1);
        let wy = fy - y0 as f32;
        for x in 0..ow_ {
            let fx = ((x as f32 + 0.5) * sx - 0.5).max(0.0);
            let x0 = (fx.floor() as usize).min(iw - 1);
            let x1 = (x0 + 1).min(iw - 1);
            let wx = fx - x0 as f32;
            for c in 0..3 {
                let p = |yy: usize, xx: usize| f32::from(img.data[(yy * iw + xx) * 3 + c]);
                let top = p(y0, x0) * (1.0 - wx) + p(y0, x1) * wx;
                let bottom = p(y1, x0) * (1.0 - wx) + p(y1, x1) * wx;
                let v = top * (1.0 - wy) + bottom * wy;
                out[(y * ow_ + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Rgb8 {
        width: ow,
        height: oh,
        data: out,
    }
}

impl ImagePreprocess {
    /// Checks the rule against the model's `[C, H, W]`.
    pub fn check(&self, item: &[usize]) -> Result<(), ImageError> {
        let [h, w] = self.crop;
        if item != [3, h as usize, w as usize] {
            return Err(ImageError(format!(
                "the manifest's image crop [{h}, {w}] gives [3, {h}, {w}], but the model takes {item:?}"
            )));
        }
        // A rule that resizes to a giant image would make every request allocate it.
        if let Some(r) = self.resize
            && (r < h.min(w) || u64::from(r) * u64::from(r) > MAX_PIXELS)
        {
            return Err(ImageError(format!(
                "image.resize {r} must be at least the crop's shorter side ({}) and at most {}",
                h.min(w),
                (MAX_PIXELS as f64).sqrt() as u64
            )));
        }
        for (name, v) in [("mean", &self.mean), ("std", &self.std)] {
            if !v.is_empty() && v.len() != 3 {
                return Err(ImageError(format!(
                    "image.{name} has {} values; give one per channel (3)",
                    v.len()
                )));
            }
        }
        if self.std.iter().any(|s| *s == 0.0 || !s.is_finite())
            || !self.scale.is_finite()
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(ImageError(
                "image.scale, mean and std must be finite, and std non-zero".into(),
            ));
        }
        Ok(())
    }

    /// The model input `[3, H, W]` (row-major) for an encoded image.
    pub fn apply(&self, bytes: &[u8]) -> Result<Vec<f32>, ImageError> {
        let img = decode(bytes)?;
        let img = match self.resize {
            Some(short) => {
                let (w, h) = (img.width as f64, img.height as f64);
                let k = f64::from(short) / w.min(h);
                let (nw, nh) = (
                    (w * k).round().max(1.0) as u32,
                    (h * k).round().max(1.0) as u32,
                );
                // A long, thin image would grow past the decode limit once resized.
                check_size(u64::from(nw), u64::from(nh))?;
                resize(&img, nw, nh)
            }
            None => img,
        };
        let [ch, cw] = self.crop;
        // Centre crop; an image smaller than the crop is resized up to it first.
        let img = if img.width < cw || img.height < ch {
            resize(&img, cw.max(img.width), ch.max(img.height))
        } else {
            img
        };
        let (x0, y0) = (
            ((img.width - cw) / 2) as usize,
            ((img.height - ch) / 2) as usize,
        );
        let (ch, cw) = (ch as usize, cw as usize);
        let order: [usize; 3] = match self.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let mut out = Vec::with_capacity(3 * ch * cw);
        for (c, src) in order.iter().enumerate() {
            let mean = self.mean.get(c).copied().unwrap_or(0.0);
            let std = self.std.get(c).copied().unwrap_or(1.0);
            for y in 0..ch {
                for x in 0..cw {
                    let v = img.data[((y0 + y) * img.width as usize + x0 + x) * 3 + src];
                    out.push((f32::from(v) * self.scale - mean) / std);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, rgb: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = png::Encoder::new(&mut out, w, h);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        e.write_header().unwrap().write_image_data(rgb).unwrap();
        out
    }

    #[test]
    fn a_png_becomes_the_tensor_the_rule_says() {
        // 4x2: left half red, right half blue.
        let px: Vec<u8> = (0..8)
            .flat_map(|i| if i % 4 < 2 { [255, 0, 0] } else { [0, 0, 255] })
            .collect();
        let rule = ImagePreprocess {
            resize: None,
            crop: [2, 2],
            scale: 1.0 / 255.0,
            mean: vec![0.5, 0.5, 0.5],
            std: vec![0.5, 0.5, 0.5],
            channel_order: ChannelOrder::Rgb,
        };
        rule.check(&[3, 2, 2]).unwrap();
        assert!(rule.check(&[3, 4, 4]).is_err());
        for resize in [1, 1 << 20] {
            let bad = ImagePreprocess {
                resize: Some(resize),
                ..rule.clone()
            };
            assert!(
                bad.check(&[3, 2, 2])
                    .unwrap_err()
                    .0
                    .contains("image.resize")
            );
        }
        let t = rule.apply(&png(4, 2, &px)).unwrap();
        // Centre crop: columns 1 and 2 → red then blue. R plane: 1, -1; B plane: -1, 1.
        assert_eq!(t.len(), 12);
        assert_eq!(&t[0..2], &[1.0, -1.0]);
        assert_eq!(&t[8..10], &[-1.0, 1.0]);
        let bgr = ImagePreprocess {
            channel_order: ChannelOrder::Bgr,
            ..rule.clone()
        };
        assert_eq!(&bgr.apply(&png(4, 2, &px)).unwrap()[0..2], &[-1.0, 1.0]);
        // Resize: the shorter side to 4 doubles it (8x4), then the crop.
        let big = ImagePreprocess {
            resize: Some(4),
            crop: [4, 4],
            ..rule
        };
        assert_eq!(big.apply(&png(4, 2, &px)).unwrap().len(), 48);
    }

    #[test]
    fn bad_images_are_named() {
        assert!(
            decode(b"GIF89a")
                .unwrap_err()
                .0
                .contains("neither a PNG nor a JPEG")
        );
        assert!(decode(b"\x89PNG\r\n\x1a\nxx").is_err());
        assert!(decode(&[0xFF, 0xD8, 0xFF, 0x00]).is_err());
    }
}
