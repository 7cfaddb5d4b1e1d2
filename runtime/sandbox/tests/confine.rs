//! End-to-end tests on the real kernel: each test starts `veritas-sandbox-probe`, which
//! confines itself with `confine()` and reports, as JSON, what was applied and what its
//! self-test could still do. Nothing is simulated: a layer the kernel refuses fails the test.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use veritas_sandbox::{describe_resource_exhaustion, describe_violation, SECURITY_CONTEXT_HINT};

const PROBE: &str = env!("CARGO_BIN_EXE_veritas-sandbox-probe");
const MODEL_BYTES: &[u8] = b"GGUF\x03\x00\x00\x00model bytes for the sandbox test";

fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tiny.gguf"), MODEL_BYTES).expect("write model");
    // The worker runs without capabilities: the model must be readable without DAC override.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(PROBE)
        .args(args)
        .arg("--model-dir")
        .arg(dir)
        .output()
        .expect("spawn probe")
}

/// The first JSON document the probe printed.
fn json(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().next().unwrap_or_else(|| {
        panic!(
            "probe printed nothing; status {:?}, stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

fn layer_state<'a>(doc: &'a Value, layer: &str) -> &'a Value {
    doc["confine"]["report"]["layers"]
        .as_array()
        .expect("report layers")
        .iter()
        .find(|l| l["layer"] == layer)
        .unwrap_or_else(|| panic!("no layer {layer} in {doc}"))
}

fn probe<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["selftest"]
        .as_array()
        .expect("selftest results")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no probe {name} in {doc}"))
}

const ALL_LAYERS: [&str; 7] = [
    "userns",
    "mountns",
    "netns",
    "rlimits",
    "landlock",
    "capabilities",
    "seccomp",
];
const FORBIDDEN: [&str; 12] = [
    "open-outside-model-dir",
    "list-root-dir",
    "create-file-in-model-dir",
    "connect-inet",
    "connect-inet6",
    "execve",
    "ptrace",
    "signal-parent",
    "signal-owner-parent",
    "fork",
    "mount",
    "unshare-userns",
];

/// As PID 1 of a container (seen on kind): the parent is outside the PID namespace and
/// getppid() is 0, which the kernel reads as "ourselves". The probe must not aim at itself
/// and report a forbidden operation as allowed; it says it could not be attempted.
#[test]
fn as_pid_1_of_a_pid_namespace_the_parent_probe_is_not_applicable_and_the_rest_holds() {
    let dir = model_dir();
    // util-linux unshare: a user namespace (no privilege needed) holding a new PID namespace,
    // the probe forked into it as PID 1.
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--pid", "--fork", PROBE])
        .args(["selftest", "--mode", "required", "--model-dir"])
        .arg(dir.path())
        .output()
        .expect("spawn unshare (util-linux)");
    let doc = json(&out);
    assert!(
        out.status.success(),
        "status {:?} stderr {} doc {doc}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let aimed_at_the_parent = ["reschedule-parent", "signal-owner-parent"];
    for name in aimed_at_the_parent {
        let p = probe(&doc, name);
        assert!(
            p["not_applicable"].as_str().unwrap().contains("PID 1"),
            "{p}"
        );
        assert_eq!(p["blocked"], false, "{p}");
    }
    for name in FORBIDDEN
        .iter()
        .filter(|n| !aimed_at_the_parent.contains(n))
    {
        assert_eq!(probe(&doc, name)["blocked"], true, "{}", probe(&doc, name));
    }
}

fn assert_everything_forbidden_is_blocked(doc: &Value) {
    for name in FORBIDDEN {
        let p = probe(doc, name);
        assert_eq!(p["expect"], "blocked", "{p}");
        assert_eq!(p["blocked"], true, "forbidden operation ALLOWED: {p}");
    }
    let read = probe(doc, "read-model-dir");
    assert_eq!(
        read["blocked"], false,
        "reading inside model_dir must work: {read}"
    );
    assert!(
        read["how"]
            .as_str()
            .unwrap()
            .contains(&format!("read {} bytes of tiny.gguf", MODEL_BYTES.len())),
        "{read}"
    );
}

#[test]
fn required_mode_applies_every_layer_and_blocks_every_forbidden_operation() {
    let dir = model_dir();
    let out = run(
        &[
            "selftest",
            "--mode",
            "required",
            "--ipc-pair",
            "--memory-limit",
            "1073741824",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "status {:?} stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    assert_eq!(doc["confine"]["ok"], true, "{doc}");
    for layer in ALL_LAYERS {
        assert_eq!(
            layer_state(&doc, layer)["state"],
            "active",
            "{layer}: {doc}"
        );
    }
    assert_everything_forbidden_is_blocked(&doc);
    // Issue 9, finding 9: another process's affinity and priority are refused (EPERM).
    let p = probe(&doc, "reschedule-parent");
    assert_eq!(
        p["blocked"], true,
        "rescheduling another process ALLOWED: {p}"
    );
    // With seccomp on, the network, exec, ptrace, mount, unshare and fork attempts are trapped.
    for (name, syscall) in [
        ("connect-inet", "socket"),
        ("execve", "execve"),
        ("ptrace", "ptrace"),
        ("mount", "mount"),
        ("unshare-userns", "unshare"),
        ("fork", "clone"),
    ] {
        assert_eq!(
            probe(&doc, name)["trapped_syscall"],
            syscall,
            "{}",
            probe(&doc, name)
        );
    }
    // Landlock answers for paths outside model_dir.
    assert_eq!(probe(&doc, "open-outside-model-dir")["errno"], libc::EACCES);
    assert_eq!(probe(&doc, "raise-memory-limit")["blocked"], true);
    assert_eq!(probe(&doc, "ipc-fd-usable")["blocked"], false);
    assert_eq!(doc["ipc_roundtrip"]["ok"], true, "{doc}");
    // The selftest's write attempt must not have left a file behind.
    assert!(!dir.path().join(".veritas-selftest-write").exists());
}

#[test]
fn off_mode_applies_nothing_and_the_selftest_sees_it() {
    let dir = model_dir();
    let doc = json(&run(&["selftest", "--mode", "off"], dir.path()));
    for layer in ALL_LAYERS {
        assert_eq!(layer_state(&doc, layer)["state"], "disabled");
    }
    // The self-test is not a rubber stamp: unconfined, these are allowed.
    for name in [
        "open-outside-model-dir",
        "list-root-dir",
        "execve",
        "signal-parent",
        "signal-owner-parent",
        "fork",
    ] {
        assert_eq!(probe(&doc, name)["blocked"], false, "{}", probe(&doc, name));
    }
}

/// A parent seccomp filter refusing CLONE_NEWUSER, as container runtimes' default profiles do.
#[test]
fn required_mode_under_a_userns_denying_profile_fails_with_the_guide_checks() {
    let dir = model_dir();
    let out = run(
        &["selftest", "--mode", "required", "--deny-userns"],
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    let c = &doc["confine"];
    assert_eq!(c["ok"], false);
    assert_eq!(c["layer"], "userns", "{doc}");
    let msg = c["error"].as_str().unwrap();
    assert!(
        msg.starts_with("cannot apply sandbox layer userns: unshare(CLONE_NEWUSER) failed: EPERM"),
        "{msg}"
    );
    assert!(msg.chars().next().unwrap().is_lowercase());
    // The checks report what the files say on this machine.
    match std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone") {
        Ok(v) => assert!(
            msg.contains(&format!(
                "/proc/sys/kernel/unprivileged_userns_clone = {}",
                v.trim()
            )),
            "{msg}"
        ),
        Err(_) => assert!(
            msg.contains("/proc/sys/kernel/unprivileged_userns_clone absent"),
            "{msg}"
        ),
    }
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap();
    assert!(
        msg.contains(&format!(
            "/proc/sys/user/max_user_namespaces = {}",
            max.trim()
        )),
        "{msg}"
    );
    assert!(
        msg.contains("/proc/self/status Seccomp: 2 (filter mode"),
        "{msg}"
    );
    assert!(msg.contains(SECURITY_CONTEXT_HINT), "{msg}");
    assert_eq!(c["checks"]["seccomp_mode"], "2");
    assert_eq!(c["checks"]["max_user_namespaces"], max.trim());
}

#[test]
fn best_effort_mode_under_a_userns_denying_profile_confines_with_the_other_layers() {
    let dir = model_dir();
    let out = run(
        &[
            "selftest",
            "--mode",
            "best-effort",
            "--deny-userns",
            "--ipc-pair",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    let userns = layer_state(&doc, "userns");
    assert_eq!(userns["state"], "unavailable", "{doc}");
    assert!(
        userns["reason"].as_str().unwrap().contains("EPERM"),
        "{userns}"
    );
    for layer in [
        "mountns",
        "netns",
        "rlimits",
        "landlock",
        "capabilities",
        "seccomp",
    ] {
        assert_eq!(
            layer_state(&doc, layer)["state"],
            "active",
            "{layer}: {doc}"
        );
    }
    assert_everything_forbidden_is_blocked(&doc);
    assert_eq!(doc["ipc_roundtrip"]["ok"], true);
}

fn violation(syscall: &str, nr: i64) {
    let dir = model_dir();
    let out = run(&["violate", syscall], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("survived"),
        "{syscall} was allowed"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "status {:?} stderr {stderr}",
        out.status
    );
    let v = describe_violation(&out.status, &stderr).expect("violation decoded");
    assert_eq!(v.syscall_nr, Some(nr));
    assert_eq!(v.syscall_name.as_deref(), Some(syscall));
    assert_eq!(v.to_string(), format!("syscall {syscall} ({nr}) blocked"));
    assert!(describe_resource_exhaustion(&out.status, &stderr).is_none());
}

#[test]
fn socket_after_confine_is_a_decoded_violation() {
    violation("socket", libc::SYS_socket);
}

#[test]
fn ptrace_after_confine_is_a_decoded_violation() {
    violation("ptrace", libc::SYS_ptrace);
}

#[test]
fn execve_after_confine_is_a_decoded_violation() {
    violation("execve", libc::SYS_execve);
}

const MIB: u64 = 1 << 20;

#[test]
fn memory_limit_makes_a_large_allocation_fail_and_it_is_reported() {
    let dir = model_dir();
    let (limit, bytes) = ((64 * MIB).to_string(), (256 * MIB).to_string());
    let out = run(
        &["alloc", "--memory-limit", &limit, "--bytes", &bytes],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let alloc: Value = serde_json::from_str(stdout.lines().nth(1).expect("alloc line")).unwrap();
    assert_eq!(alloc["alloc"]["ok"], false, "{alloc}");
    assert!(
        alloc["alloc"]["error"]
            .as_str()
            .unwrap()
            .contains("memory allocation failed"),
        "{alloc}"
    );
    assert!(stdout.contains("RLIMIT_AS=67108864"), "{stdout}");

    // Control: the same allocation without the limit succeeds.
    let out = run(&["alloc", "--bytes", &bytes], dir.path());
    let alloc: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap()).unwrap();
    assert_eq!(alloc["alloc"]["ok"], true, "{alloc}");
}

#[test]
fn memory_limit_abort_is_decoded_as_resource_exhaustion() {
    let dir = model_dir();
    let (limit, bytes) = ((64 * MIB).to_string(), (256 * MIB).to_string());
    let out = run(
        &[
            "alloc",
            "--infallible",
            "--memory-limit",
            &limit,
            "--bytes",
            &bytes,
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let r = describe_resource_exhaustion(&out.status, &stderr)
        .unwrap_or_else(|| panic!("not decoded: {stderr}"));
    assert_eq!(r.requested_bytes, Some(256 * MIB));
    assert!(
        describe_violation(&out.status, &stderr).is_none(),
        "{stderr}"
    );
}

// Each layer on its own, to show it holds without the others.

#[test]
fn landlock_alone_denies_other_paths_tcp_and_signals_outside() {
    let dir = model_dir();
    let doc = json(&run(
        &["selftest", "--mode", "required", "--layers", "landlock"],
        dir.path(),
    ));
    assert_eq!(layer_state(&doc, "landlock")["state"], "active", "{doc}");
    for name in [
        "open-outside-model-dir",
        "list-root-dir",
        "create-file-in-model-dir",
        "execve",
    ] {
        assert_eq!(
            probe(&doc, name)["errno"],
            libc::EACCES,
            "{}",
            probe(&doc, name)
        );
    }
    // TCP connect is a Landlock right since ABI 4, signal scoping since ABI 6.
    let abi = veritas_sandbox::landlock_abi().unwrap();
    if abi >= 4 {
        assert_eq!(
            probe(&doc, "connect-inet")["errno"],
            libc::EACCES,
            "{}",
            probe(&doc, "connect-inet")
        );
    }
    if abi >= 6 {
        assert_eq!(
            probe(&doc, "signal-parent")["errno"],
            libc::EPERM,
            "{}",
            probe(&doc, "signal-parent")
        );
    }
    assert_eq!(probe(&doc, "read-model-dir")["blocked"], false);
}

#[test]
fn network_namespace_alone_leaves_no_reachable_address() {
    let dir = model_dir();
    let doc = json(&run(
        &["selftest", "--mode", "required", "--layers", "netns"],
        dir.path(),
    ));
    assert_eq!(layer_state(&doc, "netns")["state"], "active", "{doc}");
    assert_eq!(
        probe(&doc, "connect-inet")["errno"],
        libc::ENETUNREACH,
        "{}",
        probe(&doc, "connect-inet")
    );
    assert_eq!(
        probe(&doc, "connect-inet6")["blocked"],
        true,
        "{}",
        probe(&doc, "connect-inet6")
    );
}

#[test]
fn user_namespace_and_capability_drop_alone_forbid_mount_ptrace_and_nesting() {
    let dir = model_dir();
    let doc = json(&run(
        &[
            "selftest",
            "--mode",
            "required",
            "--layers",
            "userns,mountns,capabilities",
        ],
        dir.path(),
    ));
    for layer in ["userns", "mountns", "capabilities"] {
        assert_eq!(layer_state(&doc, layer)["state"], "active", "{doc}");
    }
    assert_eq!(
        probe(&doc, "mount")["errno"],
        libc::EPERM,
        "{}",
        probe(&doc, "mount")
    );
    assert_eq!(
        probe(&doc, "ptrace")["blocked"],
        true,
        "{}",
        probe(&doc, "ptrace")
    );
    // Nested user namespaces are limited to 0 inside ours.
    assert_eq!(
        probe(&doc, "unshare-userns")["errno"],
        libc::ENOSPC,
        "{}",
        probe(&doc, "unshare-userns")
    );
    // The read-only mount tree refuses writes even where DAC would allow them.
    assert_eq!(
        probe(&doc, "create-file-in-model-dir")["errno"],
        libc::EROFS,
        "{}",
        probe(&doc, "create-file-in-model-dir")
    );
}

#[test]
fn seccomp_alone_traps_the_escape_syscalls() {
    let dir = model_dir();
    let doc = json(&run(
        &["selftest", "--mode", "required", "--layers", "seccomp"],
        dir.path(),
    ));
    assert_eq!(layer_state(&doc, "seccomp")["state"], "active", "{doc}");
    for (name, syscall) in [
        ("connect-inet", "socket"),
        ("execve", "execve"),
        ("ptrace", "ptrace"),
        ("signal-parent", "kill"),
        ("mount", "mount"),
        ("unshare-userns", "unshare"),
    ] {
        assert_eq!(
            probe(&doc, name)["trapped_syscall"],
            syscall,
            "{}",
            probe(&doc, name)
        );
    }
    // Signal-driven I/O aimed at another process: refused softly (EPERM), not trapped.
    assert_eq!(
        probe(&doc, "signal-owner-parent")["errno"],
        libc::EPERM,
        "{}",
        probe(&doc, "signal-owner-parent")
    );
    // Writes are refused softly (EACCES) rather than trapped.
    assert_eq!(
        probe(&doc, "create-file-in-model-dir")["errno"],
        libc::EACCES
    );
}
