//! PNG line charts for the bench reports (plotters, bitmap backend).
//!
//! Text is drawn with DejaVu Sans, embedded in the binary by the `dejavu` crate and registered
//! with plotters' pure-Rust glyph renderer, so a chart looks the same on every machine and needs
//! no system fonts or font-configuration library.

use anyhow::{anyhow, Context};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::Once;

/// One named series of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend label.
    pub name: String,
    /// `(x, y)` points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Join the points by a line (`true`) or mark them only (a scatter).
    pub joined: bool,
}

/// A chart of one or more series sharing axes.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// Caption above the plot.
    pub title: String,
    /// Label of the horizontal axis.
    pub x_label: String,
    /// Label of the vertical axis.
    pub y_label: String,
    /// The lines, drawn in a fixed palette in this order.
    pub series: Vec<Series>,
}

/// Pixels of every chart.
const SIZE: (u32, u32) = (1000, 650);

/// The font family name plotters knows our embedded font by.
const FAMILY: &str = "sans-serif";

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TrueType file; if plotters ever refused it, drawing text
        // would fail and `write_png` would report that error.
        let _ = register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular());
        let _ = register_font(FAMILY, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// The axis range covering `values` with a 5 % margin (a unit range around a single value).
fn padded_range(values: impl Iterator<Item = f64>) -> Option<std::ops::Range<f64>> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })?;
    let margin = if hi > lo { (hi - lo) * 0.05 } else { 0.5 };
    Some(lo - margin..hi + margin)
}

/// The corner of the plot area with the fewest points near it (normalised coordinates within
/// 40 % of the corner), where the legend hides the least data.
fn quiet_corner(
    chart: &LineChart,
    x: &std::ops::Range<f64>,
    y: &std::ops::Range<f64>,
) -> SeriesLabelPosition {
    let unit = |v: f64, r: &std::ops::Range<f64>| (v - r.start) / (r.end - r.start);
    let points: Vec<(f64, f64)> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|&(px, py)| (unit(px, x), unit(py, y)))
        .collect();
    let near = |right: bool, top: bool| {
        points
            .iter()
            .filter(|(px, py)| {
                (if right { *px > 0.6 } else { *px < 0.4 })
                    && (if top { *py > 0.6 } else { *py < 0.4 })
            })
            .count()
    };
    [
        (SeriesLabelPosition::LowerRight, near(true, false)),
        (SeriesLabelPosition::UpperRight, near(true, true)),
        (SeriesLabelPosition::LowerLeft, near(false, false)),
        (SeriesLabelPosition::UpperLeft, near(false, true)),
    ]
    .into_iter()
    .min_by_key(|(_, count)| *count)
    .map_or(SeriesLabelPosition::LowerRight, |(corner, _)| corner)
}

/// Draws `chart` to a PNG file at `path`.
pub fn write_png(chart: &LineChart, path: &Path) -> anyhow::Result<()> {
    register_fonts();
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let x_range = padded_range(points().map(|p| p.0))
        .ok_or_else(|| anyhow!("chart {:?} has no finite points", chart.title))?;
    let y_range = padded_range(points().map(|p| p.1))
        .ok_or_else(|| anyhow!("chart {:?} has no finite points", chart.title))?;
    let legend = quiet_corner(chart, &x_range, &y_range);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut plot = ChartBuilder::on(&root)
            .caption(&chart.title, (FAMILY, 24))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range.clone(), y_range.clone())?;
        plot.configure_mesh()
            .x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .draw()?;
        for (i, series) in chart.series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let style = color.stroke_width(2);
            let markers = plot.draw_series(
                series
                    .points
                    .iter()
                    .map(|&p| Circle::new(p, 4, color.filled())),
            )?;
            if series.joined {
                plot.draw_series(LineSeries::new(series.points.iter().copied(), style))?
                    .label(series.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            } else {
                markers
                    .label(series.name.as_str())
                    .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
            }
        }
        plot.configure_series_labels()
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(legend)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow!("{e}")).with_context(|| {
        format!(
            "cannot draw the chart {:?} to {}",
            chart.title,
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_with_drawn_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let chart = LineChart {
            title: "nDCG@10 vs w".into(),
            x_label: "w".into(),
            y_label: "nDCG@10".into(),
            series: vec![
                Series {
                    name: "zscore".into(),
                    points: vec![(0.0, 0.68), (0.5, 0.69), (1.0, 0.685)],
                    joined: true,
                },
                Series {
                    name: "single".into(),
                    points: vec![(0.3, 0.7)],
                    joined: false,
                },
            ],
        };
        write_png(&chart, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // A blank 1000×650 PNG compresses to a few kB; text, lines and markers make it larger.
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    }

    #[test]
    fn a_chart_without_points_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let chart = LineChart {
            title: "empty".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![],
        };
        let err = write_png(&chart, &dir.path().join("c.png")).unwrap_err();
        assert!(err.to_string().contains("no finite points"), "{err}");
    }
}
