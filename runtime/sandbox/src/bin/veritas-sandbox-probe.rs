//! `veritas-sandbox-probe`: confine this process with `veritas_sandbox::confine` and report,
//! as one JSON document on stdout, what was applied and what the self-test found. Used by the
//! crate's integration tests and by operators diagnosing E3001 on a node:
//!
//! ```text
//! veritas-sandbox-probe selftest --model-dir /models [--mode required|best-effort|off]
//!     [--layers userns,mountns,...] [--memory-limit BYTES] [--deny-userns] [--ipc-pair]
//! veritas-sandbox-probe violate socket|ptrace|execve|unshare --model-dir DIR   # dies of SIGSYS
//! veritas-sandbox-probe alloc --bytes N --memory-limit BYTES --model-dir DIR [--infallible]
//! ```
//!
//! `--deny-userns` first installs the filter a container runtime's default seccomp profile
//! applies (user namespaces refused with EPERM), to reproduce E3001. Exit status: 0 when
//! confine succeeded, 3 when it returned an error, 2 on bad usage.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};
use veritas_sandbox::{confine, selftest, LayerSet, SandboxConfig, SandboxError, SandboxMode};

struct Args {
    command: String,
    target: Option<String>,
    mode: SandboxMode,
    layers: LayerSet,
    model_dir: Option<PathBuf>,
    memory_limit: Option<u64>,
    deny_userns: bool,
    ipc_pair: bool,
    bytes: u64,
    infallible: bool,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let command = it
        .next()
        .ok_or("missing command (selftest, violate, alloc)")?;
    let mut a = Args {
        command,
        target: None,
        mode: SandboxMode::Required,
        layers: LayerSet::all(),
        model_dir: None,
        memory_limit: None,
        deny_userns: false,
        ipc_pair: false,
        bytes: 256 << 20,
        infallible: false,
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--mode" => a.mode = value("--mode")?.parse().map_err(|e| format!("{e}"))?,
            "--layers" => a.layers = value("--layers")?.parse().map_err(|e| format!("{e}"))?,
            "--model-dir" => a.model_dir = Some(PathBuf::from(value("--model-dir")?)),
            "--memory-limit" => {
                a.memory_limit = Some(
                    value("--memory-limit")?
                        .parse()
                        .map_err(|e| format!("--memory-limit: {e}"))?,
                )
            }
            "--bytes" => {
                a.bytes = value("--bytes")?
                    .parse()
                    .map_err(|e| format!("--bytes: {e}"))?
            }
            "--deny-userns" => a.deny_userns = true,
            "--ipc-pair" => a.ipc_pair = true,
            "--infallible" => a.infallible = true,
            other if !other.starts_with("--") && a.target.is_none() => {
                a.target = Some(other.to_owned())
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn error_json(e: &SandboxError) -> Value {
    json!({
        "ok": false,
        "error": e.to_string(),
        "layer": e.layer().map(|l| l.to_string()),
        "reason": e.reason(),
        "checks": e.checks(),
    })
}

fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("veritas-sandbox-probe: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(model_dir) = args.model_dir.clone() else {
        eprintln!("veritas-sandbox-probe: --model-dir is required");
        return ExitCode::from(2);
    };

    let mut pre = serde_json::Map::new();
    if args.deny_userns {
        if let Err(e) = veritas_sandbox::fault::deny_user_namespaces() {
            eprintln!("veritas-sandbox-probe: installing the userns-denying filter failed: {e}");
            return ExitCode::from(2);
        }
        pre.insert("deny_userns".into(), json!(true));
    }

    let mut pair = [-1; 2];
    if args.ipc_pair {
        // SAFETY: valid out-array of two descriptors.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                pair.as_mut_ptr(),
            )
        } != 0
        {
            eprintln!(
                "veritas-sandbox-probe: socketpair failed: {}",
                std::io::Error::last_os_error()
            );
            return ExitCode::from(2);
        }
    }

    let mut cfg = SandboxConfig::new(args.mode, model_dir, pair[0]);
    cfg.layers = args.layers;
    cfg.memory_limit_bytes = args.memory_limit;

    let report = match confine(&cfg) {
        Ok(r) => r,
        Err(e) => {
            emit(&json!({ "pre": pre, "confine": error_json(&e) }));
            return ExitCode::from(3);
        }
    };
    let mut doc = json!({ "pre": pre, "confine": { "ok": true, "report": report } });

    match args.command.as_str() {
        "selftest" => {
            doc["selftest"] = json!(selftest(&cfg));
            if args.ipc_pair {
                doc["ipc_roundtrip"] = json!(ipc_roundtrip(pair));
            }
        }
        "violate" => {
            // Flush what we have: the process is expected to die on the next call.
            emit(&doc);
            let target = args.target.as_deref().unwrap_or("socket");
            // SAFETY: forbidden calls with harmless arguments; seccomp kills the process first.
            let rc = unsafe {
                match target {
                    "socket" => libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) as i64,
                    "ptrace" => libc::ptrace(libc::PTRACE_SEIZE, libc::getppid(), 0usize, 0usize),
                    "execve" => {
                        let sh = c"/bin/sh";
                        let argv = [sh.as_ptr(), std::ptr::null()];
                        libc::execve(sh.as_ptr(), argv.as_ptr(), std::ptr::null()) as i64
                    }
                    "unshare" => libc::unshare(libc::CLONE_NEWUSER) as i64,
                    other => {
                        eprintln!("veritas-sandbox-probe: unknown violation {other:?}");
                        return ExitCode::from(2);
                    }
                }
            };
            emit(
                &json!({ "survived": true, "rc": rc, "errno": std::io::Error::last_os_error().raw_os_error() }),
            );
            return ExitCode::SUCCESS;
        }
        "alloc" => {
            emit(&doc);
            if args.infallible {
                // Aborts with "memory allocation of N bytes failed" when over RLIMIT_AS.
                let v = vec![1u8; args.bytes as usize];
                emit(
                    &json!({ "alloc": { "bytes": args.bytes, "ok": true, "sum": std::hint::black_box(&v).len() } }),
                );
            } else {
                let mut v: Vec<u8> = Vec::new();
                let r = v.try_reserve_exact(args.bytes as usize);
                emit(&json!({ "alloc": {
                    "bytes": args.bytes,
                    "ok": r.is_ok(),
                    "error": r.err().map(|e| e.to_string()),
                }}));
            }
            return ExitCode::SUCCESS;
        }
        "report" => {}
        other => {
            eprintln!("veritas-sandbox-probe: unknown command {other:?}");
            return ExitCode::from(2);
        }
    }
    emit(&doc);
    ExitCode::SUCCESS
}

/// Sends a message through the socketpair after confinement and reads it back on the other end.
fn ipc_roundtrip(pair: [i32; 2]) -> Value {
    let msg = b"ping";
    // SAFETY: valid buffers and descriptors created by this process.
    let sent = unsafe { libc::send(pair[0], msg.as_ptr() as *const libc::c_void, msg.len(), 0) };
    let mut buf = [0u8; 8];
    // SAFETY: as above.
    let got = unsafe { libc::recv(pair[1], buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    let ok = sent == msg.len() as isize && got == msg.len() as isize && &buf[..4] == msg;
    json!({ "ok": ok, "sent": sent, "received": got })
}
