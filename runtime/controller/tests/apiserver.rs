//! The controller against a real kube-apiserver + etcd (`ci/kind/apiserver.sh start`, the
//! same binaries as the kind node): CRD install, schema validation, status written by
//! server-side apply (and not rewritten when nothing changed), the owned selector key at
//! weight 0, annotations consumed, the finalizer, leader election with two candidates.
//!
//! There are no nodes: no kubelet runs pods and no controller-manager fills Deployment status.
//! Where a test needs ready pods it creates Pod objects and writes their Ready condition
//! through the status subresource, as a kubelet would; everything else is the real API.
//!
//! Run: `VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1) cargo test -p
//! veritas-controller --test apiserver -- --ignored`

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use veritas_controller::analysis::Prometheus;
use veritas_controller::leader::{Attempt, LeaderElector};
use veritas_controller::reconcile::{crd_installed, run, write_status, Context, StatusWrite};
use veritas_controller::telemetry::Metrics;
use veritas_crds::reasons::{self, types};
use veritas_crds::{
    annotations, find_condition, Phase, VeritasCanary, VeritasCanaryStatus, FINALIZER,
    OWNED_SELECTOR_KEY,
};
use veritas_vocab::labels;

mod common;
use common::{client, eventually, install_crd_file, install_crds, unique};

async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    let _ = api.create(&PostParams::default(), &ns).await;
}

fn deployment(track: &str, replicas: i32) -> Value {
    let sel = json!({labels::APP: labels::APP_SPARK, labels::DEPLOYMENT: track});
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("veritas-spark-{track}"), "labels": sel},
        "spec": {"replicas": replicas, "selector": {"matchLabels": sel},
                 "template": {"metadata": {"labels": sel}, "spec": {"containers": [{"name": "spark", "image": "veritas.local/veritas-spark:dev"}]}}}
    })
}

fn service(name: &str, selector: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"selector": selector, "ports": [{"name": "http", "port": 8080}]}})
}

/// The runtime's objects as the manifests define them (Deployments, Services).
async fn runtime_objects(client: &Client, ns: &str, stable: i32, canary: i32) {
    let pp = PatchParams::apply("veritas-test").force();
    let d: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for (t, r) in [
        (labels::DEPLOYMENT_STABLE, stable),
        (labels::DEPLOYMENT_CANARY, canary),
    ] {
        d.patch(
            &format!("veritas-spark-{t}"),
            &pp,
            &Patch::Apply(deployment(t, r)),
        )
        .await
        .unwrap();
    }
    let s: Api<Service> = Api::namespaced(client.clone(), ns);
    s.patch(
        labels::SERVICE_SPARK,
        &pp,
        &Patch::Apply(service(
            labels::SERVICE_SPARK,
            json!({labels::APP: labels::APP_SPARK}),
        )),
    )
    .await
    .unwrap();
    s.patch(
        labels::SERVICE_CANARY,
        &pp,
        &Patch::Apply(service(
            labels::SERVICE_CANARY,
            json!({labels::APP: labels::APP_SPARK, labels::DEPLOYMENT: labels::DEPLOYMENT_CANARY}),
        )),
    )
    .await
    .unwrap();
    s.patch(
        "veritas-spark-stable",
        &pp,
        &Patch::Apply(service(
            "veritas-spark-stable",
            json!({labels::APP: labels::APP_SPARK, labels::DEPLOYMENT: labels::DEPLOYMENT_STABLE}),
        )),
    )
    .await
    .unwrap();
}

/// A Pod with its Ready condition written through the status subresource (what a kubelet does).
async fn ready_pod(client: &Client, ns: &str, name: &str, track: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {labels::APP: labels::APP_SPARK, labels::DEPLOYMENT: track}},
        "spec": {"containers": [{"name": "spark", "image": "veritas.local/veritas-spark:dev"}]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

fn canary_obj(name: &str, spec: Value) -> VeritasCanary {
    serde_json::from_value(json!({"apiVersion": "veritas.hearthlink.ai/v1alpha1", "kind": "VeritasCanary", "metadata": {"name": name}, "spec": spec})).unwrap()
}

/// The runtime's objects with ready pods behind the shared Service (3 stable, 1 canary: 25 % of
/// 4) and a canary at 25 % whose analyses never decide (Prometheus unreachable, high limits).
async fn canary_at_25_percent(client: &Client, ns: &str) -> Api<VeritasCanary> {
    runtime_objects(client, ns, 4, 1).await;
    for i in 0..3 {
        ready_pod(
            client,
            ns,
            &format!("stable-{i}"),
            labels::DEPLOYMENT_STABLE,
        )
        .await;
    }
    ready_pod(client, ns, "canary-0", labels::DEPLOYMENT_CANARY).await;
    let api: Api<VeritasCanary> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &canary_obj(
            "spark",
            json!({"trafficWeight": 25, "analysis": {"intervalSeconds": 1, "windowSeconds": 10, "failureLimit": 100, "errorLimit": 100}}),
        ),
    )
    .await
    .unwrap();
    api
}

