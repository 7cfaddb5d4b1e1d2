//! The coverage gate on copies of the guide: a row added, renamed or deleted makes it fail,
//! and so does a gaps file that lists a row a scenario covers.

use std::path::{Path, PathBuf};
use std::process::Command;

fn guide() -> String {
    std::fs::read_to_string(veritas_harness::coverage::default_guide()).expect("the guide")
}

/// `veritas-harness coverage --guide <text>` with the repository's gaps file (or `gaps`):
/// exit code and output.
fn gate(guide_text: &str, gaps: Option<&str>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guide.md");
    std::fs::write(&path, guide_text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veritas-harness"));
    cmd.arg("coverage").arg("--guide").arg(&path);
    if let Some(g) = gaps {
        let gp: PathBuf = dir.path().join("gaps.txt");
        std::fs::write(&gp, g).unwrap();
        cmd.arg("--gaps").arg(&gp);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn gaps_file() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/coverage-gaps.txt"),
    )
    .unwrap()
}

#[test]
fn the_guide_as_it_is_passes_with_the_committed_gaps() {
    let (code, out) = gate(&guide(), None);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("0 missing, 0 orphaned scenarios, 0 stale gap lines"),
        "{out}"
    );
}

#[test]
fn a_row_added_to_the_guide_fails_the_gate() {
    let text = guide().replace(
        "| DNS cache stale | Wait TTL or restart CoreDNS |",
        "| DNS cache stale | Wait TTL or restart CoreDNS |\n| Resolver misconfigured | Fix resolv.conf |",
    );
    let (code, out) = gate(&text, None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("row without a scenario: line")
            && out.contains("DNS Not Updating / Resolver misconfigured"),
        "{out}"
    );
}

#[test]
fn a_row_renamed_in_the_guide_fails_the_gate_naming_the_scenario() {
    let text = guide().replace("| DNS cache stale |", "| CoreDNS cache stale |");
    let (code, out) = gate(&text, None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("scenario whose row is not in the guide: DNS-1"),
        "{out}"
    );
    assert!(
        out.contains("DNS Not Updating / CoreDNS cache stale"),
        "{out}"
    );
}

#[test]
fn a_row_deleted_from_the_guide_fails_the_gate() {
    let text = guide().replace(
        "| Traffic weight = 0 | Set trafficWeight > 0 in VeritasCanary spec |\n",
        "",
    );
    let (code, out) = gate(&text, None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("scenario whose row is not in the guide: CNT-1"),
        "{out}"
    );
}

#[test]
fn the_gaps_file_only_shrinks() {
    // A covered row listed as a gap, and a gap that is no row at all.
    let gaps = format!(
        "{}DNS Not Updating / DNS cache stale\nNo Such Section / nothing\n",
        gaps_file()
    );
    let (code, out) = gate(&guide(), Some(&gaps));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DNS Not Updating / DNS cache stale (covered by DNS-1)"),
        "{out}"
    );
    assert!(
        out.contains("No Such Section / nothing (no such row in the guide)"),
        "{out}"
    );
    // Without the gaps file every missing row fails.
    let (code, out) = gate(&guide(), Some(""));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("row without a scenario: line 458: Common Error Codes: E5001 DEPLOYMENT_FAILED / Verify image pull secrets"),
        "{out}"
    );
}

#[test]
fn a_row_covered_through_also_counts_and_is_checked_like_the_scenarios_own() {
    // E5002 proves the map's "Rollback failed" row with `guide.also`: the row is covered...
    let (code, out) = gate(&guide(), None);
    assert_eq!(code, 0, "{out}");
    // ...and renaming it in the guide makes E5002 an orphan for that row alone.
    let text = guide().replace("| Rollback failed |", "| Rollback stuck |");
    let (code, out) = gate(&text, None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("scenario whose row is not in the guide: E5002: also Symptom to Action Map / Rollback failed"),
        "{out}"
    );
    assert!(
        out.contains("Symptom to Action Map / Rollback stuck"),
        "{out}"
    );
}
