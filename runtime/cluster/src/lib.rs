//! The cluster commands of `veritas-spark` (the guide's "Deployment Status", "Canary
//! Operations", "Blue-Green Operations", "Rollback Operations" and `metrics canary` / `metrics
//! compare`), in their own crate so the daemon never links a Kubernetes client.
//!
//! Rendering is pure ([`render`]), so outputs are snapshot-tested without a cluster; the
//! commands ([`run`]) read the `VeritasCanary` through the API server and metrics from
//! Prometheus (through the API server's service proxy by default, so no port-forward is needed).
//! Every failure carries `E5001 DEPLOYMENT_FAILED` or, for rollbacks, `E5002 ROLLBACK_FAILED`.
//! Blue-green: [`bluegreen`] (commands) and [`bgrender`] (pure output); `deployment status`:
//! [`status`] (the Health Status Matrix).
//!
//! `--json` output is a contract: `{"schema": 1, ...}`; fields are only ever added.

pub mod bgrender;
pub mod bluegreen;
pub mod render;
pub mod status;
pub mod traffic;

pub use bluegreen::{BluegreenCommand, EnvTarget, SwitchArgs};
pub use status::StatusArgs;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde::Serialize;
use serde_json::json;
use veritas_controller::analysis::{
    Prometheus, DEFAULT_PROMETHEUS_NAMESPACE, DEFAULT_PROMETHEUS_PORT, DEFAULT_PROMETHEUS_SERVICE,
};
use veritas_controller::decide::TrackMetrics;
use veritas_crds::{annotations, Phase, VeritasCanary};
use veritas_vocab::{labels, ErrorBody, ErrorCode};

/// Which canary, and where Prometheus is.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Namespace of the VeritasCanary (default: the kubeconfig context's).
    #[arg(long, short = 'n', env = "VERITAS_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of the VeritasCanary (default: the only one in the namespace).
    #[arg(long)]
    pub name: Option<String>,
    /// Prometheus: proxy:NAMESPACE/SERVICE:PORT (through the API server) or http://HOST:PORT.
    /// Default: the in-cluster Service when run in a pod (the guide's `kubectl exec ... metrics
    /// compare`), the API server's service proxy otherwise.
    #[arg(long, env = "VERITAS_PROMETHEUS_URL")]
    pub prometheus: Option<String>,
}

impl Target {
    /// The Prometheus address to use.
    pub fn prometheus_address(&self) -> String {
        match &self.prometheus {
            Some(p) => p.clone(),
            None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
                format!("http://{DEFAULT_PROMETHEUS_SERVICE}.{DEFAULT_PROMETHEUS_NAMESPACE}.svc:{DEFAULT_PROMETHEUS_PORT}")
            }
            None => format!("proxy:{DEFAULT_PROMETHEUS_NAMESPACE}/{DEFAULT_PROMETHEUS_SERVICE}:{DEFAULT_PROMETHEUS_PORT}"),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CanaryCommand {
    /// Current canary state: phase, weights, step, auto-promotion, conditions.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Analysis history (newest last).
    #[arg(long)]
    pub history: bool,
    /// Current metric values from Prometheus (canary, and stable for comparison).
    #[arg(long)]
    pub metrics: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
#[command(
    group = clap::ArgGroup::new("what").required(true).multiple(true).args(["canary", "bluegreen", "force", "status"]),
    after_help = "Examples:\n  veritas-spark rollback --canary           all canary traffic back to stable\n  veritas-spark rollback --bluegreen        traffic back to the previous environment (health-checked)\n  veritas-spark rollback --bluegreen --force  same, without minReadySeconds and the probe (a ready pod is still required)\n  veritas-spark rollback --status           progress of the rollbacks in the namespace\nA rollback that cannot complete fails with E5002 ROLLBACK_FAILED and its reason."
)]
pub struct RollbackArgs {
    /// Roll the canary back: all traffic to stable (the controller does it; this waits).
    #[arg(long, conflicts_with = "bluegreen")]
    pub canary: bool,
    /// Switch a VeritasEnvironment back to its previous environment (the controller
    /// verifies it first, as for any switch; this waits).
    #[arg(long)]
    pub bluegreen: bool,
    /// Override checks: roll back even a canary that already succeeded; with --bluegreen,
    /// skip minReadySeconds and the health probe. Alone: the namespace's canary, or its
    /// VeritasEnvironment when there is no canary.
    #[arg(long)]
    pub force: bool,
    /// Show rollback progress (canary and blue-green); exit 1 (E5002) when a rollback failed.
    #[arg(long)]
    pub status: bool,
    /// Seconds to wait for the controller to finish the rollback.
    #[arg(long, default_value_t = 120)]
    pub wait: u64,
    #[command(flatten)]
    pub target: Target,
}

/// The cluster commands `veritas-spark` hands over.
#[derive(Debug)]
pub enum ClusterCommand {
    Canary(CanaryCommand),
    Bluegreen(BluegreenCommand),
    DeploymentStatus(StatusArgs),
    Rollback(RollbackArgs),
    MetricsCanary(Target),
    MetricsCompare(Target),
}

/// A failure the user sees: an error code and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct CliError {
    pub code: ErrorCode,
    pub detail: String,
}

