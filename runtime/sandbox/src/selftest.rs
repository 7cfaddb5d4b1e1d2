//! Self-test run inside a confined process: try what the sandbox must forbid, one call at a
//! time, and record how each attempt ended.
//!
//! While the self-test runs, a seccomp trap does not kill the process: the SIGSYS handler makes
//! the trapped call return EPERM and records its number, so every probe gets a verdict. Every
//! probe is harmless if it is (wrongly) allowed: `execve` is given an invalid `argv` so that
//! permission is checked but no program runs, `ptrace` uses `PTRACE_SEIZE` (which does not stop
//! the target) and detaches at once, `kill` sends signal 0.

use std::ffi::CString;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::config::SandboxConfig;
use crate::seccomp::{emulate_eperm, syscall_name, LAST_TRAPPED};

/// What a probe should find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    Blocked,
    Allowed,
}

/// One attempted operation and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Stable probe name, e.g. `open-outside-model-dir`.
    pub name: String,
    /// The call attempted, e.g. `open("/etc/passwd", O_RDONLY)`.
    pub attempt: String,
    pub expect: Expect,
    /// Whether the operation was refused.
    pub blocked: bool,
    /// How it ended: `seccomp trap on socket (41)`, `EACCES (Permission denied)`, or what was allowed.
    pub how: String,
    /// The errno returned, when the call failed.
    pub errno: Option<i32>,
    /// The syscall seccomp trapped, when it did.
    pub trapped_syscall: Option<String>,
    /// Why the probe could not be attempted here (nothing was tried; `blocked` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_applicable: Option<String>,
}

impl ProbeResult {
    /// The probe found what it expected, or could not be attempted here.
    pub fn ok(&self) -> bool {
        self.not_applicable.is_some() || self.blocked == (self.expect == Expect::Blocked)
    }
}

enum Attempt {
    Ok(i64),
    Failed { errno: i32, trapped: Option<i64> },
}

/// Runs `f` (a raw call returning -1/errno on failure) with trap emulation on.
fn attempt(f: impl FnOnce() -> i64) -> Attempt {
    LAST_TRAPPED.store(-1, Ordering::SeqCst);
    emulate_eperm(true);
    let rc = f();
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    emulate_eperm(false);
    let trapped = LAST_TRAPPED.swap(-1, Ordering::SeqCst);
    if rc >= 0 && trapped < 0 {
        Attempt::Ok(rc)
    } else {
        Attempt::Failed {
            errno,
            trapped: (trapped >= 0).then_some(trapped),
        }
    }
}

fn blocked_result(
    name: &str,
    what: String,
    expect: Expect,
    errno: i32,
    trapped: Option<i64>,
) -> ProbeResult {
    let (how, trapped_syscall) = match trapped {
        Some(nr) => {
            let n = syscall_name(nr).unwrap_or("unknown");
            (
                format!("seccomp trap (SIGSYS) on {n} ({nr})"),
                Some(n.to_owned()),
            )
        }
        None => (crate::sys::errno_text(errno), None),
    };
    ProbeResult {
        name: name.to_owned(),
        attempt: what,
        expect,
        blocked: true,
        how,
        errno: Some(errno),
        trapped_syscall,
        not_applicable: None,
    }
}

fn allowed_result(name: &str, what: String, expect: Expect, how: String) -> ProbeResult {
    ProbeResult {
        name: name.to_owned(),
        attempt: what,
        expect,
        blocked: false,
        how,
        errno: None,
        trapped_syscall: None,
        not_applicable: None,
    }
}

/// The verdict on one attempted operation: `allowed` describes a success (and undoes any
/// side effect of it); a failure is reported with its errno or the trapped syscall.
fn judge(
    name: &str,
    what: String,
    expect: Expect,
    outcome: Attempt,
    allowed: impl FnOnce(i64) -> String,
) -> ProbeResult {
    match outcome {
        Attempt::Ok(rc) => allowed_result(name, what, expect, allowed(rc)),
        Attempt::Failed { errno, trapped } => blocked_result(name, what, expect, errno, trapped),
    }
}

/// Closes a descriptor a probe obtained (with emulation on, in case `close` itself is denied).
fn close(fd: i64) {
    // SAFETY: closing a descriptor this probe opened.
    let _ = attempt(|| unsafe { libc::close(fd as i32) } as i64);
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL in probe strings")
}

