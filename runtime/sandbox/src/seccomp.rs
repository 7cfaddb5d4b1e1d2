//! The seccomp allow-list of the inference worker, its SIGSYS reporter, and the decoding of a
//! worker's death into a [`Violation`].
//!
//! Three stacked filters (the kernel applies the most severe verdict of all filters):
//! 1. the allow-list: listed syscalls (some with argument conditions) are allowed, everything
//!    else is `SECCOMP_RET_TRAP`;
//! 2. soft denials (`SECCOMP_RET_ERRNO`) for calls libraries make and handle failing:
//!    `clone3` gets `ENOSYS` (glibc then falls back to `clone`, whose flags filter 1 can
//!    inspect), opens for writing get `EACCES`, unknown `ioctl` requests `ENOTTY`, and
//!    unlisted `prctl` options `EPERM`.
//!
//! A trapped syscall runs [`sigsys_handler`]: it writes
//! `veritas-sandbox: seccomp violation: syscall <name> (<nr>)` to stderr and kills the process
//! with SIGSYS, so the supervisor sees both the line and the signal; [`describe_violation`]
//! decodes them.
//!
//! How the list was derived: `strace -f` of a real llama.cpp model load and greedy generation
//! (llama-cpp-2 0.1.160, CPU, 2 and 4 threads, a tiny F32 llama GGUF) run right after
//! `confine()` with every layer but seccomp. From the `confine()` return on, that run made
//! exactly: read, write, lseek, openat, close, newfstatat, statx, fadvise64, mmap, munmap,
//! mprotect, madvise, brk, clone3 (threads; answered ENOSYS here so glibc falls back to clone),
//! futex, set_robust_list, rseq, rt_sigprocmask, rt_sigaction, sigaltstack, sysinfo, exit,
//! exit_group. The rest of `ALLOWED` is what std, glibc (abort, thread start/exit, time,
//! identity), this module's SIGSYS handler and an event loop on the IPC fd (poll/epoll,
//! eventfd, sendmsg/recvmsg) need. `tests/llama_confined.rs` re-runs that inference under every
//! layer and fails, naming the syscall, if llama.cpp ever needs one more.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};

/// The marker line written by the SIGSYS handler.
pub const VIOLATION_MARKER: &str = "veritas-sandbox: seccomp violation: syscall ";

/// Exit code used if re-raising SIGSYS somehow fails (128 + SIGSYS).
pub const VIOLATION_EXIT_CODE: i32 = 128 + libc::SIGSYS;

/// A syscall the worker made that the seccomp allow-list forbids (E3002 SANDBOX_VIOLATION).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The syscall number, when the SIGSYS handler could report it.
    pub syscall_nr: Option<i64>,
    /// Its name on this architecture, when known.
    pub syscall_name: Option<String>,
}

impl fmt::Display for Violation {
    /// `syscall socket (41) blocked`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.syscall_name, self.syscall_nr) {
            (Some(name), Some(nr)) => write!(f, "syscall {name} ({nr}) blocked"),
            (None, Some(nr)) => write!(f, "syscall {nr} blocked"),
            _ => f.write_str("a forbidden syscall was blocked (worker killed by SIGSYS)"),
        }
    }
}

/// Decodes a worker's exit: `Some` when it died of a seccomp violation. Reads the handler's
/// marker line from the tail of the worker's stderr; falls back to a bare SIGSYS death (e.g. a
/// thread that blocked SIGSYS, or a `SECCOMP_RET_KILL_PROCESS` from an outer profile).
pub fn describe_violation(exit: &ExitStatus, stderr_tail: &str) -> Option<Violation> {
    if let Some(v) = stderr_tail.lines().rev().find_map(parse_marker) {
        return Some(v);
    }
    if exit.signal() == Some(libc::SIGSYS) || exit.code() == Some(VIOLATION_EXIT_CODE) {
        return Some(Violation {
            syscall_nr: None,
            syscall_name: None,
        });
    }
    None
}

fn parse_marker(line: &str) -> Option<Violation> {
    let rest = &line[line.find(VIOLATION_MARKER)? + VIOLATION_MARKER.len()..];
    let (name, nr) = rest.trim_end().rsplit_once(" (")?;
    let nr: i64 = nr.strip_suffix(')')?.parse().ok()?;
    let name = (name != "unknown")
        .then(|| name.to_owned())
        .or_else(|| syscall_name(nr).map(str::to_owned));
    Some(Violation {
        syscall_nr: Some(nr),
        syscall_name: name,
    })
}

