//! The operator CLI's side of the runtime socket.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use veritas_vocab::ipc::{self, Check, Op, Outcome, Reply, Request, Response};
use veritas_vocab::{ErrorBody, ErrorCode};

/// A failed command: the guide's error and, for connection failures, the checks it lists.
#[derive(Debug)]
pub struct CliError {
    pub error: ErrorBody,
    pub checks: Vec<Check>,
}

impl From<ErrorBody> for CliError {
    fn from(error: ErrorBody) -> Self {
        CliError {
            error,
            checks: Vec::new(),
        }
    }
}

pub struct Client {
    stream: UnixStream,
    socket: std::path::PathBuf,
    timeout: Duration,
    next_id: u64,
}

/// A runtime answers its probes from memory at once: this long without an answer to one
/// means no runtime is answering on the socket at all.
pub const PROBE_ANSWER: Duration = Duration::from_secs(5);

/// Operations a live runtime answers at once (never queued behind inference).
fn is_probe(op: &Op) -> bool {
    matches!(
        op,
        Op::Health { .. } | Op::Live | Op::Ready | Op::MetricsSummary | Op::TelemetryStatus
    )
}

impl Client {
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Client, CliError> {
        let stream = UnixStream::connect(socket).map_err(|e| connection_failed(socket, &e))?;
        stream.set_read_timeout(Some(timeout)).ok();
        stream.set_write_timeout(Some(timeout)).ok();
        Ok(Client {
            stream,
            socket: socket.to_path_buf(),
            timeout,
            next_id: 1,
        })
    }

    pub fn call(&mut self, op: Op) -> Result<Reply, ErrorBody> {
        let id = self.next_id;
        self.next_id += 1;
        let probe = is_probe(&op);
        let within = if probe {
            self.timeout.min(PROBE_ANSWER)
        } else {
            self.timeout
        };
        self.stream.set_read_timeout(Some(within)).ok();
        let shown = self.socket.display().to_string();
        let timeout = || {
            if probe {
                // Something accepted the connection and never answered a probe: not a
                // runtime that is busy (probes skip the queue), so whoever holds the socket.
                return ErrorBody::new(
                    ErrorCode::IpcConnectionFailed,
                    format!(
                        "a process accepts connections on {shown} but no runtime answered within {:.1}s: another process may be holding the socket, or the runtime is wedged (check: ss -xlp | grep {shown}; pgrep -a veritas-spark)",
                        within.as_secs_f64()
                    ),
                );
            }
            ErrorBody::new(
                ErrorCode::IpcTimeout,
                format!("no answer from the runtime within {:.1}s (raise --timeout for long generations)", within.as_secs_f64()),
            )
        };
        ipc::write_frame(&mut self.stream, &Request { id, op }).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => timeout(),
            _ => ErrorBody::new(
                ErrorCode::IpcConnectionFailed,
                format!("cannot send to the runtime: {e}"),
            ),
        })?;
        loop {
            let payload = match ipc::read_frame(&mut self.stream, u32::MAX) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    return Err(ErrorBody::new(
                        ErrorCode::IpcConnectionFailed,
                        "the runtime closed the connection",
                    ))
                }
                Err(ipc::FrameError::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return Err(timeout())
                }
                Err(e) => return Err(ErrorBody::new(ErrorCode::IpcProtocolError, e.to_string())),
            };
            let resp: Response = ipc::decode(&payload)
                .map_err(|e| ErrorBody::new(ErrorCode::IpcProtocolError, e.to_string()))?;
            if resp.id != id && resp.id != 0 {
                continue;
            }
            return match resp.outcome {
                Outcome::Ok(r) => Ok(r),
                Outcome::Error(e) => Err(e),
            };
        }
    }
}

