//! What the API-server tests of this crate share: the client of the test API server
//! (`VERITAS_TEST_KUBECONFIG`), polling with a deadline, the CRDs, namespace names of their own.
// Each test binary uses its own subset.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub async fn client() -> Client {
    let path = std::env::var("VERITAS_TEST_KUBECONFIG")
        .expect("VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)");
    let kc = Kubeconfig::read_from(&path).expect("kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(cfg).expect("client")
}

/// Polls `f` every 100 ms until it returns Ok, or panics with the last value seen.
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn install_crds(client: &Client) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/manifests/crds");
    for e in std::fs::read_dir(dir).unwrap() {
        install_crd_file(client, &e.unwrap().path()).await;
    }
}

/// Applies one CRD manifest and waits until the API server serves it.
pub async fn install_crd_file(client: &Client, path: &std::path::Path) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("CRD manifest {}: {e}", path.display()));
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
    let name = crd.metadata.name.clone().unwrap();
    api.patch(
        &name,
        &PatchParams::apply("veritas-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply CRD");
    eventually(&format!("CRD {name} Established"), 30, || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let c = api.get(&name).await.map_err(|e| e.to_string())?;
            let est = c
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if est {
                Ok(())
            } else {
                Err("not established".into())
            }
        }
    })
    .await;
}

/// A namespace name of its own per run, so runs on one API server never meet.
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