macro_rules! table {
    ($($sys:ident),* $(,)?) => { &[$((libc::$sys as i64, stringify!($sys))),*] };
}

/// Syscalls named in reports: the allow-list and the usual escape attempts.
static NAMES_COMMON: &[(i64, &str)] = table![
    SYS_read,
    SYS_write,
    SYS_openat,
    SYS_close,
    SYS_fstat,
    SYS_newfstatat,
    SYS_statx,
    SYS_lseek,
    SYS_mmap,
    SYS_mprotect,
    SYS_munmap,
    SYS_mremap,
    SYS_madvise,
    SYS_brk,
    SYS_rt_sigaction,
    SYS_rt_sigprocmask,
    SYS_rt_sigreturn,
    SYS_ioctl,
    SYS_pread64,
    SYS_readv,
    SYS_writev,
    SYS_preadv,
    SYS_sched_yield,
    SYS_mincore,
    SYS_dup,
    SYS_dup3,
    SYS_nanosleep,
    SYS_getpid,
    SYS_socket,
    SYS_connect,
    SYS_accept,
    SYS_accept4,
    SYS_sendto,
    SYS_recvfrom,
    SYS_sendmsg,
    SYS_recvmsg,
    SYS_shutdown,
    SYS_bind,
    SYS_listen,
    SYS_getsockname,
    SYS_getpeername,
    SYS_socketpair,
    SYS_setsockopt,
    SYS_getsockopt,
    SYS_clone,
    SYS_clone3,
    SYS_execve,
    SYS_execveat,
    SYS_exit,
    SYS_wait4,
    SYS_waitid,
    SYS_kill,
    SYS_tkill,
    SYS_tgkill,
    SYS_uname,
    SYS_fcntl,
    SYS_flock,
    SYS_fsync,
    SYS_ftruncate,
    SYS_truncate,
    SYS_getdents64,
    SYS_getcwd,
    SYS_chdir,
    SYS_fchdir,
    SYS_renameat,
    SYS_renameat2,
    SYS_mkdirat,
    SYS_unlinkat,
    SYS_linkat,
    SYS_symlinkat,
    SYS_readlinkat,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fchown,
    SYS_fchownat,
    SYS_umask,
    SYS_gettimeofday,
    SYS_getrlimit,
    SYS_setrlimit,
    SYS_prlimit64,
    SYS_getrusage,
    SYS_sysinfo,
    SYS_ptrace,
    SYS_getuid,
    SYS_getgid,
    SYS_setuid,
    SYS_setgid,
    SYS_geteuid,
    SYS_getegid,
    SYS_setpgid,
    SYS_getppid,
    SYS_setsid,
    SYS_setreuid,
    SYS_setregid,
    SYS_getgroups,
    SYS_setgroups,
    SYS_setresuid,
    SYS_getresuid,
    SYS_setresgid,
    SYS_getresgid,
    SYS_capget,
    SYS_capset,
    SYS_sigaltstack,
    SYS_personality,
    SYS_getpriority,
    SYS_setpriority,
    SYS_sched_setparam,
    SYS_sched_getparam,
    SYS_sched_setscheduler,
    SYS_sched_getscheduler,
    SYS_sched_get_priority_max,
    SYS_sched_get_priority_min,
    SYS_mlock,
    SYS_munlock,
    SYS_mlockall,
    SYS_munlockall,
    SYS_prctl,
    SYS_pivot_root,
    SYS_chroot,
    SYS_sync,
    SYS_mount,
    SYS_umount2,
    SYS_swapon,
    SYS_swapoff,
    SYS_reboot,
    SYS_sethostname,
    SYS_setdomainname,
    SYS_init_module,
    SYS_delete_module,
    SYS_finit_module,
    SYS_kexec_load,
    SYS_gettid,
    SYS_futex,
    SYS_sched_setaffinity,
    SYS_sched_getaffinity,
    SYS_set_tid_address,
    SYS_restart_syscall,
    SYS_fadvise64,
    SYS_clock_gettime,
    SYS_clock_getres,
    SYS_clock_nanosleep,
    SYS_exit_group,
    SYS_epoll_ctl,
    SYS_epoll_pwait,
    SYS_epoll_create1,
    SYS_pipe2,
    SYS_eventfd2,
    SYS_ppoll,
    SYS_pselect6,
    SYS_unshare,
    SYS_setns,
    SYS_set_robust_list,
    SYS_get_robust_list,
    SYS_splice,
    SYS_tee,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_perf_event_open,
    SYS_bpf,
    SYS_seccomp,
    SYS_getrandom,
    SYS_memfd_create,
    SYS_userfaultfd,
    SYS_membarrier,
    SYS_mlock2,
    SYS_copy_file_range,
    SYS_io_uring_setup,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_open_tree,
    SYS_move_mount,
    SYS_fsopen,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fspick,
    SYS_pidfd_open,
    SYS_pidfd_send_signal,
    SYS_pidfd_getfd,
    SYS_close_range,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_mount_setattr,
    SYS_landlock_create_ruleset,
    SYS_landlock_add_rule,
    SYS_landlock_restrict_self,
    SYS_rseq,
    SYS_getcpu,
    SYS_keyctl,
    SYS_add_key,
    SYS_request_key,
    SYS_name_to_handle_at,
    SYS_open_by_handle_at,
    SYS_kcmp,
    SYS_mknodat,
    SYS_syslog,
    SYS_acct,
    SYS_quotactl,
    SYS_sendmmsg,
    SYS_recvmmsg,
    SYS_madvise,
    SYS_get_mempolicy,
    SYS_set_mempolicy,
    SYS_mbind,
    SYS_futex_waitv,
    SYS_epoll_pwait2,
];

