//! The process driver's operations: real `veritas-spark` daemons on generated models in a
//! per-scenario work directory, driven through the operator CLI, the socket and HTTP.

use crate::context::Context;
use crate::expect::{self, clip, CommandOutput};
use crate::StepError;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use veritas_fixtures::corrupt::Corruption;
use veritas_fixtures::TinyModelSpec;
use veritas_scenario::*;
use veritas_vocab::manifest::ModelEntry;

/// A daemon started by a scenario.
pub struct Daemon {
    pub child: Child,
    pub socket: String,
    pub http: String,
    pub metrics: String,
    pub log: std::path::PathBuf,
}

/// Runs `argv` with a deadline; the process is killed when the deadline passes.
pub async fn run_command(argv: &[String], deadline: Duration) -> Result<CommandOutput, StepError> {
    run_command_with_input(argv, None, deadline).await
}

/// Runs `argv` with `input` on its stdin (none: stdin is /dev/null) and a deadline; the
/// process is killed when the deadline passes.
pub async fn run_command_with_input(
    argv: &[String],
    input: Option<&str>,
    deadline: Duration,
) -> Result<CommandOutput, StepError> {
    use tokio::io::AsyncWriteExt;
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| StepError::new("empty command"))?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| StepError::new(format!("cannot run {prog}: {e}")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| StepError::new(format!("{prog}: writing stdin: {e}")))?;
    }
    match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(CommandOutput {
            exit: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            timed_out: false,
        }),
        Ok(Err(e)) => Err(StepError::new(format!("{prog}: {e}"))),
        Err(_) => Ok(CommandOutput {
            timed_out: true,
            ..Default::default()
        }),
    }
}

/// What this host offers the process driver's scenarios, asked of the tools themselves: a
/// scenario needing anything else is reported skipped, never run to a failure.
pub fn host_components() -> Vec<Component> {
    let answers = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut found = Vec::new();
    // Loading a profile needs root as well as the kernel module and the tools.
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } == 0
        && answers("aa-enabled", &["--quiet"])
        && answers("apparmor_parser", &["--version"])
        && answers("aa-exec", &["--help"])
    {
        found.push(Component::AppArmor);
        if Path::new("/sys/kernel/security/apparmor/features/network/af_unix").exists() {
            found.push(Component::AppArmorUnix);
        }
    }
    found
}

fn free_port() -> Result<u16, StepError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| StepError::new(format!("no free loopback port: {e}")))
}

fn fixture_err(e: impl std::fmt::Display) -> StepError {
    StepError::new(format!("model fixture: {e}"))
}

pub fn model(ctx: &mut Context, m: &ModelStep) -> Result<String, StepError> {
    let dir = ctx.models_dir();
    let spec = TinyModelSpec::default().with_seed(m.seed);
    let path =
        veritas_fixtures::add_model(&dir, &m.name, &m.version, &spec).map_err(fixture_err)?;
    let Some(name) = &m.corruption else {
        return Ok(format!(
            "healthy model {}@{} at {}",
            m.name,
            m.version,
            path.display()
        ));
    };
    let corruption = Corruption::from_name(name)
        .ok_or_else(|| StepError::new(format!("unknown corruption {name}")))?;
    veritas_fixtures::corrupt::write_corrupt_gguf(&path, &spec, corruption).map_err(fixture_err)?;
    if corruption != Corruption::FlippedDataByte {
        // Pin the broken file's own sha256, so the load fails for the corruption itself and not
        // for a hash mismatch (a flipped byte is caught precisely by the healthy file's pin).
        let sha = veritas_fixtures::sha256_file(&path).map_err(fixture_err)?;
        let mut manifest = veritas_fixtures::read_manifest(&dir).map_err(fixture_err)?;
        for e in manifest.models.iter_mut().filter(|e| e.name == m.name) {
            e.sha256 = sha.clone();
        }
        veritas_fixtures::write_manifest(&dir, &manifest).map_err(fixture_err)?;
    }
    Ok(format!("model {}@{} written {name}", m.name, m.version))
}

