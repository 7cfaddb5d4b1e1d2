//! Blue-green on a real cluster (kind): real runtime pods from `fixtures/manifests/bluegreen`
//! in a namespace of their own, the controller in this process (its probes go through the API
//! server's pod proxy, since the host cannot reach pod IPs), and steady traffic from a pod
//! inside the cluster that counts every failed request across a switch. Also: a switch refused
//! because the target fails its health check, and `rollback --bluegreen`.
//!
//! Prints the switch time (spec change to the active Service's EndpointSlices holding only
//! green pods) and the failed-request count.
//!
//! Run: `VERITAS_KUBECONFIG=/var/cache/veritas-kind/kubeconfig-veritas cargo test -p
//! veritas-controller --test bluegreen_kind -- --ignored --nocapture` (the runtime image
//! `veritas.local/veritas-spark:dev` loaded in the cluster: ci/kind/install-veritas.sh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{json, Value};
use veritas_controller::analysis::Prometheus;
use veritas_controller::bluegreen::probe::PodHttp;
use veritas_controller::reconcile::Context;
use veritas_controller::telemetry::Metrics;
use veritas_crds::{annotations, reasons, EnvironmentName, EnvironmentPhase, VeritasEnvironment};

async fn client() -> Client {
    let path = std::env::var("VERITAS_KUBECONFIG")
        .expect("VERITAS_KUBECONFIG=/var/cache/veritas-kind/kubeconfig-<cluster>");
    let kc = Kubeconfig::read_from(&path).expect("kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(cfg).expect("client")
}

async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let last = match f().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn apply_all(client: &Client, ns: &str, env_spec: Value) -> Api<VeritasEnvironment> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("veritas-test").force();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/manifests");
    let text =
        std::fs::read_to_string(root.join("crds/veritasenvironments.veritas.hearthlink.ai.yaml"))
            .unwrap();
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
    crds.patch(
        crd.metadata.name.as_deref().unwrap(),
        &pp,
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let nsapi: Api<Namespace> = Api::all(client.clone());
    let nso: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    nsapi.create(&PostParams::default(), &nso).await.unwrap();
    let mut files: Vec<_> = std::fs::read_dir(root.join("bluegreen"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for d in serde_yaml::Deserializer::from_str(&text) {
            let mut v: Value = serde::Deserialize::deserialize(d).unwrap();
            let name = v["metadata"]["name"].as_str().unwrap().to_string();
            match v["kind"].as_str().unwrap() {
                "Deployment" => {
                    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                    api.patch(&name, &pp, &Patch::Apply(&v)).await.unwrap();
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
                    for (k, x) in env_spec.as_object().unwrap() {
                        v["spec"][k] = x.clone();
                    }
                    let api: Api<VeritasEnvironment> = Api::namespaced(client.clone(), ns);
                    api.patch(&name, &pp, &Patch::Apply(&v)).await.unwrap();
                }
                k => panic!("unexpected kind {k}"),
            }
        }
    }
    Api::namespaced(client.clone(), ns)
}

fn start(client: &Client, ns: &str) -> tokio::task::JoinHandle<()> {
    let mut ctx = Context::new(
        client.clone(),
        Prometheus::direct("http://127.0.0.1:9"),
        Metrics::default(),
        Some("kind-test".into()),
    );
    // Outside the cluster: reach the pods through the API server.
    ctx.pod_http = PodHttp::ApiProxy(client.clone());
    let ns = ns.to_string();
    tokio::spawn(async move {
        veritas_controller::bluegreen::reconcile::run(Arc::new(ctx), Some(ns)).await
    })
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
                Err(format!(
                    "{:?}",
                    e.status
                        .map(|s| (s.phase, s.reason, s.message, s.environments))
                ))
            }
        }
    })
    .await
}

fn stable_on(e: &VeritasEnvironment, env: EnvironmentName) -> bool {
    e.status
        .as_ref()
        .is_some_and(|s| s.phase == EnvironmentPhase::Stable && s.active_environment == Some(env))
}

/// Ready endpoint addresses of the active Service.
async fn endpoints(client: &Client, ns: &str) -> Vec<String> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels("kubernetes.io/service-name=veritas-spark");
    api.list(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.clone())
        .collect()
}

async fn pod_ips(client: &Client, ns: &str, env: &str) -> Vec<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(&format!("environment={env}")))
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()))
        .collect()
}

/// A pod inside the cluster sending `n` generation requests to the active Service, one every
/// 50 ms, each bounded to 5 s; prints `ok=N fail=M`.
fn traffic_pod(n: u32) -> Pod {
    let script = format!(
        "ok=0; fail=0; i=0; while [ $i -lt {n} ]; do \
         if curl -sf -o /dev/null --max-time 5 -H 'Content-Type: application/json' -d '{{\"prompt\":\"Hello\",\"max_tokens\":2}}' http://veritas-spark:8080/v1/generate; \
         then ok=$((ok+1)); else fail=$((fail+1)); fi; i=$((i+1)); sleep 0.05; done; echo \"ok=$ok fail=$fail\""
    );
    serde_json::from_value(json!({
        "metadata": {"name": "traffic", "labels": {"app": "veritas-traffic"}},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "traffic", "image": "veritas.local/veritas-spark:dev", "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script]}]}
    }))
    .unwrap()
}

