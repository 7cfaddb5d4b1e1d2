//! The HTML report as a person sees it: a run of two real scenarios (one passed with metric
//! series, one failed with evidence and a leak) rendered to a file and screenshotted by
//! headless Chromium. The screenshot must be a real, non-blank picture of the page.
//!
//! `VERITAS_REPORT_SCREENSHOT=<path>` keeps a copy of the screenshot (how
//! docs/harness/report-example.png is made).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use veritas_harness::report::{
    PhaseReport, RunReport, ScenarioReport, Series, StepReport, Verdict,
};
use veritas_scenario::{Scenario, Step};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 2000;

fn load(id: &str) -> Scenario {
    let path = veritas_harness::repo_root().join(format!("scenarios/{id}.yaml"));
    veritas_scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// A phase that ran `steps` from `started` for `elapsed` seconds, each step with what a real
/// run would have observed.
fn phase(name: &str, started: f64, elapsed: f64, steps: &[Step], observed: &str) -> PhaseReport {
    let mut p = PhaseReport::new(name);
    p.started = Duration::from_secs_f64(started);
    p.elapsed = Duration::from_secs_f64(elapsed);
    let each = p.elapsed / steps.len().max(1) as u32;
    p.steps = steps
        .iter()
        .map(|step| StepReport {
            op: step.op_name().into(),
            description: veritas_harness::describe(step),
            ok: true,
            elapsed: each,
            attempts: 1,
            observed: Some(observed.into()),
            error: None,
        })
        .collect();
    p
}

/// E2001 as a passing run: every phase of the runner, in order, with two metric series.
fn passed_e2001() -> ScenarioReport {
    let s = load("E2001");
    let mut r = ScenarioReport::new(&s, 42);
    let symptom_seen = "exit 1: E2001 MODEL_LOAD_FAILED: sha256 mismatch for tiny.gguf (expected 9f2c…, got 03ab…) <tiny.gguf>";
    let mut symptom = phase("symptom", 1.9, 0.7, &s.symptom.checks, symptom_seen);
    symptom.steps[0].attempts = 3;
    r.phases = vec![
        phase(
            "setup",
            0.0,
            1.6,
            &s.setup,
            "daemon spark ready on /tmp/veritas-42/spark.sock",
        ),
        phase(
            "fault",
            1.6,
            0.3,
            &s.fault,
            "tiny.gguf: 4 bytes flipped at offset 4096",
        ),
        symptom,
        phase(
            "negative control",
            2.6,
            2.0,
            &s.symptom.checks,
            symptom_seen,
        ),
        phase(
            "diagnosis",
            4.6,
            1.4,
            &s.diagnosis,
            "-rw-r--r-- 1 root root 1.2M tiny.gguf",
        ),
        phase("remedy", 6.0, 0.9, &s.remedy, "exit 0: model tiny loaded"),
        phase("recovery", 6.9, 1.8, &s.recovery.checks, "exit 0: healthy"),
        phase("finally", 8.7, 0.2, &s.finally, "ok"),
    ];
    r.verdict = Verdict::Passed;
    r.time_to_detect = Some(Duration::from_millis(700));
    r.time_to_recover = Some(Duration::from_millis(2700));
    r.duration = Duration::from_millis(8900);
    // Sampled every half second, as a Prometheus scrape of the daemon would be.
    let samples = (0..=18).map(|i| i as f64 * 0.5);
    r.series = vec![
        Series {
            name: "veritas_model_load_failures_total".into(),
            points: samples
                .clone()
                .map(|t| {
                    (
                        t,
                        if t < 1.9 {
                            0.0
                        } else {
                            ((t - 1.4) * 2.0).min(9.0).floor()
                        },
                    )
                })
                .map(|(t, v)| (t, if t >= 6.9 { 9.0 } else { v }))
                .collect(),
        },
        Series {
            name: "process_resident_memory_bytes (MiB)".into(),
            points: samples
                .map(|t| {
                    (
                        t,
                        if (1.6..6.9).contains(&t) {
                            212.0 - t
                        } else {
                            240.0 + t
                        },
                    )
                })
                .collect(),
        },
    ];
    r
}

/// E1001 as a failed run: recovery never came, the catch collected evidence, a daemon leaked.
fn failed_e1001() -> ScenarioReport {
    let s = load("E1001");
    let mut r = ScenarioReport::new(&s, 43);
    let mut recovery = phase("recovery", 5.1, 20.0, &s.recovery.checks, "exit 0");
    let last = recovery
        .steps
        .last_mut()
        .expect("E1001 has recovery checks");
    last.ok = false;
    last.attempts = 80;
    last.observed = Some("exit 1: E1001 IPC_CONNECTION_FAILED: connect(\"/tmp/veritas-43/spark.sock\"): No such file or directory".into());
    last.error = Some("not within 20s (80 polls): exit 1, expected 0".into());
    r.phases = vec![
        phase("setup", 0.0, 1.4, &s.setup, "daemon spark ready"),
        phase(
            "fault",
            1.4,
            0.2,
            &s.fault,
            "daemon spark stopped (SIGTERM)",
        ),
        phase(
            "symptom",
            1.6,
            0.4,
            &s.symptom.checks,
            "exit 1: E1001 IPC_CONNECTION_FAILED",
        ),
        phase(
            "negative control",
            2.0,
            2.0,
            &s.symptom.checks,
            "exit 1: E1001",
        ),
        phase(
            "diagnosis",
            4.0,
            0.8,
            &s.diagnosis,
            "no veritas-core process",
        ),
        phase("remedy", 4.8, 0.3, &s.remedy, "started"),
        recovery,
        phase("catch", 25.1, 0.6, &s.catch, "collected"),
        phase("finally", 25.7, 0.3, &s.finally, "ok"),
    ];
    r.verdict = Verdict::Failed;
    r.failed_phase = Some("recovery".into());
    r.reason = Some("recovery: not within 20s: `veritas-spark health` still exits 1 (E1001 <IPC_CONNECTION_FAILED>)".into());
    r.time_to_detect = Some(Duration::from_millis(400));
    r.duration = Duration::from_secs(26);
    r.evidence = vec![
        (
            "daemon spark log (last 40 lines)".into(),
            "2024-05-02T10:00:01Z INFO listening on /tmp/veritas-43/spark.sock\n2024-05-02T10:00:03Z WARN shutting down: SIGTERM\n2024-05-02T10:00:05Z ERROR bind: Address already in use <spark.sock> & retrying".into(),
        ),
        ("ps -ef | grep veritas".into(), "root  4242  1  0 10:00 ?  00:00:00 veritas-core --socket /tmp/veritas-43/spark.sock".into()),
    ];
    // The daemon's scrape target: down from the fault on, never back.
    r.series = vec![Series {
        name: "up{job=\"spark\"}".into(),
        points: (0..=52)
            .map(|i| i as f64 * 0.5)
            .map(|t| (t, if t < 1.5 { 1.0 } else { 0.0 }))
            .collect(),
    }];
    r.leaks = vec!["process 4242 (veritas-core \"spark\") still running".into()];
    r
}

/// Chromium answers `--version` under one of its Debian or upstream names.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        let answered = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if answered {
            return PathBuf::from(name);
        }
    }
    panic!(
        "headless Chromium is needed to screenshot the HTML report and neither `chromium` nor \
         `chromium-browser` answers --version: run ci/setup.sh (apt-get install chromium)"
    );
}

