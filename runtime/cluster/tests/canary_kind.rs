//! The canary release model on a real cluster (kind) through the INSTALLED veritas-controller
//! and the cluster's real Prometheus: a first release analysed and promoted into stable, a
//! second release (a new canary pod template) analysed again from step 0 and promoted, then a
//! forced rollback of the promoted canary, all under steady traffic from a pod inside the
//! cluster that counts every failed request through the shared Service.
//!
//! Prints how long each release took and the request counts.
//!
//! Run (what `.ci/run` does after install-veritas.sh):
//! `VERITAS_KUBECONFIG=/var/cache/veritas-kind/kubeconfig-<cluster> cargo nextest run --workspace
//! --profile cluster --run-ignored ignored-only -E 'binary(canary_kind)'`

use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use veritas_crds::{annotations, reasons, Phase, VeritasCanary};

mod common;
use common::{
    apply_runtime_tracks, client, controller_installed, create_namespace, eventually,
    kubeconfig_from, rt, traffic_pod, traffic_so_far, unique, NamespaceGuard,
};

const CANARY: &str = "veritas-spark";
const SHARED: &str = "veritas-spark";
const STABLE_DEPLOYMENT: &str = "veritas-spark-stable";
const CANARY_DEPLOYMENT: &str = "veritas-spark-canary";

fn kubeconfig() -> String {
    kubeconfig_from(
        "VERITAS_KUBECONFIG",
        "/var/cache/veritas-kind/kubeconfig-<cluster>",
    )
}

/// One PromQL instant query through the API server's service proxy (the test runs outside the
/// cluster); the value of the first sample, if any.
async fn promql(client: &Client, query: &str) -> Result<Option<f64>, String> {
    let path = format!(
        "/api/v1/namespaces/monitoring/services/prometheus-operated:9090/proxy/api/v1/query?query={}",
        urlencode(query)
    );
    let req = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = client.request_text(req).await.map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    Ok(v.pointer("/data/result/0/value/1")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The canary's pod template marked as release `n` (any template change is a new revision).
async fn set_release(client: &Client, ns: &str, n: u32) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"veritas-test/release": n.to_string()}}}}});
    api.patch(
        CANARY_DEPLOYMENT,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
}

async fn release_of(client: &Client, ns: &str, deployment: &str) -> Option<String> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.get(deployment)
        .await
        .unwrap()
        .spec?
        .template
        .metadata?
        .annotations?
        .get("veritas-test/release")
        .cloned()
}

fn summary(c: &VeritasCanary) -> String {
    format!(
        "{:?}",
        c.status.as_ref().map(|s| (
            s.phase,
            s.reason.clone(),
            s.message.clone(),
            s.current_step,
            s.desired_weight,
            s.stable_revision.clone(),
            s.canary_revision.clone()
        ))
    )
}

async fn canary_where(
    api: &Api<VeritasCanary>,
    secs: u64,
    what: &str,
    pred: impl Fn(&VeritasCanary) -> bool,
) -> VeritasCanary {
    eventually(what, secs, || {
        let api = api.clone();
        let pred = &pred;
        async move {
            let c = api.get(CANARY).await.map_err(|e| e.to_string())?;
            if pred(&c) {
                Ok(c)
            } else {
                Err(summary(&c))
            }
        }
    })
    .await
}

/// Promoted: `Succeeded` with the canary's revision in stable.
fn promoted(c: &VeritasCanary) -> bool {
    c.status.as_ref().is_some_and(|s| {
        s.phase == Phase::Succeeded
            && s.reason.as_deref() == Some(reasons::PROMOTED)
            && s.stable_revision.is_some()
            && s.stable_revision == s.canary_revision
    })
}

async fn event_reasons(client: &Client, ns: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

async fn replicas(client: &Client, ns: &str, deployment: &str) -> (i32, i32) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = api.get(deployment).await.unwrap();
    (
        d.spec.and_then(|s| s.replicas).unwrap_or(1),
        d.status.and_then(|s| s.ready_replicas).unwrap_or(0),
    )
}