#[cfg(target_arch = "x86_64")]
static NAMES_ARCH: &[(i64, &str)] = table![
    SYS_open,
    SYS_stat,
    SYS_lstat,
    SYS_poll,
    SYS_access,
    SYS_pipe,
    SYS_select,
    SYS_dup2,
    SYS_fork,
    SYS_vfork,
    SYS_creat,
    SYS_rename,
    SYS_mkdir,
    SYS_rmdir,
    SYS_link,
    SYS_unlink,
    SYS_symlink,
    SYS_readlink,
    SYS_chmod,
    SYS_chown,
    SYS_lchown,
    SYS_mknod,
    SYS_iopl,
    SYS_ioperm,
    SYS_arch_prctl,
    SYS_time,
    SYS_epoll_wait,
    SYS_epoll_create,
    SYS_getdents,
    SYS_alarm,
    SYS_pause,
    SYS_eventfd,
    SYS_signalfd,
    SYS_inotify_init,
    SYS_uselib,
    SYS_modify_ldt,
    SYS_vhangup,
];
#[cfg(not(target_arch = "x86_64"))]
static NAMES_ARCH: &[(i64, &str)] = &[];

/// The name of a syscall number on this architecture, for the syscalls the sandbox knows.
/// Async-signal-safe (a linear scan of static tables).
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    NAMES_COMMON
        .iter()
        .chain(NAMES_ARCH.iter())
        .find(|(n, _)| *n == nr)
        .map(|(_, s)| &s[4..])
}

// ---------------------------------------------------------------------------------------------
// The allow-list.

const CLONE_NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

fn cond(arg: u8, op: Op, value: u64) -> Cond {
    Cond::new(arg, Len::Qword, op, value).expect("valid seccomp condition")
}
fn cond32(arg: u8, op: Op, value: u64) -> Cond {
    Cond::new(arg, Len::Dword, op, value).expect("valid seccomp condition")
}
fn rule(conds: Vec<Cond>) -> SeccompRule {
    SeccompRule::new(conds).expect("valid seccomp rule")
}

/// Syscalls allowed without conditions (see the module docs for how the list was derived).
/// Each group says who needs it.
static ALLOWED: &[i64] = &[
    // I/O on descriptors the worker holds (model file, IPC socketpair, stdout/stderr).
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_readv,
    libc::SYS_preadv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_fadvise64,
    // Opening and inspecting files: Landlock decides which paths; filter 2 refuses writes.
    libc::SYS_openat,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    // IPC socket (already connected; `socket`/`connect`/`bind` are not allowed).
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    // Event loops on the IPC fd.
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_pipe2,
    // Memory: model mmap, weights, KV cache, thread stacks.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_mlock,
    libc::SYS_munlock,
    libc::SYS_mincore,
    libc::SYS_get_mempolicy,
    // Threads (clone itself is conditional below) and their synchronisation.
    libc::SYS_clone3,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_membarrier,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    // Own process only: filter 2 ("other-process scheduling") denies them on other pids.
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_getparam,
    libc::SYS_sched_setparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_getpriority,
    libc::SYS_setpriority,
    libc::SYS_getcpu,
    // Signals (own process only: tgkill is conditional below).
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    // Time, identity, limits, randomness.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getrlimit,
    libc::SYS_getrusage,
    libc::SYS_getrandom,
    // Conditional in filter 2 (soft denials).
    libc::SYS_ioctl,
    libc::SYS_prctl,
];

