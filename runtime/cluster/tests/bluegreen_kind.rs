//! Blue-green on a real cluster (kind) through the INSTALLED veritas-controller
//! (`ci/kind/install-veritas.sh`: two replicas, leader election, all namespaces). These tests
//! only create objects and change the `VeritasEnvironment`; the controller in the cluster acts
//! and probes the pods from inside the cluster. Real runtime pods from
//! `fixtures/manifests/bluegreen`, each test in a namespace of its own (nextest runs them in
//! parallel processes), steady traffic from a pod inside the cluster that counts every failed
//! request, and the operator's `rollback --bluegreen` through the CLI's own code path.
//!
//! Prints the switch time (spec change until the active Service's ready endpoints are all
//! green pods), the rollback time, and the failed-request count.
//!
//! Run (what `.ci/run` does after install-veritas.sh):
//! `VERITAS_KUBECONFIG=/var/cache/veritas-kind/kubeconfig-<cluster> cargo nextest run --workspace
//! --profile cluster --run-ignored ignored-only -E 'binary(bluegreen_kind)'`

use std::process::ExitCode;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use veritas_cluster::{run, ClusterCommand, RollbackArgs, Target};
use veritas_controller::bluegreen::probe::{Answer, PodHttp, PodTarget};
use veritas_crds::{reasons, EnvironmentName, EnvironmentPhase, VeritasEnvironment};
use veritas_vocab::{labels, metrics};

const ENV: &str = "veritas-spark";

mod common;
use common::{
    apply_bluegreen, client, controller_installed, create_namespace, eventually, kubeconfig_from,
    rt, traffic_pod, traffic_so_far, unique, NamespaceGuard,
};

fn kubeconfig() -> String {
    kubeconfig_from(
        "VERITAS_KUBECONFIG",
        "/var/cache/veritas-kind/kubeconfig-<cluster>",
    )
}

