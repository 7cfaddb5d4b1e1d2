//! What the cluster tests of this crate share (API server and kind): a runtime, namespace
//! names of their own, the CRDs, a namespace, and `fixtures/manifests/bluegreen` applied.
// Each test binary uses its own subset.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    DeleteParams, DynamicObject, GroupVersionKind, LogParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Client};
use serde_json::{json, Value};
use veritas_crds::VeritasEnvironment;
use veritas_vocab::labels;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Points the commands (which read the default kubeconfig) at the cluster named by `var`.
/// Each nextest test is a process of its own, so this touches no other test.
pub fn kubeconfig_from(var: &str, hint: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| panic!("{var}={hint}"));
    std::env::set_var("KUBECONFIG", &path);
    path
}

/// A namespace name of its own per test process, so parallel tests and runs never meet.
pub fn unique(base: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{base}-{:x}-{:x}",
        (n as u64) & 0xff_ffff_ffff,
        std::process::id()
    )
}

fn manifests() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/manifests")
}

/// The CRDs of `fixtures/manifests/crds` (a bare API server has none).
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for e in std::fs::read_dir(manifests().join("crds")).unwrap() {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap();
        crds.patch(
            &crd.metadata.name.clone().unwrap(),
            &PatchParams::apply("veritas-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
}

pub async fn create_namespace(client: &Client, ns: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
    )
    .await
    .unwrap();
}

/// `fixtures/manifests/bluegreen` applied into `ns` (as the scenarios do), with `replicas`
/// per environment when given and `env_spec` merged into the VeritasEnvironment's spec.
pub async fn apply_bluegreen(
    client: &Client,
    ns: &str,
    replicas: Option<i32>,
    env_spec: Value,
) -> Api<VeritasEnvironment> {
    let pp = PatchParams::apply("veritas-test").force();
    let mut files: Vec<_> = std::fs::read_dir(manifests().join("bluegreen"))
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
                    if let Some(n) = replicas {
                        v["spec"]["replicas"] = json!(n);
                    }
                    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                    let d = api.patch(&name, &pp, &Patch::Apply(&v)).await.unwrap();
                    // The rollout a Deployment controller would report (none runs here).
                    let (g, n) = (d.metadata.generation, v["spec"]["replicas"].clone());
                    let st = json!({"status": {"observedGeneration": g, "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n}});
                    let pd = PatchParams::default();
                    api.patch_status(&name, &pd, &Patch::Merge(st))
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
                    for (k, x) in env_spec.as_object().unwrap() {
                        v["spec"][k] = x.clone();
                    }
                    // A CRD just installed may take a moment to serve.
                    let api: Api<VeritasEnvironment> = Api::namespaced(client.clone(), ns);
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while let Err(e) = api.patch(&name, &pp, &Patch::Apply(&v)).await {
                        assert!(Instant::now() < deadline, "{e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                k => panic!("unexpected kind {k} in fixtures/manifests/bluegreen"),
            }
        }
    }
    Api::namespaced(client.clone(), ns)
}

pub async fn client() -> Client {
    Client::try_default().await.expect("kube client")
}

pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
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

/// Deletes the test's namespace however the test ends.
pub struct NamespaceGuard(pub String);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let ns = self.0.clone();
        // A thread of its own: the test may be unwinding inside a runtime.
        let _ = std::thread::spawn(move || {
            rt().block_on(async {
                let nss: Api<Namespace> = Api::all(client().await);
                let _ = nss.delete(&ns, &DeleteParams::background()).await;
            })
        })
        .join();
    }
}

/// The installed controller must be there: these tests never start one.
pub async fn controller_installed(client: &Client) {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), labels::CONTROLLER_NAMESPACE);
    let d = deps.get_opt(labels::APP_CONTROLLER).await.unwrap();
    let ready = d
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    assert!(
        ready >= 1,
        "no ready {} in {}: install it first (KUBECONFIG=... VERITAS_BIN_DIR=target/debug ci/kind/install-veritas.sh)",
        labels::APP_CONTROLLER,
        labels::CONTROLLER_NAMESPACE
    );
}

/// A pod inside the cluster sending `n` generation requests to `service`, one every
/// 50 ms, each bounded to 5 s; one line per request (`ok` / `fail <curl exit>`), then `done`.
pub fn traffic_pod(service: &str, n: u32) -> Pod {
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do \
         if curl -sf -o /dev/null --max-time 5 -H 'Content-Type: application/json' -d '{{\"prompt\":\"Hello\",\"max_tokens\":2}}' http://{service}:8080/v1/generate; \
         then echo ok; else echo \"fail $?\"; fi; i=$((i+1)); sleep 0.05; done; echo done"
    );
    serde_json::from_value(json!({
        "metadata": {"name": "traffic", "labels": {"app": "veritas-traffic"}},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0, "containers": [{
            "name": "traffic", "image": "veritas.local/veritas-spark:dev", "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script]}]}
    }))
    .unwrap()
}

/// `(ok, failed, finished)` so far, from the traffic pod's log.
pub async fn traffic_so_far(pods: &Api<Pod>) -> Result<(u32, Vec<String>, bool), String> {
    let log = pods
        .logs("traffic", &LogParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let ok = log.lines().filter(|l| *l == "ok").count() as u32;
    let failed = log
        .lines()
        .filter(|l| l.starts_with("fail"))
        .map(str::to_string)
        .collect();
    Ok((ok, failed, log.lines().any(|l| l == "done")))
}

/// The runtime's stable and canary tracks of `fixtures/manifests/runtime` (ServiceAccount,
/// config, Deployments, Services, ServiceMonitors) applied into `ns`, as the scenarios'
/// `canary-tracks` fragment does. Each object's resource comes from the server's discovery.
pub async fn apply_runtime_tracks(client: &Client, ns: &str) {
    let pp = PatchParams::apply("veritas-test").force();
    for file in [
        "05-serviceaccount.yaml",
        "10-config.yaml",
        "20-deployment-stable.yaml",
        "20-deployment-canary.yaml",
        "30-services.yaml",
        "40-servicemonitors.yaml",
    ] {
        let text = std::fs::read_to_string(manifests().join("runtime").join(file))
            .unwrap()
            .replace("namespace: veritas\n", &format!("namespace: {ns}\n"));
        for d in serde_yaml::Deserializer::from_str(&text) {
            let obj: DynamicObject = serde::Deserialize::deserialize(d).unwrap();
            let gvk = GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
            let (ar, _) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            api.patch(
                &obj.metadata.name.clone().unwrap(),
                &pp,
                &Patch::Apply(&obj),
            )
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}