/// Runs every probe. Call it after [`crate::confine`]; it is meant for a process that exits
/// afterwards (a probe that is wrongly allowed may leave state behind, e.g. a file).
pub fn selftest(cfg: &SandboxConfig) -> Vec<ProbeResult> {
    let mut out = Vec::new();
    out.push(probe_read_model_dir(&cfg.model_dir));
    out.push(probe_open(
        "open-outside-model-dir",
        "/etc/passwd",
        libc::O_RDONLY,
        Expect::Blocked,
    ));
    out.push(probe_open(
        "list-root-dir",
        "/",
        libc::O_RDONLY | libc::O_DIRECTORY,
        Expect::Blocked,
    ));
    let target = cfg.model_dir.join(".veritas-selftest-write");
    out.push(probe_open(
        "create-file-in-model-dir",
        &target.to_string_lossy(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        Expect::Blocked,
    ));
    out.push(probe_connect("connect-inet", libc::AF_INET));
    out.push(probe_connect("connect-inet6", libc::AF_INET6));
    out.push(probe_execve());
    out.push(probe_ptrace());
    out.push(probe_kill_parent());
    out.push(probe_signal_owner_parent());
    out.push(probe_fork());
    out.push(probe_mount());
    out.push(probe_unshare());
    out.push(probe_reschedule_parent());
    if cfg.memory_limit_bytes.is_some() {
        out.push(probe_raise_memory_limit());
    }
    if cfg.ipc_fd >= 0 {
        out.push(probe_ipc_fd(cfg.ipc_fd));
    }
    out
}

fn probe_read_model_dir(dir: &Path) -> ProbeResult {
    let what = format!("list {} and read its first file", dir.display());
    let name = "read-model-dir";
    emulate_eperm(true);
    let result = (|| -> std::io::Result<String> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        let first = entries
            .iter()
            .find(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false));
        match first {
            Some(e) => {
                let mut buf = [0u8; 64];
                let n = std::fs::File::open(e.path())?.read(&mut buf)?;
                Ok(format!(
                    "listed {} entries, read {n} bytes of {}",
                    entries.len(),
                    e.file_name().to_string_lossy()
                ))
            }
            None => Ok(format!(
                "listed {} entries (no regular file to read)",
                entries.len()
            )),
        }
    })();
    emulate_eperm(false);
    let trapped = LAST_TRAPPED.swap(-1, Ordering::SeqCst);
    match result {
        Ok(how) if trapped < 0 => allowed_result(name, what, Expect::Allowed, how),
        Ok(_) => blocked_result(name, what, Expect::Allowed, libc::EPERM, Some(trapped)),
        Err(e) => blocked_result(
            name,
            what,
            Expect::Allowed,
            e.raw_os_error().unwrap_or(0),
            (trapped >= 0).then_some(trapped),
        ),
    }
}

fn probe_open(name: &str, path: &str, flags: i32, expect: Expect) -> ProbeResult {
    let p = c(path);
    let what = format!("open({path:?}, {})", open_flags_text(flags));
    // SAFETY: valid path; the descriptor is closed below.
    let outcome =
        attempt(|| unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, 0o600) } as i64);
    judge(name, what, expect, outcome, |fd| {
        close(fd);
        format!("opened (fd {fd})")
    })
}

fn open_flags_text(flags: i32) -> String {
    let mut parts = vec![match flags & libc::O_ACCMODE {
        libc::O_WRONLY => "O_WRONLY",
        libc::O_RDWR => "O_RDWR",
        _ => "O_RDONLY",
    }];
    for (bit, n) in [
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
    ] {
        if flags & bit != 0 {
            parts.push(n);
        }
    }
    parts.join("|")
}

fn probe_connect(name: &str, family: i32) -> ProbeResult {
    let (fam, addr) = if family == libc::AF_INET {
        ("AF_INET", "127.0.0.1:9")
    } else {
        ("AF_INET6", "[::1]:9")
    };
    let what = format!("socket({fam}, SOCK_STREAM) + connect({addr})");
    // SAFETY: plain socket call; the descriptor is closed below.
    let fd =
        match attempt(
            || unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) } as i64,
        ) {
            Attempt::Ok(fd) => fd as i32,
            Attempt::Failed { errno, trapped } => {
                return blocked_result(name, what, Expect::Blocked, errno, trapped)
            }
        };
    let rc = if family == libc::AF_INET {
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 9u16.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: valid sockaddr of the given length.
        attempt(|| unsafe {
            libc::connect(
                fd,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of_val(&sa) as u32,
            )
        } as i64)
    } else {
        let mut a = [0u8; 16];
        a[15] = 1;
        let sa = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: 9u16.to_be(),
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr { s6_addr: a },
            sin6_scope_id: 0,
        };
        // SAFETY: valid sockaddr of the given length.
        attempt(|| unsafe {
            libc::connect(
                fd,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of_val(&sa) as u32,
            )
        } as i64)
    };
    close(fd as i64);
    match rc {
        Attempt::Ok(_) => allowed_result(name, what, Expect::Blocked, "connected".to_owned()),
        // The network stack answered: the address is reachable, so networking is not confined.
        Attempt::Failed {
            errno: libc::ECONNREFUSED,
            trapped: None,
        } => allowed_result(
            name,
            what,
            Expect::Blocked,
            "socket created and loopback reachable (ECONNREFUSED from the network stack)"
                .to_owned(),
        ),
        Attempt::Failed { errno, trapped } => {
            blocked_result(name, what, Expect::Blocked, errno, trapped)
        }
    }
}

