//! Confinement of the `veritas-spark` inference worker.
//!
//! The worker (the daemon binary re-executed as `veritas-spark worker ...`) calls [`confine`]
//! first thing, while it is still single-threaded and before it opens the model. Layers are
//! applied in this order, each only if enabled in [`SandboxConfig::layers`]:
//!
//! | layer | what it does |
//! |---|---|
//! | `userns` | `unshare(CLONE_NEWUSER)`, uid/gid mapped to themselves, setgroups denied, nested user namespaces limited to 0 |
//! | `mountns` | private mount namespace, the whole tree remounted read-only, nosuid, nodev |
//! | `netns` | empty network namespace: only `lo`, down |
//! | `rlimits` | `RLIMIT_AS` = `memory_limit_bytes`, `RLIMIT_NOFILE` = `max_open_files`, `RLIMIT_CORE` = 0 |
//! | `landlock` | read-only `model_dir` and the loader's files; every other filesystem right, TCP bind/connect, abstract Unix sockets and signals outside the sandbox denied |
//! | `capabilities` | securebits locked, bounding/ambient/inheritable/permitted/effective sets emptied, no_new_privs, non-dumpable |
//! | `seccomp` | an allow-list; anything else is trapped, reported on stderr and kills the worker with SIGSYS |
//!
//! In [`SandboxMode::Required`] the first layer that cannot be applied stops `confine` with
//! [`SandboxError::Init`] (E3001; the process is then partly confined and must exit). In
//! [`SandboxMode::BestEffort`] such a layer is reported as [`LayerState::Unavailable`] and the
//! others are still applied. [`SandboxMode::Off`] applies nothing.
//!
//! After a worker dies, [`describe_violation`] tells whether seccomp killed it and for which
//! syscall (E3002), and [`describe_resource_exhaustion`] whether it ran out of its address
//! space (E3003). [`selftest`] verifies a confined process from the inside.

mod caps;
mod config;
mod diag;
mod error;
pub mod fault;
mod landlock_layer;
mod ns;
mod report;
mod rlimits;
mod seccomp;
mod selftest;
mod sys;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

pub use config::{Layer, LayerSet, ParseError, SandboxConfig, SandboxMode};
pub use diag::{InitChecks, SecurityModules, SECURITY_CONTEXT_HINT, SECURITY_MODULE_HINT};
pub use error::SandboxError;
pub use landlock_layer::kernel_abi as landlock_abi;
pub use report::{LayerState, LayerStatus, SandboxReport};
pub use seccomp::{
    describe_violation, syscall_name, Violation, VIOLATION_EXIT_CODE, VIOLATION_MARKER,
};
pub use selftest::{selftest, Expect, ProbeResult};
pub use sys::errno_name;