pub fn manifest_entry(ctx: &mut Context, m: &ManifestEntryStep) -> Result<String, StepError> {
    let dir = ctx.models_dir();
    let mut manifest = if dir.join(veritas_vocab::manifest::MANIFEST_FILE).exists() {
        veritas_fixtures::read_manifest(&dir).map_err(fixture_err)?
    } else {
        veritas_vocab::manifest::Manifest {
            schema: veritas_vocab::manifest::MANIFEST_SCHEMA,
            models: vec![],
        }
    };
    let sha = m.sha256.clone().unwrap_or_else(|| {
        veritas_fixtures::sha256_file(&dir.join(&m.file)).unwrap_or_else(|_| "0".repeat(64))
    });
    manifest.models.retain(|e| e.name != m.name);
    manifest.models.push(ModelEntry {
        name: m.name.clone(),
        version: m.version.clone(),
        file: m.file.clone(),
        sha256: sha,
        format: "gguf".into(),
    });
    veritas_fixtures::write_manifest(&dir, &manifest).map_err(fixture_err)?;
    Ok(format!("registry entry {} -> {}", m.name, m.file))
}

pub fn model_file(ctx: &mut Context, m: &ModelFileStep) -> Result<String, StepError> {
    let dir = ctx.models_dir();
    let manifest = veritas_fixtures::read_manifest(&dir).map_err(fixture_err)?;
    let entry = manifest
        .models
        .iter()
        .find(|e| e.name == m.name)
        .ok_or_else(|| StepError::new(format!("no model {} in the run's registry", m.name)))?;
    let path = dir.join(&entry.file);
    match m.action {
        ModelFileAction::Remove => std::fs::remove_file(&path)
            .map_err(|e| StepError::new(format!("remove {}: {e}", path.display())))?,
        ModelFileAction::Tamper => {
            veritas_fixtures::corrupt::tamper_in_place(&path).map_err(fixture_err)?
        }
        ModelFileAction::Unreadable => {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000))
                .map_err(|e| StepError::new(format!("chmod {}: {e}", path.display())))?
        }
    }
    Ok(format!("{:?} {}", m.action, path.display()))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Starts a daemon; a free loopback port taken by someone else between our probe and the
/// daemon's bind (scenarios run in parallel) is retried with new ports, twice at most.
pub async fn start_daemon(
    ctx: &mut Context,
    d: &StartDaemonStep,
    ready: Duration,
) -> Result<String, StepError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match start_daemon_once(ctx, d, ready).await {
            Err(e)
                if attempt < 3
                    && e.observed
                        .as_deref()
                        .is_some_and(|o| o.contains("Address already in use")) =>
            {
                tracing::info!(daemon = %d.name, "port taken before the daemon bound it; retrying with new ports");
                if let Some(mut old) = ctx.daemons.remove(&d.name) {
                    let _ = old.child.wait().await;
                }
            }
            other => return other,
        }
    }
}

