//! The blue-green controller against a real kube-apiserver + etcd (`ci/kind/apiserver.sh
//! start`): a switch end to end, a switch refused by the health check (traffic never leaves
//! the old environment), a rollback, and a controller killed after recording each step of a
//! switch (every step: Verifying, SwitchingSelector, UpdatingPreview, RestoringSelector),
//! replaced by a new one that must finish the job; deletion through the finalizer.
//!
//! There are no nodes: the tests create the pods and write their Ready condition and pod IP
//! through the status subresource, as a kubelet would. Blue pods get IP 127.0.0.1 and green
//! pods 127.0.0.2, where two real HTTP servers answer the health probe for their
//! environment (healthy or 503, as the test says), so the controller's probe code runs for
//! real too.
//!
//! Run: `VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1) cargo test -p
//! veritas-controller --test bluegreen_apiserver -- --ignored`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use veritas_controller::analysis::Prometheus;
use veritas_controller::reconcile::{Context, FreezeHook};
use veritas_controller::telemetry::Metrics;
use veritas_crds::reasons;
use veritas_crds::{
    annotations, EnvironmentName, EnvironmentPhase, SwitchStep, VeritasEnvironment,
    ENVIRONMENT_SELECTOR_KEY, FINALIZER,
};
use veritas_vocab::labels;

mod common;
use common::{client, eventually, install_crds, unique};

/// The health endpoints of both environments: blue on 127.0.0.1, green on 127.0.0.2, one
/// port. Each answers `/health` 200 with the runtime's JSON (naming its model) while healthy,
/// 503 `status=critical` otherwise.
struct Health {
    port: u16,
    blue: Arc<AtomicBool>,
    green: Arc<AtomicBool>,
}

async fn serve_health(ip: &str, port: u16, healthy: Arc<AtomicBool>, version: &'static str) -> u16 {
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let healthy = healthy.clone();
            async move {
                let ok = healthy.load(Ordering::SeqCst);
                let body = json!({
                    "status": if ok { "healthy" } else { "critical" },
                    "model_state": if ok { "ready" } else { "failed" },
                    "model": {"name": "tiny", "version": version, "sha256": format!("{:0<64}", version.replace('.', ""))},
                });
                let code = if ok {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                };
                (code, axum::Json(body))
            }
        }),
    );
    let l = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    port
}

async fn health() -> Health {
    let blue = Arc::new(AtomicBool::new(true));
    let green = Arc::new(AtomicBool::new(true));
    let port = serve_health("127.0.0.1", 0, blue.clone(), "1.0.0").await;
    serve_health("127.0.0.2", port, green.clone(), "1.1.0").await;
    Health { port, blue, green }
}

fn ip(e: EnvironmentName) -> &'static str {
    match e {
        EnvironmentName::Blue => "127.0.0.1",
        EnvironmentName::Green => "127.0.0.2",
    }
}