/// Waits until the stable Deployment's `spec.replicas` is `n`.
async fn stable_replicas_become(client: &Client, ns: &str, n: i32) {
    let d: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually(&format!("stable scaled to {n}"), 30, || {
        let d = d.clone();
        async move {
            let r = d
                .get("veritas-spark-stable")
                .await
                .map_err(|e| e.to_string())?
                .spec
                .and_then(|s| s.replicas);
            (r == Some(n)).then_some(()).ok_or(format!("{r:?}"))
        }
    })
    .await;
}

async fn start_controller(client: &Client, ns: &str) -> tokio::task::JoinHandle<()> {
    // Nothing listens there: every analysis is `PrometheusUnreachable`, never a pass.
    let prom = Prometheus::direct("http://127.0.0.1:9", &Default::default()).unwrap();
    let ctx = Arc::new(Context::new(
        client.clone(),
        prom,
        Metrics::default(),
        Some("test".into()),
    ));
    let ns = ns.to_string();
    tokio::spawn(async move { run(ctx, Some(ns)).await })
}

async fn status_where(
    api: &Api<VeritasCanary>,
    name: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&VeritasCanary) -> bool,
) -> VeritasCanary {
    eventually(what, secs, || {
        let api = api.clone();
        let name = name.to_string();
        let pred = &pred;
        async move {
            let c = api.get(&name).await.map_err(|e| e.to_string())?;
            if pred(&c) {
                Ok(c)
            } else {
                Err(format!("{:?}", c.status))
            }
        }
    })
    .await
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn crd_install_and_schema_validation() {
    let client = client().await;
    install_crds(&client).await;
    assert!(crd_installed(&client).await.unwrap());
    let ns = unique("schema");
    namespace(&client, &ns).await;
    let api: Api<VeritasCanary> = Api::namespaced(client.clone(), &ns);
    let raw = |spec: Value| -> Value {
        json!({"apiVersion": "veritas.hearthlink.ai/v1alpha1", "kind": "VeritasCanary", "metadata": {"name": "bad"}, "spec": spec})
    };
    for (spec, want) in [
        (json!({"trafficWeight": 150}), "spec.trafficWeight"),
        (json!({"trafficWeight": "ten"}), "spec.trafficWeight"),
        (
            json!({"trafficWeight": 10, "promotion": {"successLimit": 0}}),
            "spec.promotion.successLimit",
        ),
        (
            json!({"trafficWeight": 10, "analysis": {"errorRateThreshold": 2.0}}),
            "spec.analysis.errorRateThreshold",
        ),
    ] {
        let err = api
            .create(
                &PostParams::default(),
                &serde_json::from_value(raw(spec.clone()))
                    .unwrap_or_else(|_| canary_obj("bad", json!({"trafficWeight": 0}))),
            )
            .await;
        // A wrong type cannot even be built as the Rust type: send the raw JSON instead.
        let err = match err {
            Err(e) => e,
            Ok(_) => {
                api.delete("bad", &Default::default()).await.unwrap();
                let req = http::Request::post(format!(
                    "/apis/veritas.hearthlink.ai/v1alpha1/namespaces/{ns}/veritascanaries"
                ))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&raw(spec.clone())).unwrap())
                .unwrap();
                client
                    .request_text(req)
                    .await
                    .expect_err("invalid spec accepted")
            }
        };
        let kube::Error::Api(s) = &err else {
            panic!("{spec}: unexpected error {err}")
        };
        assert_eq!(s.code, 422, "{spec}: {s:?}");
        assert!(s.message.contains(want), "{spec}: {}", s.message);
    }
    // Defaults are applied by the API server from the schema.
    let c = api
        .create(
            &PostParams::default(),
            &canary_obj("good", json!({"trafficWeight": 10})),
        )
        .await
        .unwrap();
    assert_eq!(c.spec.promotion.success_limit, 3);
    assert_eq!(c.spec.shared_service, labels::SERVICE_SPARK);
}

