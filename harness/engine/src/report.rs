//! The report tree (run → scenario → phase → step, with timings) and its renderings: a table
//! for people, JSON for machines (schema version 1), JUnit XML for CI.

use serde::Serialize;
use std::time::Duration;
use veritas_scenario::Scenario;

/// Version of the JSON report shape; bumped on any incompatible change.
pub const REPORT_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Fault took, symptom held, diagnosis showed it, remedy recovered.
    Passed,
    /// The system did not behave as the guide says (or the negative control failed).
    Failed,
    /// Not runnable here (driver or component missing); never counted as passed.
    Skipped,
    /// The scenario could not be brought up, or was interrupted.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "PASS",
            Verdict::Failed => "FAIL",
            Verdict::Skipped => "SKIP",
            Verdict::Error => "ERROR",
        }
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => secs(d, s),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub op: String,
    pub description: String,
    pub ok: bool,
    #[serde(serialize_with = "secs", rename = "elapsed_s")]
    pub elapsed: Duration,
    /// Poll round (observations) or 1.
    pub attempts: u32,
    pub observed: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    /// When the phase began, from the scenario's start (one time axis for the timeline).
    #[serde(serialize_with = "secs", rename = "started_s")]
    pub started: Duration,
    #[serde(serialize_with = "secs", rename = "elapsed_s")]
    pub elapsed: Duration,
    pub steps: Vec<StepReport>,
}

impl PhaseReport {
    pub fn new(name: &str) -> PhaseReport {
        PhaseReport {
            name: name.into(),
            started: Duration::ZERO,
            elapsed: Duration::ZERO,
            steps: Vec::new(),
        }
    }
}

/// A metric sampled during the scenario, drawn under its timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub name: String,
    /// (seconds since the scenario's start, value).
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub id: String,
    pub title: String,
    pub guide_section: String,
    pub guide_cause: String,
    pub verdict: Verdict,
    /// Why it failed, errored or was skipped.
    pub reason: Option<String>,
    pub failed_phase: Option<String>,
    /// From the end of the fault to the symptom first seen.
    #[serde(serialize_with = "opt_secs", rename = "time_to_detect_s")]
    pub time_to_detect: Option<Duration>,
    /// From the start of the remedy to recovery seen.
    #[serde(serialize_with = "opt_secs", rename = "time_to_recover_s")]
    pub time_to_recover: Option<Duration>,
    #[serde(serialize_with = "secs", rename = "duration_s")]
    pub duration: Duration,
    pub seed: u64,
    pub phases: Vec<PhaseReport>,
    /// Metrics sampled on the same time axis as `phases`.
    pub series: Vec<Series>,
    /// Titled evidence (logs, events, outputs) gathered on failure.
    pub evidence: Vec<(String, String)>,
    /// Objects or processes left behind (a passing scenario with leaks fails).
    pub leaks: Vec<String>,
    /// Symptom checks that already held on the healthy system before the fault: they do not
    /// tell the fault apart (the other checks of the symptom must).
    pub non_discriminating: Vec<String>,
    /// The scenario's start: phase offsets are measured from it.
    #[serde(skip)]
    pub started_at: std::time::Instant,
}

impl ScenarioReport {
    pub fn new(s: &Scenario, seed: u64) -> ScenarioReport {
        ScenarioReport {
            id: s.id.clone(),
            title: s.title.clone(),
            guide_section: s.guide.section.clone(),
            guide_cause: s.guide.cause.clone(),
            verdict: Verdict::Error,
            reason: None,
            failed_phase: None,
            time_to_detect: None,
            time_to_recover: None,
            duration: Duration::ZERO,
            seed,
            phases: Vec::new(),
            series: Vec::new(),
            evidence: Vec::new(),
            leaks: Vec::new(),
            non_discriminating: Vec::new(),
            started_at: std::time::Instant::now(),
        }
    }

    /// Records a finished phase, placing it on the scenario's time axis.
    pub fn push_phase(&mut self, mut phase: PhaseReport) {
        phase.started = self.started_at.elapsed().saturating_sub(phase.elapsed);
        self.phases.push(phase);
    }

