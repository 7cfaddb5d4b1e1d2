//! The blast radius on a real API server (etcd + kube-apiserver with RBAC, no kubelet:
//! `ci/kind/apiserver.sh`): what a step may change is decided by the server's discovery and
//! RBAC, not by how its arguments are spelled, and the leak audit compares every object outside
//! the run's namespace with how it was before the run.
//!
//! `VERITAS_TEST_KUBECONFIG=$(bash ci/kind/apiserver.sh start | tail -1) VERITAS_KUBECTL=...
//! cargo nextest run -p veritas-harness --run-ignored ignored-only -E 'binary(apiserver)'`

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use veritas_harness::cluster::ClusterEnv;
use veritas_harness::report::{ScenarioReport, Verdict};
use veritas_harness::runner::{self, DriverKind, RunConfig};

const NEEDS: &str = "needs a bare API server: VERITAS_TEST_KUBECONFIG (ci/kind/apiserver.sh)";

fn kubeconfig() -> PathBuf {
    PathBuf::from(std::env::var_os("VERITAS_TEST_KUBECONFIG").expect(NEEDS))
}

fn kubectl_bin() -> PathBuf {
    std::env::var_os("VERITAS_KUBECTL").map_or_else(|| "kubectl".into(), PathBuf::from)
}

/// `kubectl ARGS` as the kubeconfig's admin: stdout, or the failure.
fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

