//! Every scenario of the catalog as one test: `cargo nextest run -E 'test(=E2001)'` runs one.
//!
//! Process scenarios run on real local daemons. Cluster scenarios run when the environment
//! names a cluster (`VERITAS_KUBECONFIG`, set by `.ci/run` after it brought up kind, with
//! `VERITAS_KUBECTL`); otherwise they are reported ignored, never passed.
//!
//! `VERITAS_SCENARIOS_ONLY=cluster` (or `process`) lists only that driver's scenarios: `.ci/run`
//! runs the process rows with the other tests, then the cluster rows once kind is up, and the
//! rows that break a shared resource (`VERITAS_SCENARIOS_EXCLUSIVE=only`) one at a time at the end.
//!
//! Each scenario recovered by the on-call's remedy (`guide.recoveryBy: remedy`, the default)
//! also runs as `<ID>/without-remedy`, which must fail at recovery: the remedy, not time, is
//! what brings the system back.

use libtest_mimic::{Arguments, Failed, Trial};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use veritas_harness::cluster::ClusterEnv;
use veritas_harness::report::Verdict;
use veritas_harness::runner::{self, DriverKind, RunConfig};
use veritas_scenario::{Component, DriverClass};

fn main() {
    let args = Arguments::from_args();
    let repo = veritas_harness::repo_root();
    let scenarios = veritas_scenario::load_dir(&repo.join("scenarios")).unwrap_or_else(|errors| {
        for e in errors {
            eprintln!("{e}");
        }
        panic!("invalid scenario files");
    });
    let cluster = std::env::var_os("VERITAS_KUBECONFIG").map(|k| {
        Arc::new(ClusterEnv::new(
            PathBuf::from(k),
            std::env::var_os("VERITAS_KUBECTL")
                .map(PathBuf::from)
                .unwrap_or_else(|| "kubectl".into()),
            repo.join("fixtures/manifests"),
            allow_cluster_wide(),
        ))
    });
    // What the cluster has, asked once: a scenario needing anything else is listed ignored
    // (skipped), never run to a failure and never passed.
    let mut components = cluster.as_ref().map(|c| c.components()).unwrap_or_default();
    components.extend(veritas_harness::process::host_components());
    let only = match std::env::var("VERITAS_SCENARIOS_ONLY").as_deref() {
        Ok("cluster") => Some(DriverClass::Cluster),
        Ok("process") => Some(DriverClass::Process),
        Ok(other) => panic!("VERITAS_SCENARIOS_ONLY={other}: `cluster` or `process`"),
        Err(_) => None,
    };
    // Scenarios that break a shared resource (`requires.exclusive`) never run beside others:
    // listed ignored, unless `VERITAS_SCENARIOS_EXCLUSIVE=only` lists just them (`.ci/run` runs
    // that pass after the others, one test at a time).
    let exclusive_pass = match std::env::var("VERITAS_SCENARIOS_EXCLUSIVE").as_deref() {
        Ok("only") => true,
        Ok(other) => panic!("VERITAS_SCENARIOS_EXCLUSIVE={other}: only `only` is known"),
        Err(_) => false,
    };
    let mut trials = Vec::new();
    for s in scenarios {
        if only.is_some_and(|d| d != s.requires.driver) {
            continue;
        }
        let breaks_shared = !s.requires.exclusive.is_empty();
        if exclusive_pass && !breaks_shared {
            continue;
        }
        let is_cluster = s.requires.driver == DriverClass::Cluster;
        let lacks_component = s
            .requires
            .components
            .iter()
            .any(|c| !components.contains(c));
        let ignored = lacks_component
            || (is_cluster
                && (cluster.is_none()
                    || (s.requires.cluster_wide && !allow_cluster_wide())
                    || (breaks_shared && !exclusive_pass)));
        if s.guide.recovery_by == veritas_scenario::RecoveryBy::Remedy {
            let (s2, c2, k2) = (s.clone(), cluster.clone(), components.clone());
            trials.push(
                Trial::test(format!("{}/without-remedy", s.id), move || {
                    run_one(s2, c2, k2, true)
                })
                .with_ignored_flag(ignored),
            );
        }
        let (c, k) = (cluster.clone(), components.clone());
        trials.push(
            Trial::test(s.id.clone(), move || run_one(s, c, k, false)).with_ignored_flag(ignored),
        );
    }
    libtest_mimic::run(&args, trials).exit();
}

