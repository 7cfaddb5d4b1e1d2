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

/// The hint when a security module refused the layer: the guide's "review AppArmor/SELinux
/// logs", with where those denials are logged.
pub const SECURITY_MODULE_HINT: &str =
    "review the AppArmor/SELinux logs: dmesg | grep -E 'apparmor=\"DENIED\"|avc: +denied'";

/// The mandatory access control modules of this kernel that can refuse what the sandbox or a
/// client does (AppArmor, SELinux, Smack, TOMOYO) and this process's confinement under them:
/// an EACCES that file modes and capabilities do not explain is theirs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SecurityModules {
    /// Active ones, in the kernel's order.
    pub active: Vec<String>,
    /// This process's label as the kernel gives it (an AppArmor profile and its mode, or
    /// `unconfined`; an SELinux context); `None` when no module is active or it is unreadable.
    pub confinement: Option<String>,
}

const MAC_MODULES: [&str; 4] = ["apparmor", "selinux", "smack", "tomoyo"];

impl SecurityModules {
    /// Reads them from securityfs, sysfs and `/proc/self/attr` now.
    pub fn read() -> Self {
        Self::from_sources(
            read_trim("/sys/kernel/security/lsm").as_deref(),
            read_trim("/sys/module/apparmor/parameters/enabled").as_deref(),
            std::path::Path::new("/sys/fs/selinux/enforce").exists(),
            read_trim("/proc/self/attr/apparmor/current")
                .or_else(|| read_trim("/proc/self/attr/current"))
                .as_deref(),
        )
    }

    /// `lsm_list` is `/sys/kernel/security/lsm` (absent where securityfs is not mounted, as
    /// in most containers: then AppArmor's module parameter and selinuxfs tell).
    pub fn from_sources(
        lsm_list: Option<&str>,
        apparmor_enabled: Option<&str>,
        selinuxfs: bool,
        label: Option<&str>,
    ) -> Self {
        let active: Vec<String> = match lsm_list {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|m| MAC_MODULES.contains(m))
                .map(str::to_owned)
                .collect(),
            None => [
                (apparmor_enabled == Some("Y")).then_some("apparmor"),
                selinuxfs.then_some("selinux"),
            ]
            .into_iter()
            .flatten()
            .map(str::to_owned)
            .collect(),
        };
        let confinement = label
            .map(|l| l.trim_end_matches('\0').trim())
            .filter(|l| !l.is_empty() && !active.is_empty())
            .map(str::to_owned);
        SecurityModules {
            active,
            confinement,
        }
    }

    /// This process is confined by an active module: what it is refused may be the policy's.
    pub fn confined(&self) -> bool {
        self.confinement
            .as_deref()
            .is_some_and(|l| l != "unconfined")
    }
}

impl fmt::Display for SecurityModules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.active.is_empty() {
            return f.write_str("no AppArmor, SELinux, Smack or TOMOYO active");
        }
        write!(f, "{} active", self.active.join(", "))?;
        match self.confinement.as_deref() {
            Some("unconfined") => f.write_str(", this process unconfined"),
            Some(label) => write!(f, ", this process confined as {label}"),
            None => f.write_str(", this process's confinement unknown"),
        }
    }
}

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
    #[serde(default)]
    pub security_modules: SecurityModules,
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
            security_modules: SecurityModules::read(),
            hint: SECURITY_CONTEXT_HINT.to_owned(),
        }
    }

    /// The checks for a layer that failed with `reason`: a refusal (EACCES) while a security
    /// module confines the process points at that module's logs, not at the security context.
    pub(crate) fn for_failure(&self, reason: &str) -> Self {
        let mut checks = self.clone();
        if reason.contains("EACCES") && self.security_modules.confined() {
            checks.hint = SECURITY_MODULE_HINT.to_owned();
        }
        checks
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
        write!(
            f,
            "; landlock: {}; security modules: {}; {}",
            self.landlock, self.security_modules, self.hint
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_modules_come_from_the_lsm_list_when_securityfs_is_mounted() {
        let m = SecurityModules::from_sources(
            Some("lockdown,capability,landlock,yama,apparmor,bpf"),
            Some("Y"),
            false,
            Some("veritas-harness-e3001 (enforce)"),
        );
        // Landlock is the sandbox's own layer, not a policy around it.
        assert_eq!(m.active, ["apparmor"]);
        assert!(m.confined());
        assert_eq!(
            m.to_string(),
            "apparmor active, this process confined as veritas-harness-e3001 (enforce)"
        );
    }

    #[test]
    fn security_modules_fall_back_to_sysfs_and_selinuxfs() {
        let m = SecurityModules::from_sources(
            None,
            None,
            true,
            Some("system_u:system_r:container_t:s0\0"),
        );
        assert_eq!(m.active, ["selinux"]);
        assert_eq!(
            m.confinement.as_deref(),
            Some("system_u:system_r:container_t:s0")
        );
        let unconfined = SecurityModules::from_sources(None, Some("Y"), false, Some("unconfined"));
        assert!(!unconfined.confined());
        assert_eq!(
            unconfined.to_string(),
            "apparmor active, this process unconfined"
        );
        let unreadable = SecurityModules::from_sources(Some("apparmor"), None, false, None);
        assert!(!unreadable.confined());
        assert_eq!(
            unreadable.to_string(),
            "apparmor active, this process's confinement unknown"
        );
        // No module: a label file some kernels keep anyway means nothing.
        let none = SecurityModules::from_sources(
            Some("capability,landlock"),
            Some("N"),
            false,
            Some("kernel"),
        );
        assert!(!none.confined());
        assert_eq!(none.confinement, None);
        assert_eq!(
            none.to_string(),
            "no AppArmor, SELinux, Smack or TOMOYO active"
        );
    }

    #[test]
    fn a_refusal_under_a_confining_module_points_at_its_logs() {
        let mut checks = InitChecks::collect();
        let modules = |label| SecurityModules::from_sources(Some("apparmor"), None, false, label);
        checks.security_modules = modules(Some("runtime (enforce)"));
        let refused = checks
            .for_failure("making / a private mount failed: EACCES (errno 13: Permission denied)");
        assert_eq!(refused.hint, SECURITY_MODULE_HINT);
        // EPERM is a missing capability or a seccomp profile: the security context.
        let eperm = checks
            .for_failure("unshare(CLONE_NEWUSER) failed: EPERM (errno 1: Operation not permitted)");
        assert_eq!(eperm.hint, SECURITY_CONTEXT_HINT);
        // Unconfined, or no module at all: no policy refused it.
        for modules in [modules(Some("unconfined")), SecurityModules::default()] {
            checks.security_modules = modules;
            assert_eq!(checks.for_failure("EACCES").hint, SECURITY_CONTEXT_HINT);
        }
    }
}