#[cfg(target_arch = "x86_64")]
static ALLOWED_ARCH: &[i64] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_epoll_wait,
    libc::SYS_dup2,
    libc::SYS_time,
    libc::SYS_arch_prctl,
];
#[cfg(not(target_arch = "x86_64"))]
static ALLOWED_ARCH: &[i64] = &[];

/// `ioctl` requests allowed (others fail with ENOTTY): terminal probes by isatty(3) and
/// logging, and non-blocking/close-on-exec toggles used by std and tokio.
#[allow(clippy::unnecessary_cast)] // the request type differs between libc targets
const IOCTLS: &[u64] = &[
    libc::TCGETS as u64,
    libc::TIOCGWINSZ as u64,
    libc::FIONREAD as u64,
    libc::FIONBIO as u64,
    libc::FIOCLEX as u64,
    libc::FIONCLEX as u64,
];

/// `prctl` options allowed (others fail with EPERM).
const PRCTLS: &[u64] = &[
    libc::PR_SET_NAME as u64,
    libc::PR_GET_NAME as u64,
    libc::PR_GET_DUMPABLE as u64,
    libc::PR_GET_SECCOMP as u64,
    libc::PR_GET_NO_NEW_PRIVS as u64,
    libc::PR_CAPBSET_READ as u64,
    libc::PR_GET_SECUREBITS as u64,
    libc::PR_CAP_AMBIENT as u64, // only IS_SET is possible: raising needs a permitted cap
    0x5356_4d41,                 // PR_SET_VMA (glibc names anonymous mappings)
];

pub(crate) fn target_arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("unsupported architecture: {e}"))
}

/// fcntl commands the libc crate does not name (asm-generic/fcntl.h, x86_64 and aarch64).
pub(crate) const F_SETSIG: libc::c_int = 10;
pub(crate) const F_SETOWN_EX: libc::c_int = 15;