/// E1001 with the guide's checks: socket exists? runtime running? permissions?
fn connection_failed(socket: &Path, err: &std::io::Error) -> CliError {
    let shown = socket.display();
    let mut checks = Vec::new();
    // Whether the socket's mode lets this user connect, where it can be read.
    let mut socket_writable = None;
    match std::fs::metadata(socket) {
        Ok(md) => {
            checks.push(Check {
                name: "socket exists".into(),
                ok: md.file_type().is_socket(),
                detail: if md.file_type().is_socket() {
                    format!("{shown} is a socket")
                } else {
                    format!("{shown} exists but is not a socket")
                },
            });
            let mode = md.permissions().mode() & 0o777;
            let writable = access_rw(socket);
            socket_writable = Some(writable);
            checks.push(Check {
                name: "socket permissions".into(),
                ok: writable,
                detail: format!(
                    "mode {mode:o}, owner uid {} gid {}; {} (check: stat {shown})",
                    md.uid(),
                    md.gid(),
                    if writable {
                        "this user may connect"
                    } else {
                        "this user may not connect"
                    }
                ),
            });
        }
        Err(e) => checks.push(Check {
            name: "socket exists".into(),
            ok: false,
            detail: if e.kind() == ErrorKind::PermissionDenied {
                format!("{shown}: {e}: this user cannot tell (check: ls -la {shown}, and the directories on its path)")
            } else {
                format!("{shown}: {e} (check: ls -la {shown})")
            },
        }),
    }
    // The socket may exist behind a directory this user cannot search: name that directory,
    // since `ls -la` on the socket only repeats "Permission denied".
    let unsearchable = (err.kind() == ErrorKind::PermissionDenied)
        .then(|| unsearchable_ancestor(socket))
        .flatten();
    let policy_refused = refused_by_policy(err.kind(), socket_writable, unsearchable.is_some());
    if let Some(dir) = unsearchable {
        let md = std::fs::metadata(&dir).ok();
        checks.push(Check {
            name: "socket directory permissions".into(),
            ok: false,
            detail: format!(
                "{} is not searchable by this user (uid {}): {} (check: stat {})",
                dir.display(),
                // SAFETY: geteuid(2) cannot fail.
                unsafe { libc::geteuid() },
                md.map_or_else(
                    || "its mode cannot be read".to_string(),
                    |m| format!(
                        "mode {:o}, owner uid {} gid {}",
                        m.permissions().mode() & 0o7777,
                        m.uid(),
                        m.gid()
                    )
                ),
                dir.display()
            ),
        });
    }
    if policy_refused {
        checks.push(Check {
            name: "security policy".into(),
            ok: false,
            detail: format!(
                "the socket's mode and every directory on its path let this user connect, yet connect(2) was refused: {}; {}",
                veritas_sandbox::SecurityModules::read(),
                veritas_sandbox::SECURITY_MODULE_HINT
            ),
        });
    }
    let running = running_runtimes();
    checks.push(Check {
        name: "runtime running".into(),
        ok: !running.is_empty(),
        detail: if running.is_empty() {
            "no veritas-spark serve process found (check: pgrep -a veritas-spark)".into()
        } else {
            format!(
                "pid {} (check that it was started with --socket {shown})",
                running.join(", ")
            )
        },
    });
    let hint = match err.kind() {
        ErrorKind::PermissionDenied if policy_refused => {
            "file permissions allow it, so a security policy refused it: check SELinux/AppArmor policies"
        }
        ErrorKind::NotFound => {
            "restart the CORE Runtime if it is not running, or pass --socket / VERITAS_SOCKET"
        }
        ErrorKind::PermissionDenied => {
            "check directory permissions on the socket path and SELinux/AppArmor policies"
        }
        ErrorKind::ConnectionRefused => {
            "no process is listening: the socket is stale; restart the CORE Runtime"
        }
        _ => "verify no other process is holding the socket",
    };
    CliError {
        error: ErrorBody::new(
            ErrorCode::IpcConnectionFailed,
            format!("cannot connect to {shown}: {err}; {hint}"),
        ),
        checks,
    }
}

/// EACCES that the file modes do not explain (the socket writable for this user, every
/// directory searchable) comes from a mandatory access control policy (AppArmor, SELinux):
/// the guide's "check SELinux/AppArmor policies".
fn refused_by_policy(
    kind: ErrorKind,
    socket_writable: Option<bool>,
    unsearchable_dir: bool,
) -> bool {
    kind == ErrorKind::PermissionDenied && socket_writable == Some(true) && !unsearchable_dir
}

fn access_rw(path: &Path) -> bool {
    access(path, libc::R_OK | libc::W_OK)
}

/// Whether this process may `mode` the path by its effective ids, as connect(2) is judged
/// (access(2) would use the real ones).
fn access(path: &Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: faccessat(2) on a valid C string, relative to the working directory.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

/// The first directory on the way to `socket`, from the root down, that this user may not
/// search (no `x` bit for it): connect(2) fails with EACCES there, whatever the socket's mode.
fn unsearchable_ancestor(socket: &Path) -> Option<std::path::PathBuf> {
    let socket = if socket.is_absolute() {
        socket.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(socket)
    };
    let mut ancestors: Vec<&Path> = socket.ancestors().skip(1).collect();
    ancestors.reverse();
    // Only a directory that exists and refuses the search: a missing one (ENOENT) is the
    // "socket exists" check's finding, not a permission.
    ancestors
        .into_iter()
        .find(|dir| {
            !access(dir, libc::X_OK)
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EACCES)
        })
        .map(Path::to_path_buf)
}

/// Pids of `veritas-spark serve` processes, as `pgrep -a veritas-spark` would find them.
fn running_runtimes() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let mut args = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned());
            let exe = args.next()?;
            (exe.ends_with("veritas-spark") && args.any(|a| a == "serve")).then(|| pid.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_the_file_modes_do_not_explain_is_a_policys() {
        use ErrorKind::*;
        // Socket writable, every directory searchable, EACCES anyway: AppArmor or SELinux.
        assert!(refused_by_policy(PermissionDenied, Some(true), false));
        // The modes explain it: the directory, or the socket's own mode.
        assert!(!refused_by_policy(PermissionDenied, Some(true), true));
        assert!(!refused_by_policy(PermissionDenied, Some(false), false));
        // The socket cannot be looked at (its directory refuses): no conclusion.
        assert!(!refused_by_policy(PermissionDenied, None, false));
        assert!(!refused_by_policy(ConnectionRefused, Some(true), false));
        assert!(!refused_by_policy(NotFound, None, false));
    }
}