fn probe_execve() -> ProbeResult {
    let sh = c("/bin/sh");
    let what =
        "execve(\"/bin/sh\") (argv deliberately invalid: EFAULT means permission was granted)"
            .to_owned();
    // An invalid argv is only read after the kernel opened the file for execution, so the
    // permission checks (seccomp, Landlock, mount flags) all happen and no program ever runs.
    let bad_argv = std::ptr::dangling::<*const libc::c_char>();
    // SAFETY: the kernel validates the pointers and returns EFAULT; nothing is dereferenced here.
    match attempt(|| unsafe { libc::execve(sh.as_ptr(), bad_argv, std::ptr::null()) } as i64) {
        Attempt::Failed {
            errno: libc::EFAULT,
            trapped: None,
        } => allowed_result(
            "execve",
            what,
            Expect::Blocked,
            "execution permitted (EFAULT on argv)".to_owned(),
        ),
        Attempt::Failed { errno, trapped } => {
            blocked_result("execve", what, Expect::Blocked, errno, trapped)
        }
        Attempt::Ok(_) => unreachable!("execve returned success"),
    }
}

fn probe_ptrace() -> ProbeResult {
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    let what = format!("ptrace(PTRACE_SEIZE, parent pid {ppid})");
    // SAFETY: PTRACE_SEIZE does not stop the tracee; we detach at once if it succeeded.
    let outcome =
        attempt(|| unsafe { libc::ptrace(libc::PTRACE_SEIZE, ppid, 0usize, 0usize) } as i64);
    judge("ptrace", what, Expect::Blocked, outcome, |_| {
        // SAFETY: detaching from the process we just seized.
        let _ =
            attempt(|| unsafe { libc::ptrace(libc::PTRACE_DETACH, ppid, 0usize, 0usize) } as i64);
        "attached (then detached)".to_owned()
    })
}

fn probe_kill_parent() -> ProbeResult {
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    let what = format!("kill(parent pid {ppid}, 0)");
    // SAFETY: signal 0 only checks permission.
    let outcome = attempt(|| unsafe { libc::kill(ppid, 0) } as i64);
    judge("signal-parent", what, Expect::Blocked, outcome, |_| {
        "permitted".to_owned()
    })
}

/// Signal-driven I/O aimed at the parent: `F_SETOWN` on a pipe would make the kernel send
/// it SIGIO (or `F_SETSIG`'s signal) whenever the pipe becomes readable, a signal the
/// `kill` rule never sees.
fn probe_signal_owner_parent() -> ProbeResult {
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    let what = format!("fcntl(pipe, F_SETOWN, parent pid {ppid}) and F_SETSIG");
    let not_applicable = |why: String| {
        let mut r = allowed_result(
            "signal-owner-parent",
            what.clone(),
            Expect::Blocked,
            "not attempted".to_owned(),
        );
        r.not_applicable = Some(why);
        r
    };
    if ppid == 0 {
        // PID 1 of a container: owner 0 would mean "no owner", not another process.
        return not_applicable(
            "no parent visible in this PID namespace (PID 1 of a container): no other process to aim at"
                .to_owned(),
        );
    }
    let mut fds = [-1i32; 2];
    // SAFETY: a valid array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return not_applicable(format!(
            "no pipe to aim with: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Harmless if allowed: the pipe is never written (no SIGIO is ever due) and is closed
    // before the probe returns. Both calls must be refused.
    // SAFETY: fcntl on a pipe this probe owns.
    let outcome = attempt(|| unsafe {
        let rc = libc::fcntl(fds[0], libc::F_SETOWN, ppid);
        if rc != 0 {
            return rc as i64;
        }
        libc::fcntl(fds[0], crate::seccomp::F_SETSIG, libc::SIGTERM) as i64
    });
    let result = judge(
        "signal-owner-parent",
        what,
        Expect::Blocked,
        outcome,
        |_| "the parent became the pipe's signal owner".to_owned(),
    );
    close(fds[0] as i64);
    close(fds[1] as i64);
    result
}

