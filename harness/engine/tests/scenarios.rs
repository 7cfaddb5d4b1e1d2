//! Every scenario of the catalog as one test: `cargo nextest run -E 'test(=E2001)'` runs one.
//!
//! Process scenarios run on real local daemons. Cluster scenarios run when the environment
//! names a cluster (`VERITAS_KUBECONFIG`, set by `.ci/run` after it brought up kind, with
//! `VERITAS_KUBECTL`); otherwise they are reported ignored, never passed.

use libtest_mimic::{Arguments, Failed, Trial};
use std::path::PathBuf;
use std::sync::Arc;
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
        Arc::new(ClusterEnv {
            kubeconfig: PathBuf::from(k),
            kubectl: std::env::var_os("VERITAS_KUBECTL")
                .map(PathBuf::from)
                .unwrap_or_else(|| "kubectl".into()),
            manifests: repo.join("fixtures/manifests"),
            allow_cluster_wide: true,
        })
    });
    let trials = scenarios
        .into_iter()
        .map(|s| {
            let is_cluster = s.requires.driver == DriverClass::Cluster;
            let ignored = is_cluster && cluster.is_none();
            let cluster = cluster.clone();
            let kind = if is_cluster { "cluster" } else { "process" };
            Trial::test(s.id.clone(), move || run_one(s, cluster))
                .with_kind(kind)
                .with_ignored_flag(ignored)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

fn run_one(s: veritas_scenario::Scenario, cluster: Option<Arc<ClusterEnv>>) -> Result<(), Failed> {
    let spark_bin = veritas_harness::spark_bin().map_err(Failed::from)?;
    let (_tx, rx) = tokio::sync::watch::channel(false);
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
        components: vec![Component::Prometheus, Component::Controller],
        seed,
        keep: false,
        pause_on_failure: false,
        interrupted: rx,
        events: Arc::new(|_| {}),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failed::from(e.to_string()))?;
    let report = rt.block_on(runner::run(&s, &cfg));
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