fn run(yaml: &str, seed: u64) -> ScenarioReport {
    let s = veritas_scenario::parse(yaml, None).unwrap_or_else(|p| panic!("{p:?}"));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let journal = tempfile::tempdir().unwrap();
    let repo = veritas_harness::repo_root();
    let cfg = RunConfig {
        driver: DriverKind::Existing,
        spark_bin: PathBuf::from("/bin/false"),
        cluster: Some(Arc::new(ClusterEnv::new(
            kubeconfig(),
            kubectl_bin(),
            repo.join("fixtures/manifests"),
            true,
        ))),
        components: vec![],
        seed,
        // No namespace controller on a bare API server: a namespace is never finalized, so
        // the test deletes it without waiting.
        keep: true,
        pause_on_failure: false,
        without_remedy: false,
        journal_dir: journal.path().to_path_buf(),
        interrupted: rx,
        events: Arc::new(|_| {}),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(runner::run(&s, &cfg));
    let ns = format!("veritas-{}-{:04x}", s.id.to_lowercase(), seed & 0xffff);
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"], None);
    report
}

fn scenario(id: &str, cluster_wide: bool, setup: &str, fault: &str, rest: &str) -> String {
    format!(
        r#"apiVersion: harness.veritas.hearthlink.ai/v1alpha1
id: {id}
title: engine self-test on an API server
guide: {{section: engine self-test, cause: blast radius, remedy: none}}
requires: {{driver: cluster, clusterWide: {cluster_wide}}}
timeouts: {{operation: 20s, ready: 20s}}
setup:
{setup}
fault:
{fault}
{rest}"#
    )
}

/// A symptom, diagnosis, remedy and recovery that pass on their own: the fault under test is
/// what decides the verdict.
const QUIET_REST: &str = r#"symptom:
  within: 5s
  holdFor: 1s
  checks:
    - get: {kind: configmap, name: marker, field: /data/state, equals: broken}
diagnosis:
  - kubectl: {args: [get, configmap, marker], as: oncall}
remedy:
  - patch: {kind: configmap, name: marker, patch: {data: {state: fine}}, as: admin, because: the test's own world}
recovery:
  within: 5s
  checks:
    - get: {kind: configmap, name: marker, field: /data/state, equals: fine}
"#;

const MARKER_SETUP: &str = r#"  - apply:
      manifest: |
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: marker}
        data: {state: fine}
"#;

#[test]
#[ignore = "needs a bare API server: VERITAS_TEST_KUBECONFIG (ci/kind/apiserver.sh)"]
fn a_cluster_scoped_object_in_a_manifest_is_refused_without_cluster_wide() {
    // A manifest's text names no other namespace; the server says ClusterRole is
    // cluster-scoped.
    let fault = r#"  - patch: {kind: configmap, name: marker, patch: {data: {state: broken}}}
  - apply:
      manifest: |
        apiVersion: rbac.authorization.k8s.io/v1
        kind: ClusterRole
        metadata: {name: veritas-blast-radius-test}
        rules: []
"#;
    let r = run(
        &scenario("BLAST-MANIFEST", false, MARKER_SETUP, fault, QUIET_REST),
        0xb1a5,
    );
    assert_eq!(r.verdict, Verdict::Error, "{}", r.failure_text());
    let reason = r.reason.unwrap_or_default();
    assert!(reason.contains("blast radius"), "{reason}");
    assert!(
        reason.contains("ClusterRole veritas-blast-radius-test (cluster-scoped)"),
        "{reason}"
    );
    assert_eq!(
        kubectl(
            &[
                "get",
                "clusterrole",
                "veritas-blast-radius-test",
                "--ignore-not-found",
                "-o",
                "name"
            ],
            None
        ),
        Ok(String::new()),
        "the object must not have been created"
    );
}

#[test]
#[ignore = "needs a bare API server: VERITAS_TEST_KUBECONFIG (ci/kind/apiserver.sh)"]
fn a_free_form_kubectl_reaching_another_namespace_is_refused_by_the_server() {
    // `-nkube-system` as one token: no reading of arguments catches every spelling, the
    // server's RBAC does.
    let fault = r#"  - patch: {kind: configmap, name: marker, patch: {data: {state: broken}}}
  - kubectl: {args: [create, configmap, veritas-blast-radius-test, -nkube-system]}
"#;
    let r = run(
        &scenario("BLAST-KUBECTL", false, MARKER_SETUP, fault, QUIET_REST),
        0xb1a6,
    );
    assert_eq!(r.verdict, Verdict::Error, "{}", r.failure_text());
    let text = r.failure_text();
    assert!(text.contains("forbidden"), "{text}");
    assert!(text.contains("blast radius"), "{text}");
    assert_eq!(
        kubectl(
            &[
                "-n",
                "kube-system",
                "get",
                "configmap",
                "veritas-blast-radius-test",
                "--ignore-not-found",
                "-o",
                "name"
            ],
            None
        ),
        Ok(String::new())
    );
}

/// A cluster-wide scenario changes a shared ConfigMap; whether `finally` puts it back decides
/// the leak audit.
fn shared_change(id: &str, seed: u64, finally: &str) -> ScenarioReport {
    let name = format!("veritas-shared-{}", id.to_lowercase());
    let _ = kubectl(
        &[
            "-n",
            "default",
            "delete",
            "configmap",
            &name,
            "--ignore-not-found",
        ],
        None,
    );
    kubectl(
        &[
            "-n",
            "default",
            "create",
            "configmap",
            &name,
            "--from-literal=mode=original",
        ],
        None,
    )
    .expect("the shared object");
    let fault = format!(
        r#"  - patch: {{kind: configmap, name: marker, patch: {{data: {{state: broken}}}}}}
  - patch: {{kind: configmap, name: {name}, namespace: default, patch: {{data: {{mode: faulty}}}}}}
"#
    );
    let rest = format!("{QUIET_REST}finally:\n{finally}");
    let r = run(&scenario(id, true, MARKER_SETUP, &fault, &rest), seed);
    let _ = kubectl(
        &[
            "-n",
            "default",
            "delete",
            "configmap",
            &name,
            "--ignore-not-found",
        ],
        None,
    );
    r
}

#[test]
#[ignore = "needs a bare API server: VERITAS_TEST_KUBECONFIG (ci/kind/apiserver.sh)"]
fn an_outside_object_finally_does_not_restore_is_a_leak_naming_the_field() {
    let r = shared_change(
        "LEAK-UNRESTORED",
        0x1ea1,
        "  - note: {text: forgets to restore the shared ConfigMap}\n",
    );
    assert_eq!(r.verdict, Verdict::Failed, "{}", r.failure_text());
    assert_eq!(r.failed_phase.as_deref(), Some("finally"));
    assert_eq!(r.leaks.len(), 1, "{:?}", r.leaks);
    assert_eq!(
        r.leaks[0],
        "ConfigMap default/veritas-shared-leak-unrestored differs from before the run: /data/mode changed"
    );
}

#[test]
#[ignore = "needs a bare API server: VERITAS_TEST_KUBECONFIG (ci/kind/apiserver.sh)"]
fn an_outside_object_finally_restores_leaves_no_leak() {
    let r = shared_change(
        "LEAK-RESTORED",
        0x1ea2,
        "  - patch: {kind: configmap, name: veritas-shared-leak-restored, namespace: default, patch: {data: {mode: original}}}\n",
    );
    assert_eq!(r.verdict, Verdict::Passed, "{}", r.failure_text());
    assert!(r.leaks.is_empty(), "{:?}", r.leaks);
}