/// Confines the calling process. See the crate documentation for the layers and their order.
///
/// Call it from `main` before any thread is started (the user namespace requires a
/// single-threaded caller, and the seccomp filter and Landlock domain are inherited only by
/// threads created afterwards) and before opening the model.
pub fn confine(cfg: &SandboxConfig) -> Result<SandboxReport, SandboxError> {
    let mut layers = Vec::with_capacity(Layer::ALL.len());
    if cfg.mode == SandboxMode::Off {
        for layer in Layer::ALL {
            layers.push(LayerStatus {
                layer,
                state: LayerState::Disabled,
                detail: None,
            });
        }
        return Ok(SandboxReport {
            mode: cfg.mode,
            layers,
        });
    }

    let threads = sys::thread_count().unwrap_or(1);
    // Read before the first layer: afterwards /proc may be out of reach (Landlock) and the
    // seccomp state would include our own filters.
    let checks = InitChecks::collect();
    let ipc_ok = cfg.ipc_fd < 0 || {
        // SAFETY: F_GETFD only queries the descriptor.
        unsafe { libc::fcntl(cfg.ipc_fd, libc::F_GETFD) >= 0 }
    };
    if !ipc_ok {
        return Err(SandboxError::InvalidConfig {
            reason: format!("ipc_fd {} is not an open descriptor", cfg.ipc_fd),
        });
    }

    for layer in Layer::ALL {
        if !cfg.layers.contains(layer) {
            layers.push(LayerStatus {
                layer,
                state: LayerState::Disabled,
                detail: None,
            });
            continue;
        }
        // Only rlimits are process-wide; namespaces (EINVAL), Landlock, capabilities and
        // seccomp would cover the calling thread alone.
        let result = if threads > 1 && layer != Layer::Rlimits {
            Err(format!(
                "the process already has {threads} threads; confine() must run before any thread is started"
            ))
        } else {
            apply_layer(layer, cfg)
        };
        match result {
            Ok(detail) => {
                tracing::debug!(%layer, %detail, "sandbox layer active");
                layers.push(LayerStatus {
                    layer,
                    state: LayerState::Active,
                    detail: Some(detail),
                });
            }
            Err(reason) => {
                if cfg.mode == SandboxMode::Required {
                    return Err(SandboxError::init(layer, reason, &checks));
                }
                tracing::warn!(%layer, %reason, "sandbox layer unavailable");
                layers.push(LayerStatus {
                    layer,
                    state: LayerState::Unavailable { reason },
                    detail: None,
                });
            }
        }
    }
    Ok(SandboxReport {
        mode: cfg.mode,
        layers,
    })
}

fn apply_layer(layer: Layer, cfg: &SandboxConfig) -> Result<String, String> {
    match layer {
        Layer::UserNamespace => ns::enter_user_namespace(),
        Layer::MountNamespace => ns::enter_mount_namespace(),
        Layer::NetworkNamespace => ns::enter_network_namespace(),
        Layer::Rlimits => rlimits::apply(cfg.memory_limit_bytes, cfg.max_open_files),
        Layer::Landlock => {
            caps::set_no_new_privs()?;
            landlock_layer::apply(&cfg.model_dir, &cfg.extra_read_paths)
        }
        Layer::Capabilities => caps::drop_all(),
        Layer::Seccomp => {
            caps::set_no_new_privs()?;
            seccomp::apply()
        }
    }
}

/// The worker ran out of the address space granted by `memory_limit_bytes` (E3003).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceExhaustion {
    /// The allocation that failed, when the worker's stderr says.
    pub requested_bytes: Option<u64>,
    /// How it surfaced, e.g. `memory allocation of 268435456 bytes failed`.
    pub detail: String,
}

