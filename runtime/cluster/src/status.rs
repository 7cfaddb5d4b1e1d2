//! `veritas-spark deployment status [--verbose|--json]`: the guide's Health Status Matrix for
//! the runtime pods of a namespace, the canary and blue-green resources found there, and, when
//! something is critical or failed, `E5001 DEPLOYMENT_FAILED` with the guide's checks (events,
//! node allocation, controller logs).
//!
//! | Check   | Healthy     | Degraded       | Critical           |
//! |---------|-------------|----------------|--------------------|
//! | Pods    | all Running and ready | some NotReady | CrashLoopBackOff (or none ready) |
//! | Health  | `/health` 2xx on every pod (exit 0) | some pods critical | every pod critical (exit 1) |
//! | Metrics | `:9090/metrics` 200 with the guide's series | partial data | connection refused |
//! | IPC     | `/ready` 200 (exit 0) | timeout | not ready (exit 1) |
//!
//! The matrix is computed by the pure [`matrix`]; exit code 1 when any row is Critical.

use std::fmt::Write as _;

use serde::Serialize;
use veritas_controller::bluegreen::probe::Answer;
use veritas_vocab::metrics as m;

/// One level of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    Healthy,
    Degraded,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Healthy => "Healthy",
            Level::Degraded => "Degraded",
            Level::Critical => "Critical",
        }
    }
}

/// A runtime pod as observed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodFacts {
    pub name: String,
    /// `deployment=` or `environment=` label, e.g. `canary`, `blue`.
    pub track: String,
    pub phase: String,
    pub ready: bool,
    /// A container's waiting reason, e.g. `CrashLoopBackOff`, `ImagePullBackOff`.
    pub waiting: Option<String>,
    pub restarts: i32,
    pub node: Option<String>,
}

/// The three HTTP checks of one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodAnswers {
    pub pod: String,
    pub health: Answer,
    pub ready: Answer,
    pub metrics: Answer,
}

/// One row of the matrix.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub check: &'static str,
    pub command: &'static str,
    pub level: Level,
    pub detail: String,
}

/// The series a healthy `/metrics` carries (the guide's PromQL uses them).
pub const EXPECTED_SERIES: &[&str] = &[
    m::REQUESTS_TOTAL,
    m::REQUEST_DURATION,
    m::MEMORY_USED_BYTES,
    m::MEMORY_LIMIT_BYTES,
];

/// Several pods' levels as one: all the same is that level; a mix with a healthy pod is
/// Degraded; a mix of Degraded and Critical is Critical.
fn aggregate(levels: &[Level]) -> Level {
    match levels {
        [] => Level::Critical,
        [first, rest @ ..] if rest.iter().all(|l| l == first) => *first,
        _ if levels.contains(&Level::Healthy) => Level::Degraded,
        _ => Level::Critical,
    }
}

fn count(levels: &[Level], l: Level) -> usize {
    levels.iter().filter(|x| **x == l).count()
}

fn answer_short(a: &Answer) -> String {
    match a {
        Answer::Http { status, .. } => format!("HTTP {status}"),
        Answer::Timeout => "timeout".into(),
        Answer::Unreachable(w) => {
            format!("unreachable ({})", w.chars().take(80).collect::<String>())
        }
    }
}