/// A pass that decided on a copy older than the object (the watch lags our own writes) must
/// not put its status back over a newer one: a `retry` restart once went back to `Failed` so.
#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn status_written_from_a_stale_read_is_refused() {
    let client = client().await;
    install_crds(&client).await;
    let ns = unique("stale");
    namespace(&client, &ns).await;
    let api: Api<VeritasCanary> = Api::namespaced(client.clone(), &ns);
    let read = api
        .create(
            &PostParams::default(),
            &canary_obj("c", json!({"trafficWeight": 10})),
        )
        .await
        .unwrap();
    let failed = VeritasCanaryStatus {
        phase: Phase::Failed,
        ..Default::default()
    };
    assert_eq!(
        write_status(&api, &read, &failed).await.unwrap(),
        StatusWrite::Written
    );
    // The object moved on (a newer pass restarted it); `read` is now the stale copy.
    let fresh = api.get("c").await.unwrap();
    let progressing = VeritasCanaryStatus {
        phase: Phase::Progressing,
        ..Default::default()
    };
    assert_eq!(
        write_status(&api, &fresh, &progressing).await.unwrap(),
        StatusWrite::Written
    );
    assert_eq!(
        write_status(&api, &read, &failed).await.unwrap(),
        StatusWrite::Stale
    );
    assert_eq!(
        write_status(&api, &fresh, &failed).await.unwrap(),
        StatusWrite::Stale
    );
    let now = api.get("c").await.unwrap();
    assert_eq!(now.status.as_ref().unwrap().phase, Phase::Progressing);
    // A write over the current version still lands.
    assert_eq!(
        write_status(&api, &now, &failed).await.unwrap(),
        StatusWrite::Written
    );
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn weight_zero_status_finalizer_and_rollback_annotation() {
    let client = client().await;
    install_crds(&client).await;
    let ns = &unique("weight-zero");
    namespace(&client, ns).await;
    runtime_objects(&client, ns, 4, 1).await;
    let api: Api<VeritasCanary> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &canary_obj("spark", json!({"trafficWeight": 0})),
    )
    .await
    .unwrap();
    let ctl = start_controller(&client, ns).await;

    let c = status_where(&api, "spark", 30, "ZeroWeight status", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.reason.as_deref() == Some(reasons::ZERO_WEIGHT))
    })
    .await;
    let st = c.status.clone().unwrap();
    assert_eq!(st.phase, Phase::Progressing);
    assert_eq!(st.observed_generation, c.metadata.generation);
    assert!(c
        .metadata
        .finalizers
        .clone()
        .unwrap_or_default()
        .contains(&FINALIZER.to_string()));
    assert_eq!(
        find_condition(&st.conditions, types::METRICS_AVAILABLE)
            .unwrap()
            .reason,
        reasons::SERVICE_MONITOR_MISSING
    );
    // The controller owns one key of the shared Service's selector: canary out at weight 0.
    let svc: Api<Service> = Api::namespaced(client.clone(), ns);
    eventually("selector deployment=stable", 30, || {
        let svc = svc.clone();
        async move {
            let s = svc
                .get(labels::SERVICE_SPARK)
                .await
                .map_err(|e| e.to_string())?;
            let sel = s.spec.and_then(|s| s.selector).unwrap_or_default();
            if sel.get(OWNED_SELECTOR_KEY).map(String::as_str) == Some(labels::DEPLOYMENT_STABLE)
                && sel.get(labels::APP).map(String::as_str) == Some(labels::APP_SPARK)
            {
                Ok(())
            } else {
                Err(format!("{sel:?}"))
            }
        }
    })
    .await;
    // Status is not rewritten when nothing changed: its resourceVersion holds across passes.
    let rv = api.get("spark").await.unwrap().metadata.resource_version;
    let svc_nudge = json!({"metadata": {"annotations": {"nudge": "1"}}});
    svc.patch(
        labels::SERVICE_SPARK,
        &PatchParams::default(),
        &Patch::Merge(&svc_nudge),
    )
    .await
    .unwrap(); // wakes the canary
    let d: Api<Deployment> = Api::namespaced(client.clone(), ns);
    d.patch(
        "veritas-spark-canary",
        &PatchParams::default(),
        &Patch::Merge(&svc_nudge),
    )
    .await
    .unwrap();
    // Two real passes happened once the canary's Deployment event was handled; give them a
    // bounded window to (wrongly) write.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(
            api.get("spark").await.unwrap().metadata.resource_version,
            rv,
            "status rewritten without a change"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Rollback by annotation (what `veritas-spark rollback --canary` sets): consumed, Failed.
    api.patch(
        "spark",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {annotations::ROLLBACK: "true"}}})),
    )
    .await
    .unwrap();
    // No stable pod is ready (no kubelet here): the rollback waits and says so rather than
    // report a rollback that routes to nothing.
    status_where(
        &api,
        "spark",
        30,
        "rolling back, waiting for stable pods",
        |c| {
            c.status.as_ref().is_some_and(|s| {
                s.phase == Phase::RollingBack
                    && find_condition(&s.conditions, types::TRAFFIC_ROUTED)
                        .is_some_and(|t| t.reason == reasons::WAITING_FOR_PODS)
            })
        },
    )
    .await;
    ready_pod(&client, ns, "stable-0", labels::DEPLOYMENT_STABLE).await;
    // The status is on record first, then the annotation is consumed.
    let c = status_where(&api, "spark", 30, "rolled back, annotation consumed", |c| {
        c.status.as_ref().is_some_and(|s| s.phase == Phase::Failed)
            && !c
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(annotations::ROLLBACK))
    })
    .await;
    assert_eq!(
        c.status.unwrap().reason.as_deref(),
        Some(reasons::ROLLBACK_REQUESTED)
    );

    // Deletion goes through the finalizer (cleanup ran, object gone).
    api.delete("spark", &Default::default()).await.unwrap();
    eventually("canary deleted", 30, || {
        let api = api.clone();
        async move {
            if api
                .get_opt("spark")
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                Ok(())
            } else {
                Err("still there".into())
            }
        }
    })
    .await;
    ctl.abort();
}

