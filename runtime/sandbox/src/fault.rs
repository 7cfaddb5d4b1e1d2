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
    let newuser = libc::CLONE_NEWUSER as u64;
    let has_newuser = || first_arg(SeccompCmpOp::MaskedEq(newuser), newuser);
    install(&[
        (
            BTreeMap::from([
                (libc::SYS_unshare, vec![has_newuser()?]),
                (libc::SYS_clone, vec![has_newuser()?]),
            ]),
            libc::EPERM,
        ),
        (BTreeMap::from([(libc::SYS_clone3, vec![])]), libc::ENOSYS),
    ])
}

/// Installs a seccomp filter making every later filter install fail with EINVAL, as on a kernel
/// without `CONFIG_SECCOMP_FILTER` or under a container profile that forbids `seccomp(2)`:
/// `seccomp()` and `prctl(PR_SET_SECCOMP)` both refuse. Inherited across fork and exec, so run
/// it in the process that then starts (or becomes) the worker. Sets no_new_privs.
pub fn deny_seccomp_filters() -> Result<(), String> {
    let set_seccomp = first_arg(SeccompCmpOp::Eq, libc::PR_SET_SECCOMP as u64)?;
    install(&[(
        BTreeMap::from([
            (libc::SYS_seccomp, vec![]),
            (libc::SYS_prctl, vec![set_seccomp]),
        ]),
        libc::EINVAL,
    )])
}

/// A rule on a syscall's first argument (32 bits: flags, a prctl option).
fn first_arg(op: SeccompCmpOp, value: u64) -> Result<SeccompRule, String> {
    let condition =
        SeccompCondition::new(0, SeccompCmpArgLen::Dword, op, value).map_err(|e| e.to_string())?;
    SeccompRule::new(vec![condition]).map_err(|e| e.to_string())
}

/// Sets no_new_privs, then loads one filter per entry, in order: the matched syscalls fail
/// with the entry's errno, every other call is allowed.
fn install(filters: &[(BTreeMap<i64, Vec<SeccompRule>>, i32)]) -> Result<(), String> {
    let arch = crate::seccomp::target_arch()?;
    let mut progs = Vec::new();
    for (rules, errno) in filters {
        let f = SeccompFilter::new(
            rules.clone(),
            SeccompAction::Allow,
            SeccompAction::Errno(*errno as u32),
            arch,
        )
        .map_err(|e| e.to_string())?;
        progs.push(BpfProgram::try_from(f).map_err(|e| e.to_string())?);
    }
    crate::caps::set_no_new_privs()?;
    for prog in &progs {
        crate::seccomp::load(prog)?;
    }
    Ok(())
}