fn probe_fork() -> ProbeResult {
    let what = "fork()".to_owned();
    // SAFETY: the child only calls _exit.
    let outcome = attempt(|| unsafe { libc::fork() } as i64);
    judge("fork", what, Expect::Blocked, outcome, |pid| {
        if pid == 0 {
            // SAFETY: the forked child leaves at once.
            unsafe { libc::_exit(0) }
        }
        let mut status = 0;
        // SAFETY: reaping our own child.
        let _ = attempt(|| unsafe { libc::waitpid(pid as i32, &mut status, 0) } as i64);
        format!("child {pid} created")
    })
}

fn probe_mount() -> ProbeResult {
    let target = if Path::new("/tmp").is_dir() {
        "/tmp"
    } else {
        "/"
    };
    let what = format!("mount(\"tmpfs\", {target:?}, \"tmpfs\")");
    let (src, tgt, fstype) = (c("tmpfs"), c(target), c("tmpfs"));
    // SAFETY: valid strings; a successful mount only affects this process's namespace.
    let outcome = attempt(|| unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    } as i64);
    judge("mount", what, Expect::Blocked, outcome, |_| {
        // SAFETY: undo the mount we just made.
        let _ = attempt(|| unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) } as i64);
        "mounted (then unmounted)".to_owned()
    })
}

fn probe_unshare() -> ProbeResult {
    let what = "unshare(CLONE_NEWUSER)".to_owned();
    // SAFETY: plain syscall; if allowed the process merely enters a new user namespace.
    let outcome = attempt(|| unsafe { libc::unshare(libc::CLONE_NEWUSER) } as i64);
    judge("unshare-userns", what, Expect::Blocked, outcome, |_| {
        "new user namespace created".to_owned()
    })
}

/// Another process's CPU affinity and priority: only our own may be changed.
fn probe_reschedule_parent() -> ProbeResult {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    if parent == 0 {
        // PID 1 of a container: the parent lives outside this PID namespace, and pid 0 would
        // mean ourselves (allowed, rightly). No other process is visible to aim at.
        let mut r = allowed_result(
            "reschedule-parent",
            "sched_setaffinity and setpriority on the parent".to_owned(),
            Expect::Blocked,
            "not attempted".to_owned(),
        );
        r.not_applicable = Some(
            "no parent visible in this PID namespace (PID 1 of a container): no other process to aim at"
                .to_owned(),
        );
        return r;
    }
    let what = format!("sched_setaffinity and setpriority on the parent (pid {parent})");
    // Harmless if allowed: the parent's own affinity and priority are set back unchanged.
    // SAFETY: valid cpu_set_t pointers of the size passed.
    let (set, nice) = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(parent, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        (
            set,
            libc::getpriority(libc::PRIO_PROCESS, parent as libc::id_t),
        )
    };
    // SAFETY: as above.
    let outcome = attempt(|| unsafe {
        let rc = libc::sched_setaffinity(parent, std::mem::size_of::<libc::cpu_set_t>(), &set);
        if rc != 0 {
            return rc as i64;
        }
        libc::setpriority(libc::PRIO_PROCESS, parent as libc::id_t, nice) as i64
    });
    judge("reschedule-parent", what, Expect::Blocked, outcome, |_| {
        "the parent's affinity and priority were changed".to_owned()
    })
}

fn probe_raise_memory_limit() -> ProbeResult {
    let what = "setrlimit(RLIMIT_AS, RLIM_INFINITY)".to_owned();
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid rlimit pointer.
    let outcome = attempt(|| unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) } as i64);
    judge("raise-memory-limit", what, Expect::Blocked, outcome, |_| {
        "limit raised".to_owned()
    })
}

fn probe_ipc_fd(fd: i32) -> ProbeResult {
    let what = format!("getsockopt(ipc fd {fd}, SO_TYPE)");
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid out-pointers of the right size.
    let outcome = attempt(|| unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            &mut ty as *mut _ as *mut libc::c_void,
            &mut len,
        )
    } as i64);
    judge("ipc-fd-usable", what, Expect::Allowed, outcome, |_| {
        format!("socket type {ty}")
    })
}
