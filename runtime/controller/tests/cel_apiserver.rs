//! Admission on a real API server (`ci/kind/apiserver.sh`): the CRD's CEL rules refuse a spec
//! the controller could only report after the fact, with a message that names the field.

mod common;

use common::{client, install_crds, unique};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::Api;
use serde_json::{json, Value};
use veritas_crds::VeritasCanary;

/// Creates a canary with `spec`; the API server's refusal message, if any.
async fn create(api: &Api<VeritasCanary>, name: &str, spec: Value) -> Result<(), String> {
    let c: VeritasCanary = serde_json::from_value(json!({
        "apiVersion": "veritas.hearthlink.ai/v1alpha1", "kind": "VeritasCanary",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("a VeritasCanary");
    match api.create(&PostParams::default(), &c).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 422 => Err(e.message),
        Err(e) => panic!("unexpected: {e}"),
    }
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn admission_refuses_specs_the_controller_could_never_run() {
    let client = client().await;
    install_crds(&client).await;
    let ns = unique("cel");
    let nss: Api<Namespace> = Api::all(client.clone());
    let _ = nss
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await;
    let api: Api<VeritasCanary> = Api::namespaced(client.clone(), &ns);

    create(
        &api,
        "fine",
        json!({"trafficWeight": 10, "promotion": {"steps": [{"weight": 25}, {"weight": 50}]}}),
    )
    .await
    .expect("a valid canary is admitted");

    let cases = [
        (
            json!({"trafficWeight": 10, "routing": {"replicas": {}, "istio": {"virtualService": "v"}}}),
            "set one router",
        ),
        (
            json!({"trafficWeight": 10, "promotion": {"steps": [{"weight": 50}, {"weight": 25}]}}),
            "weights must not decrease",
        ),
        (
            json!({"trafficWeight": 30, "promotion": {"steps": [{"weight": 20}]}}),
            "at least spec.trafficWeight",
        ),
        (
            json!({"trafficWeight": 10, "progressDeadlineSeconds": 120, "analysis": {"windowSeconds": 300}}),
            "must fit in spec.progressDeadlineSeconds",
        ),
        (json!({"trafficWeight": 101}), "trafficWeight"),
    ];
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let got = create(&api, &format!("bad-{i}"), spec.clone()).await;
        match got {
            Err(msg) => assert!(msg.contains(want), "case {i} {spec}: {msg}"),
            Ok(()) => panic!("case {i} admitted: {spec}"),
        }
    }
}