/// Each test's report, as the CLI writes a run's: `<id>[.without-remedy].{json,html}`, and one
/// tab-separated line (id, mode, verdict, detect s, recover s, total s) that `.ci/run` gathers
/// into the per-row table of times. Under `VERITAS_REPORT_DIR`, or `target/scenario-reports`.
fn keep_report(
    report: &veritas_harness::report::ScenarioReport,
    without_remedy: bool,
    seed: u64,
) -> std::io::Result<()> {
    use veritas_harness::report::RunReport;
    let dir = std::env::var_os("VERITAS_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| veritas_harness::repo_root().join("target/scenario-reports"));
    std::fs::create_dir_all(&dir)?;
    let mode = if without_remedy {
        "without-remedy"
    } else {
        "with-remedy"
    };
    let stem = if without_remedy {
        format!("{}.without-remedy", report.id)
    } else {
        report.id.clone()
    };
    let secs = |d: Option<std::time::Duration>| {
        d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64()))
    };
    // An ablation passes when recovery never came: say that, not the scenario's FAIL.
    let outcome = match (
        without_remedy,
        report.verdict,
        report.failed_phase.as_deref(),
    ) {
        (true, Verdict::Failed, Some("recovery")) => "stayed-broken",
        (true, Verdict::Passed, _) => "RECOVERED",
        _ => report.verdict.as_str(),
    };
    let line = format!(
        "{}\t{mode}\t{outcome}\t{}\t{}\t{:.1}\n",
        report.id,
        secs(report.time_to_detect),
        secs(report.time_to_recover),
        report.duration.as_secs_f64()
    );
    std::fs::write(dir.join(format!("{stem}.tsv")), line)?;
    let run = RunReport::new("nextest", seed, 1, report.duration, vec![report.clone()]);
    let json = serde_json::to_string_pretty(&run).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(format!("{stem}.json")), json)?;
    std::fs::write(
        dir.join(format!("{stem}.html")),
        veritas_harness::html::render(&run),
    )
}

/// Cluster-wide faults (CoreDNS, the controller, node resources) only when the caller says so:
/// `.ci/run` sets `VERITAS_ALLOW_CLUSTER_WIDE=1` on its own kind cluster.
fn allow_cluster_wide() -> bool {
    std::env::var("VERITAS_ALLOW_CLUSTER_WIDE").is_ok_and(|v| v == "1")
}

fn run_one(
    s: veritas_scenario::Scenario,
    cluster: Option<Arc<ClusterEnv>>,
    components: Vec<Component>,
    without_remedy: bool,
) -> Result<(), Failed> {
    let spark_bin = veritas_harness::spark_bin().map_err(Failed::from)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let seed = std::env::var("VERITAS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let cfg = RunConfig {
        driver: if cluster.is_some() {
            DriverKind::Existing
        } else {
            DriverKind::Process
        },
        spark_bin,
        cluster,
        components,
        seed,
        keep: false,
        pause_on_failure: false,
        without_remedy,
        journal_dir: veritas_harness::journal::dir(),
        interrupted: rx,
        events: Arc::new(|_| {}),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failed::from(e.to_string()))?;
    let report = rt.block_on(async {
        // nextest's timeout sends SIGTERM (then SIGKILL after the profile's grace period);
        // Ctrl-C sends SIGINT: either way the running phase stops and `finally` reverts.
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            let _ = tx.send(true);
        });
        // What an earlier, killed test process left behind is reverted first.
        for r in veritas_harness::journal::recover_stale(&cfg.journal_dir, &cfg.spark_bin).await {
            eprintln!(
                "reverted a dead run of {} (pid {}): {:?}; failures: {:?}",
                r.scenario, r.pid, r.actions, r.failures
            );
        }
        runner::run(&s, &cfg).await
    });
    if let Err(e) = keep_report(&report, without_remedy, seed) {
        eprintln!("{}: report not written: {e}", s.id);
    }
    if without_remedy {
        return match (report.verdict, report.failed_phase.as_deref()) {
            (Verdict::Failed, Some("recovery")) => {
                println!("{}: without its remedy the system stays broken: {}", s.id, report.reason.unwrap_or_default());
                Ok(())
            }
            (Verdict::Passed, _) => Err(Failed::from(format!(
                "{}: recovered WITHOUT the remedy, so the remedy is not what brings it back (seed {seed})",
                s.id
            ))),
            _ => Err(Failed::from(format!("{} (seed {seed})", report.failure_text()))),
        };
    }
    match report.verdict {
        Verdict::Passed => {
            println!(
                "{}: passed (detect {:.2}s, recover {:.2}s, seed {seed})",
                s.id,
                report.time_to_detect.map_or(0.0, |d| d.as_secs_f64()),
                report.time_to_recover.map_or(0.0, |d| d.as_secs_f64())
            );
            Ok(())
        }
        Verdict::Skipped => Err(Failed::from(format!(
            "skipped where it was expected to run: {}",
            report.reason.unwrap_or_default()
        ))),
        _ => Err(Failed::from(format!(
            "{} (seed {seed})",
            report.failure_text()
        ))),
    }
}
