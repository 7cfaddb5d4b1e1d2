//! The E3001 diagnostic checks of the deployment guide, read from the running system.
//!
//! The guide's checks are `cat /proc/sys/kernel/unprivileged_userns_clone`, `grep SECCOMP
//! /boot/config-$(uname -r)` and the pod's security context. `/boot/config-*` rarely exists in a
//! container, so seccomp support is read from `/proc/self/status` instead (a `Seccomp:` line
//! exists exactly when the kernel has CONFIG_SECCOMP; a non-zero value and `Seccomp_filters`
//! show that a parent, e.g. the container runtime's default profile, already filters us).

use std::fmt;
use std::fs;

use serde::{Deserialize, Serialize};

/// The hint printed last; the command is the guide's.
pub const SECURITY_CONTEXT_HINT: &str =
    "check the container security context (kubectl describe pod <pod> | grep -A10 'Security Context')";

/// The values behind an E3001, read when the failure happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitChecks {
    /// Contents of `/proc/sys/kernel/unprivileged_userns_clone` (Debian/Ubuntu knob), `None` when absent.
    pub unprivileged_userns_clone: Option<String>,
    /// Contents of `/proc/sys/user/max_user_namespaces`, `None` when absent.
    pub max_user_namespaces: Option<String>,
    /// `/proc/self/status` `Seccomp:` value (0 none, 1 strict, 2 filter), `None` when the kernel lacks seccomp.
    pub seccomp_mode: Option<String>,
    /// `/proc/self/status` `Seccomp_filters:` value: filters already stacked on this process.
    pub seccomp_filters: Option<String>,
    /// `/proc/self/status` `NoNewPrivs:`.
    pub no_new_privs: Option<String>,
    /// `/proc/self/status` `CapBnd:` (hex).
    pub cap_bounding: Option<String>,
    /// `/proc/self/status` `Threads:`.
    pub threads: Option<String>,
    /// Landlock ABI version from `landlock_create_ruleset(NULL, 0, VERSION)`, or the errno text.
    pub landlock: String,
    pub hint: String,
}

impl InitChecks {
    /// Reads every check now.
    pub fn collect() -> Self {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim().to_owned())
            })
        };
        InitChecks {
            unprivileged_userns_clone: read_trim("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: read_trim("/proc/sys/user/max_user_namespaces"),
            seccomp_mode: field("Seccomp"),
            seccomp_filters: field("Seccomp_filters"),
            no_new_privs: field("NoNewPrivs"),
            cap_bounding: field("CapBnd"),
            threads: field("Threads"),
            landlock: match crate::landlock_layer::kernel_abi() {
                Ok(v) => format!("ABI {v}"),
                Err(e) => format!("unavailable ({e})"),
            },
            hint: SECURITY_CONTEXT_HINT.to_owned(),
        }
    }
}

fn read_trim(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

impl fmt::Display for InitChecks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.unprivileged_userns_clone {
            Some(v) => {
                let note = if v == "0" { " (unprivileged user namespaces disabled)" } else { "" };
                write!(f, "/proc/sys/kernel/unprivileged_userns_clone = {v}{note}")?
            }
            None => f.write_str(
                "/proc/sys/kernel/unprivileged_userns_clone absent (kernel without the Debian knob)",
            )?,
        }
        match &self.max_user_namespaces {
            Some(v) => {
                let note = if v == "0" {
                    " (user namespaces disabled)"
                } else {
                    ""
                };
                write!(f, "; /proc/sys/user/max_user_namespaces = {v}{note}")?
            }
            None => f.write_str("; /proc/sys/user/max_user_namespaces absent")?,
        }
        match &self.seccomp_mode {
            None => f.write_str(
                "; seccomp: not supported by this kernel (no Seccomp: line in /proc/self/status)",
            )?,
            Some(mode) => {
                let what = match mode.as_str() {
                    "0" => "supported, no filter installed",
                    "1" => "strict mode",
                    "2" => "filter mode: a parent profile (container runtime?) already filters syscalls",
                    _ => "unknown mode",
                };
                write!(f, "; seccomp: /proc/self/status Seccomp: {mode} ({what})")?;
                if let Some(n) = &self.seccomp_filters {
                    write!(f, ", Seccomp_filters: {n}")?;
                }
            }
        }
        if let Some(v) = &self.no_new_privs {
            write!(f, "; NoNewPrivs: {v}")?;
        }
        if let Some(v) = &self.cap_bounding {
            write!(f, "; CapBnd: {v}")?;
        }
        if let Some(v) = &self.threads {
            write!(f, "; Threads: {v}")?;
        }
        write!(f, "; landlock: {}; {}", self.landlock, self.hint)
    }
}