    /// The failure explained for a person: reason, then the failing steps with what they saw.
    pub fn failure_text(&self) -> String {
        let mut t = format!(
            "{} {}: {}\n",
            self.verdict.as_str(),
            self.id,
            self.reason.as_deref().unwrap_or("")
        );
        for p in &self.phases {
            for s in p.steps.iter().filter(|s| !s.ok) {
                t.push_str(&format!(
                    "  [{}] {}: {}\n      last seen: {}\n",
                    p.name,
                    s.description,
                    s.error.as_deref().unwrap_or(""),
                    s.observed.as_deref().unwrap_or("-")
                ));
            }
        }
        for (title, body) in &self.evidence {
            t.push_str(&format!("  --- {title}\n"));
            for line in body.lines().take(40) {
                t.push_str(&format!("      {line}\n"));
            }
        }
        t
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub schema: u32,
    pub driver: String,
    pub seed: u64,
    pub parallel: usize,
    #[serde(serialize_with = "secs", rename = "duration_s")]
    pub duration: Duration,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub errors: usize,
    pub scenarios: Vec<ScenarioReport>,
}

impl RunReport {
    pub fn new(
        driver: &str,
        seed: u64,
        parallel: usize,
        duration: Duration,
        scenarios: Vec<ScenarioReport>,
    ) -> RunReport {
        let count = |v| scenarios.iter().filter(|s| s.verdict == v).count();
        RunReport {
            schema: REPORT_SCHEMA,
            driver: driver.into(),
            seed,
            parallel,
            duration,
            passed: count(Verdict::Passed),
            failed: count(Verdict::Failed),
            skipped: count(Verdict::Skipped),
            errors: count(Verdict::Error),
            scenarios,
        }
    }

    pub fn success(&self) -> bool {
        self.failed == 0 && self.errors == 0
    }

    /// The final table.
    pub fn table(&self) -> String {
        let fmt =
            |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
        let w = self
            .scenarios
            .iter()
            .map(|s| s.id.len())
            .max()
            .unwrap_or(2)
            .max(8);
        let mut t = format!(
            "{:<w$}  {:<6} {:>8} {:>9} {:>8}  {}\n",
            "SCENARIO", "RESULT", "DETECT", "RECOVER", "TOTAL", "GUIDE ROW / REASON"
        );
        for s in &self.scenarios {
            let tail = match s.verdict {
                Verdict::Passed => format!("{} / {}", s.guide_section, s.guide_cause),
                _ => s.reason.clone().unwrap_or_default(),
            };
            t.push_str(&format!(
                "{:<w$}  {:<6} {:>8} {:>9} {:>8}  {}\n",
                s.id,
                s.verdict.as_str(),
                fmt(s.time_to_detect),
                fmt(s.time_to_recover),
                format!("{:.1}s", s.duration.as_secs_f64()),
                crate::expect::clip(&tail, 110)
            ));
        }
        // The plain closing line CI readers understand.
        t.push_str(&format!(
            "\n{} passed, {} failed, {} skipped ({} errors) in {:.1}s, driver {}, seed {}\n",
            self.passed,
            self.failed + self.errors,
            self.skipped,
            self.errors,
            self.duration.as_secs_f64(),
            self.driver,
            self.seed
        ));
        t
    }

    pub fn junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
        let mut report = Report::new("veritas-harness");
        let mut suite = TestSuite::new(format!("scenarios ({})", self.driver));
        for s in &self.scenarios {
            let status = match s.verdict {
                Verdict::Passed => TestCaseStatus::success(),
                Verdict::Skipped => {
                    let mut st = TestCaseStatus::skipped();
                    if let Some(r) = &s.reason {
                        st.set_message(r.clone());
                    }
                    st
                }
                Verdict::Failed | Verdict::Error => {
                    let kind = if s.verdict == Verdict::Failed {
                        NonSuccessKind::Failure
                    } else {
                        NonSuccessKind::Error
                    };
                    let mut st = TestCaseStatus::non_success(kind);
                    st.set_message(s.reason.clone().unwrap_or_default());
                    st.set_description(s.failure_text());
                    st
                }
            };
            let mut case = TestCase::new(s.id.clone(), status);
            case.set_classname(s.guide_section.clone());
            case.set_time(s.duration);
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
        report.to_string().unwrap_or_default()
    }
}
