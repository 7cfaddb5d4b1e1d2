//! The run as one self-contained HTML page for people: a summary, then per scenario its
//! verdict, a timeline of its phases, its metric series on the same time axis, the last value
//! of every step, and the evidence. Inline CSS and SVG only: the page is opened from a CI
//! artifact or a laptop with no network, so it must not fetch anything.

use crate::report::{PhaseReport, RunReport, ScenarioReport, Series, Verdict};
use std::time::Duration;

/// The SVG coordinate space: phase names in a left gutter, bars and lines in the plot area,
/// elapsed-time labels in the right margin.
const SVG_WIDTH: f64 = 1000.0;
const PLOT_LEFT: f64 = 210.0;
const PLOT_RIGHT: f64 = 935.0;
const ROW_HEIGHT: f64 = 22.0;
const AXIS_HEIGHT: f64 = 22.0;
const CHART_HEIGHT: f64 = 110.0;
/// Longest observed value shown in the step table (the full text is in report.json).
const OBSERVED_CLIP: usize = 400;

const STYLE: &str = r#"
:root { --pass: #1a7f37; --fail: #cf222e; --skip: #6e7781; --error: #9a6700; --ink: #1f2328;
  --muted: #59636e; --line: #d1d9e0; --card: #ffffff; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; background: var(--bg); color: var(--ink);
  font: 14px/1.45 "Liberation Sans", "DejaVu Sans", Helvetica, Arial, sans-serif; }
