//! The blue-green commands and `deployment status` against a real kube-apiserver
//! (`ci/kind/apiserver.sh start`): exit codes, what they change, the error codes they carry.
//! No controller runs here unless the test starts one. Ignored without
//! `VERITAS_TEST_KUBECONFIG`.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use veritas_cluster::{
    run, BluegreenCommand, ClusterCommand, EnvTarget, RollbackArgs, StatusArgs, SwitchArgs, Target,
};
use veritas_crds::{EnvironmentName, VeritasEnvironment};

mod common;
use common::{apply_bluegreen, create_namespace, install_crds, kubeconfig_from, rt, unique};

fn kubeconfig() {
    kubeconfig_from(
        "VERITAS_TEST_KUBECONFIG",
        "$(ci/kind/apiserver.sh start | tail -1)",
    );
}

/// CRDs, a namespace, and `fixtures/manifests/bluegreen` applied into it (no pods: no nodes).
async fn setup(ns: &str) -> Api<VeritasEnvironment> {
    let client = Client::try_default().await.unwrap();
    install_crds(&client).await;
    create_namespace(&client, ns).await;
    apply_bluegreen(&client, ns, None, json!({})).await
}

fn target(ns: &str) -> EnvTarget {
    EnvTarget {
        namespace: Some(ns.into()),
        name: None,
    }
}

#[test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
fn inspect_diff_dry_run_and_failures_carry_their_codes() {
    kubeconfig();
    let ns = unique("cli-bg");
    let rt = rt();
    let api = rt.block_on(setup(&ns));
    let bg = |c: BluegreenCommand| ClusterCommand::Bluegreen(c);
    assert_eq!(
        run(bg(BluegreenCommand::Inspect(target(&ns))), false),
        ExitCode::SUCCESS
    );
    assert_eq!(
        run(bg(BluegreenCommand::Inspect(target(&ns))), true),
        ExitCode::SUCCESS
    );
    let mut missing = target(&ns);
    missing.name = Some("nope".into());
    assert_eq!(
        run(bg(BluegreenCommand::Inspect(missing)), false),
        ExitCode::from(1),
        "E5001 for a missing environment"
    );
    // The example's ConfigMaps are identical: in sync, exit 0; one key changed: exit 1.
    assert_eq!(
        run(bg(BluegreenCommand::Diff(target(&ns))), false),
        ExitCode::SUCCESS
    );
    let cms: Api<ConfigMap> = Api::namespaced(rt.block_on(Client::try_default()).unwrap(), &ns);
    rt.block_on(cms.patch(
        "veritas-config-green",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"VERITAS_THREADS": "4"}})),
    ))
    .unwrap();
    assert_eq!(
        run(bg(BluegreenCommand::Diff(target(&ns))), true),
        ExitCode::from(1)
    );
    // A dry run changes nothing.
    let switch = |dry_run: bool, wait: Option<u64>| {
        bg(BluegreenCommand::Switch(SwitchArgs {
            to: Some(EnvironmentName::Green),
            dry_run,
            wait,
            target: target(&ns),
        }))
    };
    assert_eq!(run(switch(true, None), false), ExitCode::SUCCESS);
    let e = rt.block_on(api.get("veritas-spark")).unwrap();
    assert_eq!(
        e.spec.active_environment,
        EnvironmentName::Blue,
        "dry run changed the spec"
    );
    // Nothing rolls back to nowhere: E5002.
    let rb = |bluegreen: bool, status: bool| RollbackArgs {
        canary: false,
        bluegreen,
        force: false,
        status,
        wait: 2,
        target: Target {
            namespace: Some(ns.clone()),
            name: None,
            prometheus: None,
        },
    };
    assert_eq!(
        run(ClusterCommand::Rollback(rb(true, false)), false),
        ExitCode::from(1),
        "no previous environment"
    );
    assert_eq!(
        run(ClusterCommand::Rollback(rb(false, true)), false),
        ExitCode::SUCCESS,
        "rollback --status with only an environment"
    );
    // A real switch without a controller: the spec is changed, the wait ends in E5001.
    assert_eq!(run(switch(false, Some(2)), false), ExitCode::from(1));
    let e = rt.block_on(api.get("veritas-spark")).unwrap();
    assert_eq!(e.spec.active_environment, EnvironmentName::Green);
    // deployment status with no runtime pod: Pods Critical, exit 1 (E5001).
    assert_eq!(
        run(
            ClusterCommand::DeploymentStatus(StatusArgs {
                namespace: Some(ns.clone()),
                verbose: true,
            }),
            true
        ),
        ExitCode::from(1)
    );
}