/// The Health Status Matrix.
pub fn matrix(pods: &[PodFacts], answers: &[PodAnswers]) -> Vec<Row> {
    let mut rows = Vec::new();
    // Pods.
    let crash: Vec<&PodFacts> = pods
        .iter()
        .filter(|p| p.waiting.as_deref() == Some("CrashLoopBackOff"))
        .collect();
    let not_ready: Vec<&PodFacts> = pods.iter().filter(|p| !p.ready).collect();
    let (level, detail) = if pods.is_empty() {
        (
            Level::Critical,
            "no runtime pods (app=veritas-spark)".to_string(),
        )
    } else if !crash.is_empty() {
        (
            Level::Critical,
            format!(
                "CrashLoopBackOff: {}",
                crash
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else if not_ready.len() == pods.len() {
        (
            Level::Critical,
            format!("none of {} pods ready", pods.len()),
        )
    } else if !not_ready.is_empty() {
        (
            Level::Degraded,
            format!(
                "{}/{} ready; NotReady: {}",
                pods.len() - not_ready.len(),
                pods.len(),
                not_ready
                    .iter()
                    .map(|p| format!(
                        "{} ({})",
                        p.name,
                        p.waiting.clone().unwrap_or_else(|| p.phase.clone())
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else {
        (
            Level::Healthy,
            format!("{}/{} Running and ready", pods.len(), pods.len()),
        )
    };
    rows.push(Row {
        check: "Pods",
        command: "kubectl get pods -l app=veritas-spark",
        level,
        detail,
    });

    // Health: exit 0 (2xx) or exit 1.
    let levels: Vec<Level> = answers
        .iter()
        .map(|a| match &a.health {
            Answer::Http { status, .. } if (200..300).contains(status) => Level::Healthy,
            _ => Level::Critical,
        })
        .collect();
    let failing: Vec<String> = answers
        .iter()
        .zip(&levels)
        .filter(|(_, l)| **l != Level::Healthy)
        .map(|(a, _)| {
            let why = match &a.health {
                Answer::Http { body, .. } => veritas_controller::bluegreen::probe::summary(body),
                other => answer_short(other),
            };
            format!("{}: {why}", a.pod)
        })
        .collect();
    rows.push(Row {
        check: "Health",
        command: "veritas-spark health",
        level: aggregate(&levels),
        detail: if answers.is_empty() {
            "no pod to ask".into()
        } else if failing.is_empty() {
            format!("{} pods exit 0", answers.len())
        } else {
            format!(
                "{}/{} pods exit 1: {}",
                failing.len(),
                answers.len(),
                failing.join("; ")
            )
        },
    });

    // Metrics: 200 with every expected series, partial data, or no connection.
    let levels: Vec<Level> = answers
        .iter()
        .map(|a| match &a.metrics {
            Answer::Http { status: 200, body } => {
                let text = String::from_utf8_lossy(body);
                if EXPECTED_SERIES.iter().all(|s| text.contains(s)) {
                    Level::Healthy
                } else {
                    Level::Degraded
                }
            }
            Answer::Http { .. } | Answer::Timeout => Level::Degraded,
            Answer::Unreachable(_) => Level::Critical,
        })
        .collect();
    let partial = count(&levels, Level::Degraded);
    let refused = count(&levels, Level::Critical);
    rows.push(Row {
        check: "Metrics",
        command: "curl :9090/metrics",
        level: aggregate(&levels),
        detail: if answers.is_empty() {
            "no pod to ask".into()
        } else {
            format!(
                "{} pods 200 OK, {partial} partial data, {refused} connection refused",
                count(&levels, Level::Healthy)
            )
        },
    });

    // IPC: the readiness probe (the runtime answers /ready from its IPC state).
    let levels: Vec<Level> = answers
        .iter()
        .map(|a| match &a.ready {
            Answer::Http { status: 200, .. } => Level::Healthy,
            Answer::Timeout => Level::Degraded,
            _ => Level::Critical,
        })
        .collect();
    rows.push(Row {
        check: "IPC",
        command: "veritas-spark ready",
        level: aggregate(&levels),
        detail: if answers.is_empty() {
            "no pod to ask".into()
        } else {
            format!(
                "{} pods exit 0, {} timeout, {} exit 1",
                count(&levels, Level::Healthy),
                count(&levels, Level::Degraded),
                count(&levels, Level::Critical)
            )
        },
    });
    rows
}

/// Exit code of the matrix: 1 when any row is Critical.
pub fn exit_code(rows: &[Row]) -> u8 {
    u8::from(rows.iter().any(|r| r.level == Level::Critical))
}

pub fn matrix_text(rows: &[Row]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{:<8} {:<9} {:<40} DETAIL", "CHECK", "STATUS", "COMMAND");
    for r in rows {
        let _ = writeln!(
            o,
            "{:<8} {:<9} {:<40} {}",
            r.check,
            r.level.as_str(),
            r.command,
            r.detail
        );
    }
    o
}

/// What a canary's status makes of the namespace's deployment: a canary that ended `Failed`
/// (rolled back) is `E5001`; one still rolling back after its deadline (reason
/// `RollbackFailed`: stable cannot take the traffic back) is `E5002`, while traffic may still
/// be split, so never a healthy exit.
pub fn canary_failure(name: &str, st: &VeritasCanaryStatus) -> Option<(ErrorCode, String)> {
    let code = if crate::render::rollback_failed(st) {
        ErrorCode::RollbackFailed
    } else if st.phase == Phase::Failed {
        ErrorCode::DeploymentFailed
    } else {
        return None;
    };
    let what = if code == ErrorCode::RollbackFailed {
        "rollback failed"
    } else {
        "failed"
    };
    Some((
        code,
        format!(
            "canary {name} {what}: {} ({})",
            st.reason.clone().unwrap_or_default(),
            st.message.clone().unwrap_or_default()
        ),
    ))
}

/// The same for a blue-green environment: a failed switch is `E5001`, a failed rollback `E5002`.
pub fn environment_failure(
    name: &str,
    st: &VeritasEnvironmentStatus,
) -> Option<(ErrorCode, String)> {
    let code = match st.phase {
        EnvironmentPhase::SwitchFailed => ErrorCode::DeploymentFailed,
        EnvironmentPhase::RollbackFailed => ErrorCode::RollbackFailed,
        _ => return None,
    };
    Some((
        code,
        format!(
            "environment {name} {}: {} ({})",
            st.phase,
            st.reason.clone().unwrap_or_default(),
            st.message.clone().unwrap_or_default()
        ),
    ))
}

/// A Deployment whose ReplicaSet cannot create pods (condition `ReplicaFailure`, e.g.
/// `FailedCreate: ... violates PodSecurity "restricted:latest"`) is `E5001`, with the API
/// server's words.
pub fn deployment_failure(d: &Deployment) -> Option<(ErrorCode, String)> {
    let c = d
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
    Some((
        ErrorCode::DeploymentFailed,
        format!(
            "deployment {} cannot create pods ({}): {}",
            d.name_any(),
            c.reason.as_deref().unwrap_or("ReplicaFailure"),
            c.message.as_deref().unwrap_or_default()
        ),
    ))
}

/// Keeps the first failure found, unless a later one is a failed rollback and the first is not:
/// a rollback that cannot complete is the more severe (traffic may still be on the bad version).
fn worse(failure: &mut Option<(ErrorCode, String)>, found: Option<(ErrorCode, String)>) {
    let Some(found) = found else { return };
    let replace = match failure {
        None => true,
        Some((code, _)) => {
            *code != ErrorCode::RollbackFailed && found.0 == ErrorCode::RollbackFailed
        }
    };
    if replace {
        *failure = Some(found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use veritas_crds::reasons;

    fn canary_st(phase: Phase, reason: Option<&str>) -> VeritasCanaryStatus {
        VeritasCanaryStatus {
            phase,
            reason: reason.map(String::from),
            message: Some("stable has no ready pod".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_canary_whose_rollback_is_late_is_e5002_and_a_rolled_back_one_e5001() {
        let late = canary_failure(
            "spark",
            &canary_st(Phase::RollingBack, Some(reasons::ROLLBACK_FAILED)),
        );
        let (code, msg) = late.expect("a failed rollback is a failure");
        assert_eq!(code, ErrorCode::RollbackFailed);
        assert!(
            msg.contains("canary spark rollback failed: RollbackFailed"),
            "{msg}"
        );
        let done = canary_failure(
            "spark",
            &canary_st(Phase::Failed, Some(reasons::ROLLED_BACK)),
        );
        assert_eq!(done.map(|f| f.0), Some(ErrorCode::DeploymentFailed));
        // Rolling back within its deadline, or any healthy phase: nothing to report.
        for phase in [
            Phase::RollingBack,
            Phase::Progressing,
            Phase::Paused,
            Phase::Succeeded,
        ] {
            assert_eq!(
                canary_failure("spark", &canary_st(phase, None)),
                None,
                "{phase:?}"
            );
        }
    }

    #[test]
    fn a_deployment_that_cannot_create_pods_is_e5001_with_the_api_servers_words() {
        use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
        let with = |type_: &str, status: &str| Deployment {
            metadata: kube::api::ObjectMeta {
                name: Some("veritas-spark-canary".into()),
                ..Default::default()
            },
            status: Some(DeploymentStatus {
                conditions: Some(vec![DeploymentCondition {
                    type_: type_.into(),
                    status: status.into(),
                    reason: Some("FailedCreate".into()),
                    message: Some(
                        "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\""
                            .into(),
                    ),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (code, msg) =
            deployment_failure(&with("ReplicaFailure", "True")).expect("refused pods");
        assert_eq!(code, ErrorCode::DeploymentFailed);
        assert!(
            msg.contains("deployment veritas-spark-canary cannot create pods (FailedCreate): pods \"x\" is forbidden: violates PodSecurity"),
            "{msg}"
        );
        assert_eq!(deployment_failure(&with("ReplicaFailure", "False")), None);
        assert_eq!(deployment_failure(&with("Progressing", "True")), None);
        assert_eq!(deployment_failure(&Deployment::default()), None);
    }

    #[test]
    fn a_failed_rollback_outranks_a_failed_deployment_whichever_comes_first() {
        let e5001 = Some((ErrorCode::DeploymentFailed, "a".to_string()));
        let e5002 = Some((ErrorCode::RollbackFailed, "b".to_string()));
        let mut f = None;
        worse(&mut f, e5001.clone());
        worse(&mut f, e5002.clone());
        assert_eq!(f, e5002);
        worse(&mut f, e5001.clone());
        assert_eq!(f, e5002);
        let mut g = None;
        worse(&mut g, e5001.clone());
        worse(&mut g, Some((ErrorCode::DeploymentFailed, "c".into())));
        assert_eq!(g, e5001, "the first of equals is kept");
    }

    fn pod(name: &str, ready: bool, waiting: Option<&str>) -> PodFacts {
        PodFacts {
            name: name.into(),
            track: "blue".into(),
            phase: "Running".into(),
            ready,
            waiting: waiting.map(String::from),
            restarts: 0,
            node: None,
        }
    }

    fn ok(name: &str) -> PodAnswers {
        let metrics = EXPECTED_SERIES.join("\n");
        PodAnswers {
            pod: name.into(),
            health: Answer::Http {
                status: 200,
                body: Bytes::from_static(b"{}"),
            },
            ready: Answer::Http {
                status: 200,
                body: Bytes::new(),
            },
            metrics: Answer::Http {
                status: 200,
                body: Bytes::from(metrics),
            },
        }
    }

    #[test]
    fn all_good_is_healthy_exit_0() {
        let rows = matrix(&[pod("a", true, None)], &[ok("a")]);
        assert!(rows.iter().all(|r| r.level == Level::Healthy), "{rows:?}");
        assert_eq!(exit_code(&rows), 0);
    }

    #[test]
    fn each_column_of_the_guides_matrix() {
        // Pods: some NotReady -> Degraded; CrashLoopBackOff -> Critical.
        let r = matrix(&[pod("a", true, None), pod("b", false, None)], &[ok("a")]);
        assert_eq!(r[0].level, Level::Degraded);
        assert_eq!(exit_code(&r), 0, "degraded is not critical");
        let r = matrix(
            &[
                pod("a", true, None),
                pod("b", false, Some("CrashLoopBackOff")),
            ],
            &[ok("a")],
        );
        assert_eq!(r[0].level, Level::Critical);
        assert_eq!(exit_code(&r), 1);
        // Health: exit 1 on every pod -> Critical.
        let mut a = ok("a");
        a.health = Answer::Http {
            status: 503,
            body: Bytes::from_static(br#"{"status":"critical","model_state":"failed"}"#),
        };
        let r = matrix(&[pod("a", true, None)], &[a.clone()]);
        assert_eq!(r[1].level, Level::Critical);
        assert!(r[1].detail.contains("status=critical"));
        // Metrics: partial data -> Degraded; connection refused -> Critical.
        let mut a = ok("a");
        a.metrics = Answer::Http {
            status: 200,
            body: Bytes::from_static(b"veritas_spark_requests_total 1"),
        };
        assert_eq!(
            matrix(&[pod("a", true, None)], &[a])[2].level,
            Level::Degraded
        );
        let mut a = ok("a");
        a.metrics = Answer::Unreachable("connection refused".into());
        assert_eq!(
            matrix(&[pod("a", true, None)], &[a])[2].level,
            Level::Critical
        );
        // IPC: timeout -> Degraded; exit 1 -> Critical.
        let mut a = ok("a");
        a.ready = Answer::Timeout;
        assert_eq!(
            matrix(&[pod("a", true, None)], &[a])[3].level,
            Level::Degraded
        );
        let mut a = ok("a");
        a.ready = Answer::Http {
            status: 503,
            body: Bytes::new(),
        };
        assert_eq!(
            matrix(&[pod("a", true, None)], &[a])[3].level,
            Level::Critical
        );
        // No pods at all: critical.
        assert_eq!(exit_code(&matrix(&[], &[])), 1);
    }
}

// --- gathering (the cluster side of `deployment status`) ---

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, Pod};
use kube::api::{ListParams, LogParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use veritas_controller::bluegreen::observe::pod_ready;
use veritas_controller::bluegreen::probe::{PodHttp, PodTarget};
use veritas_crds::{
    EnvironmentPhase, Phase, VeritasCanary, VeritasCanaryStatus, VeritasEnvironment,
    VeritasEnvironmentStatus,
};
use veritas_vocab::{labels, ErrorBody, ErrorCode};

/// `deployment status` arguments.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Namespace of the runtime pods (default: the kubeconfig context's).
    #[arg(long, short = 'n', env = "VERITAS_NAMESPACE")]
    pub namespace: Option<String>,
    /// Detailed status: every pod with its answers, recent events, node allocation and the
    /// controller's recent log lines (the guide's E5001 checks).
    #[arg(long)]
    pub verbose: bool,
}

fn pod_facts(p: &Pod) -> PodFacts {
    let l = p.metadata.labels.clone().unwrap_or_default();
    let st = p.status.clone().unwrap_or_default();
    let cs = st.container_statuses.clone().unwrap_or_default();
    PodFacts {
        name: p.name_any(),
        track: l
            .get(labels::ENVIRONMENT)
            .or(l.get(labels::DEPLOYMENT))
            .cloned()
            .unwrap_or_else(|| "-".into()),
        phase: st.phase.clone().unwrap_or_else(|| "Unknown".into()),
        ready: pod_ready(p),
        waiting: cs
            .iter()
            .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone()),
        restarts: cs.iter().map(|c| c.restart_count).sum(),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
    }
}

/// Parses a CPU quantity to millicores.
pub fn cpu_millis(q: &str) -> Option<i64> {
    if let Some(m) = q.strip_suffix('m') {
        return m.parse().ok();
    }
    q.parse::<f64>().ok().map(|c| (c * 1000.0).round() as i64)
}

/// Parses a memory quantity to bytes.
pub fn mem_bytes(q: &str) -> Option<i64> {
    const UNITS: &[(&str, i64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (u, f) in UNITS {
        if let Some(n) = q.strip_suffix(u) {
            return n.parse::<f64>().ok().map(|v| (v * *f as f64) as i64);
        }
    }
    q.parse::<f64>().ok().map(|v| v as i64)
}

/// The guide's E5001 checks, each a list of lines (or why it could not be read).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checks {
    pub events: Vec<String>,
    pub node_allocation: Vec<String>,
    pub controller_logs: Vec<String>,
}

async fn checks(client: &Client, ns: &str) -> Checks {
    let mut c = Checks::default();
    // kubectl get events --sort-by=.lastTimestamp | grep veritas
    let evs: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
    match evs.list(&ListParams::default()).await {
        Ok(list) => {
            let mut items: Vec<_> = list
                .items
                .into_iter()
                .filter(|e| {
                    e.involved_object
                        .name
                        .as_deref()
                        .unwrap_or("")
                        .contains("veritas")
                        || e.message.as_deref().unwrap_or("").contains("veritas")
                })
                .collect();
            items.sort_by_key(|e| {
                e.last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or(e.event_time.as_ref().map(|t| t.0))
            });
            for e in items.iter().rev().take(10).rev() {
                c.events.push(format!(
                    "{} {} {}/{}: {}",
                    e.type_.as_deref().unwrap_or("-"),
                    e.reason.as_deref().unwrap_or("-"),
                    e.involved_object.kind.as_deref().unwrap_or("-"),
                    e.involved_object.name.as_deref().unwrap_or("-"),
                    e.message.as_deref().unwrap_or("").trim()
                ));
            }
            if c.events.is_empty() {
                c.events.push("no events about veritas objects".into());
            }
        }
        Err(e) => c.events.push(format!("cannot list events: {e}")),
    }
    // kubectl describe nodes | grep -A5 "Allocated"
    let nodes: Api<Node> = Api::all(client.clone());
    let all_pods: Api<Pod> = Api::all(client.clone());
    match nodes.list(&ListParams::default()).await {
        Ok(list) if list.items.is_empty() => c.node_allocation.push("no nodes".into()),
        Ok(list) => {
            for n in list.items {
                let name = n.name_any();
                let alloc = n.status.and_then(|s| s.allocatable).unwrap_or_default();
                let (acpu, amem) = (
                    alloc.get("cpu").and_then(|q| cpu_millis(&q.0)).unwrap_or(0),
                    alloc
                        .get("memory")
                        .and_then(|q| mem_bytes(&q.0))
                        .unwrap_or(0),
                );
                let lp = ListParams::default().fields(&format!("spec.nodeName={name}"));
                let (mut rcpu, mut rmem) = (0i64, 0i64);
                match all_pods.list(&lp).await {
                    Ok(pods) => {
                        for p in pods.items.iter().filter(|p| {
                            !matches!(
                                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                                Some("Succeeded" | "Failed")
                            )
                        }) {
                            for ct in p.spec.iter().flat_map(|s| s.containers.iter()) {
                                let req = ct.resources.as_ref().and_then(|r| r.requests.as_ref());
                                rcpu += req
                                    .and_then(|r| r.get("cpu"))
                                    .and_then(|q| cpu_millis(&q.0))
                                    .unwrap_or(0);
                                rmem += req
                                    .and_then(|r| r.get("memory"))
                                    .and_then(|q| mem_bytes(&q.0))
                                    .unwrap_or(0);
                            }
                        }
                        let pct = |a: i64, b: i64| if b > 0 { a * 100 / b } else { 0 };
                        c.node_allocation.push(format!(
                            "{name}: cpu requests {rcpu}m of {acpu}m ({}%), memory requests {}Mi of {}Mi ({}%)",
                            pct(rcpu, acpu),
                            rmem >> 20,
                            amem >> 20,
                            pct(rmem, amem)
                        ));
                    }
                    Err(e) => c
                        .node_allocation
                        .push(format!("{name}: cannot list its pods: {e}")),
                }
            }
        }
        Err(e) => c.node_allocation.push(format!("cannot list nodes: {e}")),
    }
    // kubectl logs -l app=veritas-controller --tail=50
    let lp = ListParams::default().labels(&format!("{}={}", labels::APP, labels::APP_CONTROLLER));
    match all_pods.list(&lp).await {
        Ok(list) if list.items.is_empty() => c
            .controller_logs
            .push("no veritas-controller pod found (is it installed? kubectl apply -f fixtures/manifests/controller/)".into()),
        Ok(list) => {
            for p in list.items {
                let api: Api<Pod> =
                    Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
                let params = LogParams {
                    tail_lines: Some(50),
                    ..Default::default()
                };
                match api.logs(&p.name_any(), &params).await {
                    Ok(text) => {
                        let lines: Vec<&str> = text
                            .lines()
                            .filter(|l| {
                                let l = l.to_lowercase();
                                ["error", "warn", "fail", "switch", "rolling"]
                                    .iter()
                                    .any(|k| l.contains(k))
                            })
                            .collect();
                        for l in lines.iter().rev().take(10).rev() {
                            c.controller_logs.push(format!(
                                "{}: {}",
                                p.name_any(),
                                l.chars().take(300).collect::<String>()
                            ));
                        }
                    }
                    Err(e) => c
                        .controller_logs
                        .push(format!("{}: cannot read logs: {e}", p.name_any())),
                }
            }
            if c.controller_logs.is_empty() {
                c.controller_logs.push("no warnings or errors in the last 50 lines".into());
            }
        }
        Err(e) => c.controller_logs.push(format!("cannot list controller pods: {e}")),
    }
    c
}

/// One resource line of the status output.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceLine {
    pub kind: &'static str,
    pub name: String,
    pub phase: String,
    pub reason: Option<String>,
    pub summary: String,
}

pub async fn run(client: &Client, a: StatusArgs, json_out: bool) -> ExitCode {
    let ns = a
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let lp = ListParams::default().labels(&format!("{}={}", labels::APP, labels::APP_SPARK));
    let pods = match pods_api.list(&lp).await {
        Ok(l) => l.items,
        Err(e) => {
            let body = ErrorBody::new(
                ErrorCode::DeploymentFailed,
                format!("failed to list the runtime pods in {ns}: {e}"),
            );
            if json_out {
                println!("{}", serde_json::to_string(&body).expect("serialisable"));
            } else {
                eprintln!("{body}");
            }
            return ExitCode::from(1);
        }
    };
    let http = if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        PodHttp::direct()
    } else {
        PodHttp::ApiProxy(client.clone())
    };
    let timeout = Duration::from_secs(3);
    let facts: Vec<PodFacts> = pods.iter().map(pod_facts).collect();
    let answers: Vec<PodAnswers> = futures::future::join_all(pods.iter().map(|p| {
        let http = http.clone();
        let t = PodTarget {
            namespace: ns.clone(),
            name: p.name_any(),
            ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
        };
        async move {
            let (health, ready, metrics) = tokio::join!(
                http.get(&t, labels::DEFAULT_HTTP_PORT as i32, "/health", timeout),
                http.get(&t, labels::DEFAULT_HTTP_PORT as i32, "/ready", timeout),
                http.get(&t, labels::DEFAULT_METRICS_PORT as i32, "/metrics", timeout),
            );
            PodAnswers {
                pod: t.name,
                health,
                ready,
                metrics,
            }
        }
    }))
    .await;
    let rows = matrix(&facts, &answers);

    let mut resources = Vec::new();
    let mut failure: Option<(ErrorCode, String)> = None;
    let canaries: Api<VeritasCanary> = Api::namespaced(client.clone(), &ns);
    if let Ok(list) = canaries.list(&ListParams::default()).await {
        for c in list.items {
            let st = c.status.clone().unwrap_or_default();
            worse(&mut failure, canary_failure(&c.name_any(), &st));
            resources.push(ResourceLine {
                kind: "VeritasCanary",
                name: c.name_any(),
                phase: st.phase.as_str().into(),
                reason: st.reason.clone(),
                summary: format!(
                    "weight {}% (desired {}%), step {}",
                    st.actual_weight, st.desired_weight, st.current_step
                ),
            });
        }
    }
    // A track whose Deployment cannot create its pods at all (admission refused them: Pod
    // Security, a quota, a webhook) says why at once, where the canary would only fail its
    // progress deadline later, and while the old pods still serve.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    if let Ok(list) = deployments.list(&ListParams::default()).await {
        for d in &list.items {
            worse(&mut failure, deployment_failure(d));
        }
    }
    let envs: Api<VeritasEnvironment> = Api::namespaced(client.clone(), &ns);
    if let Ok(list) = envs.list(&ListParams::default()).await {
        for e in list.items {
            let st = e.status.clone().unwrap_or_default();
            worse(&mut failure, environment_failure(&e.name_any(), &st));
            resources.push(ResourceLine {
                kind: "VeritasEnvironment",
                name: e.name_any(),
                phase: st.phase.as_str().into(),
                reason: st.reason.clone(),
                summary: format!(
                    "active {}, desired {}{}",
                    st.active_environment
                        .map(|a| a.as_str())
                        .unwrap_or("unknown"),
                    e.spec.active_environment,
                    st.switch_progress
                        .as_ref()
                        .map(|p| format!(
                            ", step {} waiting for {}",
                            p.step,
                            p.waiting_for.clone().unwrap_or_default()
                        ))
                        .unwrap_or_default()
                ),
            });
        }
    }
    if failure.is_none() && exit_code(&rows) == 1 {
        let critical: Vec<String> = rows
            .iter()
            .filter(|r| r.level == Level::Critical)
            .map(|r| format!("{} ({})", r.check, r.detail))
            .collect();
        failure = Some((
            ErrorCode::DeploymentFailed,
            format!("critical in {ns}: {}", critical.join("; ")),
        ));
    }
    let checks = if a.verbose || failure.is_some() {
        Some(checks(client, &ns).await)
    } else {
        None
    };
    let error = failure.map(|(c, d)| ErrorBody::new(c, d));
    let code = if error.is_some() { 1 } else { 0 };
    if json_out {
        let mut v = json!({
            "schema": 1,
            "namespace": ns,
            "matrix": rows,
            "exitCode": code,
            "resources": resources,
            "error": error,
            "checks": checks,
        });
        if a.verbose {
            v["pods"] = json!(facts);
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("serialisable")
        );
        return ExitCode::from(code);
    }
    print!(
        "{}",
        render(&ns, &rows, &facts, &answers, &resources, a.verbose)
    );
    if let Some(c) = &checks {
        print!("{}", checks_text(c));
    }
    if let Some(e) = &error {
        eprintln!("{e}");
        eprintln!("next steps (deployment-troubleshooting guide, {}):", e.code);
        eprintln!("  veritas-spark deployment status --verbose");
        eprintln!("  kubectl get events --sort-by=.lastTimestamp | grep veritas");
        eprintln!("  kubectl describe nodes | grep -A5 \"Allocated\"");
        eprintln!(
            "  kubectl logs -l {}={} --tail=50",
            labels::APP,
            labels::APP_CONTROLLER
        );
    }
    ExitCode::from(code)
}

/// The text of `deployment status` (pure).
pub fn render(
    ns: &str,
    rows: &[Row],
    pods: &[PodFacts],
    answers: &[PodAnswers],
    resources: &[ResourceLine],
    verbose: bool,
) -> String {
    let mut o = String::new();
    let worst = rows
        .iter()
        .map(|r| r.level)
        .max()
        .unwrap_or(Level::Critical);
    let _ = writeln!(o, "namespace: {ns}    overall: {}", worst.as_str());
    o.push_str(&matrix_text(rows));
    if resources.is_empty() {
        let _ = writeln!(o, "resources: no VeritasCanary or VeritasEnvironment");
    } else {
        let _ = writeln!(o, "resources:");
        for r in resources {
            let _ = writeln!(
                o,
                "  {:<18} {:<16} {:<14} {:<24} {}",
                r.kind,
                r.name,
                r.phase,
                r.reason.as_deref().unwrap_or("-"),
                r.summary
            );
        }
    }
    if verbose {
        let _ = writeln!(o, "pods:");
        for p in pods {
            let a = answers.iter().find(|a| a.pod == p.name);
            let _ = writeln!(
                o,
                "  {:<32} {:<8} {:<9} ready={:<5} restarts={:<3} node={:<16} {}",
                p.name,
                p.track,
                p.phase,
                p.ready,
                p.restarts,
                p.node.as_deref().unwrap_or("-"),
                a.map(|a| format!(
                    "health {} ready {} metrics {}",
                    answer_short(&a.health),
                    answer_short(&a.ready),
                    answer_short(&a.metrics)
                ))
                .unwrap_or_default()
            );
            if let Some(w) = &p.waiting {
                let _ = writeln!(o, "    waiting: {w}");
            }
        }
    }
    o
}

pub fn checks_text(c: &Checks) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "recent events (kubectl get events --sort-by=.lastTimestamp | grep veritas):"
    );
    for l in &c.events {
        let _ = writeln!(o, "  {l}");
    }
    let _ = writeln!(
        o,
        "node allocation (kubectl describe nodes | grep -A5 \"Allocated\"):"
    );
    for l in &c.node_allocation {
        let _ = writeln!(o, "  {l}");
    }
    let _ = writeln!(
        o,
        "controller logs (kubectl logs -l app=veritas-controller --tail=50, warnings and errors):"
    );
    for l in &c.controller_logs {
        let _ = writeln!(o, "  {l}");
    }
    o
}
