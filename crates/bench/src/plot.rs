//! A run's report drawn as an SVG: requests/s over the run, and the latency distribution.
//!
//! SVG only: plotters' SVG backend lays text out with its built-in estimate, so no system font
//! is needed; bitmap output would need one.

use plotters::coord::ranged1d::{IntoSegmentedCoord as _, SegmentValue};
use plotters::prelude::*;

use crate::engine::{Bucket, Report};
use crate::units;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the plot: {0}")]
pub struct PlotError(String);

fn failed<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError(e.to_string())
}

const WIDTH: u32 = 960;
const PANEL_HEIGHT: u32 = 360;

/// The report as an SVG document: requests/s per interval (from `report.intervals`) and, when
/// `latency` (its latency means something for this workload), the latency distribution.
pub fn svg(report: &Report, latency: bool) -> Result<String, PlotError> {
    let latency = latency && !report.latency.buckets.is_empty();
    let panels: u32 = if latency { 2 } else { 1 };
    let mut out = String::new();
    {
        let root =
            SVGBackend::with_string(&mut out, (WIDTH, PANEL_HEIGHT * panels)).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let areas = root.split_evenly((panels as usize, 1));
        throughput(&areas[0], report)?;
        if latency {
            distribution(&areas[1], &report.latency.buckets)?;
        }
        root.present().map_err(failed)?;
    }
    Ok(out)
}

fn throughput<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &Report,
) -> Result<(), PlotError> {
    let points: Vec<(f64, f64)> = report
        .intervals
        .iter()
        .map(|i| (i.end_s, i.requests_per_s))
        .collect();
    let top = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let end = points
        .last()
        .map_or(report.duration_s, |p| p.0.max(report.duration_s))
        .max(0.1);
    let caption = format!(
        "{} ({}) against {}: requests/s",
        report.workload, report.mode, report.target
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..end, 0f64..top)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the run")
        .y_desc("requests/s")
        .y_label_formatter(&|v| units::rate(*v))
        .draw()
        .map_err(failed)?;
    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
        .map_err(failed)?
        .label("requests/s per interval");
    Ok(())
}

fn distribution<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    buckets: &[Bucket],
) -> Result<(), PlotError> {
    let top = buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64 * 1.1;
    let label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => buckets
            .get(*i)
            .map(|b| format!("≤ {}", units::bound(b.le_us)))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let mut chart = ChartBuilder::on(area)
        .caption("latency: requests taking at most", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((0..buckets.len()).into_segmented(), 0f64..top)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(buckets.len())
        .x_label_formatter(&label)
        .y_desc("requests")
        .y_label_formatter(&|v| units::count(*v as u64))
        .draw()
        .map_err(failed)?;
    chart
        .draw_series(buckets.iter().enumerate().map(|(i, b)| {
            Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), b.count as f64),
                ],
                BLUE.mix(0.7).filled(),
            )
        }))
        .map_err(failed)?;
    Ok(())
}