h1 { font-size: 22px; margin: 0 0 12px; }
h2 { font-size: 18px; margin: 0; display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
h3 { font-size: 14px; margin: 18px 0 6px; color: var(--muted); text-transform: uppercase;
  letter-spacing: .04em; }
a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
code, pre, .mono { font-family: "DejaVu Sans Mono", "Liberation Mono", Menlo, monospace;
  font-size: 12px; }
.summary { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 16px; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 8px 14px; min-width: 96px; }
.stat .k { color: var(--muted); font-size: 12px; }
.stat .v { font-size: 20px; font-weight: 600; }
.stat.pass .v { color: var(--pass); } .stat.fail .v { color: var(--fail); }
.stat.skip .v { color: var(--skip); } .stat.error .v { color: var(--error); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 16px 20px; margin: 16px 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid var(--line); }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; white-space: nowrap; }
tr.bad td { background: #ffebe9; }
.badge { display: inline-block; border-radius: 999px; padding: 1px 10px; font-size: 12px;
  font-weight: 700; color: #fff; letter-spacing: .03em; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.badge.skip { background: var(--skip); } .badge.error { background: var(--error); }
.ok { color: var(--pass); font-weight: 600; } .failed { color: var(--fail); font-weight: 600; }
.title { font-weight: 400; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 10px 0 0; }
.facts dt { color: var(--muted); } .facts dd { margin: 0; }
.reason { margin: 12px 0 0; padding: 8px 12px; border-left: 4px solid var(--fail);
  background: #fff5f5; white-space: pre-wrap; }
.reason.skip { border-color: var(--skip); background: var(--bg); }
.leaks { margin: 12px 0 0; padding: 10px 14px; border: 2px solid var(--fail); border-radius: 8px;
  background: #ffebe9; }
.leaks strong { color: var(--fail); }
.warning { margin: 12px 0 0; padding: 8px 14px; border-left: 4px solid var(--error);
  background: #fff8c5; }
.evidence-links { margin: 10px 0 0; }
.evidence-links a { margin-right: 14px; }
.observed { white-space: pre-wrap; word-break: break-word; max-width: 460px; }
.error-text { color: var(--fail); white-space: pre-wrap; word-break: break-word; }
details { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; background: var(--bg); }
details summary { cursor: pointer; padding: 6px 10px; font-weight: 600; }
details pre { margin: 0; padding: 10px; max-height: 480px; overflow: auto; background: #fff;
  border-top: 1px solid var(--line); white-space: pre-wrap; word-break: break-word; }
h4.series-name { font: 600 12px "DejaVu Sans Mono", "Liberation Mono", Menlo, monospace;
  margin: 14px 0 4px; }
svg { display: block; width: 100%; height: auto; }
svg text { font: 12px "Liberation Sans", "DejaVu Sans", Arial, sans-serif; fill: var(--ink); }
svg .tick { fill: var(--muted); font-size: 11px; }
svg .grid { stroke: #eaeef2; }
svg .elapsed { paint-order: stroke; stroke: #fff; stroke-width: 3px; }
svg .marker-label { font-size: 11px; font-weight: 700; }
.muted { color: var(--muted); }
"#;

/// Opens a `<details>` named by the URL's fragment, so an evidence link shows its content.
const SCRIPT: &str = "function openTarget(){var e=document.getElementById(decodeURIComponent(location.hash.slice(1)));if(e&&e.tagName==='DETAILS')e.open=true;}addEventListener('hashchange',openTarget);openTarget();";

/// The whole page.
pub fn render(run: &RunReport) -> String {
    let mut out =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(&format!(
        "<title>Veritas harness: {} passed, {} failed, {} skipped, {} errors</title>\n",
        run.passed, run.failed, run.skipped, run.errors
    ));
    out.push_str(&format!("<style>{STYLE}</style>\n</head>\n<body>\n"));
    out.push_str("<h1>Veritas harness report</h1>\n<div class=\"summary\">\n");
    for (key, value, class) in [
        ("driver", esc(&run.driver), ""),
        ("seed", run.seed.to_string(), ""),
        ("passed", run.passed.to_string(), "pass"),
        ("failed", run.failed.to_string(), "fail"),
        ("skipped", run.skipped.to_string(), "skip"),
        ("errors", run.errors.to_string(), "error"),
        ("duration", fmt_secs(run.duration), ""),
        ("parallel", run.parallel.to_string(), ""),
    ] {
        out.push_str(&format!(
            "<div class=\"stat {class}\"><div class=\"k\">{key}</div><div class=\"v\">{value}</div></div>\n"
        ));
    }
    out.push_str("</div>\n");
    out.push_str(&overview(run));
    for s in &run.scenarios {
        out.push_str(&scenario(s));
    }
    out.push_str(&format!("<script>{SCRIPT}</script>\n</body>\n</html>\n"));
    out
}

/// The final table of the terminal, with each ID linking to its section.
fn overview(run: &RunReport) -> String {
    let mut out = String::from(
        "<div class=\"card\"><table>\n<tr><th>Scenario</th><th>Result</th><th class=\"num\">Detect</th><th class=\"num\">Recover</th><th class=\"num\">Total</th><th>Guide row / reason</th></tr>\n",
    );
    for s in &run.scenarios {
        let tail = match s.verdict {
            Verdict::Passed => format!("{} / {}", s.guide_section, s.guide_cause),
            _ => s.reason.clone().unwrap_or_default(),
        };
        out.push_str(&format!(
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>\n",
            anchor(&s.id),
            esc(&s.id),
            badge(s.verdict),
            fmt_opt_secs(s.time_to_detect),
            fmt_opt_secs(s.time_to_recover),
            fmt_secs(s.duration),
            esc(&tail)
        ));
    }
    out.push_str("</table></div>\n");
    out
}

fn scenario(s: &ScenarioReport) -> String {
    let id = anchor(&s.id);
    let mut out = format!(
        "<section class=\"card\" id=\"{id}\">\n<h2>{} {} <span class=\"title\">{}</span></h2>\n",
        esc(&s.id),
        badge(s.verdict),
        esc(&s.title)
    );
    out.push_str("<dl class=\"facts\">");
    let mut facts = vec![
        ("guide section", esc(&s.guide_section)),
        ("cause", esc(&s.guide_cause)),
        ("time to detect", fmt_opt_secs(s.time_to_detect)),
        ("time to recover", fmt_opt_secs(s.time_to_recover)),
        ("duration", fmt_secs(s.duration)),
        ("seed", s.seed.to_string()),
    ];
    if let Some(phase) = &s.failed_phase {
        facts.push(("failed in", esc(phase)));
    }
    for (key, value) in facts {
        out.push_str(&format!("<dt>{key}</dt><dd>{value}</dd>"));
    }
    out.push_str("</dl>\n");
    if s.verdict != Verdict::Passed {
        if let Some(reason) = &s.reason {
            let class = if s.verdict == Verdict::Skipped {
                "reason skip"
            } else {
                "reason"
            };
            out.push_str(&format!("<div class=\"{class}\">{}</div>\n", esc(reason)));
        }
    }
    if !s.leaks.is_empty() {
        out.push_str(&format!(
            "<div class=\"leaks\"><strong>Left behind ({}):</strong><ul>",
            s.leaks.len()
        ));
        for leak in &s.leaks {
            out.push_str(&format!("<li class=\"mono\">{}</li>", esc(leak)));
        }
        out.push_str("</ul></div>\n");
    }
    if !s.non_discriminating.is_empty() {
        out.push_str(
            "<div class=\"warning\"><strong>Symptom checks that already held before the fault</strong> (they do not tell the fault apart):<ul>",
        );
        for check in &s.non_discriminating {
            out.push_str(&format!("<li>{}</li>", esc(check)));
        }
        out.push_str("</ul></div>\n");
    }
    if !s.evidence.is_empty() {
        out.push_str("<div class=\"evidence-links\">Evidence: ");
        for (i, (title, _)) in s.evidence.iter().enumerate() {
            out.push_str(&format!(
                "<a href=\"#{}\">{}</a>",
                evidence_anchor(&id, i),
                esc(title)
            ));
        }
        out.push_str("</div>\n");
    }
    if !s.phases.is_empty() {
        let axis = Axis::of(s);
        out.push_str("<h3>Timeline</h3>\n");
        out.push_str(&timeline(&s.phases, &axis));
        if !s.series.is_empty() {
            out.push_str("<h3>Metrics</h3>\n");
        }
        for series in &s.series {
            out.push_str(&format!(
                "<h4 class=\"series-name\">{}</h4>\n",
                esc(&series.name)
            ));
            out.push_str(&chart(series, &s.phases, &axis));
        }
        out.push_str("<h3>Steps (last value)</h3>\n");
        out.push_str(&steps(&s.phases));
    }
    if !s.evidence.is_empty() {
        out.push_str("<h3>Evidence</h3>\n");
        for (i, (title, body)) in s.evidence.iter().enumerate() {
            out.push_str(&format!(
                "<details id=\"{}\"><summary>{}</summary><pre>{}</pre></details>\n",
                evidence_anchor(&id, i),
                esc(title),
                esc(body)
            ));
        }
    }
    out.push_str("</section>\n");
    out
}

/// One time axis per scenario, shared by its timeline and its charts so they line up.
struct Axis {
    start: f64,
    end: f64,
    /// Seconds between ticks.
    step: f64,
}

impl Axis {
    /// From the earliest to the latest thing drawn: phases, the scenario's duration, samples
    /// (a sample taken before the scenario's start widens the axis rather than vanishing).
    fn of(s: &ScenarioReport) -> Axis {
        let finite = s
            .series
            .iter()
            .flat_map(|series| series.points.iter())
            .filter(|(t, v)| t.is_finite() && v.is_finite())
            .map(|(t, _)| *t);
        let phase_ends = s
            .phases
            .iter()
            .map(|p| (p.started + p.elapsed).as_secs_f64());
        let start = finite.clone().fold(0.0, f64::min);
        let end = finite
            .chain(phase_ends)
            .fold(s.duration.as_secs_f64(), f64::max);
        // An empty span would divide by zero; a second is the smallest useful axis.
        let end = end.max(start + 1.0);
        Axis {
            start,
            end,
            step: tick_step(end - start),
        }
    }

    fn x(&self, t: f64) -> f64 {
        PLOT_LEFT + (t - self.start) / (self.end - self.start) * (PLOT_RIGHT - PLOT_LEFT)
    }

    /// Vertical grid lines from `top` to `bottom` and their second labels below.
    fn ticks(&self, top: f64, bottom: f64) -> String {
        let mut out = String::new();
        let mut t = (self.start / self.step).ceil() * self.step;
        while t <= self.end + self.step * 1e-6 {
            let x = self.x(t);
            out.push_str(&format!(
                "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>\
                 <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}s</text>\n",
                bottom + 14.0,
                fmt_tick(t, self.step)
            ));
            t += self.step;
        }
        out
    }
}

/// A 1-2-5 step giving about eight ticks.
fn tick_step(span: f64) -> f64 {
    let raw = span / 8.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn fmt_tick(t: f64, step: f64) -> String {
    if step < 1.0 {
        format!("{t:.1}")
    } else {
        format!("{t:.0}")
    }
}

/// The moments worth a vertical line: the end of the phase each names, when it ended well
/// (a symptom phase that timed out is not "symptom first seen").
const MARKERS: [(&str, &str, &str); 3] = [
    ("fault", "fault injected", "#bc4c00"),
    ("symptom", "symptom first seen", "#cf222e"),
    ("recovery", "recovered", "#1a7f37"),
];

fn markers(phases: &[PhaseReport]) -> Vec<(&'static str, &'static str, f64)> {
    MARKERS
        .iter()
        .filter_map(|(phase, label, colour)| {
            let p = phases.iter().find(|p| p.name == *phase)?;
            p.steps
                .iter()
                .all(|s| s.ok)
                .then(|| (*label, *colour, (p.started + p.elapsed).as_secs_f64()))
        })
        .collect()
}

/// Dashed vertical lines from `top` to `bottom`; with `labels`, each named on its own line
/// above `top` so that close markers do not overprint.
fn marker_lines(
    phases: &[PhaseReport],
    axis: &Axis,
    top: f64,
    bottom: f64,
    labels: bool,
) -> String {
    let mut out = String::new();
    for (i, (label, colour, t)) in markers(phases).into_iter().enumerate() {
        let x = axis.x(t);
        out.push_str(&format!(
            "<line class=\"marker\" data-marker=\"{label}\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"{colour}\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"><title>{label} at {t:.2}s</title></line>\n"
        ));
        if labels {
            // Right of the line in the plot's left half, left of it in the right half.
            let (dx, anchor) = if x < (PLOT_LEFT + PLOT_RIGHT) / 2.0 {
                (4.0, "start")
            } else {
                (-4.0, "end")
            };
            out.push_str(&format!(
                "<text class=\"marker-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" style=\"fill:{colour}\">{label} {}</text>\n",
                x + dx,
                12.0 + i as f64 * 14.0,
                fmt_secs(Duration::from_secs_f64(t.max(0.0)))
            ));
        }
    }
    out
}

/// Each phase a bar on the scenario's time axis, in the order they ran.
fn timeline(phases: &[PhaseReport], axis: &Axis) -> String {
    let top = 12.0 + markers(phases).len() as f64 * 14.0;
    let bottom = top + phases.len() as f64 * ROW_HEIGHT;
    let height = bottom + AXIS_HEIGHT;
    let mut out = format!(
        "<svg class=\"timeline\" viewBox=\"0 0 {SVG_WIDTH} {height:.0}\" role=\"img\" aria-label=\"phase timeline\">\n"
    );
    out.push_str(&axis.ticks(top, bottom));
    // Before the bars, so that bars and their labels stay on top of the dashed lines.
    out.push_str(&marker_lines(phases, axis, top - 4.0, bottom, true));
    for (i, p) in phases.iter().enumerate() {
        let y = top + i as f64 * ROW_HEIGHT;
        let start = p.started.as_secs_f64();
        let end = (p.started + p.elapsed).as_secs_f64();
        let x0 = axis.x(start);
        // A phase of a few milliseconds still gets a visible sliver.
        let width = (axis.x(end) - x0).max(2.0);
        let failed = p.steps.iter().any(|s| !s.ok);
        let colour = if failed {
            "#cf222e"
        } else {
            phase_colour(&p.name)
        };
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect class=\"phase-bar\" data-phase=\"{}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"14\" rx=\"3\" fill=\"{colour}\"><title>{}: {} from {}{}</title></rect>\
             <text class=\"tick elapsed\" x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            PLOT_LEFT - 8.0,
            y + 15.0,
            esc(&p.name),
            esc(&p.name),
            y + 4.0,
            esc(&p.name),
            fmt_secs(p.elapsed),
            fmt_secs(p.started),
            if failed { ", failed" } else { "" },
            x0 + width + 4.0,
            y + 15.0,
            fmt_secs(p.elapsed)
        ));
    }
    out.push_str("</svg>\n");
    out
}

/// Bar colours by what the phase does to the system: acting on it (fault, remedy) stands out
/// from observing it.
fn phase_colour(name: &str) -> &'static str {
    match name {
        "fault" => "#e16f24",
        "symptom" | "negative control" => "#d4a72c",
        "remedy" => "#2da44e",
        "recovery" => "#4ac26b",
        "diagnosis" => "#8250df",
        _ => "#6e9ecf",
    }
}

/// A series as a line over the scenario's time axis, with the same markers as the timeline.
fn chart(series: &Series, phases: &[PhaseReport], axis: &Axis) -> String {
    let top = 8.0;
    let bottom = top + CHART_HEIGHT;
    let mut out = format!(
        "<svg class=\"series\" viewBox=\"0 0 {SVG_WIDTH} {:.0}\" role=\"img\" aria-label=\"{}\">\n",
        bottom + AXIS_HEIGHT,
        esc(&series.name)
    );
    out.push_str(&axis.ticks(top, bottom));
    out.push_str(&marker_lines(phases, axis, top, bottom, false));
    out.push_str(&format!(
        "<line class=\"grid\" x1=\"{PLOT_LEFT}\" y1=\"{bottom:.1}\" x2=\"{PLOT_RIGHT}\" y2=\"{bottom:.1}\"/>\n"
    ));
    let points: Vec<(f64, f64)> = series
        .points
        .iter()
        .copied()
        .filter(|(t, v)| t.is_finite() && v.is_finite())
        .collect();
    if points.is_empty() {
        out.push_str(&format!(
            "<text class=\"tick\" x=\"{PLOT_LEFT}\" y=\"{:.1}\">no finite samples</text>\n",
            top + CHART_HEIGHT / 2.0
        ));
    } else {
        let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        // A flat series is drawn mid-height rather than dividing by zero.
        let (lo, hi) = if hi > lo {
            (lo, hi)
        } else {
            (lo - 1.0, hi + 1.0)
        };
        let y = |v: f64| bottom - (v - lo) / (hi - lo) * CHART_HEIGHT;
        for (value, baseline) in [(hi, "hanging"), (lo, "auto")] {
            out.push_str(&format!(
                "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" dominant-baseline=\"{baseline}\">{}</text>\n",
                PLOT_LEFT - 8.0,
                y(value),
                fmt_value(value)
            ));
        }
        let path: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", axis.x(*t), y(*v)))
            .collect();
        out.push_str(&format!(
            "<polyline class=\"series-line\" fill=\"none\" stroke=\"#0969da\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        ));
        for (t, v) in &points {
            out.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#0969da\"><title>{:.2}s: {}</title></circle>\n",
                axis.x(*t),
                y(*v),
                t,
                fmt_value(*v)
            ));
        }
    }
    out.push_str("</svg>\n");
    out
}

/// Whole numbers as such, others to three decimals without trailing zeros.
fn fmt_value(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Every step with the last value it saw.
fn steps(phases: &[PhaseReport]) -> String {
    let mut out = String::from(
        "<table class=\"steps\">\n<tr><th>Phase</th><th>Step</th><th>Result</th><th class=\"num\">Attempts</th><th class=\"num\">Elapsed</th><th>Observed</th><th>Error</th></tr>\n",
    );
    for p in phases {
        for s in &p.steps {
            let (row, result) = if s.ok {
                ("", "<span class=\"ok\">ok</span>")
            } else {
                (" class=\"bad\"", "<span class=\"failed\">failed</span>")
            };
            out.push_str(&format!(
                "<tr{row}><td>{}</td><td>{}</td><td>{result}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><code class=\"observed\">{}</code></td><td class=\"error-text\">{}</td></tr>\n",
                esc(&p.name),
                esc(&s.description),
                s.attempts,
                fmt_secs(s.elapsed),
                esc(&crate::expect::clip(s.observed.as_deref().unwrap_or(""), OBSERVED_CLIP)),
                esc(s.error.as_deref().unwrap_or(""))
            ));
        }
    }
    out.push_str("</table>\n");
    out
}

fn badge(v: Verdict) -> String {
    let class = match v {
        Verdict::Passed => "pass",
        Verdict::Failed => "fail",
        Verdict::Skipped => "skip",
        Verdict::Error => "error",
    };
    format!("<span class=\"badge {class}\">{}</span>", v.as_str())
}

/// An element id from a scenario ID: IDs are letters, digits and dashes, anything else
/// becomes a dash so the id stays a valid fragment.
fn anchor(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn evidence_anchor(scenario_anchor: &str, index: usize) -> String {
    format!("{scenario_anchor}-evidence-{}", index + 1)
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{s:.2}s")
    } else {
        format!("{s:.1}s")
    }
}

fn fmt_opt_secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), fmt_secs)
}

/// Text and attribute values alike (quotes included).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::StepReport;

    fn phase(name: &str, started: f64, elapsed: f64, ok: bool) -> PhaseReport {
        let mut p = PhaseReport::new(name);
        p.started = Duration::from_secs_f64(started);
        p.elapsed = Duration::from_secs_f64(elapsed);
        p.steps.push(StepReport {
            op: "exec".into(),
            description: format!("{name} check"),
            ok,
            elapsed: Duration::from_millis(40),
            attempts: 1,
            observed: Some("exit 0".into()),
            error: (!ok).then(|| "exit 1, expected 0".into()),
        });
        p
    }

    /// A real scenario's report (so fields added to it later need no change here) with a
    /// title full of markup.
    fn scenario_report(phases: Vec<PhaseReport>) -> ScenarioReport {
        let path = crate::repo_root().join("scenarios/E2001.yaml");
        let scenario = veritas_scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut s = ScenarioReport::new(&scenario, 7);
        s.title = "A <corrupted> model & \"quotes\"".into();
        s.verdict = Verdict::Passed;
        s.time_to_detect = Some(Duration::from_millis(800));
        s.time_to_recover = Some(Duration::from_secs(3));
        s.duration = Duration::from_secs(12);
        s.phases = phases;
        s
    }

    fn passing_phases() -> Vec<PhaseReport> {
        vec![
            phase("setup", 0.0, 1.5, true),
            phase("fault", 1.5, 0.1, true),
            phase("symptom", 1.6, 0.8, true),
            phase("negative control", 2.4, 2.0, true),
            phase("diagnosis", 4.4, 1.2, true),
            phase("remedy", 5.6, 0.5, true),
            phase("recovery", 6.1, 2.5, true),
            phase("finally", 8.6, 0.3, true),
        ]
    }

    fn run(s: ScenarioReport) -> RunReport {
        RunReport::new("process", 7, 1, Duration::from_secs(12), vec![s])
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<b a="1">&'x'</b>"#),
            "&lt;b a=&quot;1&quot;&gt;&amp;&#39;x&#39;&lt;/b&gt;"
        );
        let mut s = scenario_report(passing_phases());
        s.verdict = Verdict::Failed;
        s.reason = Some("saw <script>alert(1)</script>".into());
        s.evidence.push((
            "log \"daemon\"".into(),
            "</pre><img src=x onerror=alert(1)>".into(),
        ));
        s.leaks.push("pid 42 <zombie>".into());
        s.non_discriminating
            .push("veritas-spark health <already failing>".into());
        let html = render(&run(s));
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<corrupted>"));
        assert!(html.contains("saw &lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("A &lt;corrupted&gt; model &amp; &quot;quotes&quot;"));
        assert!(html.contains("pid 42 &lt;zombie&gt;"));
        assert!(html.contains("veritas-spark health &lt;already failing&gt;"));
    }

    #[test]
    fn one_timeline_bar_per_phase() {
        let phases = passing_phases();
        let n = phases.len();
        let html = render(&run(scenario_report(phases)));
        assert_eq!(html.matches("class=\"phase-bar\"").count(), n);
        assert!(html.contains("data-phase=\"negative control\""));
    }

    #[test]
    fn symptom_and_recovery_are_marked_when_reached() {
        let html = render(&run(scenario_report(passing_phases())));
        assert!(html.contains("data-marker=\"symptom first seen\""));
        assert!(html.contains("data-marker=\"recovered\""));

        // A recovery that never came is not marked as one.
        let mut phases = passing_phases();
        phases[6] = phase("recovery", 6.1, 20.0, false);
        let html = render(&run(scenario_report(phases)));
        assert!(html.contains("data-marker=\"symptom first seen\""));
        assert!(!html.contains("data-marker=\"recovered\""));
    }

    #[test]
    fn series_charts_only_when_there_are_series() {
        let html = render(&run(scenario_report(passing_phases())));
        assert!(!html.contains("class=\"series\""));

        let mut s = scenario_report(passing_phases());
        s.series.push(Series {
            name: "veritas_model_load_failures_total".into(),
            points: vec![(0.0, 0.0), (2.0, 3.0), (f64::NAN, 1.0), (9.0, 3.0)],
        });
        let html = render(&run(s));
        assert_eq!(html.matches("class=\"series\"").count(), 1);
        assert!(html.contains("veritas_model_load_failures_total"));
        // The NaN sample is left out of the line, the three others drawn.
        let line = html
            .split("class=\"series-line\"")
            .nth(1)
            .and_then(|rest| rest.split("points=\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        assert_eq!(line.split(' ').count(), 3, "{line}");
    }

    #[test]
    fn evidence_is_linked_and_collapsible() {
        let mut s = scenario_report(passing_phases());
        s.evidence.push(("daemon log".into(), "line 1".into()));
        s.evidence.push(("events".into(), "line 2".into()));
        let html = render(&run(s));
        assert!(html.contains("href=\"#E2001-evidence-2\""));
        assert!(html.contains("<details id=\"E2001-evidence-2\"><summary>events</summary>"));
    }

    #[test]
    fn ticks_follow_one_two_five() {
        assert_eq!(tick_step(8.0), 1.0);
        assert_eq!(tick_step(12.0), 2.0);
        assert_eq!(tick_step(30.0), 5.0);
        assert_eq!(tick_step(300.0), 50.0);
        assert!((tick_step(0.5) - 0.1).abs() < 1e-9);
    }
}