/// The objects of `fixtures/manifests/bluegreen`, applied into `ns` (as the scenario harness
/// does), plus two ready pods per environment.
async fn setup(client: &Client, ns: &str, port: u16, env_spec: Value) -> Api<VeritasEnvironment> {
    let nsapi: Api<Namespace> = Api::all(client.clone());
    let nso: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    nsapi.create(&PostParams::default(), &nso).await.unwrap();
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/manifests/bluegreen");
    let pp = PatchParams::apply("veritas-test").force();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(d).unwrap();
            let name = v["metadata"]["name"].as_str().unwrap().to_string();
            match v["kind"].as_str().unwrap() {
                "Deployment" => {
                    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                    let d = api.patch(&name, &pp, &Patch::Apply(&v)).await.unwrap();
                    // No Deployment controller here: write the finished rollout it would.
                    let n = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let status = json!({"status": {"observedGeneration": d.metadata.generation, "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n}});
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await
                        .unwrap();
                }
                "Service" => {
                    let api: Api<Service> = Api::namespaced(client.clone(), ns);
                    api.patch(&name, &pp, &Patch::Apply(&v)).await.unwrap();
                }
                "ConfigMap" => {
                    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
                    api.patch(&name, &pp, &Patch::Apply(&v)).await.unwrap();
                }
                "VeritasEnvironment" => {
                    // The test's own spec (probe port, short deadlines) over the example's.
                    let mut v = v.clone();
                    for (k, x) in env_spec.as_object().unwrap() {
                        v["spec"][k] = x.clone();
                    }
                    v["spec"]["switch"]["healthCheck"]["port"] = json!(port);
                    let api: Api<VeritasEnvironment> = Api::namespaced(client.clone(), ns);
                    api.patch(&name, &pp, &Patch::Apply(&v)).await.unwrap();
                }
                k => panic!("unexpected kind {k} in fixtures/manifests/bluegreen"),
            }
        }
    }
    for e in EnvironmentName::BOTH {
        for i in 0..2 {
            ready_pod(client, ns, &format!("veritas-spark-{e}-{i}"), e, true).await;
        }
    }
    Api::namespaced(client.clone(), ns)
}

/// A pod of environment `e` with its IP and Ready condition written as a kubelet would.
async fn ready_pod(client: &Client, ns: &str, name: &str, e: EnvironmentName, ready: bool) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    if api.get_opt(name).await.unwrap().is_none() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {labels::APP: labels::APP_SPARK, labels::ENVIRONMENT: e.as_str()}},
            "spec": {"containers": [{"name": "spark", "image": "veritas.local/veritas-spark:dev"}]}
        }))
        .unwrap();
        api.create(&PostParams::default(), &pod).await.unwrap();
    }
    let status = json!({"status": {"phase": "Running", "podIP": ip(e), "podIPs": [{"ip": ip(e)}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

fn start(client: &Client, ns: &str, freeze: Option<FreezeHook>) -> tokio::task::JoinHandle<()> {
    let mut ctx = Context::new(
        client.clone(),
        Prometheus::direct("http://127.0.0.1:9", &Default::default()).unwrap(),
        Metrics::default(),
        Some("test".into()),
    );
    ctx.freeze_after_status = freeze;
    let ns = ns.to_string();
    tokio::spawn(async move {
        veritas_controller::bluegreen::reconcile::run(Arc::new(ctx), Some(ns)).await
    })
}

async fn selector_env(client: &Client, ns: &str, svc: &str) -> Option<String> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    api.get(svc)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.selector)
        .and_then(|s| s.get(ENVIRONMENT_SELECTOR_KEY).cloned())
}

async fn status_where(
    api: &Api<VeritasEnvironment>,
    secs: u64,
    what: &str,
    pred: impl Fn(&VeritasEnvironment) -> bool,
) -> VeritasEnvironment {
    eventually(what, secs, || {
        let api = api.clone();
        let pred = &pred;
        async move {
            let e = api.get("veritas-spark").await.map_err(|e| e.to_string())?;
            if pred(&e) {
                Ok(e)
            } else {
                Err(format!("{:?}", e.status))
            }
        }
    })
    .await
}

fn phase(e: &VeritasEnvironment) -> EnvironmentPhase {
    e.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn active(e: &VeritasEnvironment) -> Option<EnvironmentName> {
    e.status.as_ref().and_then(|s| s.active_environment)
}

fn step(e: &VeritasEnvironment) -> Option<SwitchStep> {
    e.status
        .as_ref()
        .and_then(|s| s.switch_progress.as_ref())
        .map(|p| p.step)
}

async fn request(api: &Api<VeritasEnvironment>, e: EnvironmentName, ann: Option<(&str, &str)>) {
    let mut patch = json!({"spec": {"activeEnvironment": e}});
    if let Some((k, v)) = ann {
        patch["metadata"] = json!({"annotations": {k: v}});
    }
    api.patch(
        "veritas-spark",
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .unwrap();
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

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn switch_blue_to_green_then_rollback() {
    let client = client().await;
    install_crds(&client).await;
    let h = health().await;
    let ns = &unique("bg-switch");
    let api = setup(
        &client,
        ns,
        h.port,
        json!({"minReadySeconds": 1, "switch": {"healthCheck": {"timeoutSeconds": 5}}}),
    )
    .await;
    let ctl = start(&client, ns, None);
    let e = status_where(&api, 30, "Stable on blue", |e| {
        phase(e) == EnvironmentPhase::Stable && active(e) == Some(EnvironmentName::Blue)
    })
    .await;
    // The pods' runtime reports its model: blue 1.0.0, green 1.1.0, which is drift.
    let st = e.status.unwrap();
    assert_eq!(st.environments.blue.models[0].version, "1.0.0");
    let e = status_where(&api, 30, "model drift", |e| {
        e.status
            .as_ref()
            .is_some_and(|s| s.drift.iter().any(|d| d.kind == "Model"))
    })
    .await;
    assert!(e.status.unwrap().drift[0].green.contains("tiny@1.1.0"));

    let t0 = Instant::now();
    request(&api, EnvironmentName::Green, None).await;
    let e = status_where(&api, 30, "Stable on green", |e| {
        phase(e) == EnvironmentPhase::Stable && active(e) == Some(EnvironmentName::Green)
    })
    .await;
    let took = t0.elapsed();
    let st = e.status.clone().unwrap();
    assert_eq!(st.previous_environment, Some(EnvironmentName::Blue));
    assert_eq!(st.reason.as_deref(), Some(reasons::SWITCH_COMPLETED));
    assert_eq!(st.last_switch.as_ref().unwrap().outcome, "Completed");
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("green")
    );
    assert_eq!(
        selector_env(&client, ns, "veritas-spark-preview")
            .await
            .as_deref(),
        Some("blue")
    );
    eprintln!(
        "switch blue -> green on a real API server: {:.1}s from the spec change to Stable (status says {}s)",
        took.as_secs_f64(),
        st.last_switch.unwrap().duration_seconds
    );
    let evs = event_reasons(&client, ns).await;
    for r in [reasons::SWITCH_STARTED, reasons::SWITCH_COMPLETED] {
        assert!(evs.iter().any(|e| e == r), "no {r} event in {evs:?}");
    }

    // rollback --bluegreen to a blue that fails its probe: E5002's case, traffic stays.
    h.blue.store(false, Ordering::SeqCst);
    request(
        &api,
        EnvironmentName::Blue,
        Some((annotations::ROLLBACK, annotations::TRUE)),
    )
    .await;
    let e = status_where(&api, 30, "RollbackFailed", |e| {
        phase(e) == EnvironmentPhase::RollbackFailed
    })
    .await;
    let st = e.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some(reasons::HEALTH_CHECK_FAILED));
    assert_eq!(st.active_environment, Some(EnvironmentName::Green));
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("green")
    );
    // rollback --bluegreen --force overrides the probe.
    api.patch(
        "veritas-spark",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {annotations::ROLLBACK: annotations::FORCE}}}),
        ),
    )
    .await
    .unwrap();
    let e = status_where(&api, 30, "force-rolled back to blue", |e| {
        phase(e) == EnvironmentPhase::Stable && active(e) == Some(EnvironmentName::Blue)
    })
    .await;
    assert!(e.status.unwrap().last_switch.unwrap().kind == veritas_crds::SwitchKind::Rollback);
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("blue")
    );
    h.blue.store(true, Ordering::SeqCst);

    // Switch to green again, then a plain rollback --bluegreen.
    request(&api, EnvironmentName::Green, None).await;
    status_where(&api, 30, "Stable on green again", |e| {
        phase(e) == EnvironmentPhase::Stable && active(e) == Some(EnvironmentName::Green)
    })
    .await;
    request(
        &api,
        EnvironmentName::Blue,
        Some((annotations::ROLLBACK, annotations::TRUE)),
    )
    .await;
    let e = status_where(&api, 30, "rolled back to blue", |e| {
        phase(e) == EnvironmentPhase::Stable && active(e) == Some(EnvironmentName::Blue)
    })
    .await;
    assert_eq!(
        e.status.as_ref().unwrap().reason.as_deref(),
        Some(reasons::ROLLED_BACK)
    );
    assert!(!e
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key(annotations::ROLLBACK));
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("blue")
    );
    ctl.abort();
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn failed_health_check_leaves_traffic_on_the_old_environment() {
    let client = client().await;
    install_crds(&client).await;
    let h = health().await;
    h.green.store(false, Ordering::SeqCst);
    let ns = &unique("bg-fail");
    let api = setup(
        &client,
        ns,
        h.port,
        json!({"switch": {"healthCheck": {"timeoutSeconds": 6, "probeTimeoutSeconds": 1}}}),
    )
    .await;
    let ctl = start(&client, ns, None);
    status_where(&api, 30, "Stable on blue", |e| {
        phase(e) == EnvironmentPhase::Stable
    })
    .await;
    request(&api, EnvironmentName::Green, None).await;
    // Until the switch fails, the active Service never leaves blue.
    let e = eventually("SwitchFailed", 40, || {
        let api = api.clone();
        let client = client.clone();
        async move {
            let sel = selector_env(&client, ns, "veritas-spark").await;
            assert_eq!(
                sel.as_deref(),
                Some("blue"),
                "traffic moved to an unhealthy target"
            );
            let e = api.get("veritas-spark").await.map_err(|e| e.to_string())?;
            if phase(&e) == EnvironmentPhase::SwitchFailed {
                Ok(e)
            } else {
                Err(format!("{:?}", e.status))
            }
        }
    })
    .await;
    let st = e.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some(reasons::HEALTH_CHECK_FAILED));
    assert_eq!(st.active_environment, Some(EnvironmentName::Blue));
    assert!(st.message.unwrap().contains("status=critical"));
    assert!(event_reasons(&client, ns)
        .await
        .iter()
        .any(|r| r == reasons::HEALTH_CHECK_FAILED));
    // Remedy: fix the target, retry.
    h.green.store(true, Ordering::SeqCst);
    api.patch(
        "veritas-spark",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {annotations::RETRY: "true"}}})),
    )
    .await
    .unwrap();
    status_where(&api, 30, "Stable on green after the retry", |e| {
        phase(e) == EnvironmentPhase::Stable && active(e) == Some(EnvironmentName::Green)
    })
    .await;
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("green")
    );
    ctl.abort();
}