/// Canned Prometheus answers (a healthy canary: 500 requests, no errors, p99 50 ms) on a
/// loopback port: the API server is real, the metrics are fixed so that analyses pass.
async fn healthy_prometheus() -> String {
    use axum::extract::Query;
    use std::collections::HashMap;
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::get(|Query(q): Query<HashMap<String, String>>| async move {
            let query = q.get("query").cloned().unwrap_or_default();
            let v = if query.starts_with("sum(increase(") {
                "500"
            } else if query.starts_with("histogram_quantile") {
                "0.05"
            } else {
                "0"
            };
            axum::Json(json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, v]}]}}))
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

async fn start_controller_with(
    client: &Client,
    ns: &str,
    prom: Prometheus,
) -> tokio::task::JoinHandle<()> {
    let ctx = Arc::new(Context::new(
        client.clone(),
        prom,
        Metrics::default(),
        Some("test".into()),
    ));
    let ns = ns.to_string();
    tokio::spawn(async move { run(ctx, Some(ns)).await })
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn replica_ratio_scaling_unreachable_prometheus_and_restart_resumes() {
    let client = client().await;
    install_crds(&client).await;
    let ns = &unique("replicas");
    namespace(&client, ns).await;
    let api = canary_at_25_percent(&client, ns).await;
    let ctl = start_controller(&client, ns).await;

    // The controller scales stable to 3 (scale subresource) and the weight is realised.
    stable_replicas_become(&client, ns, 3).await;
    status_where(&api, "spark", 30, "weight realised", |c| {
        c.status.as_ref().is_some_and(|s| {
            s.actual_weight == 25
                && find_condition(&s.conditions, types::TRAFFIC_ROUTED).is_some_and(|c| c.is_true())
        })
    })
    .await;
    // Prometheus is unreachable: analyses are inconclusive with their own reason, never pass
    // and never count as failures.
    let c = status_where(&api, "spark", 30, "two analyses", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.inconclusive_analyses >= 2)
    })
    .await;
    let st = c.status.unwrap();
    assert!(st
        .analysis_history
        .iter()
        .all(|r| r.reason == reasons::PROMETHEUS_UNREACHABLE
            && r.verdict == veritas_crds::Verdict::Inconclusive));
    assert_eq!((st.consecutive_successes, st.failed_analyses), (0, 0));
    // A controller restarted mid-promotion resumes from the status: the count goes on.
    ctl.abort();
    let before = api
        .get("spark")
        .await
        .unwrap()
        .status
        .unwrap()
        .inconclusive_analyses;
    let ctl = start_controller(&client, ns).await;
    let c = status_where(&api, "spark", 30, "counting on after restart", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.inconclusive_analyses > before)
    })
    .await;
    assert_eq!(c.status.unwrap().current_step, 0);
    ctl.abort();
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn manual_approval_by_annotation() {
    let client = client().await;
    install_crds(&client).await;
    let ns = &unique("approval");
    namespace(&client, ns).await;
    runtime_objects(&client, ns, 4, 1).await;
    for i in 0..3 {
        ready_pod(
            &client,
            ns,
            &format!("stable-{i}"),
            labels::DEPLOYMENT_STABLE,
        )
        .await;
    }
    ready_pod(&client, ns, "canary-0", labels::DEPLOYMENT_CANARY).await;
    let api: Api<VeritasCanary> = Api::namespaced(client.clone(), ns);
    let spec = json!({"trafficWeight": 25, "promotion": {"manualApproval": true, "successLimit": 2, "steps": [{"weight": 50}]}, "analysis": {"intervalSeconds": 1, "windowSeconds": 10}});
    api.create(&PostParams::default(), &canary_obj("spark", spec))
        .await
        .unwrap();
    let ctl = start_controller_with(
        &client,
        ns,
        Prometheus::direct(&healthy_prometheus().await, &Default::default()).unwrap(),
    )
    .await;

    let c = status_where(&api, "spark", 60, "WaitingForApproval", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::WaitingForApproval)
    })
    .await;
    let st = c.status.unwrap();
    assert_eq!((st.current_step, st.consecutive_successes), (0, 2));
    assert!(st.message.unwrap().contains("waiting for manual approval"));
    api.patch(
        "spark",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {annotations::APPROVE: "true"}}})),
    )
    .await
    .unwrap();
    let c = status_where(&api, "spark", 30, "step 1, approval consumed", |c| {
        c.status.as_ref().is_some_and(|s| s.current_step == 1)
            && !c
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(annotations::APPROVE))
    })
    .await;
    assert_eq!(c.status.unwrap().desired_weight, 50);
    // 50 % of 4: the canary Deployment is scaled to 2 through the scale subresource.
    let d: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually("canary scaled to 2", 30, || {
        let d = d.clone();
        async move {
            let r = d
                .get("veritas-spark-canary")
                .await
                .map_err(|e| e.to_string())?
                .spec
                .and_then(|s| s.replicas);
            if r == Some(2) {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        }
    })
    .await;
    ctl.abort();
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn leader_election_two_candidates_never_both_lead() {
    let client = client().await;
    let ns = unique("leader");
    namespace(&client, &ns).await;
    let a = LeaderElector::new(
        client.clone(),
        &ns,
        "veritas-controller",
        "a",
        Duration::from_secs(15),
    );
    let b = LeaderElector::new(
        client.clone(),
        &ns,
        "veritas-controller",
        "b",
        Duration::from_secs(15),
    );
    // Both race for a fresh Lease: exactly one wins.
    let (ra, rb) = tokio::join!(a.try_acquire(), b.try_acquire());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(
        (ra == Attempt::Acquired) ^ (rb == Attempt::Acquired),
        "{ra:?} {rb:?}"
    );
    let (leader, standby) = if ra == Attempt::Acquired {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(
        leader.try_acquire().await.unwrap(),
        Attempt::Acquired,
        "renewal"
    );
    assert_eq!(
        standby.try_acquire().await.unwrap(),
        Attempt::HeldBy(leader.identity().to_string())
    );
    // Released on shutdown: the standby takes over at once.
    leader.release().await.unwrap();
    assert_eq!(standby.try_acquire().await.unwrap(), Attempt::Acquired);
    assert_eq!(
        leader.try_acquire().await.unwrap(),
        Attempt::HeldBy(standby.identity().to_string())
    );
}

/// The Gateway API's own HTTPRoute CRD (its schema, CEL rules and list types), from the
/// `sigs.k8s.io/gateway-api` Go module: `ci/kind/gateway-api-crds.sh` prints the directory.
async fn install_http_route_crd(client: &Client) {
    let dir = std::env::var("VERITAS_GATEWAY_API_CRDS")
        .expect("VERITAS_GATEWAY_API_CRDS=$(ci/kind/gateway-api-crds.sh)");
    let path = std::path::Path::new(&dir).join("gateway.networking.k8s.io_httproutes.yaml");
    install_crd_file(client, &path).await;
}

/// Reads `(stable, canary)` weights of the route's second rule (the one splitting the tracks).
async fn split_weights(api: &Api<DynamicObject>) -> Result<(Value, Value), String> {
    let r = serde_json::to_value(api.get("veritas-spark").await.map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let refs = &r["spec"]["rules"][1]["backendRefs"];
    Ok((refs[0]["weight"].clone(), refs[1]["weight"].clone()))
}

/// The canary's pod is ready (the Deployment status a controller-manager would write).
async fn canary_pod_ready(client: &Client, ns: &str) {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch_status(
            "veritas-spark-canary",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}}),
            ),
        )
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1) VERITAS_GATEWAY_API_CRDS=$(ci/kind/gateway-api-crds.sh)"]
async fn gateway_api_route_weights_leave_the_rest_of_the_users_route_alone() {
    let client = client().await;
    install_crds(&client).await;
    install_http_route_crd(&client).await;
    let ns = &unique("gateway");
    namespace(&client, ns).await;
    runtime_objects(&client, ns, 2, 1).await;
    canary_pod_ready(&client, ns).await;

    // The user's route: parents, hosts, a rule of their own, matches and a filter.
    let routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &veritas_controller::observe::http_route_resource(),
    );
    let users = veritas_controller::sim::users_http_route(&veritas_controller::sim::spec(0));
    routes
        .create(
            &PostParams::default(),
            &serde_json::from_value(users).unwrap(),
        )
        .await
        .unwrap();
    let before = serde_json::to_value(routes.get("veritas-spark").await.unwrap()).unwrap();

    let api: Api<VeritasCanary> = Api::namespaced(client.clone(), ns);
    let spec = |route: &str, weight: i32| {
        json!({"trafficWeight": weight, "promotion": {"auto": false},
               "routing": {"gatewayAPI": {"httpRoute": route}},
               "analysis": {"intervalSeconds": 60, "windowSeconds": 60}})
    };
    api.create(
        &PostParams::default(),
        &canary_obj("spark", spec("veritas-spark", 30)),
    )
    .await
    .unwrap();
    // A canary whose route nobody created, over Deployments of its own (in a namespace of its
    // own: a second canary over spark's Deployments would be a conflict, and stand aside).
    let ghost_ns = &unique("gateway-ghost");
    namespace(&client, ghost_ns).await;
    runtime_objects(&client, ghost_ns, 2, 1).await;
    canary_pod_ready(&client, ghost_ns).await;
    let ghosts: Api<VeritasCanary> = Api::namespaced(client.clone(), ghost_ns);
    ghosts
        .create(
            &PostParams::default(),
            &canary_obj("ghost", spec("no-such-route", 30)),
        )
        .await
        .unwrap();
    let ctl = start_controller(&client, ns).await;
    let ghost_ctl = start_controller(&client, ghost_ns).await;

    eventually("the split rule at 70/30", 60, || async {
        match split_weights(&routes).await? {
            (s, c) if s == 70 && c == 30 => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    // Only the two weights changed: parents, hosts, the other rule, matches, filters stay.
    let after = serde_json::to_value(routes.get("veritas-spark").await.unwrap()).unwrap();
    let mut expected = before["spec"].clone();
    expected["rules"][1]["backendRefs"][0]["weight"] = 70.into();
    expected["rules"][1]["backendRefs"][1]["weight"] = 30.into();
    assert_eq!(after["spec"], expected);
    status_where(&api, "spark", 30, "TrafficRouted=True", |c| {
        c.status.as_ref().is_some_and(|s| {
            find_condition(&s.conditions, types::TRAFFIC_ROUTED)
                .is_some_and(|t| t.is_true() && t.reason == reasons::WEIGHT_REALISED)
        })
    })
    .await;

    // The user edits their route; the next weight change keeps the edit.
    routes
        .patch(
            "veritas-spark",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hostnames": ["spark.example.com", "spark.internal"]}})),
        )
        .await
        .unwrap();
    api.patch(
        "spark",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"trafficWeight": 40}})),
    )
    .await
    .unwrap();
    eventually("the split rule at 60/40", 60, || async {
        match split_weights(&routes).await? {
            (s, c) if s == 60 && c == 40 => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    let after = serde_json::to_value(routes.get("veritas-spark").await.unwrap()).unwrap();
    assert_eq!(
        after["spec"]["hostnames"],
        json!(["spark.example.com", "spark.internal"])
    );
    assert_eq!(after["spec"]["rules"][0], before["spec"]["rules"][0]);
    assert_eq!(after["spec"]["parentRefs"], before["spec"]["parentRefs"]);

    // The missing route is reported, never created.
    let c = status_where(&ghosts, "ghost", 30, "RouteMisconfigured", |c| {
        c.status.as_ref().is_some_and(|s| {
            find_condition(&s.conditions, types::TRAFFIC_ROUTED)
                .is_some_and(|t| t.reason == reasons::ROUTE_MISCONFIGURED)
        })
    })
    .await;
    let msg = find_condition(&c.status.unwrap().conditions, types::TRAFFIC_ROUTED)
        .unwrap()
        .message
        .clone();
    assert!(msg.contains("HTTPRoute no-such-route not found"), "{msg}");
    let ghost_routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ghost_ns,
        &veritas_controller::observe::http_route_resource(),
    );
    assert!(ghost_routes
        .get_opt("no-such-route")
        .await
        .unwrap()
        .is_none());
    ctl.abort();
    ghost_ctl.abort();
}

/// A ValidatingAdmissionPolicy (CEL, in the API server itself: the change freeze an admission
/// webhook or policy engine enforces in real clusters) refusing every scale in one namespace.
async fn freeze_scaling(client: &Client, ns: &str) -> (String, String) {
    let policy = format!("{ns}-scale-freeze");
    let vap = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
        ),
        "validatingadmissionpolicies",
    );
    let binding = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
        ),
        "validatingadmissionpolicybindings",
    );
    let pp = PatchParams::apply("veritas-test").force();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &vap);
    api.patch(&policy, &pp, &Patch::Apply(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["deployments/scale"]}]},
            "validations": [{"expression": "false", "message": "change freeze: scaling is suspended in this namespace"}]
        }
    })))
    .await
    .unwrap();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &binding);
    api.patch(&policy, &pp, &Patch::Apply(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy},
        "spec": {
            "policyName": policy,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        }
    })))
    .await
    .unwrap();
    // In force once a scale of ours is refused (the policy is compiled asynchronously).
    let d: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually("the freeze refuses a scale", 30, || {
        let d = d.clone();
        async move {
            match d
                .patch_scale(
                    "veritas-spark-canary",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": 1}})),
                )
                .await
            {
                Err(kube::Error::Api(e)) if e.message.contains("change freeze") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    (policy.clone(), policy)
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn an_action_the_api_server_refuses_is_in_the_status_until_a_pass_succeeds() {
    let client = client().await;
    install_crds(&client).await;
    let ns = &unique("refused");
    namespace(&client, ns).await;
    runtime_objects(&client, ns, 4, 1).await;
    let (policy, binding) = freeze_scaling(&client, ns).await;
    let api = canary_at_25_percent(&client, ns).await;
    let ctl = start_controller(&client, ns).await;

    // Scaling stable to 3 (25 % of 4) is refused: the status names the action and the answer.
    let c = status_where(&api, "spark", 30, "Reconciled=False ActionFailed", |c| {
        c.status.as_ref().is_some_and(|s| {
            find_condition(&s.conditions, types::RECONCILED)
                .is_some_and(|r| !r.is_true() && r.reason == reasons::ACTION_FAILED)
        })
    })
    .await;
    let st = c.status.unwrap();
    let r = find_condition(&st.conditions, types::RECONCILED).unwrap();
    assert!(
        r.message
            .contains("scaling Deployment veritas-spark-stable to 3 replicas")
            && r.message.contains("change freeze"),
        "{}",
        r.message
    );
    let d: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let stable = d.get("veritas-spark-stable").await.unwrap();
    assert_eq!(stable.spec.and_then(|s| s.replicas), Some(4));
    // A warning Event says the same to `kubectl describe`.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    eventually("an ActionFailed event", 30, || {
        let events = events.clone();
        async move {
            let l = events
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            l.items
                .iter()
                .any(|e| e.reason.as_deref() == Some(reasons::ACTION_FAILED))
                .then_some(())
                .ok_or_else(|| format!("{} events, none ActionFailed", l.items.len()))
        }
    })
    .await;

    // The freeze lifted: the next pass scales, the weight is realised, the condition is gone.
    let b = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
        ),
        "validatingadmissionpolicybindings",
    );
    Api::<DynamicObject>::all_with(client.clone(), &b)
        .delete(&binding, &Default::default())
        .await
        .unwrap();
    status_where(&api, "spark", 60, "Reconciled gone", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| find_condition(&s.conditions, types::RECONCILED).is_none())
    })
    .await;
    let stable = d.get("veritas-spark-stable").await.unwrap();
    assert_eq!(stable.spec.and_then(|s| s.replicas), Some(3));
    let p = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
        ),
        "validatingadmissionpolicies",
    );
    let _ = Api::<DynamicObject>::all_with(client.clone(), &p)
        .delete(&policy, &Default::default())
        .await;
    ctl.abort();
}

