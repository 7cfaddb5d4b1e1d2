//! The controller's canary analysis against a real Prometheus (testcontainers, the image the
//! kind build loads into Docker: no registry) scraping real daemons, with known request counts:
//! the request count, error rate and p99 the analysis reads are what was sent; two canaries in
//! one namespace never read each other's series; a Deployment with no scraped pod is no data,
//! which the decision fails.
//!
//! Needs a Docker engine with `quay.io/prometheus/prometheus:<PROMETHEUS_VERSION>` in it
//! (`ci/kind/build-extra-images.sh`); `.ci/run` runs it after the kind build. Ignored otherwise,
//! so a machine without them reports it skipped, never passed.

mod common;

use std::time::Duration;

use common::{free_port, metric_value, wait_for, Daemon, DaemonOptions, Registry};
use testcontainers::core::{Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};
use veritas_controller::analysis::{Prometheus, PrometheusAuth};
use veritas_controller::decide::{judge, AnalysisSample, MonitorObs, TrackMetrics};
use veritas_crds::{reasons, Verdict};
use veritas_vocab::metrics as m;

/// The Prometheus image and tag `ci/kind/versions.env` pins.
fn prometheus_image() -> (String, String) {
    let env = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ci/kind/versions.env"),
    )
    .unwrap();
    let version = env
        .lines()
        .find_map(|l| l.strip_prefix("PROMETHEUS_VERSION="))
        .expect("PROMETHEUS_VERSION in ci/kind/versions.env")
        .trim()
        .to_string();
    ("quay.io/prometheus/prometheus".into(), version)
}

fn generate(d: &Daemon, prompt: &str) -> u16 {
    let body = serde_json::json!({"prompt": prompt, "max_tokens": 2}).to_string();
    d.http_post("/v1/generate", &body).0
}

fn requests(d: &Daemon, status: &str) -> f64 {
    metric_value(&d.scrape(), m::REQUESTS_TOTAL, &[(m::LABEL_STATUS, status)]).unwrap_or(0.0)
}