/// Starts a controller frozen after it records `at`, waits for that record, kills it, and
/// returns the status it left.
async fn kill_at(
    client: &Client,
    ns: &str,
    api: &Api<VeritasEnvironment>,
    at: SwitchStep,
    then: impl std::future::Future<Output = ()>,
) -> VeritasEnvironment {
    let hook: FreezeHook = Arc::new(move |st: &veritas_crds::VeritasEnvironmentStatus| {
        st.switch_progress.as_ref().is_some_and(|p| p.step == at)
    });
    let ctl = start(client, ns, Some(hook));
    then.await;
    let e = status_where(api, 30, &format!("step {at} recorded"), |e| {
        step(e) == Some(at)
    })
    .await;
    ctl.abort();
    let _ = ctl.await;
    e
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn controller_killed_after_recording_each_step_resumes() {
    let client = client().await;
    install_crds(&client).await;
    let h = health().await;

    // Verifying (minReadySeconds makes the switch record it and wait there).
    let ns = &unique("bg-kill-verify");
    let api = setup(&client, ns, h.port, json!({"minReadySeconds": 2})).await;
    let ctl = start(&client, ns, None);
    status_where(&api, 30, "Stable", |e| phase(e) == EnvironmentPhase::Stable).await;
    ctl.abort();
    let _ = ctl.await;
    let e = kill_at(&client, ns, &api, SwitchStep::Verifying, async {
        request(&api, EnvironmentName::Green, None).await
    })
    .await;
    assert_eq!(phase(&e), EnvironmentPhase::Switching);
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("blue")
    );
    let ctl = start(&client, ns, None);
    status_where(&api, 30, "resumed to green", |e| {
        phase(e) == EnvironmentPhase::Stable && active(e) == Some(EnvironmentName::Green)
    })
    .await;
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("green")
    );
    ctl.abort();

    // SwitchingSelector: recorded, killed before the selector write.
    let ns = &unique("bg-kill-select");
    let api = setup(&client, ns, h.port, json!({"minReadySeconds": 0})).await;
    let ctl = start(&client, ns, None);
    status_where(&api, 30, "Stable", |e| phase(e) == EnvironmentPhase::Stable).await;
    ctl.abort();
    let _ = ctl.await;
    let e = kill_at(&client, ns, &api, SwitchStep::SwitchingSelector, async {
        request(&api, EnvironmentName::Green, None).await
    })
    .await;
    assert_eq!(phase(&e), EnvironmentPhase::Switching);
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("blue"),
        "the frozen controller never wrote the selector"
    );
    let ctl = start(&client, ns, None);
    let e = status_where(&api, 30, "resumed to green", |e| {
        phase(e) == EnvironmentPhase::Stable && active(e) == Some(EnvironmentName::Green)
    })
    .await;
    assert_eq!(
        e.status.unwrap().previous_environment,
        Some(EnvironmentName::Blue)
    );
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("green")
    );
    ctl.abort();

    // UpdatingPreview: traffic on green, killed before the preview write.
    let ns = &unique("bg-kill-preview");
    let api = setup(&client, ns, h.port, json!({"minReadySeconds": 0})).await;
    let ctl = start(&client, ns, None);
    status_where(&api, 30, "Stable", |e| phase(e) == EnvironmentPhase::Stable).await;
    ctl.abort();
    let _ = ctl.await;
    kill_at(&client, ns, &api, SwitchStep::UpdatingPreview, async {
        request(&api, EnvironmentName::Green, None).await
    })
    .await;
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("green")
    );
    assert_eq!(
        selector_env(&client, ns, "veritas-spark-preview")
            .await
            .as_deref(),
        Some("green"),
        "the frozen controller never wrote the preview selector"
    );

    // RestoringSelector: the switch is called off after traffic moved (spec back to blue);
    // a controller records the restore and is killed before writing the selector back.
    let e = kill_at(&client, ns, &api, SwitchStep::RestoringSelector, async {
        request(&api, EnvironmentName::Blue, None).await
    })
    .await;
    assert_eq!(phase(&e), EnvironmentPhase::RollingBack);
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("green")
    );
    let ctl = start(&client, ns, None);
    let e = status_where(&api, 30, "traffic back on blue", |e| {
        phase(e) == EnvironmentPhase::Stable && active(e) == Some(EnvironmentName::Blue)
    })
    .await;
    assert_eq!(
        e.status.unwrap().reason.as_deref(),
        Some(reasons::SWITCH_ABORTED)
    );
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("blue")
    );
    assert_eq!(
        selector_env(&client, ns, "veritas-spark-preview")
            .await
            .as_deref(),
        Some("green")
    );
    ctl.abort();
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn target_without_ready_pods_is_never_selected_and_standby_is_reported() {
    let client = client().await;
    install_crds(&client).await;
    let h = health().await;
    let ns = &unique("bg-unready");
    let api = setup(
        &client,
        ns,
        h.port,
        json!({"switch": {"healthCheck": {"timeoutSeconds": 4}}}),
    )
    .await;
    for i in 0..2 {
        ready_pod(
            &client,
            ns,
            &format!("veritas-spark-green-{i}"),
            EnvironmentName::Green,
            false,
        )
        .await;
    }
    let ctl = start(&client, ns, None);
    let e = status_where(&api, 30, "StandbyHealthy=False", |e| {
        e.status.as_ref().is_some_and(|s| {
            veritas_crds::find_condition(&s.conditions, "StandbyHealthy")
                .is_some_and(|c| c.reason == reasons::STANDBY_UNHEALTHY)
        })
    })
    .await;
    assert_eq!(e.status.unwrap().environments.green.ready, 0);
    request(&api, EnvironmentName::Green, None).await;
    let e = status_where(&api, 30, "SwitchFailed TargetUnhealthy", |e| {
        phase(e) == EnvironmentPhase::SwitchFailed
    })
    .await;
    assert_eq!(
        e.status.unwrap().reason.as_deref(),
        Some(reasons::TARGET_UNHEALTHY)
    );
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("blue")
    );
    ctl.abort();
}

