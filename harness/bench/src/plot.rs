//! The plot: throughput and latency per system, side by side, as SVG (no font files
//! needed: the SVG viewer renders the text).

use crate::report::{BenchReport, Figure};
use crate::systems::SystemId;
use crate::BenchError;
use plotters::prelude::*;
use std::path::Path;

const COLORS: [RGBColor; 4] = [
    RGBColor(90, 90, 90),   // raw loop
    RGBColor(31, 119, 180), // veritas ipc
    RGBColor(44, 160, 44),  // veritas http
    RGBColor(214, 39, 40),  // llama-server
];

pub fn write_svg(report: &BenchReport, path: &Path) -> Result<(), BenchError> {
    let err = |e: &dyn std::fmt::Display| BenchError::Plot(e.to_string());
    let root = SVGBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!(
        "veritas bench: tiny model, {} thread(s), {} slot(s), greedy, {} rounds",
        report.shape.threads, report.shape.parallel, report.rounds
    );
    let root = root
        .titled(&title, ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(820);
    let throughput: Vec<&Figure> = report
        .figures
        .iter()
        .filter(|f| f.unit == "tok/s")
        .collect();
    let latency: Vec<&Figure> = report
        .figures
        .iter()
        .filter(|f| f.unit == "ms" && !f.name.starts_with("time to ready"))
        .collect();
    panel(&left, "throughput (tok/s, higher is better)", &throughput).map_err(|e| err(&e))?;
    panel(&right, "latency (ms, lower is better)", &latency).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    figures: &[&Figure],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let max = figures
        .iter()
        .flat_map(|f| f.values.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b))
        .max(1e-9);
    let n = figures.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(10)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n, -max * 0.12..max * 1.1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(8)
        .draw()?;
    let systems = SystemId::ALL.len() as f64;
    for (si, id) in SystemId::ALL.iter().enumerate() {
        let color = COLORS[si];
        let bars: Vec<Rectangle<(f64, f64)>> = figures
            .iter()
            .enumerate()
            .filter_map(|(fi, f)| {
                let v = f.values[si]?;
                let x0 = fi as f64 + 0.1 + si as f64 * 0.8 / systems;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + 0.8 / systems * 0.9, v)],
                    color.filled(),
                ))
            })
            .collect();
        if bars.is_empty() {
            continue;
        }
        chart
            .draw_series(bars)?
            .label(id.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    // Category names under their groups (the x axis is numeric).
    chart.draw_series(figures.iter().enumerate().map(|(fi, f)| {
        Text::new(
            f.name
                .replace(" (ms)", "")
                .replace("tok/s, ", "")
                .replace(" tok/s", ""),
            (fi as f64 + 0.05, -max * 0.04),
            ("sans-serif", 12).into_font(),
        )
    }))?;
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}