async fn start_daemon_once(
    ctx: &mut Context,
    d: &StartDaemonStep,
    ready: Duration,
) -> Result<String, StepError> {
    if let Some(old) = ctx.daemons.get_mut(&d.name) {
        if old.child.try_wait().ok().flatten().is_none() {
            return Err(StepError::new(format!(
                "daemon `{}` is already running",
                d.name
            )));
        }
    }
    let socket = ctx
        .work_dir()
        .join(format!("{}.sock", d.name))
        .display()
        .to_string();
    let http = format!("127.0.0.1:{}", free_port()?);
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let log = ctx.work_dir().join(format!("{}.log", d.name));
    let bin = ctx.spark_bin.display().to_string();
    let mut argv: Vec<String> = Vec::new();
    if let Some(bytes) = d.memory_limit {
        let name = format!(
            "{}-{}",
            ctx.work_dir()
                .file_name()
                .map_or_else(|| "veritas-harness".into(), |n| n.to_string_lossy()),
            d.name
        );
        let cg = crate::cgroup::create(&name, bytes).map_err(StepError::new)?;
        if !ctx.cgroups.contains(&cg.dir) {
            ctx.cgroups.push(cg.dir.clone());
        }
        ctx.vars.insert(
            format!("{}.memoryLimitFile", d.name),
            cg.limit_file.display().to_string(),
        );
        // Outermost, while still root: sh joins the cgroup and execs the rest, so the daemon
        // (same pid) and every worker it forks live under the limit from their first byte.
        argv.extend([
            "sh".into(),
            "-c".into(),
            "echo $$ > \"$0\" && exec \"$@\"".into(),
            cg.procs_file.display().to_string(),
        ]);
    }
    if let Some(uid) = d.user {
        std::os::unix::fs::chown(ctx.work_dir(), Some(uid), Some(uid))
            .map_err(|e| StepError::new(format!("chown the work directory to {uid}: {e}")))?;
        argv.extend([
            "setpriv".into(),
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
        ]);
    }
    if let Some(n) = d.max_user_namespaces {
        // sh is the namespace's first process and execs the daemon: the pid stays the daemon's.
        argv.extend([
            "unshare".into(),
            "--user".into(),
            "--map-root-user".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            format!("echo {n} > /proc/sys/user/max_user_namespaces && exec \"$@\""),
            "sh".into(),
        ]);
    }
    if let Some(profile) = &d.apparmor_profile {
        argv.extend([
            "aa-exec".into(),
            "-p".into(),
            ctx.subst(profile),
            "--".into(),
        ]);
    }
    if d.deny_userns || d.deny_seccomp {
        argv.extend([bin.clone(), "chaos-exec".into()]);
        if d.deny_userns {
            argv.push("--deny-userns".into());
        }
        if d.deny_seccomp {
            argv.push("--deny-seccomp".into());
        }
        argv.push("--".into());
    }
    argv.extend([
        bin,
        "serve".into(),
        "--socket".into(),
        socket.clone(),
        "--model-dir".into(),
        ctx.models_dir().display().to_string(),
        "--http-addr".into(),
        http.clone(),
        "--metrics-addr".into(),
        metrics.clone(),
    ]);
    if let Some(m) = &d.model {
        argv.extend(["--model".into(), m.clone()]);
    }
    if let Some(s) = &d.sandbox {
        argv.extend(["--sandbox".into(), s.clone()]);
    }
    argv.extend(ctx.subst_all(&d.args));
    let logfile =
        std::fs::File::create(&log).map_err(|e| StepError::new(format!("log file: {e}")))?;
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_remove("VERITAS_SOCKET")
        // Plain logs: they are grepped by scenarios and quoted as evidence.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(
            logfile
                .try_clone()
                .map_err(|e| StepError::new(e.to_string()))?,
        )
        .stderr(logfile)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| StepError::new(format!("cannot start {}: {e}", argv[0])))?;
    let pid = child.id().unwrap_or(0);
    for (k, v) in [("socket", &socket), ("http", &http), ("metrics", &metrics)] {
        ctx.vars.insert(format!("{}.{k}", d.name), v.clone());
    }
    ctx.vars
        .insert(format!("{}.log", d.name), log.display().to_string());
    ctx.vars.insert(format!("{}.pid", d.name), pid.to_string());
    ctx.daemons.insert(
        d.name.clone(),
        Daemon {
            child,
            socket: socket.clone(),
            http,
            metrics,
            log: log.clone(),
        },
    );
    let probe = match d.wait {
        ReadyWait::None => return Ok(format!("daemon `{}` started (pid {pid})", d.name)),
        ReadyWait::Ready => "ready",
        ReadyWait::Live => "live",
    };
    let end = Instant::now() + ready;
    let mut last = CommandOutput::default();
    while Instant::now() < end {
        let daemon = ctx.daemons.get_mut(&d.name).expect("just inserted");
        if let Ok(Some(status)) = daemon.child.try_wait() {
            return Err(StepError::observed(
                format!(
                    "daemon `{}` exited ({status}) before it was {probe}",
                    d.name
                ),
                log_tail(&log),
            ));
        }
        last = spark_cli(ctx, &d.name, &[probe.to_string()], Duration::from_secs(5)).await?;
        if last.exit == Some(0) {
            return Ok(format!("daemon `{}` {probe} (pid {pid})", d.name));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(StepError::observed(
        format!("daemon `{}` not {probe} within {ready:?}", d.name),
        format!("{}\n{}", last.summary(), log_tail(&log)),
    ))
}

pub async fn stop_daemon(
    ctx: &mut Context,
    s: &StopDaemonStep,
    deadline: Duration,
) -> Result<String, StepError> {
    let mut d = ctx
        .daemons
        .remove(&s.name)
        .ok_or_else(|| StepError::new(format!("no daemon `{}` running", s.name)))?;
    let status = stop(&mut d, s.signal, deadline).await?;
    ctx.add_evidence(format!("daemon `{}` log", s.name), log_tail(&d.log));
    Ok(format!("daemon `{}` stopped: {status}", s.name))
}

/// Freezes a daemon with SIGSTOP; it stays in the run (its socket held, nothing answered)
/// until a `stopDaemon` or the cleanup ends it.
pub fn freeze_daemon(ctx: &mut Context, s: &FreezeDaemonStep) -> Result<String, StepError> {
    let d = ctx
        .daemons
        .get_mut(&s.name)
        .ok_or_else(|| StepError::new(format!("no daemon `{}` running", s.name)))?;
    if let Ok(Some(status)) = d.child.try_wait() {
        return Err(StepError::new(format!(
            "daemon `{}` had already exited ({status})",
            s.name
        )));
    }
    let pid = d
        .child
        .id()
        .ok_or_else(|| StepError::new(format!("daemon `{}` has no pid", s.name)))?;
    // SAFETY: signalling our own child, whose pid tokio has not reaped yet.
    if unsafe { libc::kill(pid as i32, libc::SIGSTOP) } != 0 {
        return Err(StepError::new(std::io::Error::last_os_error().to_string()));
    }
    Ok(format!("daemon `{}` (pid {pid}) frozen", s.name))
}

/// Signals the daemon and waits for it; a daemon that ignores SIGTERM past the deadline is killed.
pub async fn stop(d: &mut Daemon, signal: Signal, deadline: Duration) -> Result<String, StepError> {
    if let Ok(Some(status)) = d.child.try_wait() {
        return Ok(format!("had already exited ({status})"));
    }
    match signal {
        Signal::Kill => d
            .child
            .start_kill()
            .map_err(|e| StepError::new(e.to_string()))?,
        Signal::Term => {
            if let Some(pid) = d.child.id().filter(|p| *p > 0) {
                // SAFETY: signalling our own child, whose pid tokio has not reaped yet.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                    // A frozen daemon takes its SIGTERM only once it runs again.
                    libc::kill(pid as i32, libc::SIGCONT);
                }
            }
        }
    }
    match tokio::time::timeout(deadline, d.child.wait()).await {
        Ok(Ok(status)) => Ok(status.to_string()),
        Ok(Err(e)) => Err(StepError::new(e.to_string())),
        Err(_) => {
            let _ = d.child.start_kill();
            let _ = d.child.wait().await;
            Err(StepError::new(format!(
                "did not exit within {deadline:?} of SIGTERM; killed"
            )))
        }
    }
}

