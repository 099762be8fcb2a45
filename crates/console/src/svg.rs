//! Plots drawn on the server as inline SVG: no script, no images to fetch, readable on a
//! phone (every plot scales to its container's width through its `viewBox`).
//!
//! Only numbers and escaped text go into the markup.

use falaj_core::policy::Bound;
use maud::{Markup, PreEscaped};

/// Escapes text for SVG/HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number as a label: four significant figures at most, no exponent for the usual range.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        format!("{x:.3e}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else {
        let s = format!("{x:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s.is_empty() || s == "-" {
            "0".into()
        } else {
            s.into()
        }
    }
}

/// A bar for one gate: the measured value, a line at the threshold, green when it passed.
/// The scale runs from 0 to a little past the larger of value and threshold (or covers
/// negative values when there are any).
pub fn gate_bar(measured: Option<f64>, bound: Option<Bound>, passed: bool) -> Markup {
    let (w, h) = (220.0, 18.0);
    let Some(m) = measured.filter(|m| m.is_finite()) else {
        return PreEscaped(String::new());
    };
    let t = bound.map(Bound::threshold).filter(|t| t.is_finite());
    let hi = m.max(t.unwrap_or(m)).max(0.0);
    let lo = m.min(t.unwrap_or(m)).min(0.0);
    let span = if hi - lo > 0.0 { (hi - lo) * 1.1 } else { 1.0 };
    let x = |v: f64| (v - lo) / span * w;
    let colour = if passed { "#2e7d32" } else { "#c62828" };
    let mut s = format!(
        r#"<svg class="bar" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="measured {} against threshold {}">"#,
        esc(&num(m)),
        t.map_or("none".into(), num)
    );
    s += &format!(r##"<rect x="0" y="0" width="{w}" height="{h}" fill="#eceff1"/>"##);
    let (a, b) = (x(0.0).min(x(m)), x(0.0).max(x(m)));
    s += &format!(
        r#"<rect x="{a:.1}" y="3" width="{:.1}" height="{}" fill="{colour}"/>"#,
        (b - a).max(1.0),
        h - 6.0
    );
    if let Some(t) = t {
        s += &format!(
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="0" y2="{h}" stroke="#263238" stroke-width="2"/>"##,
            x(t)
        );
    }
    s += "</svg>";
    PreEscaped(s)
}

/// One line of a chart.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points, x increasing.
    pub points: Vec<(f64, f64)>,
}

const PALETTE: [&str; 8] = [
    "#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f", "#5d4037", "#9e9d24",
];