/// Screenshots `page` at WIDTH x HEIGHT, with its own profile so runs never share one.
fn screenshot(page: &Path, png: &Path, profile: &Path) -> Vec<u8> {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    // A Chromium that hangs (no display, a missing library) must fail the test, not stall it.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "chromium did not finish its screenshot of {} within 120s",
                page.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::io::read_to_string(child.stderr.take().expect("piped")).unwrap_or_default();
    assert!(status.success(), "chromium {status}: {stderr}");
    std::fs::read(png)
        .unwrap_or_else(|e| panic!("no screenshot at {} ({e}): {stderr}", png.display()))
}

/// Width, height and the total size of the compressed pixel data, from the PNG's chunks
/// (no PNG decoder is among the workspace's dependencies).
fn png_facts(png: &[u8]) -> (u32, u32, usize) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
    let be32 = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!(&png[12..16], b"IHDR", "the first chunk of a PNG is IHDR");
    let (width, height) = (be32(16), be32(20));
    let mut idat = 0;
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = be32(at) as usize;
        if &png[at + 4..at + 8] == b"IDAT" {
            idat += len;
        }
        // Length, type, data, CRC.
        at += 12 + len;
    }
    assert_eq!(
        at,
        png.len(),
        "the PNG's chunks do not add up to its size (truncated?)"
    );
    (width, height, idat)
}

#[test]
fn the_html_report_renders_as_a_non_blank_page_in_chromium() {
    // The failure first: it is what a reader of the screenshot should see.
    let scenarios = vec![failed_e1001(), passed_e2001()];
    let phases: usize = scenarios.iter().map(|s| s.phases.len()).sum();
    let run = RunReport::new("process", 42, 2, Duration::from_secs(27), scenarios);
    let html = veritas_harness::html::render(&run);

    assert_eq!(html.matches("<svg class=\"timeline\"").count(), 2);
    assert_eq!(html.matches("class=\"phase-bar\"").count(), phases);
    assert_eq!(html.matches("<svg class=\"series\"").count(), 3);
    assert!(html.contains("data-marker=\"symptom first seen\""));
    assert!(html.contains("data-marker=\"recovered\""));
    assert!(html.contains("E1001 &lt;IPC_CONNECTION_FAILED&gt;"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page must not fetch anything"
    );

    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html).unwrap();
    let shot = screenshot(
        &page,
        &dir.path().join("report.png"),
        &dir.path().join("profile"),
    );
    let (width, height, pixels) = png_facts(&shot);
    assert_eq!((width, height), (WIDTH, HEIGHT));

    // Blank is measured, not guessed: an empty page at the same size compresses to almost
    // nothing, a page of text, bars and lines to many times that.
    let blank = dir.path().join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let (_, _, blank_pixels) = png_facts(&screenshot(
        &blank,
        &dir.path().join("blank.png"),
        &dir.path().join("profile-blank"),
    ));
    assert!(
        pixels > 5 * blank_pixels,
        "the report's screenshot looks blank: {pixels} bytes of pixel data against {blank_pixels} for an empty page"
    );

    if let Some(keep) = std::env::var_os("VERITAS_REPORT_SCREENSHOT") {
        std::fs::write(&keep, &shot).unwrap();
        eprintln!("screenshot kept at {}", Path::new(&keep).display());
    }
}
