//! Cleanup that survives kills, through the real CLI: a run SIGKILLed mid-fault leaves a revert
//! journal that `veritas-harness cleanup` replays (fault reverted, daemons stopped, work dir
//! removed); a run interrupted with SIGINT reverts its fault and starts nothing queued.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Sandbox {
    _dir: tempfile::TempDir,
    scenarios: PathBuf,
    state: PathBuf,
    marker: PathBuf,
    reports: PathBuf,
}

fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/killed");
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir_all(&scenarios).unwrap();
    for f in ["KILLED.yaml", "QUEUED.yaml"] {
        std::fs::copy(fixtures.join(f), scenarios.join(f)).unwrap();
    }
    Sandbox {
        scenarios,
        state: dir.path().join("state"),
        marker: dir.path().join("marker"),
        reports: dir.path().join("reports"),
        _dir: dir,
    }
}

fn harness(sb: &Sandbox, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_veritas-harness"));
    c.arg("--scenarios")
        .arg(&sb.scenarios)
        .args(args)
        .env("VERITAS_HARNESS_STATE", &sb.state)
        .env("VERITAS_TEST_MARKER", &sb.marker)
        .env(
            "VERITAS_SPARK_BIN",
            veritas_harness::spark_bin().expect("veritas-spark built"),
        );
    c
}

fn poll<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn journal_entries(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state.join("journal"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Waits until the fault is in place (the marker written) and the journal says so.
fn wait_mid_fault(sb: &Sandbox, child: &mut Child) -> serde_json::Value {
    poll("the fault's marker", Duration::from_secs(120), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the harness exited before the fault: {status}");
        }
        sb.marker.exists().then_some(())
    });
    poll("a journal entry", Duration::from_secs(10), || {
        let file = journal_entries(&sb.state)
            .into_iter()
            .find(|p| p.extension().is_some_and(|x| x == "json"))?;
        serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()
    })
}

#[test]
fn a_sigkilled_run_is_reverted_by_cleanup_from_its_journal() {
    let sb = sandbox();
    let mut child = harness(&sb, &["run", "KILLED", "--report-dir"])
        .arg(&sb.reports)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let entry = wait_mid_fault(&sb, &mut child);
    assert_eq!(entry["scenario"], "KILLED");
    let work = entry["workDir"].as_str().unwrap().to_string();
    let daemons = || veritas_harness::runner::processes_mentioning(&work);
    assert!(!daemons().is_empty(), "the scenario's daemon runs");

    child.kill().unwrap(); // SIGKILL: no handler, no `finally`
    child.wait().unwrap();
    assert!(
        sb.marker.exists(),
        "a SIGKILLed run cannot revert its own fault"
    );

    let out = harness(&sb, &["cleanup", "--json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!sb.marker.exists(), "cleanup replays `finally`: {stdout}");
    assert!(daemons().is_empty(), "cleanup stops the dead run's daemons");
    assert!(!Path::new(&work).exists(), "cleanup removes the work dir");
    assert!(journal_entries(&sb.state).is_empty(), "the entry is done");
    let done: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(done[0]["scenario"], "KILLED");
    assert!(done[0]["failures"].as_array().unwrap().is_empty());

    let again = harness(&sb, &["cleanup"]).output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to clean up"));
}

#[test]
fn sigint_reverts_the_running_fault_and_starts_nothing_queued() {
    let sb = sandbox();
    let mut child = harness(
        &sb,
        &["run", "KILLED", "QUEUED", "--parallel", "1", "--report-dir"],
    )
    .arg(&sb.reports)
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_mid_fault(&sb, &mut child);
    // SAFETY: our own child, still running.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = poll("the harness to exit", Duration::from_secs(60), || {
        child.try_wait().unwrap()
    });
    assert_eq!(
        status.code(),
        Some(1),
        "an interrupted run is not a success"
    );
    assert!(!sb.marker.exists(), "`finally` ran on SIGINT");
    assert!(
        journal_entries(&sb.state).is_empty(),
        "nothing left to replay"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.reports.join("report.json")).unwrap())
            .unwrap();
    let by_id = |id: &str| {
        report["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing from the report: {report}"))
    };
    assert_eq!(by_id("KILLED")["verdict"], "error");
    assert!(by_id("KILLED")["reason"]
        .as_str()
        .unwrap()
        .contains("interrupted"));
    let queued = by_id("QUEUED");
    assert_eq!(queued["verdict"], "error");
    assert_eq!(queued["reason"], "not started: the run was interrupted");
    assert!(queued["phases"].as_array().unwrap().is_empty());
}