/// Runs `veritas-spark --socket <daemon's socket> ARGS`.
pub async fn spark_cli(
    ctx: &Context,
    daemon: &str,
    args: &[String],
    deadline: Duration,
) -> Result<CommandOutput, StepError> {
    let socket = ctx
        .vars
        .get(&format!("{daemon}.socket"))
        .cloned()
        .unwrap_or_else(|| {
            ctx.work_dir()
                .join(format!("{daemon}.sock"))
                .display()
                .to_string()
        });
    let mut argv = vec![
        ctx.spark_bin.display().to_string(),
        "--socket".to_string(),
        socket,
        "--timeout".to_string(),
        format!("{:.3}", deadline.as_secs_f64()),
    ];
    argv.extend(ctx.subst_all(args));
    run_command(&argv, deadline + Duration::from_secs(2)).await
}

/// A one-shot HTTP/1.1 exchange on loopback (the daemon closes with `Connection: close`).
pub async fn http_exchange(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    deadline: Duration,
) -> Result<(u16, String), StepError> {
    let addr = addr.to_string();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.map_or(0, str::len),
        body.unwrap_or("")
    );
    let addr2 = addr.clone();
    tokio::task::spawn_blocking(move || -> Result<(u16, String), StepError> {
        let mut s = std::net::TcpStream::connect(&addr2)
            .map_err(|e| StepError::new(format!("connect {addr2}: {e}")))?;
        s.set_read_timeout(Some(deadline)).ok();
        s.write_all(request.as_bytes())
            .map_err(|e| StepError::new(e.to_string()))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .map_err(|e| StepError::new(format!("read {addr2}: {e}")))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| StepError::observed("not an HTTP answer", clip(&text, 200)))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    })
    .await
    .map_err(|e| StepError::new(e.to_string()))?
}

