//! What the cluster tests of this crate share (API server and kind): a runtime, namespace
//! names of their own, the CRDs, a namespace, and `fixtures/manifests/bluegreen` applied.
// Each test binary uses its own subset.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use veritas_crds::VeritasEnvironment;

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
