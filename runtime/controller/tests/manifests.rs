//! The manifests under `fixtures/manifests/` use the guide's names and labels (from
//! veritas-vocab), the example canary is a valid spec, and the runtime takes its `deployment`
//! label from the pod through the downward API.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;
use veritas_crds::VeritasCanarySpec;
use veritas_vocab::labels;

fn docs(dir: &str) -> Vec<Value> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/manifests")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !v.is_null() {
                out.push(v);
            }
        }
    }
    out
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn runtime_objects_carry_the_guides_names_and_labels() {
    let d = docs("runtime");
    let shared = find(&d, "Service", labels::SERVICE_SPARK);
    assert_eq!(
        shared["spec"]["selector"],
        serde_json::json!({labels::APP: labels::APP_SPARK})
    );
    let canary_svc = find(&d, "Service", labels::SERVICE_CANARY);
    assert_eq!(
        canary_svc["spec"]["selector"][labels::DEPLOYMENT],
        labels::DEPLOYMENT_CANARY
    );
    let sm = find(&d, "ServiceMonitor", labels::SERVICE_MONITOR_CANARY);
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"][labels::DEPLOYMENT],
        labels::DEPLOYMENT_CANARY
    );
    for track in [labels::DEPLOYMENT_STABLE, labels::DEPLOYMENT_CANARY] {
        let dep = find(&d, "Deployment", &format!("veritas-spark-{track}"));
        let pod = &dep["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"][labels::APP], labels::APP_SPARK);
        assert_eq!(pod["metadata"]["labels"][labels::DEPLOYMENT], track);
        let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
        let dep_env = env
            .iter()
            .find(|e| e["name"] == "VERITAS_DEPLOYMENT")
            .expect("VERITAS_DEPLOYMENT");
        assert_eq!(
            dep_env["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.labels['deployment']"
        );
    }
}

#[test]
fn example_canary_is_a_valid_spec_matching_the_objects() {
    let d = docs("runtime");
    let c = d.iter().find(|d| d["kind"] == "VeritasCanary").unwrap();
    let spec: VeritasCanarySpec = serde_json::from_value(c["spec"].clone()).unwrap();
    for name in [&spec.stable.deployment, &spec.canary.deployment] {
        find(&d, "Deployment", name);
    }
    for name in [
        &spec.stable.service,
        &spec.canary.service,
        &spec.shared_service,
    ] {
        find(&d, "Service", name);
    }
    find(&d, "ServiceMonitor", &spec.service_monitor);
}

#[test]
fn controller_pods_are_labelled_for_the_guides_log_grep() {
    let d = docs("controller");
    let dep = find(&d, "Deployment", labels::APP_CONTROLLER);
    assert_eq!(
        dep["spec"]["template"]["metadata"]["labels"][labels::APP],
        labels::APP_CONTROLLER
    );
    let role = find(&d, "ClusterRole", labels::APP_CONTROLLER);
    let rules = role["rules"].as_array().unwrap();
    // Least privilege: never delete or create workloads, never write pods, only patch Deployments.
    for r in rules {
        let verbs: Vec<&str> = r["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(!verbs.contains(&"delete") && !verbs.contains(&"*"), "{r}");
        let res: Vec<&str> = r["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        if res.contains(&"pods") {
            assert!(
                verbs.iter().all(|v| ["get", "list", "watch"].contains(v)),
                "{r}"
            );
        }
        // Deployments: read, and patch (a promotion writes the pod template into stable).
        if res.contains(&"deployments") {
            assert!(
                verbs
                    .iter()
                    .all(|v| ["get", "list", "watch", "patch"].contains(v)),
                "{r}"
            );
        }
    }
}

#[test]
fn bluegreen_objects_carry_the_guides_names_labels_and_no_namespace() {
    use veritas_crds::{EnvironmentName, VeritasEnvironmentSpec, ENVIRONMENT_SELECTOR_KEY};
    let d = docs("bluegreen");
    // The scenario harness applies these into a namespace of its own.
    for doc in &d {
        assert!(
            doc["metadata"].get("namespace").is_none(),
            "{} {} hard-codes a namespace",
            doc["kind"],
            doc["metadata"]["name"]
        );
    }
    let env = d
        .iter()
        .find(|d| d["kind"] == "VeritasEnvironment")
        .unwrap();
    let spec: VeritasEnvironmentSpec = serde_json::from_value(env["spec"].clone()).unwrap();
    let active = find(&d, "Service", &spec.active_service);
    let preview = find(&d, "Service", &spec.preview_service);
    assert_eq!(spec.active_service, labels::SERVICE_SPARK);
    assert_eq!(spec.preview_service, labels::SERVICE_PREVIEW);
    assert_eq!(
        active["spec"]["selector"][ENVIRONMENT_SELECTOR_KEY],
        spec.active_environment.as_str()
    );
    assert_eq!(
        preview["spec"]["selector"][ENVIRONMENT_SELECTOR_KEY],
        spec.active_environment.other().as_str()
    );
    for (e, cm) in [
        (EnvironmentName::Blue, labels::CONFIGMAP_BLUE),
        (EnvironmentName::Green, labels::CONFIGMAP_GREEN),
    ] {
        let r = spec.env(e);
        assert_eq!(r.config_map, cm);
        let dep = find(&d, "Deployment", &r.deployment);
        let pod = &dep["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"][labels::APP], labels::APP_SPARK);
        assert_eq!(pod["metadata"]["labels"][labels::ENVIRONMENT], e.as_str());
        assert_eq!(
            dep["spec"]["selector"]["matchLabels"][labels::ENVIRONMENT],
            e.as_str()
        );
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["envFrom"][0]["configMapRef"]["name"], cm);
        assert_eq!(c["image"], "veritas.local/veritas-spark:dev");
        find(&d, "ConfigMap", cm);
    }
    // Identical configuration: the example starts in sync.
    assert_eq!(
        find(&d, "ConfigMap", labels::CONFIGMAP_BLUE)["data"],
        find(&d, "ConfigMap", labels::CONFIGMAP_GREEN)["data"]
    );
}