/// A line chart with axes, an optional horizontal threshold line, and a legend. `x_label`
/// names the x axis; `x_ticks` (if given) label the x positions 0, 1, 2, ... instead of the
/// numbers.
pub fn line_chart(
    title: &str,
    series: &[Series],
    threshold: Option<(f64, &str)>,
    x_label: &str,
    x_ticks: Option<&[String]>,
) -> Markup {
    let (w, h) = (640.0, 260.0);
    let (l, r, t, b) = (56.0, 12.0, 12.0, 40.0);
    let pts = series.iter().flat_map(|s| s.points.iter().copied());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return PreEscaped(format!(
            r#"<p class="muted">{}: nothing to plot yet.</p>"#,
            esc(title)
        ));
    }
    if let Some((th, _)) = threshold {
        (y0, y1) = (y0.min(th), y1.max(th));
    }
    y0 = y0.min(0.0);
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    y1 += (y1 - y0) * 0.05;
    if x1 <= x0 {
        // One point: in the middle.
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let px = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
    let py = |y: f64| t + (1.0 - (y - y0) / (y1 - y0)) * (h - t - b);
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{}"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
    // Axes and y gridlines.
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * f64::from(i) / 4.0;
        s += &format!(
            r##"<line x1="{l}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}" stroke="#cfd8dc"/><text x="{tx}" y="{ty:.1}" font-size="11" text-anchor="end">{label}</text>"##,
            x2 = w - r,
            yy = py(y),
            tx = l - 4.0,
            ty = py(y) + 4.0,
            label = esc(&num(y))
        );
    }
    let n_ticks = x_ticks.map_or(5, |t| t.len().min(8));
    // Epochs and window numbers are whole: so are their ticks.
    let integral = series
        .iter()
        .flat_map(|s| s.points.iter())
        .all(|(x, _)| x.fract() == 0.0);
    for i in 0..n_ticks {
        let (x, label) = match x_ticks {
            Some(ticks) => {
                let idx = if n_ticks > 1 {
                    i * (ticks.len() - 1) / (n_ticks - 1)
                } else {
                    0
                };
                (idx as f64, ticks[idx].clone())
            }
            None => {
                let mut x = x0 + (x1 - x0) * i as f64 / (n_ticks - 1) as f64;
                if integral {
                    x = x.round();
                }
                (x, num(x))
            }
        };
        // The end labels hang inwards, so they are not cut at the edges.
        let anchor = match i {
            0 if n_ticks > 1 => "start",
            i if i + 1 == n_ticks && n_ticks > 1 => "end",
            _ => "middle",
        };
        s += &format!(
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="{anchor}">{}</text>"#,
            px(x),
            h - b + 14.0,
            esc(&label)
        );
    }
    s += &format!(
        r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
        (l + w - r) / 2.0,
        h - 6.0,
        esc(x_label)
    );
    if let Some((th, label)) = threshold {
        s += &format!(
            r##"<line x1="{l}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}" stroke="#c62828" stroke-dasharray="6 4" stroke-width="1.5"/><text x="{tx}" y="{ty:.1}" font-size="11" fill="#c62828" text-anchor="end">{label}</text>"##,
            x2 = w - r,
            yy = py(th),
            tx = w - r - 2.0,
            ty = py(th) - 4.0,
            label = esc(label)
        );
    }
    for (i, se) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let d: Vec<String> = se
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        s += &format!(
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            d.join(" ")
        );
        if d.len() == 1 {
            let (x, y) = se.points[0];
            s += &format!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                px(x),
                py(y)
            );
        }
    }
    s += "</svg>";
    // The legend is HTML beside the plot: it wraps on a narrow screen, and long names fit.
    s += r#"<ul class="legend">"#;
    for (i, se) in series.iter().enumerate() {
        s += &format!(
            r#"<li><span class="swatch" style="background:{}"></span>{}</li>"#,
            PALETTE[i % PALETTE.len()],
            esc(&se.name)
        );
    }
    s += "</ul>";
    PreEscaped(format!(r#"<figure class="plot">{s}</figure>"#))
}

/// Horizontal bars, one per label, on a 0-1 scale (rates).
pub fn rate_bars(title: &str, rows: &[(String, Option<f64>)]) -> Markup {
    let w = 320.0;
    let row_h = 20.0;
    let label_w = 110.0;
    let h = row_h * rows.len() as f64 + 6.0;
    let mut s = format!(
        r#"<svg class="rates" viewBox="0 0 {w} {h}" role="img" aria-label="{}"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 3.0 + i as f64 * row_h;
        s += &format!(
            r#"<text x="0" y="{:.1}" font-size="11">{}</text>"#,
            y + 13.0,
            esc(label)
        );
        s += &format!(
            r##"<rect x="{label_w}" y="{y:.1}" width="{}" height="{}" fill="#eceff1"/>"##,
            w - label_w - 44.0,
            row_h - 6.0
        );
        if let Some(v) = v.filter(|v| v.is_finite()) {
            s += &format!(
                r##"<rect x="{label_w}" y="{y:.1}" width="{:.1}" height="{}" fill="#1565c0"/><text x="{}" y="{:.1}" font-size="11">{}</text>"##,
                v.clamp(0.0, 1.0) * (w - label_w - 44.0),
                row_h - 6.0,
                w - 40.0,
                y + 13.0,
                esc(&num(v))
            );
        } else {
            s += &format!(
                r#"<text x="{}" y="{:.1}" font-size="11">n/a</text>"#,
                w - 40.0,
                y + 13.0
            );
        }
    }
    s += "</svg>";
    PreEscaped(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_and_text_is_escaped() {
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(0.123456), "0.1235");
        assert_eq!(num(1234.5678), "1234.6");
        assert_eq!(num(0.0), "0");
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let chart = line_chart(
            "t<script>",
            &[Series {
                name: "a<b".into(),
                points: vec![(1.0, 0.5), (2.0, 0.25)],
            }],
            Some((0.25, "threshold")),
            "epoch",
            None,
        )
        .into_string();
        assert!(!chart.contains("<script>") && chart.contains("a&lt;b"));
        assert!(chart.contains("<polyline") && chart.contains("stroke-dasharray"));
    }

    #[test]
    fn a_gate_bar_marks_the_threshold_and_colours_the_outcome() {
        let pass = gate_bar(Some(0.9), Some(Bound::Min(0.8)), true).into_string();
        assert!(pass.contains("#2e7d32") && pass.contains("<line"));
        let fail = gate_bar(Some(0.7), Some(Bound::Min(0.8)), false).into_string();
        assert!(fail.contains("#c62828"));
        assert!(
            gate_bar(None, Some(Bound::Max(1.0)), false)
                .into_string()
                .is_empty()
        );
    }
}