fn deployment_failed(detail: impl Into<String>) -> CliError {
    CliError {
        code: ErrorCode::DeploymentFailed,
        detail: detail.into(),
    }
}

fn rollback_failed(detail: impl Into<String>) -> CliError {
    CliError {
        code: ErrorCode::RollbackFailed,
        detail: detail.into(),
    }
}

/// E5002 for a canary whose rollback passed its deadline (the controller still tries).
fn canary_rollback_failed(name: &str, st: render::RollbackState) -> CliError {
    rollback_failed(format!(
        "rollback of canary {name} failed: {} ({}); check the stable Deployment's pods (kubectl describe deployment)",
        st.reason.unwrap_or_default(),
        st.detail
    ))
}

/// Runs one command; prints its output (text or `--json`) and returns the exit code
/// (0 ok, 1 failed).
pub fn run(cmd: ClusterCommand, json_out: bool) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                deployment_failed(format!("failed to start the async runtime: {e}")),
                json_out,
            )
        }
    };
    match rt.block_on(run_async(cmd, json_out)) {
        Ok(code) => code,
        Err(e) => fail(e, json_out),
    }
}

fn fail(e: CliError, json_out: bool) -> ExitCode {
    if json_out {
        println!(
            "{}",
            serde_json::to_string(&ErrorBody::new(e.code, e.detail)).expect("serialisable")
        );
    } else {
        eprintln!("{e}");
        if e.code == ErrorCode::DeploymentFailed || e.code == ErrorCode::RollbackFailed {
            eprintln!("next steps (deployment-troubleshooting guide, {}):", e.code);
            eprintln!("  kubectl get events --sort-by=.lastTimestamp | grep veritas");
            eprintln!(
                "  kubectl logs -l {}={} --tail=50",
                labels::APP,
                labels::APP_CONTROLLER
            );
        }
    }
    ExitCode::from(1)
}

async fn client() -> Result<Client, CliError> {
    Client::try_default().await.map_err(|e| {
        deployment_failed(format!(
            "no kubernetes client (kubeconfig or in-cluster): {e}"
        ))
    })
}

fn api_error(what: &str, e: kube::Error) -> CliError {
    match &e {
        kube::Error::Api(s) if s.code == 404 && s.message.contains("the server could not find the requested resource") => deployment_failed(format!(
            "{what}: the VeritasCanary CRD is not installed (kubectl apply -f fixtures/manifests/crds/)"
        )),
        _ => deployment_failed(format!("{what}: {e}")),
    }
}