#[test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
fn switch_and_rollback_commands_wait_for_the_controller() {
    kubeconfig();
    let ns = unique("cli-bg-ctl");
    // The controller runs on its own runtime thread; the commands build their own.
    let ctl_rt = tokio::runtime::Runtime::new().unwrap();
    let api = ctl_rt.block_on(setup(&ns));
    let client = ctl_rt.block_on(Client::try_default()).unwrap();
    // Ready pods (no kubelet: status written as one would) and a forced rollback path need no
    // probe; the switch itself needs probes, so its pods point at a local health server.
    let port = ctl_rt.block_on(async {
        let app = axum::Router::new().route(
            "/health",
            axum::routing::get(|| async { axum::Json(json!({"status": "healthy"})) }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(l, app).await });
        port
    });
    ctl_rt.block_on(async {
        api.patch(
            "veritas-spark",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minReadySeconds": 0, "switch": {"healthCheck": {"port": port}}}})),
        )
        .await
        .unwrap();
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
        for e in ["blue", "green"] {
            for i in 0..2 {
                let name = format!("veritas-spark-{e}-{i}");
                let pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "veritas-spark", "environment": e}},
                    "spec": {"containers": [{"name": "spark", "image": "veritas.local/veritas-spark:dev"}]}})).unwrap();
                pods.create(&PostParams::default(), &pod).await.unwrap();
                pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "127.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}]}}))).await.unwrap();
            }
        }
    });
    let ctx = veritas_controller::reconcile::Context::new(
        client,
        veritas_controller::analysis::Prometheus::direct("http://127.0.0.1:9", &Default::default())
            .unwrap(),
        veritas_controller::telemetry::Metrics::default(),
        Some("cli-test".into()),
    );
    let ns2 = ns.clone();
    let ctl = ctl_rt.spawn(async move {
        veritas_controller::bluegreen::reconcile::run(std::sync::Arc::new(ctx), Some(ns2)).await
    });
    let switch = ClusterCommand::Bluegreen(BluegreenCommand::Switch(SwitchArgs {
        to: None,
        dry_run: false,
        wait: Some(60),
        target: target(&ns),
    }));
    assert_eq!(
        run(switch, false),
        ExitCode::SUCCESS,
        "switch to the standby (green)"
    );
    let e = ctl_rt.block_on(api.get("veritas-spark")).unwrap();
    assert_eq!(
        e.status.unwrap().active_environment,
        Some(EnvironmentName::Green)
    );
    let rb = RollbackArgs {
        canary: false,
        bluegreen: true,
        force: false,
        status: false,
        wait: 60,
        target: Target {
            namespace: Some(ns.clone()),
            name: None,
            prometheus: None,
        },
    };
    assert_eq!(run(ClusterCommand::Rollback(rb), true), ExitCode::SUCCESS);
    let e = ctl_rt.block_on(api.get("veritas-spark")).unwrap();
    let st = e.status.unwrap();
    assert_eq!(st.active_environment, Some(EnvironmentName::Blue));
    assert_eq!(
        st.reason.as_deref(),
        Some(veritas_crds::reasons::ROLLED_BACK)
    );
    ctl.abort();
}
