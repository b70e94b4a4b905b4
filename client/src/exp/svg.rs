//! Plots as SVG text, written by hand: one or more panels side by side,
//! each with linear or logarithmic axes, ticks, grid lines, a title and a
//! legend; series drawn as lines (predictions) or points (measurements),
//! so that an experiment can show measured points over predicted lines.
//!
//! Output is plain, deterministic text (coordinates to 0.1 px), readable
//! by browsers and converters alike.

use std::fmt::Write as _;

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// Evenly spaced values.
    Linear,
    /// Evenly spaced powers of ten (values must be positive; others are
    /// left out).
    Log,
}

/// One axis: its label and range.
#[derive(Debug, Clone)]
pub struct Axis {
    /// Shown beside the axis.
    pub label: String,
    /// Smallest value shown.
    pub min: f64,
    /// Largest value shown.
    pub max: f64,
    /// Linear or logarithmic.
    pub scale: Scale,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mark {
    /// A line through the points (a prediction).
    Line,
    /// A dot at each point (a measurement).
    Points,
}

/// A named list of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Line or points.
    pub mark: Mark,
    /// Palette index: series with the same index share a colour (a
    /// prediction and its measurement).
    pub color: usize,
}

/// One panel.
#[derive(Debug, Clone)]
pub struct Plot {
    /// Above the panel.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// What is drawn.
    pub series: Vec<Series>,
}

/// Colour-blind-safe palette (Okabe and Ito), cycled.
const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

const WIDTH: f64 = 520.0;
const HEIGHT: f64 = 380.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 48.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Axis {
    /// Where `v` falls between the ends, 0 to 1 (`None` for a value a log
    /// axis cannot show).
    fn frac(&self, v: f64) -> Option<f64> {
        match self.scale {
            Scale::Linear => {
                let span = self.max - self.min;
                Some(if span > 0.0 {
                    (v - self.min) / span
                } else {
                    0.5
                })
            }
            Scale::Log => {
                if v <= 0.0 || self.min <= 0.0 {
                    return None;
                }
                let span = (self.max / self.min).log10();
                Some(if span > 0.0 {
                    (v / self.min).log10() / span
                } else {
                    0.5
                })
            }
        }
    }

    /// The tick values: 1-2-5 steps, or the powers of ten (with 2 and 5
    /// between them when the range spans three decades or less).
    pub fn ticks(&self) -> Vec<f64> {
        let (lo, hi) = (self.min, self.max);
        if !(lo.is_finite() && hi.is_finite()) || hi < lo {
            return Vec::new();
        }
        match self.scale {
            Scale::Linear => {
                let raw = (hi - lo) / 5.0;
                if raw <= 0.0 {
                    return vec![lo];
                }
                let mag = 10f64.powf(raw.log10().floor());
                let m = [1.0, 2.0, 5.0, 10.0]
                    .into_iter()
                    .find(|m| m * mag >= raw)
                    .unwrap_or(10.0);
                let step = m * mag;
                let first = (lo / step - 1e-9).ceil() as i64;
                let last = (hi / step + 1e-9).floor() as i64;
                // Dividing by a power of ten rather than multiplying by its
                // inverse keeps 3 x 0.2 at 0.6.
                let inv = (1.0 / mag).round();
                (first..=last)
                    .map(|i| {
                        if mag < 1.0 {
                            i as f64 * m / inv
                        } else {
                            i as f64 * step
                        }
                    })
                    .collect()
            }
            Scale::Log => {
                if lo <= 0.0 {
                    return Vec::new();
                }
                let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
                let steps: &[f64] = if b - a <= 3 { &[1.0, 2.0, 5.0] } else { &[1.0] };
                (a..=b)
                    .flat_map(|e| steps.iter().map(move |m| m * 10f64.powi(e)))
                    .filter(|v| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9))
                    .collect()
            }
        }
    }
}

/// A tick label: as few digits as tell the ticks apart.
fn label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-4..1e6).contains(&a) {
        return format!("{v:e}");
    }
    let decimals = (-(a.log10().floor()) as i32).max(0) as usize + 1;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" { "0".into() } else { s }
}

/// A span of the x axis to shade behind the series (a fault's interval
/// on a timeline).
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Where the span starts and ends, in x values.
    pub from: f64,
    pub to: f64,
}

