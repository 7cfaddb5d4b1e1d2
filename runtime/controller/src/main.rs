//! `veritas-controller`: thin main. Start logs and the web server, check the CRD, wait for
//! the leader Lease, run the controller; exit when leadership is lost (a restart makes this
//! replica a candidate again, so two replicas never both act).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use veritas_controller::analysis::{
    Prometheus, PrometheusAuth, DEFAULT_PROMETHEUS_NAMESPACE, DEFAULT_PROMETHEUS_PORT,
    DEFAULT_PROMETHEUS_SERVICE,
};
use veritas_controller::leader::LeaderElector;
use veritas_controller::reconcile::{crd_installed, run, Context};
use veritas_controller::telemetry::Metrics;
use veritas_controller::web::{router, WebState};
use veritas_vocab::labels;

#[derive(Parser, Debug)]
#[command(
    name = "veritas-controller",
    version,
    about = "Reconciles VeritasCanary resources (canary weights, analysis, promotion, rollback) and VeritasEnvironment resources (blue-green switches, health gate, rollback, drift)."
)]
struct Args {
    /// Prometheus: http://HOST:PORT, https://HOST:PORT, or proxy:NAMESPACE/SERVICE:PORT
    /// through the API server.
    #[arg(long, env = "VERITAS_PROMETHEUS_URL", default_value_t = format!("http://{DEFAULT_PROMETHEUS_SERVICE}.{DEFAULT_PROMETHEUS_NAMESPACE}.svc:{DEFAULT_PROMETHEUS_PORT}"))]
    prometheus: String,
    /// PEM bundle of the CAs that sign an https:// Prometheus's certificate (trusted besides
    /// the system's).
    #[arg(long, env = "VERITAS_PROMETHEUS_CA_FILE")]
    prometheus_ca_file: Option<std::path::PathBuf>,
    /// File with a bearer token for Prometheus (e.g. a projected ServiceAccount token behind
    /// kube-rbac-proxy); read at every query, so a rotated token is picked up.
    #[arg(long, env = "VERITAS_PROMETHEUS_BEARER_TOKEN_FILE")]
    prometheus_bearer_token_file: Option<std::path::PathBuf>,
    /// Address of /metrics, /healthz, /readyz.
    #[arg(long, env = "VERITAS_CONTROLLER_ADDR", default_value = "0.0.0.0:8080")]
    listen: String,
    /// Watch one namespace only (default: all).
    #[arg(long, env = "VERITAS_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Namespace of the leader Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = labels::CONTROLLER_NAMESPACE)]
    lease_namespace: String,
    /// Identity in the Lease (default: the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Lease duration in seconds.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Log format: json (default, one object per line) or text.
    #[arg(long, env = "VERITAS_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if args.log_format == "text" {
        fmt.init();
    } else {
        fmt.json().flatten_event(true).init();
    }

    let client = kube::Client::try_default()
        .await
        .context("failed to build a kubernetes client (in-cluster config or KUBECONFIG)")?;
    match crd_installed(&client).await {
        Ok(true) => {}
        Ok(false) => {
            eprintln!(
                "veritas-controller: the VeritasCanary CRD is not installed.\n  install it with: kubectl apply -f fixtures/manifests/crds/\n  (or generate it: cargo run -p veritas-crds --bin crdgen)"
            );
            std::process::exit(1);
        }
        Err(e) => return Err(e).context("failed to look up the VeritasCanary CRD"),
    }

    // Blue-green runs when its CRD is installed; a cluster with only canaries still works.
    let bluegreen = match veritas_controller::bluegreen::reconcile::crd_installed(&client).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::warn!("the VeritasEnvironment CRD is not installed: blue-green is off (kubectl apply -f fixtures/manifests/crds/)");
            false
        }
        Err(e) => return Err(e).context("failed to look up the VeritasEnvironment CRD"),
    };

    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let web = router(WebState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    tokio::spawn(async move { axum::serve(listener, web).await });

    let prometheus = Prometheus::from_spec(
        &args.prometheus,
        client.clone(),
        &PrometheusAuth {
            ca_file: args.prometheus_ca_file.clone(),
            token_file: args.prometheus_bearer_token_file.clone(),
        },
    )
    .map_err(anyhow::Error::msg)?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", labels::APP_CONTROLLER, std::process::id()));
    let elector = LeaderElector::new(
        client.clone(),
        &args.lease_namespace,
        labels::CONTROLLER_LEASE,
        &identity,
        Duration::from_secs(args.lease_seconds),
    );
    // Standing by is ready: a standby must not be restarted for not being the leader.
    ready.store(true, Ordering::SeqCst);
    tracing::info!(identity = %identity, prometheus = ?prometheus, "waiting for the leader lease");
    elector
        .acquire(elector.retry_period())
        .await
        .context("failed to acquire the leader lease")?;
    metrics.leader.set(1);

    let ctx = Arc::new(Context::new(
        client,
        prometheus,
        metrics.clone(),
        Some(identity),
    ));
    let canaries = run(ctx.clone(), args.namespace.clone());
    let environments = async {
        if bluegreen {
            veritas_controller::bluegreen::reconcile::run(ctx.clone(), args.namespace.clone()).await
        }
    };
    tokio::select! {
        _ = async { tokio::join!(canaries, environments) } => {
            tracing::info!("controller stopped; releasing the lease");
            let _ = elector.release().await;
            Ok(())
        }
        lost = elector.hold() => {
            metrics.leader.set(0);
            tracing::error!(error = %lost, "leadership lost; exiting so a restart makes this replica a candidate again");
            std::process::exit(1);
        }
    }
}