#[test]
fn controller_may_read_what_bluegreen_drift_compares() {
    let d = docs("controller");
    let role = find(&d, "ClusterRole", labels::APP_CONTROLLER);
    let can = |res: &str, verb: &str| {
        role["rules"].as_array().unwrap().iter().any(|r| {
            r["resources"].as_array().unwrap().iter().any(|x| x == res)
                && r["verbs"].as_array().unwrap().iter().any(|x| x == verb)
        })
    };
    for (res, verb) in [
        ("configmaps", "watch"),
        ("secrets", "get"),
        ("veritasenvironments", "watch"),
        ("veritasenvironments/status", "patch"),
    ] {
        assert!(can(res, verb), "{res} {verb}");
    }
    assert!(!can("secrets", "list"), "secrets are read by name only");
}

#[test]
fn the_default_install_grants_the_controller_one_namespace_and_the_cluster_wide_one_all() {
    let d = docs("controller");
    // Nothing in the default install binds the controller's permissions cluster-wide: only
    // the CRD check is cluster-scoped.
    for b in d.iter().filter(|d| d["kind"] == "ClusterRoleBinding") {
        assert_ne!(b["roleRef"]["name"], labels::APP_CONTROLLER, "{b}");
        let role = find(&d, "ClusterRole", b["roleRef"]["name"].as_str().unwrap());
        for r in role["rules"].as_array().unwrap() {
            assert_eq!(
                r["resources"],
                serde_json::json!(["customresourcedefinitions"]),
                "{r}"
            );
            assert_eq!(r["verbs"], serde_json::json!(["get"]), "{r}");
        }
    }
    // A RoleBinding in the watched namespace, which the controller is told to watch.
    let rb = find(&d, "RoleBinding", labels::APP_CONTROLLER);
    assert_eq!(rb["roleRef"]["kind"], "ClusterRole");
    assert_eq!(rb["roleRef"]["name"], labels::APP_CONTROLLER);
    let scope = find(&d, "ConfigMap", "veritas-controller-scope");
    assert_eq!(scope["data"]["watchNamespace"], rb["metadata"]["namespace"]);
    let dep = find(&d, "Deployment", labels::APP_CONTROLLER);
    let env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let watch = env
        .iter()
        .find(|e| e["name"] == "VERITAS_WATCH_NAMESPACE")
        .expect("VERITAS_WATCH_NAMESPACE");
    assert_eq!(
        watch["valueFrom"]["configMapKeyRef"]["name"],
        "veritas-controller-scope"
    );
    assert_eq!(watch["valueFrom"]["configMapKeyRef"]["optional"], true);
    // The cluster-wide variant: the same ClusterRole, bound everywhere.
    let wide = docs("controller-cluster-wide");
    let crb = find(&wide, "ClusterRoleBinding", labels::APP_CONTROLLER);
    assert_eq!(crb["roleRef"]["name"], labels::APP_CONTROLLER);
    assert_eq!(
        crb["subjects"][0]["namespace"],
        labels::CONTROLLER_NAMESPACE
    );
}