/// A namespace of its own with `fixtures/manifests/bluegreen` in it: `replicas` pods per
/// environment, `env_spec` merged into the VeritasEnvironment's spec.
async fn apply_all(
    client: &Client,
    ns: &str,
    replicas: i32,
    env_spec: Value,
) -> Api<VeritasEnvironment> {
    create_namespace(client, ns).await;
    apply_bluegreen(client, ns, Some(replicas), env_spec).await
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
            let e = api.get(ENV).await.map_err(|e| e.to_string())?;
            if pred(&e) {
                Ok(e)
            } else {
                Err(format!(
                    "{:?}",
                    e.status.map(|s| (
                        s.phase,
                        s.reason,
                        s.message,
                        s.switch_progress.map(|p| (p.step, p.reason, p.waiting_for)),
                        s.environments
                    ))
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

fn both_ready(e: &VeritasEnvironment, n: i32) -> bool {
    e.status
        .as_ref()
        .is_some_and(|s| s.environments.blue.ready == n && s.environments.green.ready == n)
}

/// Ready endpoint addresses of the active Service.
async fn endpoints(client: &Client, ns: &str) -> Vec<String> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={ENV}"));
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

async fn env_pods(client: &Client, ns: &str, env: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(&format!("{}={env}", labels::ENVIRONMENT)))
        .await
        .unwrap()
        .items
}

fn ips(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()))
        .collect()
}

/// Waits until the active Service's ready endpoints are exactly (non-empty and only) `ips`.
async fn endpoints_only(client: &Client, ns: &str, ips: &[String], secs: u64, what: &str) {
    eventually(what, secs, || {
        let client = client.clone();
        async move {
            let eps = endpoints(&client, ns).await;
            if !eps.is_empty() && eps.iter().all(|a| ips.contains(a)) {
                Ok(())
            } else {
                Err(format!("{eps:?} (wanted only {ips:?})"))
            }
        }
    })
    .await
}

/// Generation requests the daemon of each pod counted (its /metrics, through the API
/// server's pod proxy: the test runs outside the cluster).
async fn requests_served(client: &Client, ns: &str, pods: &[Pod]) -> f64 {
    let http = PodHttp::ApiProxy(client.clone());
    let mut total = 0.0;
    for p in pods {
        let target = PodTarget {
            namespace: ns.into(),
            name: p.name_any(),
            ip: None,
        };
        match http
            .get(&target, 9090, "/metrics", Duration::from_secs(10))
            .await
        {
            Answer::Http { status: 200, body } => {
                let text = String::from_utf8_lossy(&body);
                total += text
                    .lines()
                    .filter(|l| l.starts_with(metrics::REQUESTS_TOTAL))
                    .filter(|l| {
                        l.contains(&format!(
                            "{}=\"{}\"",
                            metrics::LABEL_STATUS,
                            metrics::STATUS_SUCCESS
                        ))
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>();
            }
            other => panic!("metrics of {}: {other:?}", p.name_any()),
        }
    }
    total
}

fn rollback_bluegreen(ns: &str) -> ExitCode {
    run(
        ClusterCommand::Rollback(RollbackArgs {
            canary: false,
            bluegreen: true,
            force: false,
            status: false,
            wait: 180,
            target: Target {
                namespace: Some(ns.into()),
                name: None,
                prometheus: None,
            },
        }),
        false,
    )
}

#[test]
#[ignore = "needs a kind cluster with Veritas installed (ci/kind/install-veritas.sh): VERITAS_KUBECONFIG=/var/cache/veritas-kind/kubeconfig-<cluster>"]
fn switch_and_rollback_under_steady_traffic_fail_no_request() {
    kubeconfig();
    let rt = rt();
    let ns = unique("bg-kind-traffic");
    let _guard = NamespaceGuard(ns.clone());
    let client = rt.block_on(client());
    rt.block_on(controller_installed(&client));
    let api = rt.block_on(apply_all(
        &client,
        &ns,
        2,
        json!({"minReadySeconds": 3, "switch": {"healthCheck": {"timeoutSeconds": 60, "path": "/health", "port": 8080, "probeTimeoutSeconds": 3}}}),
    ));
    rt.block_on(status_where(
        &api,
        300,
        "blue Stable, both environments ready (is the installed controller acting?)",
        |e| stable_on(e, EnvironmentName::Blue) && both_ready(e, 2),
    ));
    let blue = rt.block_on(env_pods(&client, &ns, "blue"));
    let green = rt.block_on(env_pods(&client, &ns, "green"));
    let (blue_ips, green_ips) = (ips(&blue), ips(&green));
    rt.block_on(endpoints_only(
        &client,
        &ns,
        &blue_ips,
        60,
        "endpoints only blue",
    ));

    // Steady traffic from inside the cluster, long enough to span the switch and the rollback
    // (the pod ends by itself; both are checked to happen before it does).
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let requests = 1200;
    rt.block_on(pods.create(&PostParams::default(), &traffic_pod(ENV, requests)))
        .unwrap();
    // Traffic flows on blue before anything moves.
    rt.block_on(eventually("20 requests answered on blue", 120, || {
        let pods = pods.clone();
        async move {
            match traffic_so_far(&pods).await? {
                (ok, _, _) if ok >= 20 => Ok(()),
                seen => Err(format!("{seen:?}")),
            }
        }
    }));

    // The switch: only the CR changes; the installed controller does the rest.
    let t0 = Instant::now();
    rt.block_on(api.patch(
        ENV,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"activeEnvironment": "green"}})),
    ))
    .unwrap();
    rt.block_on(endpoints_only(
        &client,
        &ns,
        &green_ips,
        120,
        "endpoints only green",
    ));
    let switch_time = t0.elapsed();
    let e = rt.block_on(status_where(&api, 120, "green Stable", |e| {
        stable_on(e, EnvironmentName::Green)
    }));
    let status_switch = t0.elapsed();
    let st = e.status.unwrap();
    assert_eq!(st.previous_environment, Some(EnvironmentName::Blue));
    assert_eq!(st.reason.as_deref(), Some(reasons::SWITCH_COMPLETED));
    // The preview Service now selects the old environment.
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let preview = rt.block_on(svcs.get("veritas-spark-preview")).unwrap();
    assert_eq!(
        preview.spec.unwrap().selector.unwrap()[labels::ENVIRONMENT],
        "blue"
    );
    // Green serves some of the traffic before the rollback.
    let mid = rt.block_on(eventually("green answered requests", 60, || {
        let client = client.clone();
        let (ns, green) = (ns.clone(), green.clone());
        async move {
            let served = requests_served(&client, &ns, &green).await;
            if served >= 10.0 {
                Ok(served)
            } else {
                Err(format!("green served {served}"))
            }
        }
    }));

    // The operator's rollback, through the CLI's code path (waits for the controller).
    let t1 = Instant::now();
    assert_eq!(
        rollback_bluegreen(&ns),
        ExitCode::SUCCESS,
        "rollback --bluegreen"
    );
    rt.block_on(endpoints_only(
        &client,
        &ns,
        &blue_ips,
        60,
        "endpoints only blue again",
    ));
    let rollback_time = t1.elapsed();
    let e = rt.block_on(api.get(ENV)).unwrap();
    assert!(stable_on(&e, EnvironmentName::Blue), "{:?}", e.status);
    assert_eq!(
        e.status.as_ref().unwrap().reason.as_deref(),
        Some(reasons::ROLLED_BACK)
    );

    let (ok, failed, finished) = rt.block_on(traffic_so_far(&pods)).unwrap();
    assert!(
        !finished,
        "the traffic ended before the rollback did ({ok} ok): it no longer spans both moves"
    );
    // Blue serves again after the rollback, then the traffic runs to its end.
    let blue_before = rt.block_on(requests_served(&client, &ns, &blue));
    let (ok, failed_end) = rt.block_on(eventually("traffic pod finished", 300, || {
        let pods = pods.clone();
        async move {
            match traffic_so_far(&pods).await? {
                (ok, failed, true) => Ok((ok, failed)),
                seen => Err(format!("{seen:?}")),
            }
        }
    }));
    let blue_after = rt.block_on(requests_served(&client, &ns, &blue));
    eprintln!(
        "kind: switch blue -> green {:.1}s (spec change to endpoints only green; status Stable after {:.1}s, controller's own record {}s); rollback --bluegreen {:.1}s to endpoints only blue; traffic ok={ok} failed={} of {requests} (green served {mid} mid-way)",
        switch_time.as_secs_f64(),
        status_switch.as_secs_f64(),
        st.last_switch.as_ref().map_or(-1, |s| s.duration_seconds),
        rollback_time.as_secs_f64(),
        failed_end.len(),
    );
    assert!(
        failed.is_empty() && failed_end.is_empty(),
        "requests failed across the switch and the rollback: {failed_end:?}"
    );
    assert_eq!(ok, requests);
    assert!(
        blue_after > blue_before,
        "blue served nothing after the rollback ({blue_before} -> {blue_after})"
    );
}