/// Filter 1: the allow-list; anything else traps.
pub(crate) fn allow_list_filter(pid: libc::pid_t) -> Result<BpfProgram, String> {
    let arch = target_arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in ALLOWED.iter().chain(ALLOWED_ARCH.iter()) {
        rules.insert(*nr, vec![]);
    }
    // Threads only: CLONE_THREAD set and no namespace flag (fork/vfork/posix_spawn trap).
    rules.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(
            0,
            Op::MaskedEq(libc::CLONE_THREAD as u64 | CLONE_NS_FLAGS),
            libc::CLONE_THREAD as u64,
        )])],
    );
    // Signals to our own threads only (abort(3), our SIGSYS re-raise, pthread_kill).
    rules.insert(
        libc::SYS_tgkill,
        vec![rule(vec![cond32(0, Op::Eq, pid as u32 as u64)])],
    );
    // Our own limits only (reading them; lowering is harmless, raising needs a dropped cap).
    rules.insert(libc::SYS_prlimit64, vec![rule(vec![cond32(0, Op::Eq, 0)])]);
    let filter = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, arch)
        .map_err(|e| format!("building the allow-list filter failed: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| format!("compiling the allow-list filter failed: {e}"))
}

/// Filter 2 family: soft denials, each `(program, what)`.
pub(crate) fn soft_denial_filters(
    pid: libc::pid_t,
) -> Result<Vec<(BpfProgram, &'static str)>, String> {
    let arch = target_arch()?;
    let build = |rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32, what: &'static str| {
        let f = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            arch,
        )
        .map_err(|e| format!("building the {what} filter failed: {e}"))?;
        BpfProgram::try_from(f)
            .map(|p| (p, what))
            .map_err(|e| format!("compiling the {what} filter failed: {e}"))
    };
    let mut out = Vec::new();

    // clone3 passes its flags in memory, out of the filter's reach: ENOSYS makes glibc use clone.
    out.push(build(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        libc::ENOSYS,
        "clone3",
    )?);

    // Opens that could write or create.
    let write_bits = [libc::O_WRONLY, libc::O_RDWR, libc::O_CREAT, libc::O_TRUNC];
    let open_rules = |arg: u8| -> Vec<SeccompRule> {
        write_bits
            .iter()
            .map(|b| rule(vec![cond32(arg, Op::MaskedEq(*b as u64), *b as u64)]))
            .collect()
    };
    let mut opens = BTreeMap::from([(libc::SYS_openat, open_rules(2))]);
    #[cfg(target_arch = "x86_64")]
    opens.insert(libc::SYS_open, open_rules(1));
    out.push(build(opens, libc::EACCES, "write-open")?);

    // ioctl requests outside the short list; prctl options outside the short list.
    let not_in = |arg: u8, values: &[u64]| -> Vec<SeccompRule> {
        vec![rule(
            values.iter().map(|v| cond32(arg, Op::Ne, *v)).collect(),
        )]
    };
    out.push(build(
        BTreeMap::from([(libc::SYS_ioctl, not_in(1, IOCTLS))]),
        libc::ENOTTY,
        "ioctl",
    )?);
    out.push(build(
        BTreeMap::from([(libc::SYS_prctl, not_in(0, PRCTLS))]),
        libc::EPERM,
        "prctl",
    )?);
    // Signal-driven I/O: a descriptor's owner receives SIGIO (or F_SETSIG's signal) when it
    // becomes ready, and the kernel checks the owner only as `kill` would for the same uid:
    // a route around "signals to our own process only". No inference path needs it.
    out.push(build(
        BTreeMap::from([(
            libc::SYS_fcntl,
            [libc::F_SETOWN, F_SETOWN_EX, F_SETSIG]
                .iter()
                .map(|cmd| rule(vec![cond32(1, Op::Eq, *cmd as u64)]))
                .collect(),
        )]),
        libc::EPERM,
        "fcntl signal owner",
    )?);
    // Scheduling and priority of another process: EPERM (like tgkill and prlimit64, only
    // our own; 0 means the caller). setpriority's target is its second argument, and only
    // PRIO_PROCESS names a process.
    let me = pid as u32 as u64;
    let other = |arg: u8| vec![rule(vec![cond32(arg, Op::Ne, 0), cond32(arg, Op::Ne, me)])];
    out.push(build(
        BTreeMap::from([
            (libc::SYS_sched_setaffinity, other(0)),
            (libc::SYS_sched_setscheduler, other(0)),
            (libc::SYS_sched_setparam, other(0)),
            (
                libc::SYS_setpriority,
                vec![
                    rule(vec![cond32(0, Op::Ne, libc::PRIO_PROCESS as u64)]),
                    rule(vec![cond32(1, Op::Ne, 0), cond32(1, Op::Ne, me)]),
                ],
            ),
        ]),
        libc::EPERM,
        "other-process scheduling",
    )?);
    Ok(out)
}

/// Number of syscalls in the allow-list (for the report).
pub(crate) fn allow_list_len() -> usize {
    ALLOWED.len() + ALLOWED_ARCH.len() + 3
}

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

/// Loads one filter with seccomp(2) (not prctl: the prctl soft-denial filter refuses
/// PR_SET_SECCOMP once loaded). The caller has set no_new_privs or holds CAP_SYS_ADMIN.
pub(crate) fn load(prog: &BpfProgram) -> Result<(), String> {
    let fprog = SockFprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr(),
    };
    // SAFETY: a valid sock_fprog pointing at `prog`, which outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &fprog as *const SockFprog,
        )
    };
    if rc != 0 {
        return Err(format!(
            "seccomp(SECCOMP_SET_MODE_FILTER) failed: {}",
            crate::ns::describe(&std::io::Error::last_os_error())
        ));
    }
    Ok(())
}

/// Installs the filters (handler first). The caller has set no_new_privs.
pub(crate) fn apply() -> Result<String, String> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let main = allow_list_filter(pid)?;
    let soft = soft_denial_filters(pid)?;
    install_sigsys_handler()?;
    for (p, _) in &soft {
        load(p)?;
    }
    load(&main)?;
    Ok(format!(
        "{} syscalls allowed (clone: threads only, tgkill: own process), others trap with SIGSYS; soft denials: {}",
        allow_list_len(),
        soft.iter().map(|(_, w)| *w).collect::<Vec<_>>().join(", ")
    ))
}

// ---------------------------------------------------------------------------------------------
// SIGSYS handler.