#[tokio::test]
#[ignore = "needs a kind cluster with the runtime image: VERITAS_KUBECONFIG=/var/cache/veritas-kind/kubeconfig-<cluster>"]
async fn switch_under_traffic_refused_switch_and_rollback_on_kind() {
    let client = client().await;
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let ns = &format!("bg-kind-{:x}", (n as u64) & 0xffffff);
    let api = apply_all(
        &client,
        ns,
        json!({"minReadySeconds": 3, "switch": {"healthCheck": {"timeoutSeconds": 20, "path": "/health", "port": 8080, "probeTimeoutSeconds": 3}}}),
    )
    .await;
    let ctl = start(&client, ns);
    status_where(&api, 300, "blue Stable, both environments ready", |e| {
        stable_on(e, EnvironmentName::Blue)
            && e.status
                .as_ref()
                .is_some_and(|s| s.environments.blue.ready == 2 && s.environments.green.ready == 2)
    })
    .await;

    // Steady traffic from inside the cluster; the switch happens in the middle of it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let requests = 300;
    pods.create(&PostParams::default(), &traffic_pod(requests))
        .await
        .unwrap();
    eventually("traffic pod running", 120, || {
        let pods = pods.clone();
        async move {
            let p = pods.get("traffic").await.map_err(|e| e.to_string())?;
            match p.status.and_then(|s| s.phase).as_deref() {
                Some("Running") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // traffic on blue first (not a sync wait)
    let green_ips = pod_ips(&client, ns, "green").await;
    let t0 = Instant::now();
    api.patch(
        "veritas-spark",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"activeEnvironment": "green"}})),
    )
    .await
    .unwrap();
    // Switch time: the spec change until the Service's ready endpoints are only green pods.
    eventually("endpoints only green", 120, || {
        let client = client.clone();
        let green_ips = green_ips.clone();
        async move {
            let eps = endpoints(&client, ns).await;
            if !eps.is_empty() && eps.iter().all(|a| green_ips.contains(a)) {
                Ok(())
            } else {
                Err(format!("{eps:?} (green {green_ips:?})"))
            }
        }
    })
    .await;
    let switch_time = t0.elapsed();
    let e = status_where(&api, 120, "green Stable", |e| {
        stable_on(e, EnvironmentName::Green)
    })
    .await;
    let st = e.status.unwrap();
    assert_eq!(st.previous_environment, Some(EnvironmentName::Blue));
    let phase = eventually("traffic pod finished", 300, || {
        let pods = pods.clone();
        async move {
            let p = pods.get("traffic").await.map_err(|e| e.to_string())?;
            match p.status.and_then(|s| s.phase) {
                Some(ph) if ph == "Succeeded" || ph == "Failed" => Ok(ph),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    let log = pods.logs("traffic", &LogParams::default()).await.unwrap();
    let last = log.lines().last().unwrap_or("").to_string();
    eprintln!(
        "kind: switch blue -> green: {:.1}s from the spec change to endpoints only green (status: {}s); traffic {last} (pod {phase})",
        switch_time.as_secs_f64(),
        st.last_switch.as_ref().unwrap().duration_seconds
    );
    assert_eq!(
        last,
        format!("ok={requests} fail=0"),
        "requests failed across the switch"
    );
    let _ = pods.delete("traffic", &DeleteParams::default()).await;

    // A switch refused: the target's probe answers 404 on a path it does not serve.
    api.patch(
        "veritas-spark",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"activeEnvironment": "blue", "switch": {"healthCheck": {"path": "/no-such-probe", "timeoutSeconds": 8}}}})),
    )
    .await
    .unwrap();
    let e = status_where(&api, 120, "SwitchFailed", |e| {
        e.status
            .as_ref()
            .is_some_and(|s| s.phase == EnvironmentPhase::SwitchFailed)
    })
    .await;
    let st = e.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some(reasons::HEALTH_CHECK_FAILED));
    assert_eq!(st.active_environment, Some(EnvironmentName::Green));
    assert!(endpoints(&client, ns)
        .await
        .iter()
        .all(|a| green_ips.contains(a)));

    // rollback --bluegreen after a failed switch: spec back to what serves, then a real
    // rollback to blue with the probe fixed.
    api.patch(
        "veritas-spark",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"activeEnvironment": "green", "switch": {"healthCheck": {"path": "/health", "timeoutSeconds": 20}}}})),
    )
    .await
    .unwrap();
    status_where(&api, 60, "green Stable again", |e| {
        stable_on(e, EnvironmentName::Green)
    })
    .await;
    api.patch(
        "veritas-spark",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {annotations::ROLLBACK: annotations::TRUE}}, "spec": {"activeEnvironment": "blue"}})),
    )
    .await
    .unwrap();
    let e = status_where(&api, 120, "rolled back to blue", |e| {
        stable_on(e, EnvironmentName::Blue)
    })
    .await;
    assert_eq!(
        e.status.unwrap().reason.as_deref(),
        Some(reasons::ROLLED_BACK)
    );
    ctl.abort();
    let nsapi: Api<Namespace> = Api::all(client.clone());
    let _ = nsapi.delete(ns, &DeleteParams::default()).await;
}