/// Finds the canary: by name, or the only one in the namespace.
async fn find(
    client: &Client,
    t: &Target,
) -> Result<(Api<VeritasCanary>, VeritasCanary), CliError> {
    let ns = t
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<VeritasCanary> = Api::namespaced(client.clone(), &ns);
    let c = match &t.name {
        Some(name) => api
            .get_opt(name)
            .await
            .map_err(|e| api_error("failed to read the canary", e))?
            .ok_or_else(|| {
                deployment_failed(format!("no VeritasCanary {name} in namespace {ns}"))
            })?,
        None => {
            let mut list = api
                .list(&Default::default())
                .await
                .map_err(|e| api_error("failed to list canaries", e))?
                .items;
            match list.len() {
                0 => {
                    return Err(deployment_failed(format!(
                        "no VeritasCanary in namespace {ns} (crd {})",
                        VeritasCanary::crd_name()
                    )))
                }
                1 => list.remove(0),
                _ => {
                    let names: Vec<String> = list.iter().map(|c| c.name_any()).collect();
                    return Err(deployment_failed(format!(
                        "{} canaries in namespace {ns} ({}); pick one with --name",
                        names.len(),
                        names.join(", ")
                    )));
                }
            }
        }
    };
    Ok((api, c))
}

/// Metrics of both tracks, for `--metrics`, `metrics canary` and `metrics compare`.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub window_seconds: i64,
    pub canary: Option<TrackMetrics>,
    pub stable: Option<TrackMetrics>,
}

async fn comparison(
    client: &Client,
    t: &Target,
    c: &VeritasCanary,
    stable: bool,
) -> Result<Comparison, CliError> {
    let address = t.prometheus_address();
    let prom = Prometheus::from_spec(&address, client.clone(), &Default::default())
        .map_err(deployment_failed)?;
    let ns = c.namespace().unwrap_or_default();
    let w = c.spec.analysis.window_seconds;
    let timeout = Duration::from_secs(15);
    let q = |track: &'static str| {
        let prom = prom.clone();
        let ns = ns.clone();
        let address = address.clone();
        let deployment = if track == labels::DEPLOYMENT_CANARY {
            c.spec.canary.deployment.clone()
        } else {
            c.spec.stable.deployment.clone()
        };
        async move {
            prom.track(&ns, track, &deployment, w, timeout)
                .await
                .map_err(|e| deployment_failed(format!("{e} (prometheus {address})")))
        }
    };
    let canary = Some(q(labels::DEPLOYMENT_CANARY).await?);
    let stable = if stable {
        Some(q(labels::DEPLOYMENT_STABLE).await?)
    } else {
        None
    };
    Ok(Comparison {
        window_seconds: w,
        canary,
        stable,
    })
}

async fn run_async(cmd: ClusterCommand, json_out: bool) -> Result<ExitCode, CliError> {
    let client = client().await?;
    match cmd {
        ClusterCommand::Canary(CanaryCommand::Inspect(a)) => {
            let (_, c) = find(&client, &a.target).await?;
            let metrics = if a.metrics {
                Some(comparison(&client, &a.target, &c, true).await?)
            } else {
                None
            };
            if json_out {
                let mut v = json!({"schema": 1, "canary": render::inspect_json(&c)});
                if a.history {
                    v["history"] = json!(c
                        .status
                        .as_ref()
                        .map(|s| s.analysis_history.clone())
                        .unwrap_or_default());
                }
                if let Some(m) = &metrics {
                    v["metrics"] = json!(m);
                }
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).expect("serialisable")
                );
            } else {
                print!("{}", render::inspect(&c));
                if a.history {
                    print!("\n{}", render::history(&c));
                }
                if let Some(m) = &metrics {
                    print!("\n{}", render::comparison(m));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Bluegreen(c) => bluegreen::run(&client, c, json_out).await,
        ClusterCommand::DeploymentStatus(a) => Ok(status::run(&client, a, json_out).await),
        ClusterCommand::MetricsCanary(t) => metrics_cmd(&client, &t, false, json_out).await,
        ClusterCommand::MetricsCompare(t) => metrics_cmd(&client, &t, true, json_out).await,
        ClusterCommand::Rollback(a) => rollback(&client, a, json_out).await,
    }
}

async fn metrics_cmd(
    client: &Client,
    t: &Target,
    stable: bool,
    json_out: bool,
) -> Result<ExitCode, CliError> {
    let (_, c) = find(client, t).await?;
    let m = comparison(client, t, &c, stable).await?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"schema": 1, "canary": c.name_any(), "metrics": m})
            )
            .expect("serialisable")
        );
    } else {
        print!("{}", render::comparison(&m));
    }
    Ok(ExitCode::SUCCESS)
}