fn daemon_addr(ctx: &Context, daemon: &str, port: &str) -> Result<String, StepError> {
    ctx.vars
        .get(&format!("{daemon}.{port}"))
        .cloned()
        .ok_or_else(|| StepError::new(format!("daemon `{daemon}` was not started")))
}

pub async fn http(
    ctx: &mut Context,
    h: &HttpStep,
    deadline: Duration,
) -> Result<String, StepError> {
    let addr = daemon_addr(ctx, &h.daemon, &h.port)?;
    let body = h.body.as_deref().map(|b| ctx.subst(b));
    let (status, text) = http_exchange(
        &addr,
        &h.method,
        &ctx.subst(&h.path),
        body.as_deref(),
        deadline,
    )
    .await?;
    let observed = format!("HTTP {status}: {}", clip(text.trim(), 300));
    let mut bad = Vec::new();
    if let Some(want) = h.expect.status {
        if status != want {
            bad.push(format!("status {status} (expected {want})"));
        }
    }
    if let Some(code) = &h.expect.code {
        let ok =
            veritas_vocab::ErrorCode::parse(code).is_some_and(|c| expect::carries_code(&text, c));
        if !ok {
            bad.push(format!("no {code} in the body"));
        }
    }
    for needle in &h.expect.body {
        if !text.contains(needle.as_str()) {
            bad.push(format!("body lacks {needle:?}"));
        }
    }
    verdict(bad, observed)
}

pub async fn metric(
    ctx: &mut Context,
    m: &MetricStep,
    deadline: Duration,
) -> Result<String, StepError> {
    let addr = daemon_addr(ctx, &m.daemon, "metrics")?;
    let (status, text) = http_exchange(&addr, "GET", "/metrics", None, deadline).await?;
    if status != 200 {
        return Err(StepError::observed(
            format!("/metrics answered {status}"),
            clip(&text, 200),
        ));
    }
    let labels: Vec<(&str, &str)> = m
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let got = expect::scrape_value(&text, &m.name, &labels);
    let observed = format!(
        "{}{:?} = {}",
        m.name,
        m.labels,
        got.map_or("absent".into(), |v| v.to_string())
    );
    verdict(expect::check_value(&m.expect, got), observed)
}

pub async fn ipc_frame(
    ctx: &mut Context,
    f: &IpcFrameStep,
    deadline: Duration,
) -> Result<String, StepError> {
    use veritas_vocab::ipc;
    let socket = daemon_addr(ctx, &f.daemon, "socket")?;
    let bytes: Vec<u8> = match f.frame {
        FrameFault::BadMagic => {
            let mut b = ipc::encode_header(2).to_vec();
            b[0..2].copy_from_slice(b"XX");
            b.extend_from_slice(b"{}");
            b
        }
        FrameFault::BadVersion => {
            let mut b = ipc::encode_header(2).to_vec();
            b[2] = 99;
            b.extend_from_slice(b"{}");
            b
        }
        FrameFault::Oversize => ipc::encode_header(u32::MAX).to_vec(),
        FrameFault::MalformedJson => {
            let payload = br#"{"id":1,"op":{"type":"no_such_op"}}"#;
            let mut b = ipc::encode_header(payload.len() as u32).to_vec();
            b.extend_from_slice(payload);
            b
        }
        FrameFault::Health => ipc::encode(&ipc::Request {
            id: 1,
            op: ipc::Op::Health { verbose: false },
        }),
    };
    let answer = tokio::task::spawn_blocking(move || -> Result<String, StepError> {
        let mut s = std::os::unix::net::UnixStream::connect(&socket)
            .map_err(|e| StepError::new(format!("connect {socket}: {e}")))?;
        s.set_read_timeout(Some(deadline)).ok();
        s.write_all(&bytes)
            .map_err(|e| StepError::new(e.to_string()))?;
        match ipc::read_frame(&mut s, u32::MAX) {
            Ok(Some(p)) => Ok(String::from_utf8_lossy(&p).into_owned()),
            Ok(None) => Err(StepError::new(
                "the daemon closed the connection without an answer",
            )),
            Err(e) => Err(StepError::new(format!("no answer frame: {e}"))),
        }
    })
    .await
    .map_err(|e| StepError::new(e.to_string()))??;
    // The answer is a Response; its error body is what the CLI would print with --json.
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or(serde_json::Value::Null);
    let body = v.pointer("/outcome/error").cloned().unwrap_or(v);
    let out = CommandOutput {
        exit: Some(0),
        stdout: body.to_string(),
        stderr: String::new(),
        timed_out: false,
    };
    let bad = expect::check(&f.expect, &out, &ctx.redactions());
    verdict(bad, clip(&body.to_string(), 300))
}