async fn deleted(api: &Api<VeritasEnvironment>) {
    eventually("the VeritasEnvironment gone", 30, || {
        let api = api.clone();
        async move {
            match api.get_opt("veritas-spark").await {
                Ok(None) => Ok(()),
                Ok(Some(e)) => Err(format!(
                    "still there: finalizers {:?}, deletionTimestamp {:?}",
                    e.metadata.finalizers, e.metadata.deletion_timestamp
                )),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn finalizer_leaves_traffic_where_the_record_says_on_delete() {
    let client = client().await;
    install_crds(&client).await;
    let h = health().await;

    // A stable environment carries the finalizer; deleting it leaves the Service on blue and
    // says so in an Event.
    let ns = &unique("bg-final-stable");
    let api = setup(&client, ns, h.port, json!({"minReadySeconds": 0})).await;
    let ctl = start(&client, ns, None);
    status_where(&api, 30, "Stable with the finalizer", |e| {
        phase(e) == EnvironmentPhase::Stable
            && e.metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
    })
    .await;
    api.delete("veritas-spark", &DeleteParams::default())
        .await
        .unwrap();
    deleted(&api).await;
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("blue")
    );
    assert!(
        event_reasons(&client, ns)
            .await
            .iter()
            .any(|r| r == reasons::ENVIRONMENT_DELETED),
        "no {} Event",
        reasons::ENVIRONMENT_DELETED
    );
    ctl.abort();

    // Deleted while its record says the selector moves to a verified green, with nothing done
    // yet (the controller that recorded the step was killed): the deletion waits for a
    // controller, whose cleanup settles the move as a restarted controller would.
    let ns = &unique("bg-final-moving");
    let api = setup(&client, ns, h.port, json!({"minReadySeconds": 0})).await;
    let ctl = start(&client, ns, None);
    status_where(&api, 30, "Stable", |e| phase(e) == EnvironmentPhase::Stable).await;
    ctl.abort();
    let _ = ctl.await;
    kill_at(&client, ns, &api, SwitchStep::SwitchingSelector, async {
        request(&api, EnvironmentName::Green, None).await
    })
    .await;
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("blue")
    );
    api.delete("veritas-spark", &DeleteParams::default())
        .await
        .unwrap();
    let held = api.get("veritas-spark").await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "the finalizer holds the resource until a controller has cleaned up"
    );
    let ctl = start(&client, ns, None);
    deleted(&api).await;
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("green"),
        "the recorded move to the verified target was settled"
    );
    ctl.abort();

    // Deleted while the record says traffic is being restored to blue (the switch was called
    // off after the selector moved): the cleanup finishes the restore.
    let ns = &unique("bg-final-restore");
    let api = setup(&client, ns, h.port, json!({"minReadySeconds": 0})).await;
    let ctl = start(&client, ns, None);
    status_where(&api, 30, "Stable", |e| phase(e) == EnvironmentPhase::Stable).await;
    ctl.abort();
    let _ = ctl.await;
    kill_at(&client, ns, &api, SwitchStep::UpdatingPreview, async {
        request(&api, EnvironmentName::Green, None).await
    })
    .await;
    kill_at(&client, ns, &api, SwitchStep::RestoringSelector, async {
        request(&api, EnvironmentName::Blue, None).await
    })
    .await;
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("green")
    );
    api.delete("veritas-spark", &DeleteParams::default())
        .await
        .unwrap();
    let ctl = start(&client, ns, None);
    deleted(&api).await;
    assert_eq!(
        selector_env(&client, ns, "veritas-spark").await.as_deref(),
        Some("blue"),
        "the recorded restore was finished"
    );
    ctl.abort();
}
