//! The canary commands against a real kube-apiserver (`ci/kind/apiserver.sh start`): exit codes
//! and what `rollback` asks of the controller. Ignored without `VERITAS_TEST_KUBECONFIG`.
//!
//! `VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1) cargo test -p veritas-cluster --test apiserver -- --ignored`

use std::process::ExitCode;

use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use veritas_cluster::{run, CanaryCommand, ClusterCommand, InspectArgs, RollbackArgs, Target};
use veritas_crds::{annotations, VeritasCanary};

mod common;
use common::{create_namespace, install_crds, kubeconfig_from, rt, unique};

/// Points the commands (which read the default kubeconfig) at the test API server.
fn kubeconfig() -> String {
    kubeconfig_from(
        "VERITAS_TEST_KUBECONFIG",
        "$(ci/kind/apiserver.sh start | tail -1)",
    )
}

/// CRDs installed, a namespace, and a canary whose status says `phase`.
async fn setup(ns: &str, phase: &str) -> Api<VeritasCanary> {
    let client = Client::try_default().await.unwrap();
    install_crds(&client).await;
    create_namespace(&client, ns).await;
    let api: Api<VeritasCanary> = Api::namespaced(client, ns);
    // The CRD may take a moment to serve: retry the create within a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let c: VeritasCanary = serde_json::from_value(json!({"apiVersion": "veritas.hearthlink.ai/v1alpha1", "kind": "VeritasCanary", "metadata": {"name": "spark"}, "spec": {"trafficWeight": 10}})).unwrap();
    while let Err(e) = api.create(&PostParams::default(), &c).await {
        assert!(std::time::Instant::now() < deadline, "create canary: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let status = json!({"apiVersion": "veritas.hearthlink.ai/v1alpha1", "kind": "VeritasCanary", "status": {"phase": phase, "actualWeight": 10, "desiredWeight": 10}});
    api.patch_status(
        "spark",
        &PatchParams::apply("veritas-test").force(),
        &Patch::Apply(status),
    )
    .await
    .unwrap();
    api
}

fn target(ns: &str) -> Target {
    Target {
        namespace: Some(ns.into()),
        name: None,
        prometheus: None,
    }
}

#[test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
fn inspect_and_rollback_status_exit_0_missing_canary_exits_1() {
    kubeconfig();
    let ns = unique("cli-inspect");
    rt().block_on(setup(&ns, "Progressing"));
    let inspect = |t: Target| {
        ClusterCommand::Canary(CanaryCommand::Inspect(InspectArgs {
            history: true,
            metrics: false,
            target: t,
        }))
    };
    assert_eq!(run(inspect(target(&ns)), false), ExitCode::SUCCESS);
    assert_eq!(run(inspect(target(&ns)), true), ExitCode::SUCCESS);
    let mut missing = target(&ns);
    missing.name = Some("nope".into());
    assert_eq!(
        run(inspect(missing), false),
        ExitCode::from(1),
        "E5001 for a missing canary"
    );
    let status = RollbackArgs {
        canary: false,
        bluegreen: false,
        force: false,
        status: true,
        wait: 1,
        target: target(&ns),
    };
    assert_eq!(
        run(ClusterCommand::Rollback(status), false),
        ExitCode::SUCCESS
    );
}

#[test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
fn rollback_asks_the_controller_and_fails_e5002_when_nothing_acts() {
    kubeconfig();
    let ns = unique("cli-rollback");
    // One runtime per test: the client lives on the runtime that made it.
    let rt = rt();
    let api = rt.block_on(setup(&ns, "Progressing"));
    let rb = RollbackArgs {
        canary: true,
        bluegreen: false,
        force: false,
        status: false,
        wait: 2,
        target: target(&ns),
    };
    // No controller runs here: the request is recorded, the command gives up with E5002.
    assert_eq!(run(ClusterCommand::Rollback(rb), false), ExitCode::from(1));
    let c = rt.block_on(api.get("spark")).unwrap();
    assert_eq!(
        c.metadata
            .annotations
            .unwrap_or_default()
            .get(annotations::ROLLBACK)
            .map(String::as_str),
        Some(annotations::TRUE)
    );
}

#[test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
fn rollback_of_a_succeeded_canary_needs_force() {
    kubeconfig();
    let ns = unique("cli-force");
    let rt = rt();
    let api = rt.block_on(setup(&ns, "Succeeded"));
    let rb = |force: bool| RollbackArgs {
        canary: !force,
        bluegreen: false,
        force,
        status: false,
        wait: 1,
        target: target(&ns),
    };
    assert_eq!(
        run(ClusterCommand::Rollback(rb(false)), false),
        ExitCode::from(1)
    );
    let c = rt.block_on(api.get("spark")).unwrap();
    assert!(
        !c.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(annotations::ROLLBACK),
        "refused without --force"
    );
    assert_eq!(
        run(ClusterCommand::Rollback(rb(true)), false),
        ExitCode::from(1),
        "no controller: E5002 after the wait"
    );
    let c = rt.block_on(api.get("spark")).unwrap();
    assert_eq!(
        c.metadata
            .annotations
            .unwrap_or_default()
            .get(annotations::ROLLBACK)
            .map(String::as_str),
        Some(annotations::FORCE)
    );
}
