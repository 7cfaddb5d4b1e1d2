//! Tests of the engine itself on real daemons: a wrong expectation fails with a clear message,
//! a fault that never takes fails at the symptom, a fault that heals by itself fails the
//! negative control, a symptom present before the fault or a recovery present under it is an
//! error, the ablation waits its whole deadline, a failing step that asserts nothing fails, a
//! failed revert is a leak, and the leak audit finds nothing left running.

use std::path::Path;
use std::sync::{Arc, Mutex};
use veritas_harness::report::{ScenarioReport, Verdict};
use veritas_harness::runner::{self, DriverKind, Event, RunConfig};

fn run_fixture(name: &str) -> (ScenarioReport, Vec<Event>) {
    run_fixture_with(name, false)
}

fn run_fixture_with(name: &str, without_remedy: bool) -> (ScenarioReport, Vec<Event>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.yaml"));
    let s = veritas_scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    // Each test's own journal dir: a failed revert here must not be replayed by other tests.
    let journal = tempfile::tempdir().unwrap();
    let cfg = RunConfig {
        driver: DriverKind::Process,
        spark_bin: veritas_harness::spark_bin().unwrap(),
        cluster: None,
        components: vec![],
        seed: 42,
        keep: false,
        pause_on_failure: false,
        without_remedy,
        journal_dir: journal.path().to_path_buf(),
        interrupted: rx,
        events: Arc::new(move |e| sink.lock().unwrap().push(e)),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(runner::run(&s, &cfg));
    let events = events.lock().unwrap().clone();
    (report, events)
}

#[test]
fn a_wrong_expectation_fails_at_the_symptom_naming_what_was_seen() {
    let (r, events) = run_fixture("WRONG-EXPECTATION");
    assert_eq!(r.verdict, Verdict::Failed, "{}", r.failure_text());
    assert_eq!(r.failed_phase.as_deref(), Some("symptom"));
    let reason = r.reason.clone().unwrap();
    assert!(
        reason.contains("no E2003 MODEL_VERSION_MISMATCH in the output"),
        "{reason}"
    );
    assert!(reason.contains("not seen within 2s"), "{reason}");
    let text = r.failure_text();
    assert!(
        text.contains("E2002 MODEL_NOT_FOUND"),
        "the last value seen is shown: {text}"
    );
    assert!(r.time_to_recover.is_none());
    // The remedy never ran.
    assert!(r.phases.iter().all(|p| p.name != "remedy"));
    assert!(matches!(
        events.last(),
        Some(Event::Finished {
            verdict: Verdict::Failed,
            ..
        })
    ));
    assert!(
        r.evidence
            .iter()
            .any(|(t, _)| t.contains("daemon `spark` log")),
        "evidence collected"
    );
    // The leak audit found the daemon and its worker gone.
    assert!(r.leaks.is_empty(), "{:?}", r.leaks);
}

#[test]
fn a_fault_that_never_takes_fails_at_the_symptom() {
    let (r, _) = run_fixture("NEVER-TAKES");
    assert_eq!(r.verdict, Verdict::Failed, "{}", r.failure_text());
    assert_eq!(r.failed_phase.as_deref(), Some("symptom"));
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("exit status 0 (expected 1)"),
        "{:?}",
        r.reason
    );
}

#[test]
fn a_fault_that_heals_by_itself_fails_the_negative_control() {
    let (r, _) = run_fixture("SELF-HEALING");
    assert_eq!(r.verdict, Verdict::Failed, "{}", r.failure_text());
    assert_eq!(
        r.failed_phase.as_deref(),
        Some("negative control"),
        "{}",
        r.failure_text()
    );
    let reason = r.reason.unwrap();
    assert!(reason.contains("stopped holding"), "{reason}");
    assert!(reason.contains("without any remedy"), "{reason}");
    assert!(r.time_to_detect.is_some(), "the symptom was seen first");
}