#[test]
#[ignore = "needs a kind cluster with Veritas installed (ci/kind/install-veritas.sh): VERITAS_KUBECONFIG=/var/cache/veritas-kind/kubeconfig-<cluster>"]
fn switch_refused_while_target_fails_its_health_check_then_completes_once_fixed() {
    kubeconfig();
    let rt = rt();
    let ns = unique("bg-kind-refused");
    let _guard = NamespaceGuard(ns.clone());
    let client = rt.block_on(client());
    rt.block_on(controller_installed(&client));
    // The probe asks a path the runtime does not serve: every target pod answers 404.
    let api = rt.block_on(apply_all(
        &client,
        &ns,
        1,
        json!({"minReadySeconds": 2, "switch": {"healthCheck": {"timeoutSeconds": 10, "path": "/no-such-probe", "port": 8080, "probeTimeoutSeconds": 3}}}),
    ));
    rt.block_on(status_where(&api, 300, "blue Stable, both ready", |e| {
        stable_on(e, EnvironmentName::Blue) && both_ready(e, 1)
    }));
    let blue_ips = ips(&rt.block_on(env_pods(&client, &ns, "blue")));
    let green_ips = ips(&rt.block_on(env_pods(&client, &ns, "green")));
    rt.block_on(api.patch(
        ENV,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"activeEnvironment": "green"}})),
    ))
    .unwrap();
    let e = rt.block_on(status_where(&api, 120, "SwitchFailed", |e| {
        e.status
            .as_ref()
            .is_some_and(|s| s.phase == EnvironmentPhase::SwitchFailed)
    }));
    let st = e.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some(reasons::HEALTH_CHECK_FAILED));
    assert_eq!(st.active_environment, Some(EnvironmentName::Blue));
    // Traffic never moved.
    let eps = rt.block_on(endpoints(&client, &ns));
    assert!(
        !eps.is_empty() && eps.iter().all(|a| blue_ips.contains(a)),
        "{eps:?}"
    );

    // The target's health fixed (here: the probe the environment really serves): the switch
    // is tried again and completes.
    rt.block_on(api.patch(
        ENV,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"switch": {"healthCheck": {"path": "/health"}}}})),
    ))
    .unwrap();
    rt.block_on(status_where(&api, 120, "green Stable", |e| {
        stable_on(e, EnvironmentName::Green)
    }));
    rt.block_on(endpoints_only(
        &client,
        &ns,
        &green_ips,
        60,
        "endpoints only green",
    ));
}