fn env_target(t: &Target) -> EnvTarget {
    EnvTarget {
        namespace: t.namespace.clone(),
        name: t.name.clone(),
    }
}

async fn rollback(client: &Client, a: RollbackArgs, json_out: bool) -> Result<ExitCode, CliError> {
    let et = env_target(&a.target);
    if a.bluegreen {
        return bluegreen::rollback(client, &et, a.force, a.wait, json_out).await;
    }
    let canary = find(client, &a.target).await;
    if !a.canary {
        // --status or --force alone: whatever the namespace has.
        let env = bluegreen::find(client, &et, ErrorCode::RollbackFailed).await;
        match (&canary, env) {
            (Err(_), Ok((_, e))) if a.status => return bluegreen::rollback_status(&e, json_out),
            (Err(_), Ok(_)) => {
                return bluegreen::rollback(client, &et, a.force, a.wait, json_out).await
            }
            (Ok(_), Ok((_, e))) if a.status => {
                // Both kinds: the canary's progress, then the environment's.
                if let Ok((_, c)) = &canary {
                    if json_out {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&json!({"schema": 1, "canary": c.name_any(), "rollback": render::rollback_state(c)}))
                                .expect("serialisable")
                        );
                    } else {
                        println!("{}", render::rollback_status(c));
                    }
                }
                return bluegreen::rollback_status(&e, json_out);
            }
            _ => {}
        }
    }
    let (api, c) = canary.map_err(|e| rollback_failed(e.detail))?;
    let name = c.name_any();
    if a.status && !a.canary && !a.force {
        let st = render::rollback_state(&c);
        if json_out {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({"schema": 1, "canary": name, "rollback": st}))
                    .expect("serialisable")
            );
        } else {
            print!("{}", render::rollback_status(&c));
        }
        if st.state == "failed" {
            return Err(canary_rollback_failed(&name, st));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let phase = c.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if phase == Phase::Succeeded && !a.force {
        return Err(rollback_failed(format!(
            "canary {name} already succeeded (100% on the canary); use --force to roll it back"
        )));
    }
    if phase != Phase::Failed {
        let value = if a.force {
            annotations::FORCE
        } else {
            annotations::TRUE
        };
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {annotations::ROLLBACK: value}}})),
        )
        .await
        .map_err(|e| rollback_failed(format!("failed to request the rollback of {name}: {e}")))?;
    }
    // The controller carries it out; wait for the canary to report traffic back on stable.
    let deadline = Instant::now() + Duration::from_secs(a.wait);
    let mut last = c;
    loop {
        let st = render::rollback_state(&last);
        if st.complete {
            if json_out {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"schema": 1, "canary": name, "rollback": st})
                    )
                    .expect("serialisable")
                );
            } else {
                print!("{}", render::rollback_status(&last));
            }
            return Ok(ExitCode::SUCCESS);
        }
        if st.state == "failed" {
            return Err(canary_rollback_failed(&name, st));
        }
        if Instant::now() >= deadline {
            return Err(rollback_failed(format!(
                "canary {name} not rolled back within {}s: phase {}, {}; is veritas-controller running? (kubectl logs -l {}={})",
                a.wait,
                st.phase,
                st.detail,
                labels::APP,
                labels::APP_CONTROLLER
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        last = api
            .get(&name)
            .await
            .map_err(|e| rollback_failed(format!("failed to read canary {name}: {e}")))?;
    }
}