/// `Ok(observed)` when nothing is wrong, else the mismatches with what was seen.
pub fn verdict(bad: Vec<String>, observed: String) -> Result<String, StepError> {
    if bad.is_empty() {
        Ok(observed)
    } else {
        Err(StepError::observed(bad.join("; "), observed))
    }
}

/// Starts batches of generations until the daemon reports one in flight, injects the worker
/// fault, then checks that at least one in-flight request got `code`.
pub async fn fault_under_load(
    ctx: &mut Context,
    f: &FaultUnderLoadStep,
    deadline: Duration,
) -> Result<String, StepError> {
    let metrics = daemon_addr(ctx, &f.daemon, "metrics")?;
    let args: Vec<String> = vec![
        "generate".into(),
        "under load".into(),
        "--max-tokens".into(),
        f.max_tokens.to_string(),
        "--json".into(),
    ];
    let end = Instant::now() + deadline;
    let mut handles = Vec::new();
    let mut seen_in_flight = false;
    while !seen_in_flight && Instant::now() < end {
        for _ in 0..f.requests {
            let ctx_args = args.clone();
            let socket = daemon_addr(ctx, &f.daemon, "socket")?;
            let bin = ctx.spark_bin.display().to_string();
            handles.push(tokio::spawn(async move {
                let mut argv = vec![bin, "--socket".into(), socket];
                argv.extend(ctx_args);
                run_command(&argv, Duration::from_secs(60)).await
            }));
        }
        // Poll the in-flight gauge until this batch is seen running, or it finished.
        let batch_end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < batch_end {
            let (_, text) =
                http_exchange(&metrics, "GET", "/metrics", None, Duration::from_secs(2)).await?;
            if expect::scrape_value(&text, veritas_vocab::metrics::INFLIGHT_REQUESTS, &[])
                .unwrap_or(0.0)
                >= 1.0
            {
                seen_in_flight = true;
                break;
            }
            if handles.iter().all(|h| h.is_finished()) {
                break;
            }
        }
    }
    if !seen_in_flight {
        return Err(StepError::new("no generation was ever seen in flight"));
    }
    let kind = match f.fault {
        WorkerFault::WorkerAbort => "worker-abort",
        WorkerFault::SandboxViolation => "sandbox-violation",
    };
    let out = spark_cli(
        ctx,
        &f.daemon,
        &["fault".into(), kind.into()],
        Duration::from_secs(10),
    )
    .await?;
    if out.exit != Some(0) {
        return Err(StepError::observed(
            format!("`veritas-spark fault {kind}` was refused"),
            out.summary(),
        ));
    }
    let code = veritas_vocab::ErrorCode::parse(&f.code)
        .ok_or_else(|| StepError::new(format!("unknown code {}", f.code)))?;
    let (mut ok, mut with_code, mut other) = (0, 0, Vec::new());
    for h in handles {
        match h.await {
            Ok(Ok(o)) if o.exit == Some(0) => ok += 1,
            Ok(Ok(o))
                if expect::carries_code(&o.stdout, code)
                    || expect::carries_code(&o.stderr, code) =>
            {
                with_code += 1
            }
            Ok(Ok(o)) => other.push(o.summary()),
            Ok(Err(e)) => other.push(e.to_string()),
            Err(e) => other.push(e.to_string()),
        }
    }
    let observed = format!(
        "{ok} completed, {with_code} failed with {}, {} other: {}",
        code.code(),
        other.len(),
        other.join(" | ")
    );
    if with_code == 0 {
        return Err(StepError::observed(
            format!("no in-flight request got {}", code.code()),
            observed,
        ));
    }
    Ok(observed)
}