#[test]
#[ignore = "needs a kind cluster with Veritas installed (ci/kind/install-veritas.sh): VERITAS_KUBECONFIG=/var/cache/veritas-kind/kubeconfig-<cluster>"]
fn bluegreen_diff_reads_the_model_each_environments_runtime_serves() {
    kubeconfig();
    let rt = rt();
    let ns = unique("bg-kind-diff");
    let _guard = NamespaceGuard(ns.clone());
    let client = rt.block_on(client());
    rt.block_on(controller_installed(&client));
    let api = rt.block_on(apply_all(&client, &ns, 1, json!({"minReadySeconds": 0})));
    rt.block_on(status_where(&api, 300, "blue Stable, both ready", |e| {
        stable_on(e, EnvironmentName::Blue) && both_ready(e, 1)
    }));
    let target = veritas_cluster::EnvTarget {
        namespace: Some(ns.clone()),
        name: None,
    };
    let (_, f) = rt
        .block_on(veritas_cluster::bluegreen::diff_facts(&client, &target))
        .unwrap();
    assert!(f.drift.is_empty(), "the example is in sync: {:?}", f.drift);

    // Green's pods serve the same model file registered as another version: an init container
    // copies the image's registry and rewrites the manifest's version.
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    rt.block_on(deps.patch(
        "veritas-spark-green",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {
            "volumes": [{"name": "registry", "emptyDir": {}}],
            "initContainers": [{"name": "registry", "image": "veritas.local/veritas-spark:dev",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "cp -r /models/. /registry/ && sed -i 's/\"version\": *\"[^\"]*\"/\"version\": \"9.9.9\"/' /registry/manifest.json"],
                "volumeMounts": [{"name": "registry", "mountPath": "/registry"}]}],
            "containers": [{"name": "spark", "volumeMounts": [{"name": "registry", "mountPath": "/models"}]}]
        }}}})),
    ))
    .unwrap();
    // The rollout done: one green pod, of the new template, ready.
    rt.block_on(eventually("green rolled out", 180, || {
        let deps = deps.clone();
        async move {
            let d = deps
                .get("veritas-spark-green")
                .await
                .map_err(|e| e.to_string())?;
            let s = d.status.clone().unwrap_or_default();
            let gen_ok = s.observed_generation >= d.metadata.generation;
            if gen_ok
                && s.updated_replicas == Some(1)
                && s.ready_replicas == Some(1)
                && s.replicas == Some(1)
            {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        }
    }));
    let drift = rt.block_on(eventually("model drift read from the pods", 60, || {
        let (client, target) = (client.clone(), target.clone());
        async move {
            let (_, f) = veritas_cluster::bluegreen::diff_facts(&client, &target)
                .await
                .map_err(|e| e.to_string())?;
            match f.drift.iter().find(|d| d.kind == "Model") {
                Some(d) => Ok(d.clone()),
                None => Err(format!("{:?}", f.drift)),
            }
        }
    }));
    assert!(drift.green.contains("9.9.9"), "{drift:?}");
    assert!(!drift.blue.contains("9.9.9"), "{drift:?}");
    // Same file: the sha256 prefix is the same on both sides.
    let sha = |s: &str| {
        s.split("sha256:")
            .nth(1)
            .map(|x| x[..12.min(x.len())].to_string())
    };
    assert_eq!(sha(&drift.blue), sha(&drift.green), "{drift:?}");
    // And the CLI says so with its exit code.
    assert_eq!(
        run(
            ClusterCommand::Bluegreen(veritas_cluster::BluegreenCommand::Diff(target)),
            true
        ),
        ExitCode::from(1)
    );
}