#[test]
fn a_setup_wait_that_never_passes_stops_at_setup_with_the_last_value_seen() {
    let (r, _) = run_fixture("WAIT-NEVER-READY");
    assert_eq!(r.verdict, Verdict::Error, "{}", r.failure_text());
    assert_eq!(r.failed_phase.as_deref(), Some("setup"));
    let reason = r.reason.clone().unwrap();
    assert!(reason.contains("step 3 (wait up to 1500ms"), "{reason}");
    assert!(reason.contains("not within 1500ms"), "{reason}");
    // The first check passed every poll; the second is the one named, with the daemon's answer.
    assert!(
        reason.contains("check 2 (veritas-spark models load ghost)"),
        "{reason}"
    );
    assert!(reason.contains("E2002"), "{reason}");
    let fault_ran = r.phases.iter().any(|p| p.name == "fault");
    assert!(
        !fault_ran,
        "the fault must not run after a failed setup gate"
    );
}

fn phase<'a>(
    r: &'a ScenarioReport,
    name: &str,
) -> Option<&'a veritas_harness::report::PhaseReport> {
    r.phases.iter().find(|p| p.name == name)
}

#[test]
fn a_symptom_present_before_the_fault_is_an_error_naming_the_check() {
    let (r, _) = run_fixture("ALWAYS-HOLDS");
    assert_eq!(r.verdict, Verdict::Error, "{}", r.failure_text());
    assert_eq!(r.failed_phase.as_deref(), Some("baseline"));
    let reason = r.reason.clone().unwrap();
    assert!(
        reason.contains("symptom present before the fault"),
        "{reason}"
    );
    assert_eq!(
        r.non_discriminating,
        vec!["veritas-spark health".to_string()]
    );
    assert!(phase(&r, "fault").is_none(), "the fault must not run");
    assert!(r.leaks.is_empty(), "{:?}", r.leaks);
}

#[test]
fn recovery_that_holds_under_the_fault_is_an_error_before_any_remedy() {
    let (r, _) = run_fixture("RECOVERED-UNDER-FAULT");
    assert_eq!(r.verdict, Verdict::Error, "{}", r.failure_text());
    assert_eq!(r.failed_phase.as_deref(), Some("recovery under the fault"));
    assert!(r
        .reason
        .as_deref()
        .unwrap()
        .contains("recovery holds under the fault"));
    assert!(phase(&r, "negative control").is_some(), "after the hold");
    assert!(phase(&r, "remedy").is_none(), "the remedy must not run");
}

#[test]
fn a_well_formed_row_passes_with_a_discriminating_baseline() {
    let (r, _) = run_fixture("MARKER");
    assert_eq!(r.verdict, Verdict::Passed, "{}", r.failure_text());
    assert!(r.non_discriminating.is_empty());
    let names: Vec<&str> = r.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "setup",
            "baseline",
            "fault",
            "symptom",
            "negative control",
            "recovery under the fault",
            "diagnosis",
            "remedy",
            "recovery",
            "finally"
        ]
    );
    // One time axis: each phase starts where the previous one ended.
    for w in r.phases.windows(2) {
        assert!(
            w[1].started >= w[0].started,
            "{:?} then {:?}",
            w[0].name,
            w[1].name
        );
    }
}

#[test]
fn the_ablation_waits_the_whole_recovery_deadline_then_fails_at_recovery() {
    let (r, _) = run_fixture_with("MARKER", true);
    assert_eq!(r.verdict, Verdict::Failed, "{}", r.failure_text());
    assert_eq!(r.failed_phase.as_deref(), Some("recovery"));
    let recovery = phase(&r, "recovery").unwrap();
    assert!(
        recovery.elapsed >= std::time::Duration::from_secs(3),
        "waited only {:?} of the 3s deadline",
        recovery.elapsed
    );
    assert!(phase(&r, "remedy").is_none());
}

#[test]
fn a_failing_step_without_expect_stops_the_phase() {
    let (r, _) = run_fixture("SILENT-FAILURE");
    assert_eq!(r.verdict, Verdict::Error, "{}", r.failure_text());
    assert_eq!(r.failed_phase.as_deref(), Some("setup"));
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("a step without `exit` must succeed"),
        "{reason}"
    );
}

#[test]
fn a_failed_revert_is_a_leak_and_fails_a_passing_row() {
    let (r, _) = run_fixture("FAILED-REVERT");
    assert_eq!(r.verdict, Verdict::Failed, "{}", r.failure_text());
    assert_eq!(r.failed_phase.as_deref(), Some("finally"));
    assert_eq!(r.leaks.len(), 1, "{:?}", r.leaks);
    assert!(r.leaks[0].contains("finally step 1"), "{:?}", r.leaks);
    assert!(r.leaks[0].contains("exit status 3"), "{:?}", r.leaks);
}