#[test]
#[ignore = "needs a kind cluster with Veritas installed (ci/kind/install-veritas.sh): VERITAS_KUBECONFIG=/var/cache/veritas-kind/kubeconfig-<cluster>"]
fn two_releases_promoted_then_a_forced_rollback_fail_no_request() {
    kubeconfig();
    let rt = rt();
    let ns = unique("canary-kind-release");
    let _guard = NamespaceGuard(ns.clone());
    let client = rt.block_on(client());
    rt.block_on(controller_installed(&client));
    rt.block_on(create_namespace(&client, &ns));
    rt.block_on(apply_runtime_tracks(&client, &ns));
    rt.block_on(set_release(&client, &ns, 1));

    // Both tracks serve and Prometheus scrapes them before anything is judged.
    rt.block_on(eventually("both tracks ready", 300, || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let (s, c) = (
                replicas(&client, &ns, STABLE_DEPLOYMENT).await,
                replicas(&client, &ns, CANARY_DEPLOYMENT).await,
            );
            if s.1 == s.0 && c.1 == c.0 {
                Ok(())
            } else {
                Err(format!("stable {s:?}, canary {c:?} (replicas, ready)"))
            }
        }
    }));
    for track in ["stable", "canary"] {
        let q = format!("min(up{{namespace=\"{ns}\",service=\"veritas-spark-{track}\"}})");
        rt.block_on(eventually(
            &format!("Prometheus scraping the {track} track"),
            300,
            || {
                let client = client.clone();
                let q = q.clone();
                async move {
                    match promql(&client, &q).await? {
                        Some(1.0) => Ok(()),
                        other => Err(format!("{q} = {other:?}")),
                    }
                }
            },
        ));
    }

    // Steady traffic through the shared Service (bounded: the pod ends by itself).
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    rt.block_on(pods.create(&PostParams::default(), &traffic_pod(SHARED, 12_000)))
        .unwrap();
    rt.block_on(eventually("20 requests answered", 120, || {
        let pods = pods.clone();
        async move {
            match traffic_so_far(&pods).await? {
                (ok, _, _) if ok >= 20 => Ok(()),
                seen => Err(format!("{seen:?}")),
            }
        }
    }));

    // Release 1.
    let api: Api<VeritasCanary> = Api::namespaced(client.clone(), &ns);
    let canary: VeritasCanary = serde_json::from_value(json!({
        "apiVersion": "veritas.hearthlink.ai/v1alpha1",
        "kind": "VeritasCanary",
        "metadata": {"name": CANARY},
        "spec": {
            "trafficWeight": 25,
            "replicas": 4,
            "stable": {"deployment": STABLE_DEPLOYMENT, "service": "veritas-spark-stable"},
            "canary": {"deployment": CANARY_DEPLOYMENT, "service": "veritas-spark-canary"},
            "sharedService": SHARED,
            "serviceMonitor": "veritas-spark-canary",
            "promotion": {"auto": true, "successLimit": 1, "steps": [{"weight": 50}]},
            "analysis": {"intervalSeconds": 10, "windowSeconds": 30, "errorRateThreshold": 0.05,
                         "latencyP99Threshold": 5.0, "minRequests": 5, "failureLimit": 5},
            "progressDeadlineSeconds": 600
        }
    }))
    .unwrap();
    let t = Instant::now();
    rt.block_on(api.create(&PostParams::default(), &canary))
        .unwrap();
    let first = rt.block_on(canary_where(&api, 600, "release 1 promoted", promoted));
    let first_secs = t.elapsed().as_secs_f64();
    let first_rev = first.status.as_ref().unwrap().stable_revision.clone();
    assert_eq!(
        rt.block_on(release_of(&client, &ns, STABLE_DEPLOYMENT))
            .as_deref(),
        Some("1"),
        "stable runs release 1's template"
    );
    assert_eq!(rt.block_on(replicas(&client, &ns, CANARY_DEPLOYMENT)).0, 0);
    let history_before = first.status.as_ref().unwrap().analysis_history.len();

    // Release 2: a new canary template, analysed again from step 0.
    let t = Instant::now();
    rt.block_on(set_release(&client, &ns, 2));
    let second = rt.block_on(canary_where(&api, 600, "release 2 promoted", |c| {
        promoted(c) && c.status.as_ref().unwrap().stable_revision != first_rev
    }));
    let second_secs = t.elapsed().as_secs_f64();
    assert!(rt
        .block_on(event_reasons(&client, &ns))
        .iter()
        .any(|r| r == reasons::NEW_REVISION));
    let steps: Vec<i32> = second.status.as_ref().unwrap().analysis_history[history_before..]
        .iter()
        .map(|r| r.step)
        .collect();
    assert!(
        steps.contains(&0) && steps.contains(&1),
        "release 2 analysed at step 0 and 1: {steps:?}"
    );
    assert_eq!(
        rt.block_on(release_of(&client, &ns, STABLE_DEPLOYMENT))
            .as_deref(),
        Some("2")
    );

    // A forced rollback of the promoted canary: consumed, nothing moves.
    let patch = json!({"metadata": {"annotations": {annotations::ROLLBACK: annotations::FORCE}}});
    rt.block_on(api.patch(CANARY, &PatchParams::default(), &Patch::Merge(&patch)))
        .unwrap();
    rt.block_on(canary_where(&api, 120, "the rollback consumed", |c| {
        !c.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(annotations::ROLLBACK))
    }));
    assert!(rt
        .block_on(event_reasons(&client, &ns))
        .iter()
        .any(|r| r == reasons::NOTHING_TO_ROLL_BACK));
    let after = rt.block_on(api.get(CANARY)).unwrap();
    assert!(promoted(&after), "{}", summary(&after));
    let (ok_at_rollback, _, _) = rt.block_on(traffic_so_far(&pods)).unwrap();
    let (ok, failed, done) = rt.block_on(eventually(
        "100 more requests after the rollback",
        120,
        || {
            let pods = pods.clone();
            async move {
                match traffic_so_far(&pods).await? {
                    seen if seen.0 >= ok_at_rollback + 100 => Ok(seen),
                    seen => Err(format!("{seen:?}")),
                }
            }
        },
    ));
    assert!(
        !done,
        "the traffic pod ran out before the end: the run was not covered"
    );
    let stable = rt.block_on(replicas(&client, &ns, STABLE_DEPLOYMENT));
    eprintln!(
        "release 1 promoted in {first_secs:.1}s, release 2 in {second_secs:.1}s; {ok} requests answered, {} failed; stable {stable:?} (replicas, ready)",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert_eq!(stable, (4, 4));
}