/// Applies a manifest file of `fixtures/manifests/` (each document by server-side apply, its
/// resource found by discovery), with `veritas` namespaces renamed to `ns`.
async fn apply_manifest(client: &Client, file: &str, ns: &str) {
    use serde::Deserialize;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/manifests")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut v = Value::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        let rename = |s: &mut Value| {
            if s == "veritas" {
                *s = Value::String(ns.to_string());
            }
        };
        if v["kind"] == "Namespace" {
            rename(&mut v["metadata"]["name"]);
        }
        rename(&mut v["metadata"]["namespace"]);
        if v["kind"] == "ConfigMap" {
            rename(&mut v["data"]["watchNamespace"]);
        }
        let obj: DynamicObject = serde_json::from_value(v.clone()).unwrap();
        let types = obj.types.clone().unwrap();
        let gvk = GroupVersionKind::try_from(&types).unwrap();
        let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
        let api: Api<DynamicObject> = match (caps.scope, obj.metadata.namespace.as_deref()) {
            (kube::discovery::Scope::Namespaced, Some(n)) => {
                Api::namespaced_with(client.clone(), n, &ar)
            }
            _ => Api::all_with(client.clone(), &ar),
        };
        let name = obj.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("veritas-test").force(),
            &Patch::Apply(v),
        )
        .await
        .unwrap_or_else(|e| panic!("{file}: {} {name}: {e}", types.kind));
    }
}