/// Renders `plots` side by side as one SVG document.
pub fn render(plots: &[Plot]) -> String {
    render_shaded(plots, &[])
}

/// [`render`], with `bands` shaded grey on every panel, behind the series.
pub fn render_shaded(plots: &[Plot], bands: &[Band]) -> String {
    let width = WIDTH * plots.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" viewBox="0 0 {width} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{width}" height="{HEIGHT}" fill="white"/>"#
    );
    for (i, p) in plots.iter().enumerate() {
        panel(&mut out, p, i, WIDTH * i as f64, bands);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, p: &Plot, index: usize, x0: f64, bands: &[Band]) {
    let (left, top) = (x0 + LEFT, TOP);
    let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let px = |v: f64| p.x.frac(v).map(|f| left + f * w);
    let py = |v: f64| p.y.frac(v).map(|f| top + h - f * h);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        left + w / 2.0,
        escape(&p.title)
    );
    for b in bands {
        let clamp = |v: f64| v.clamp(p.x.min, p.x.max);
        if let (Some(a), Some(z)) = (px(clamp(b.from)), px(clamp(b.to)))
            && z > a
        {
            let _ = writeln!(
                out,
                r##"<rect x="{a:.1}" y="{top:.1}" width="{:.1}" height="{h:.1}" fill="#d8d8d8" fill-opacity="0.6"/>"##,
                z - a
            );
        }
    }
    // Grid and ticks.
    for t in p.x.ticks() {
        if let Some(x) = px(t) {
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{:.1}" stroke="#e0e0e0"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                top + h,
                top + h + 16.0,
                label(t)
            );
        }
    }
    for t in p.y.ticks() {
        if let Some(y) = py(t) {
            let _ = writeln!(
                out,
                r##"<line x1="{left:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                left + w,
                left - 6.0,
                y + 4.0,
                label(t)
            );
        }
    }
    let _ = writeln!(
        out,
        r#"<rect x="{left:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        left + w / 2.0,
        HEIGHT - 10.0,
        escape(&p.x.label)
    );
    let (lx, ly) = (x0 + 16.0, top + h / 2.0);
    let _ = writeln!(
        out,
        r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="middle" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"#,
        escape(&p.y.label)
    );
    // Series, clipped to the plot area.
    let clip = format!("clip{index}");
    let _ = writeln!(
        out,
        r#"<clipPath id="{clip}"><rect x="{left:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}"/></clipPath><g clip-path="url(#{clip})">"#
    );
    for s in &p.series {
        let color = PALETTE[s.color % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter_map(|&(x, y)| Some((px(x)?, py(y)?)))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        match s.mark {
            Mark::Line => {
                let mut d = String::new();
                for (i, (x, y)) in pts.iter().enumerate() {
                    let _ = write!(d, "{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" });
                }
                let _ = writeln!(
                    out,
                    r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="2"/>"#
                );
            }
            Mark::Points => {
                for (x, y) in &pts {
                    let _ = writeln!(
                        out,
                        r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"/>"#
                    );
                }
            }
        }
    }
    out.push_str("</g>\n");
    // Legend, lower right inside the plot area.
    let rows = p.series.len() as f64;
    let widest = p
        .series
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0) as f64;
    let (bw, bh) = (widest * 7.0 + 36.0, rows * 16.0 + 8.0);
    let (bx, by) = (left + w - bw - 8.0, top + h - bh - 8.0);
    if !p.series.is_empty() {
        let _ = writeln!(
            out,
            r##"<rect x="{bx:.1}" y="{by:.1}" width="{bw:.1}" height="{bh:.1}" fill="white" fill-opacity="0.9" stroke="#999"/>"##
        );
    }
    for (i, s) in p.series.iter().enumerate() {
        let color = PALETTE[s.color % PALETTE.len()];
        let y = by + 14.0 + 16.0 * i as f64;
        match s.mark {
            Mark::Line => {
                let _ = write!(
                    out,
                    r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/>"#,
                    bx + 6.0,
                    y - 4.0,
                    bx + 24.0,
                    y - 4.0
                );
            }
            Mark::Points => {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    bx + 15.0,
                    y - 4.0
                );
            }
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{y:.1}">{}</text>"#,
            bx + 30.0,
            escape(&s.label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(min: f64, max: f64, scale: Scale) -> Axis {
        Axis {
            label: "x".into(),
            min,
            max,
            scale,
        }
    }

    #[test]
    fn linear_ticks_step_by_one_two_or_five() {
        assert_eq!(
            axis(0.0, 1.0, Scale::Linear).ticks(),
            vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        );
        assert_eq!(
            axis(0.0, 47.0, Scale::Linear).ticks(),
            vec![0.0, 10.0, 20.0, 30.0, 40.0]
        );
        assert_eq!(axis(0.4, 1.0, Scale::Linear).ticks().len(), 4);
    }

    #[test]
    fn log_ticks_are_powers_of_ten_with_two_and_five_on_short_ranges() {
        assert_eq!(
            axis(0.01, 1000.0, Scale::Log).ticks(),
            vec![0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
        );
        let short = axis(1.0, 30.0, Scale::Log).ticks();
        assert_eq!(short.len(), 5, "{short:?}");
        assert!(axis(0.0, 10.0, Scale::Log).ticks().is_empty());
    }

    #[test]
    fn labels_use_the_fewest_digits() {
        let got: Vec<String> = [0.0, 0.2, 1.0, 0.05, 2.5, 1000.0, 1e-7]
            .iter()
            .map(|&v| label(v))
            .collect();
        assert_eq!(got, ["0", "0.2", "1", "0.05", "2.5", "1000", "1e-7"]);
    }

    #[test]
    fn a_plot_draws_its_series_legend_and_axes_and_escapes_text() {
        let plot = Plot {
            title: "R<2 & W=1".into(),
            x: axis(0.1, 100.0, Scale::Log),
            y: axis(0.0, 1.0, Scale::Linear),
            series: vec![
                Series {
                    label: "predicted".into(),
                    points: vec![(0.1, 0.2), (1.0, 0.5), (100.0, 1.0), (0.0, 0.7)],
                    mark: Mark::Line,
                    color: 0,
                },
                Series {
                    label: "measured".into(),
                    points: vec![(1.0, 0.45), (10.0, 0.9)],
                    mark: Mark::Points,
                    color: 0,
                },
            ],
        };
        let svg = render(&[plot.clone(), plot]);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert!(svg.contains(r#"width="1040""#));
        assert!(svg.contains("R&lt;2 &amp; W=1"));
        // Three drawable points (0 has no place on a log axis) per line.
        let path = svg
            .lines()
            .find(|l| l.starts_with("<path"))
            .expect("a line");
        assert_eq!(path.matches(" L").count(), 2, "{path}");
        // Two measured points per panel, plus one legend dot each.
        assert_eq!(svg.matches("<circle").count(), 2 * (2 + 1));
        assert!(svg.contains(">predicted</text>") && svg.contains(">measured</text>"));
        // The y axis runs from 0 at the bottom to 1 at the top.
        assert!(svg.contains(r#"text-anchor="end">1</text>"#));
    }

    #[test]
    fn bands_shade_their_span_of_the_x_axis_on_every_panel_clipped_to_it() {
        let plot = Plot {
            title: "t".into(),
            x: axis(0.0, 10.0, Scale::Linear),
            y: axis(0.0, 1.0, Scale::Linear),
            series: vec![],
        };
        let bands = [
            Band { from: 2.0, to: 4.0 },
            Band {
                from: 8.0,
                to: 30.0,
            },
            Band {
                from: 20.0,
                to: 30.0,
            },
        ];
        let svg = render_shaded(&[plot.clone(), plot.clone()], &bands);
        let shaded: Vec<&str> = svg.lines().filter(|l| l.contains("#d8d8d8")).collect();
        assert_eq!(shaded.len(), 4, "two visible bands on two panels: {svg}");
        // The plot area is 440 px wide from x=64: 2..4 is 88 px, 8..10 is 88.
        assert!(shaded[0].contains(r#"x="152.0""#) && shaded[0].contains(r#"width="88.0""#));
        assert!(shaded[1].contains(r#"x="416.0""#) && shaded[1].contains(r#"width="88.0""#));
        assert!(!render(&[plot]).contains("#d8d8d8"));
    }
}
