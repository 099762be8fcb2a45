//! The training-curve picture (`training_curve.png`).
//!
//! Drawn by hand into an RGB buffer and encoded with `png`, so no font or system graphics
//! library is needed. There is no text: the legend is in `docs/trainer.md` and the numbers are
//! in `metrics.json`. Top panel: training loss (blue) and validation loss (orange) per epoch,
//! on a shared scale from 0. Bottom panel: validation accuracy (classification) or R²
//! (regression, clamped to [0, 1]) in green, with light grid lines at 0.25 steps.

use crate::train::EpochMetrics;

const WIDTH: usize = 640;
const HEIGHT: usize = 480;
const MARGIN: usize = 24;
const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];
const GREEN: [u8; 3] = [44, 160, 44];
const AXIS: [u8; 3] = [60, 60, 60];
const GRID: [u8; 3] = [225, 225, 225];

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < WIDTH && (y as usize) < HEIGHT {
            let i = (y as usize * WIDTH + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A 2-pixel-thick line (Bresenham).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for (ox, oy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                self.set(x + ox, y + oy, c);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
}

/// A panel: pixel box `top..bottom` and a value range mapped onto it.
struct Panel {
    top: usize,
    bottom: usize,
    lo: f64,
    hi: f64,
}

impl Panel {
    fn point(&self, i: usize, n: usize, v: f64) -> (i64, i64) {
        let left = MARGIN as f64;
        let right = (WIDTH - MARGIN) as f64;
        let x = if n <= 1 {
            left
        } else {
            left + (right - left) * i as f64 / (n - 1) as f64
        };
        let t = if self.hi > self.lo {
            ((v - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
        } else {
            0.5
        };
        let y = self.bottom as f64 - t * (self.bottom - self.top) as f64;
        (x.round() as i64, y.round() as i64)
    }

    fn frame(&self, c: &mut Canvas, grid_steps: usize) {
        for s in 1..grid_steps {
            let y = (self.bottom - (self.bottom - self.top) * s / grid_steps) as i64;
            for x in MARGIN..WIDTH - MARGIN {
                c.set(x as i64, y, GRID);
            }
        }
        c.line(
            (MARGIN as i64, self.top as i64),
            (MARGIN as i64, self.bottom as i64),
            AXIS,
        );
        c.line(
            (MARGIN as i64, self.bottom as i64),
            ((WIDTH - MARGIN) as i64, self.bottom as i64),
            AXIS,
        );
    }

    fn series(&self, c: &mut Canvas, values: &[f64], color: [u8; 3]) {
        let pts: Vec<(i64, i64)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| self.point(i, values.len(), *v))
            .collect();
        if pts.len() == 1 {
            c.line(pts[0], pts[0], color);
        }
        for w in pts.windows(2) {
            c.line(w[0], w[1], color);
        }
    }
}

/// Renders the curves of `history` as PNG bytes.
pub fn render(history: &[EpochMetrics]) -> Result<Vec<u8>, png::EncodingError> {
    let mut canvas = Canvas {
        px: vec![255; WIDTH * HEIGHT * 3],
    };
    let train: Vec<f64> = history.iter().map(|m| m.train_loss).collect();
    let val: Vec<f64> = history.iter().map(|m| m.val_loss).collect();
    let hi = train
        .iter()
        .chain(&val)
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let losses = Panel {
        top: MARGIN,
        bottom: HEIGHT * 3 / 5,
        lo: 0.0,
        hi: hi * 1.05,
    };
    losses.frame(&mut canvas, 4);
    losses.series(&mut canvas, &train, BLUE);
    losses.series(&mut canvas, &val, ORANGE);
    let quality: Vec<f64> = history
        .iter()
        .map(|m| m.val_accuracy.or(m.val_r2).unwrap_or(0.0).clamp(0.0, 1.0))
        .collect();
    let score = Panel {
        top: HEIGHT * 3 / 5 + MARGIN,
        bottom: HEIGHT - MARGIN,
        lo: 0.0,
        hi: 1.0,
    };
    score.frame(&mut canvas, 4);
    score.series(&mut canvas, &quality, GREEN);

    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, WIDTH as u32, HEIGHT as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&canvas.px)?;
    writer.finish()?;
    Ok(out)
}