/// The thread (tid) on which a trapped syscall returns -EPERM to its caller instead of
/// killing the process, so [`crate::selftest`] can try forbidden calls one after another;
/// 0: none. Per thread, not process-wide: inference threads running meanwhile stay under
/// the kill-on-violation rule.
static EMULATE_FOR_TID: AtomicI32 = AtomicI32::new(0);

/// Turns EPERM emulation on or off for the calling thread only.
pub(crate) fn emulate_eperm(on: bool) {
    // SAFETY: gettid has no preconditions.
    let tid = if on { unsafe { libc::gettid() } } else { 0 };
    EMULATE_FOR_TID.store(tid, Ordering::SeqCst);
}

/// Whether a trap on the calling thread is to be emulated (async-signal-safe).
pub(crate) fn emulating_here() -> bool {
    let tid = EMULATE_FOR_TID.load(Ordering::SeqCst);
    // SAFETY: gettid is async-signal-safe.
    tid != 0 && tid == unsafe { libc::gettid() }
}
/// The last syscall number trapped while emulating (-1: none).
pub(crate) static LAST_TRAPPED: AtomicI64 = AtomicI64::new(-1);

fn install_sigsys_handler() -> Result<(), String> {
    // SAFETY: a zeroed sigaction is a valid starting point; the handler is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = sigsys_handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) != 0 {
            return Err(format!(
                "installing the SIGSYS handler failed: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// `siginfo_t` for SIGSYS: `si_call_addr` (pointer) then `si_syscall` (int) after the three
/// leading ints and padding, on every 64-bit Linux ABI.
const SI_SYSCALL_OFFSET: usize = 16 + std::mem::size_of::<*const libc::c_void>();
const SYS_SECCOMP: libc::c_int = 1;

extern "C" fn sigsys_handler(
    _sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (code, nr) = unsafe {
        let code = (*info).si_code;
        let nr = *((info as *const u8).add(SI_SYSCALL_OFFSET) as *const libc::c_int);
        (code, nr as i64)
    };
    if code == SYS_SECCOMP && emulating_here() && set_return(ctx, -(libc::EPERM as i64)) {
        LAST_TRAPPED.store(nr, Ordering::SeqCst);
        return;
    }
    let mut buf = [0u8; 160];
    let mut len = 0;
    let mut push = |bytes: &[u8]| {
        for b in bytes {
            if len < buf.len() {
                buf[len] = *b;
                len += 1;
            }
        }
    };
    push(b"\n");
    push(VIOLATION_MARKER.as_bytes());
    push(syscall_name(nr).unwrap_or("unknown").as_bytes());
    push(b" (");
    let mut digits = [0u8; 20];
    let mut n = nr.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if nr < 0 {
        push(b"-");
    }
    push(&digits[i..]);
    push(b")\n");
    // SAFETY: only async-signal-safe calls: write, sigaction, sigprocmask, getpid, gettid,
    // tgkill, _exit.
    unsafe {
        libc::write(2, buf.as_ptr() as *const libc::c_void, len);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGSYS);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            libc::gettid(),
            libc::SIGSYS,
        );
        libc::_exit(VIOLATION_EXIT_CODE);
    }
}

/// Sets the trapped syscall's return value in the interrupted context.
#[allow(unused_variables)]
fn set_return(ctx: *mut libc::c_void, value: i64) -> bool {
    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    {
        // SAFETY: for SA_SIGINFO handlers the third argument is the interrupted ucontext.
        unsafe {
            let uc = ctx as *mut libc::ucontext_t;
            (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] = value;
        }
        true
    }
    #[cfg(all(target_arch = "aarch64", target_env = "gnu"))]
    {
        // SAFETY: as above; x0 carries the return value.
        unsafe {
            let uc = ctx as *mut libc::ucontext_t;
            (*uc).uc_mcontext.regs[0] = value as u64;
        }
        true
    }
    #[cfg(not(all(
        any(target_arch = "x86_64", target_arch = "aarch64"),
        target_env = "gnu"
    )))]
    {
        false
    }
}

#[cfg(test)]
mod emulation_tests {
    use super::*;

    /// Issue 9, finding 9: the self-test's EPERM emulation covers its own thread only, so
    /// a violation on an inference thread during a self-test still kills the worker.
    #[test]
    fn emulation_is_per_thread() {
        assert!(!emulating_here());
        emulate_eperm(true);
        assert!(emulating_here());
        let other = std::thread::spawn(emulating_here).join().unwrap();
        assert!(!other, "another thread must not be emulated");
        emulate_eperm(false);
        assert!(!emulating_here());
    }
}