/// Decodes a worker's exit: `Some` when it died because an allocation failed (Rust's
/// `memory allocation of N bytes failed` abort, or llama.cpp's `std::bad_alloc`), which under
/// RLIMIT_AS is what hitting `memory_limit_bytes` looks like.
pub fn describe_resource_exhaustion(
    exit: &ExitStatus,
    stderr_tail: &str,
) -> Option<ResourceExhaustion> {
    if exit.success() {
        return None;
    }
    for line in stderr_tail.lines().rev() {
        if let Some(rest) = line.split("memory allocation of ").nth(1) {
            if let Some(n) = rest
                .strip_suffix(" bytes failed")
                .or_else(|| rest.split(" bytes failed").next())
            {
                return Some(ResourceExhaustion {
                    requested_bytes: n.trim().parse().ok(),
                    detail: line.trim().to_owned(),
                });
            }
        }
        if line.contains("std::bad_alloc") || line.contains("failed to allocate") {
            return Some(ResourceExhaustion {
                requested_bytes: None,
                detail: line.trim().to_owned(),
            });
        }
    }
    let _ = exit.signal();
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn mode_spellings_round_trip() {
        for (m, s) in [
            (SandboxMode::Required, "required"),
            (SandboxMode::BestEffort, "best-effort"),
            (SandboxMode::Off, "off"),
        ] {
            assert_eq!(m.to_string(), s);
            assert_eq!(s.parse::<SandboxMode>().unwrap(), m);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<SandboxMode>(&format!("\"{s}\"")).unwrap(),
                m
            );
        }
        let e = "strict".parse::<SandboxMode>().unwrap_err().to_string();
        assert!(e.starts_with("unknown sandbox mode \"strict\""), "{e}");
    }

    #[test]
    fn layer_names_are_the_documented_ones() {
        let names: Vec<String> = Layer::ALL.iter().map(|l| l.to_string()).collect();
        assert_eq!(
            names,
            [
                "userns",
                "mountns",
                "netns",
                "rlimits",
                "landlock",
                "capabilities",
                "seccomp"
            ]
        );
        for l in Layer::ALL {
            assert_eq!(l.as_str().parse::<Layer>().unwrap(), l);
            assert_eq!(serde_json::to_string(&l).unwrap(), format!("\"{l}\""));
        }
    }

    #[test]
    fn layer_set_parses_and_serializes() {
        let s: LayerSet = "seccomp, landlock".parse().unwrap();
        assert!(s.contains(Layer::Seccomp) && s.contains(Layer::Landlock));
        assert!(!s.contains(Layer::UserNamespace));
        assert_eq!(s.to_string(), "landlock,seccomp");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"["landlock","seccomp"]"#
        );
        assert_eq!(
            serde_json::from_str::<LayerSet>(r#"["landlock","seccomp"]"#).unwrap(),
            s
        );
        assert_eq!("all".parse::<LayerSet>().unwrap(), LayerSet::all());
        assert_eq!(LayerSet::default(), LayerSet::all());
        assert!("none".parse::<LayerSet>().unwrap().is_empty());
        assert!("landlock,chroot".parse::<LayerSet>().is_err());
        assert_eq!(LayerSet::all().without(Layer::Seccomp).iter().count(), 6);
    }

    #[test]
    fn report_json_is_flat() {
        let r = SandboxReport {
            mode: SandboxMode::BestEffort,
            layers: vec![
                LayerStatus {
                    layer: Layer::UserNamespace,
                    state: LayerState::Unavailable {
                        reason: "EPERM".into(),
                    },
                    detail: None,
                },
                LayerStatus {
                    layer: Layer::Seccomp,
                    state: LayerState::Active,
                    detail: Some("110 syscalls".into()),
                },
                LayerStatus {
                    layer: Layer::NetworkNamespace,
                    state: LayerState::Disabled,
                    detail: None,
                },
            ],
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(
            j,
            r#"{"mode":"best-effort","layers":[{"layer":"userns","state":"unavailable","reason":"EPERM"},{"layer":"seccomp","state":"active","detail":"110 syscalls"},{"layer":"netns","state":"disabled"}]}"#
        );
        let back: SandboxReport = serde_json::from_str(&j).unwrap();
        assert_eq!(back, r);
        assert!(back.is_active(Layer::Seccomp));
        assert_eq!(back.unavailable().count(), 1);
    }

    #[test]
    fn off_mode_disables_every_layer_without_touching_the_process() {
        let cfg = SandboxConfig::new(SandboxMode::Off, "/nonexistent", -1);
        let r = confine(&cfg).unwrap();
        assert_eq!(r.layers.len(), 7);
        assert!(r.layers.iter().all(|l| l.state == LayerState::Disabled));
    }

    #[test]
    fn a_closed_ipc_fd_is_a_configuration_error() {
        let cfg = SandboxConfig::new(SandboxMode::Required, "/nonexistent", 1_000_000);
        let e = confine(&cfg).unwrap_err();
        assert!(matches!(e, SandboxError::InvalidConfig { .. }), "{e}");
        assert_eq!(e.layer(), None);
        assert_eq!(
            e.to_string(),
            "invalid sandbox configuration: ipc_fd 1000000 is not an open descriptor"
        );
    }

    #[test]
    fn violation_decoded_from_marker_line() {
        let status = ExitStatus::from_raw(libc::SIGSYS);
        let tail = format!(
            "some log\n\n{VIOLATION_MARKER}socket ({})\n",
            libc::SYS_socket
        );
        let v = describe_violation(&status, &tail).unwrap();
        assert_eq!(v.syscall_nr, Some(libc::SYS_socket));
        assert_eq!(v.syscall_name.as_deref(), Some("socket"));
        assert_eq!(
            v.to_string(),
            format!("syscall socket ({}) blocked", libc::SYS_socket)
        );
    }

    #[test]
    fn violation_with_unknown_name_is_resolved_or_numbered() {
        let status = ExitStatus::from_raw(libc::SIGSYS);
        let v = describe_violation(&status, &format!("{VIOLATION_MARKER}unknown (999)")).unwrap();
        assert_eq!(v.to_string(), "syscall 999 blocked");
    }

    #[test]
    fn bare_sigsys_is_a_violation_and_other_deaths_are_not() {
        let v = describe_violation(&ExitStatus::from_raw(libc::SIGSYS), "").unwrap();
        assert_eq!(v.syscall_nr, None);
        assert!(describe_violation(&ExitStatus::from_raw(libc::SIGSEGV), "segfault").is_none());
        assert!(describe_violation(&ExitStatus::from_raw(0), "").is_none());
    }

    #[test]
    fn allocation_failure_is_resource_exhaustion() {
        let status = ExitStatus::from_raw(libc::SIGABRT);
        let r =
            describe_resource_exhaustion(&status, "memory allocation of 268435456 bytes failed\n")
                .unwrap();
        assert_eq!(r.requested_bytes, Some(268_435_456));
        let r = describe_resource_exhaustion(
            &status,
            "terminate called after throwing an instance of 'std::bad_alloc'",
        )
        .unwrap();
        assert_eq!(r.requested_bytes, None);
        assert!(describe_resource_exhaustion(&status, "assertion failed").is_none());
        assert!(describe_resource_exhaustion(
            &ExitStatus::from_raw(0),
            "memory allocation of 1 bytes failed"
        )
        .is_none());
    }

    #[test]
    fn syscall_names_cover_the_usual_escapes() {
        for (nr, name) in [
            (libc::SYS_socket, "socket"),
            (libc::SYS_ptrace, "ptrace"),
            (libc::SYS_execve, "execve"),
            (libc::SYS_unshare, "unshare"),
            (libc::SYS_mount, "mount"),
        ] {
            assert_eq!(syscall_name(nr), Some(name));
        }
        assert_eq!(syscall_name(100_000), None);
    }

    #[test]
    fn init_error_display_is_a_lowercase_fragment_with_the_checks() {
        let checks = InitChecks {
            unprivileged_userns_clone: Some("0".into()),
            max_user_namespaces: Some("0".into()),
            seccomp_mode: Some("2".into()),
            seccomp_filters: Some("1".into()),
            no_new_privs: Some("1".into()),
            cap_bounding: None,
            threads: Some("1".into()),
            landlock: "ABI 7".into(),
            security_modules: SecurityModules::default(),
            hint: SECURITY_CONTEXT_HINT.into(),
        };
        let e = SandboxError::init(
            Layer::UserNamespace,
            "unshare(CLONE_NEWUSER) failed: EPERM",
            &checks,
        );
        let s = e.to_string();
        assert!(
            s.starts_with("cannot apply sandbox layer userns: unshare"),
            "{s}"
        );
        assert!(s.contains("/proc/sys/kernel/unprivileged_userns_clone = 0 (unprivileged user namespaces disabled)"), "{s}");
        assert!(
            s.contains("/proc/sys/user/max_user_namespaces = 0 (user namespaces disabled)"),
            "{s}"
        );
        assert!(s.contains("Seccomp: 2 (filter mode"), "{s}");
        assert!(s.ends_with("check the container security context (kubectl describe pod <pod> | grep -A10 'Security Context')"), "{s}");
        assert_eq!(e.layer(), Some(Layer::UserNamespace));
    }

    #[test]
    fn seccomp_filters_compile() {
        let main = seccomp::allow_list_filter(1).unwrap();
        assert!(main.len() > 100 && main.len() < 4096, "{}", main.len());
        assert_eq!(seccomp::soft_denial_filters(1).unwrap().len(), 6);
    }
}
