//! Fault injection for E3001 scenarios: reproduce, in this process and everything it starts,
//! what a container runtime's default seccomp profile does to user namespaces, and a process
//! that cannot install seccomp filters of its own.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// Installs a seccomp filter making `unshare(CLONE_NEWUSER)` and `clone(CLONE_NEWUSER)` fail
/// with EPERM and `clone3` with ENOSYS (as Docker's and containerd's default profiles do for a
/// container without CAP_SYS_ADMIN). Filters are inherited across fork and exec and cannot be
/// removed, so run it in the process that then starts (or becomes) the worker. Sets
/// no_new_privs.
pub fn deny_user_namespaces() -> Result<(), String> {
    let arch = crate::seccomp::target_arch()?;
    let newuser = libc::CLONE_NEWUSER as u64;
    let has_newuser = || {
        SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(newuser),
            newuser,
        )
        .map_err(|e| e.to_string())?])
        .map_err(|e| e.to_string())
    };
    let rules = BTreeMap::from([
        (libc::SYS_unshare, vec![has_newuser()?]),
        (libc::SYS_clone, vec![has_newuser()?]),
    ]);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    crate::caps::set_no_new_privs()?;
    for f in [deny, clone3] {
        let prog = BpfProgram::try_from(f).map_err(|e| e.to_string())?;
        crate::seccomp::load(&prog)?;
    }
    Ok(())
}

/// Installs a seccomp filter making every later filter install fail with EINVAL, as on a kernel
/// without `CONFIG_SECCOMP_FILTER` or under a container profile that forbids `seccomp(2)`:
/// `seccomp()` and `prctl(PR_SET_SECCOMP)` both refuse. Inherited across fork and exec, so run
/// it in the process that then starts (or becomes) the worker. Sets no_new_privs.
pub fn deny_seccomp_filters() -> Result<(), String> {
    let arch = crate::seccomp::target_arch()?;
    let set_seccomp = SeccompRule::new(vec![SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        libc::PR_SET_SECCOMP as u64,
    )
    .map_err(|e| e.to_string())?])
    .map_err(|e| e.to_string())?;
    let rules = BTreeMap::from([
        (libc::SYS_seccomp, vec![]),
        (libc::SYS_prctl, vec![set_seccomp]),
    ]);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EINVAL as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    crate::caps::set_no_new_privs()?;
    let prog = BpfProgram::try_from(deny).map_err(|e| e.to_string())?;
    crate::seccomp::load(&prog)
}