#[test]
#[ignore = "needs a Docker engine with the Prometheus image of ci/kind/versions.env (ci/kind/build-extra-images.sh); .ci/run runs it"]
fn analysis_reads_what_a_real_prometheus_scraped_from_real_daemons() {
    let reg = Registry::new();
    let daemon = |deployment: &str| {
        Daemon::start(
            &reg,
            DaemonOptions {
                extra: vec!["--deployment".into(), deployment.into()],
                ..Default::default()
            },
        )
    };
    // Two canaries in namespace `shop` (pods named as their Deployments name them), and
    // their stable.
    let (canary, canary2, stable) = (daemon("canary"), daemon("canary"), daemon("stable"));
    let web = free_port();
    let dir = tempfile::tempdir().unwrap();
    let target = |d: &Daemon, pod: &str| {
        format!(
            "  - targets: ['127.0.0.1:{}']\n    labels: {{namespace: shop, pod: {pod}}}\n",
            d.metrics
        )
    };
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: spark\n  static_configs:\n{}{}{}",
        target(&canary, "spark-canary-7d9f8b6c5-x2x9k"),
        target(&canary2, "spark-canary-2-5c8d7f6b4-q8w7e"),
        target(&stable, "spark-stable-6b7c8d9f5-k3j4h"),
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    // World-readable: Prometheus runs as nobody in its image.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir.path().join("prometheus.yml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The container's drop (even while unwinding) needs the runtime's context.
    let _context = rt.enter();
    let (name, tag) = prometheus_image();
    // Host network: Prometheus scrapes the daemons on loopback, and answers on loopback.
    let _container = rt
        .block_on(
            GenericImage::new(name, tag)
                .with_wait_for(WaitFor::message_on_stderr(
                    "Server is ready to receive web requests.",
                ))
                .with_network("host")
                .with_mount(Mount::bind_mount(
                    dir.path().display().to_string(),
                    "/etc/veritas-test",
                ))
                .with_cmd([
                    "--config.file=/etc/veritas-test/prometheus.yml".to_string(),
                    "--storage.tsdb.path=/prometheus".to_string(),
                    format!("--web.listen-address=127.0.0.1:{web}"),
                ])
                .with_startup_timeout(Duration::from_secs(60))
                .start(),
        )
        .expect("start Prometheus (is the Docker engine up and the image built?)");
    let prom = Prometheus::direct(
        &format!("http://127.0.0.1:{web}"),
        &PrometheusAuth::default(),
    )
    .unwrap();
    let timeout = Duration::from_secs(5);
    let query = |q: &str| rt.block_on(prom.query(q, timeout)).unwrap();

    // Every target scraped (with its zero-valued series) before a request is sent, so the
    // increases below start from 0.
    wait_for("three targets up", Duration::from_secs(60), || {
        (query("sum(up)") == Some(3.0)).then_some(())
    });
    for _ in 0..20 {
        assert_eq!(generate(&canary, "Hello"), 200);
    }
    for _ in 0..5 {
        // An empty prompt is refused (E4002): a failed request.
        assert_eq!(generate(&canary, ""), 422);
    }
    for _ in 0..7 {
        assert_eq!(generate(&canary2, "Hello"), 200);
    }
    for _ in 0..10 {
        assert_eq!(generate(&stable, "Hello"), 200);
    }
    // What the daemons counted themselves.
    assert_eq!(requests(&canary, m::STATUS_SUCCESS), 20.0);
    assert_eq!(requests(&canary, m::STATUS_ERROR), 5.0);
    assert_eq!(requests(&canary2, m::STATUS_SUCCESS), 7.0);

    let track = |deployment: &str, track: &str| -> TrackMetrics {
        rt.block_on(prom.track("shop", track, deployment, 120, timeout))
            .unwrap()
    };
    // increase() extrapolates to the window's end by up to half a scrape interval, which
    // weighs less the longer the series has been scraped: poll until each count is within 5 %
    // above what was sent (never below it: a lost request fails the deadline).
    let settled = |deployment: &str, track_name: &str, sent: f64| -> TrackMetrics {
        wait_for(
            &format!("{deployment}'s {sent} requests in Prometheus"),
            Duration::from_secs(90),
            || {
                let t = track(deployment, track_name);
                let n = t.requests.unwrap_or(0.0);
                // The p99 is a third query at its own instant: it too must see the requests
                // (it read None once in CI while the count had settled).
                (n >= sent && n <= sent * 1.05 && t.latency_p99.is_some()).then_some(t)
            },
        )
    };
    let c = settled("spark-canary", "canary", 25.0);
    // The error rate is a ratio of two series scraped together: exact.
    let err = c.error_rate.unwrap();
    assert!(
        (err - 0.2).abs() < 1e-6,
        "canary error rate {err}, sent 5 of 25"
    );
    let p99 = c.latency_p99.expect("p99 from the histogram");
    assert!(p99 > 0.0 && p99.is_finite(), "p99 {p99}");

    // The other canary in the namespace: its own requests only (with the first one's, it
    // would be 32 and 5 errors).
    let c2 = settled("spark-canary-2", "canary", 7.0);
    assert_eq!(c2.error_rate, Some(0.0));
    settled("spark-stable", "stable", 10.0);

    // A Deployment with no scraped pod: no data, and the decision fails it with its reason.
    let none = track("spark-canary-3", "canary");
    assert_eq!(none, TrackMetrics::default());
    let mut spec = veritas_controller::sim::spec(25);
    spec.analysis.min_requests = 5;
    let (verdict, reason, _) = judge(
        &spec,
        &AnalysisSample::Data {
            canary: none,
            stable: None,
        },
        MonitorObs::Present,
    );
    assert_eq!(
        (verdict, reason),
        (Verdict::Failed, reasons::NO_METRICS_DATA)
    );
    // The canary with 20 % errors fails the guide's 5 % threshold on what Prometheus holds.
    spec.analysis.error_rate_threshold = 0.05;
    let (verdict, reason, msg) = judge(
        &spec,
        &AnalysisSample::Data {
            canary: c,
            stable: None,
        },
        MonitorObs::Present,
    );
    assert_eq!(
        (verdict, reason),
        (Verdict::Failed, reasons::THRESHOLD_EXCEEDED),
        "{msg}"
    );
    let (verdict, _, msg) = judge(
        &spec,
        &AnalysisSample::Data {
            canary: c2,
            stable: None,
        },
        MonitorObs::Present,
    );
    assert_eq!(verdict, Verdict::Successful, "{msg}");
}