/// A client of the test API server acting as veritas-controller's ServiceAccount (RBAC applies).
async fn controller_sa_client() -> Client {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let path = std::env::var("VERITAS_TEST_KUBECONFIG").unwrap();
    let kc = Kubeconfig::read_from(&path).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    cfg.auth_info.impersonate = Some(format!(
        "system:serviceaccount:{}:{}",
        labels::CONTROLLER_NAMESPACE,
        labels::APP_CONTROLLER
    ));
    Client::try_from(cfg).unwrap()
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn the_default_install_reconciles_its_namespace_as_its_serviceaccount_and_reads_no_secret_elsewhere(
) {
    let admin = client().await;
    install_crds(&admin).await;
    let ns = &unique("watched");
    // The default install's RBAC, as shipped (its watched namespace renamed to ours).
    apply_manifest(&admin, "controller/00-namespace.yaml", ns).await;
    apply_manifest(&admin, "controller/10-rbac.yaml", ns).await;
    apply_manifest(&admin, "controller/11-watch-namespace.yaml", ns).await;
    let other = &unique("unwatched");
    namespace(&admin, other).await;

    let api = canary_at_25_percent(&admin, ns).await;

    // The controller, as its ServiceAccount, on the namespace the ConfigMap names.
    let sa = controller_sa_client().await;
    assert!(crd_installed(&sa).await.unwrap(), "the CRD check at start");
    let ctl = start_controller(&sa, ns).await;
    stable_replicas_become(&admin, ns, 3).await;
    let c = status_where(&api, "spark", 30, "weight realised, nothing refused", |c| {
        c.status.as_ref().is_some_and(|s| {
            s.actual_weight == 25
                && find_condition(&s.conditions, types::TRAFFIC_ROUTED).is_some_and(|c| c.is_true())
        })
    })
    .await;
    assert!(
        find_condition(&c.status.unwrap().conditions, types::RECONCILED).is_none(),
        "every read and write of the pass was allowed"
    );
    ctl.abort();

    // Secrets: by name in the watched namespace (404: allowed to look), never elsewhere (403).
    use k8s_openapi::api::core::v1::Secret;
    let code = |r: Result<Secret, kube::Error>| match r {
        Err(kube::Error::Api(e)) => e.code,
        Ok(_) => 200,
        Err(e) => panic!("{e}"),
    };
    let mine: Api<Secret> = Api::namespaced(sa.clone(), ns);
    assert_eq!(code(mine.get("absent").await), 404);
    let theirs: Api<Secret> = Api::namespaced(sa.clone(), other);
    assert_eq!(code(theirs.get("absent").await), 403);
    assert!(
        mine.list(&Default::default()).await.is_err(),
        "Secrets are never listed"
    );
}
