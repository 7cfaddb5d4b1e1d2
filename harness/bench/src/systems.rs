//! Starting each system as its own process, timing how long it takes to be ready, and
//! measuring its resident memory.

use crate::client::{http_get, HttpTarget, IpcTarget, RawTarget, Target};
use crate::BenchError;
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a system may take to load the model and say it is ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(120);

/// The systems a run compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum SystemId {
    /// The plain llama-cpp-2 loop in its own process: the physical limit.
    RawLoop,
    /// `veritas-spark serve`, sandbox on, through its Unix socket.
    VeritasIpc,
    /// The same daemon through `POST /v1/completions`.
    VeritasHttp,
    /// llama.cpp's own server through `POST /v1/completions`.
    LlamaServer,
}

impl SystemId {
    pub const ALL: [SystemId; 4] = [
        SystemId::RawLoop,
        SystemId::VeritasIpc,
        SystemId::VeritasHttp,
        SystemId::LlamaServer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SystemId::RawLoop => "raw-loop",
            SystemId::VeritasIpc => "veritas-ipc",
            SystemId::VeritasHttp => "veritas-http",
            SystemId::LlamaServer => "llama-server",
        }
    }

    /// Whether the system serves several clients at once (the raw loop is one loop).
    pub fn concurrent(self) -> bool {
        self != SystemId::RawLoop
    }
}

/// What every system is given.
#[derive(Debug, Clone, Serialize)]
pub struct Shape {
    pub threads: u32,
    pub parallel: u32,
    pub ctx_size: u32,
}

/// A started process and what it cost to start.
pub struct Process {
    pub child: Child,
    pub ready: Duration,
    pub log: PathBuf,
}

impl Process {
    /// Resident memory of the process and every descendant (the daemon's inference worker
    /// holds the model): `(VmRSS, VmHWM)` in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let mut pids = vec![self.child.id()];
        let mut i = 0;
        while i < pids.len() {
            pids.extend(children(pids[i]));
            i += 1;
        }
        pids.iter()
            .map(|&p| status_kib(p))
            .fold((0, 0), |(r, h), (r2, h2)| (r + r2 * 1024, h + h2 * 1024))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGTERM first: the daemon drains and removes its socket; then make sure.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // The command name may hold spaces: fields start after its ')'.
                    let rest = s.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// `(VmRSS, VmHWM)` in KiB.
fn status_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn log_file(dir: &Path, name: &str) -> Result<(std::fs::File, PathBuf), BenchError> {
    let path = dir.join(format!("{name}.log"));
    let f = std::fs::File::create(&path)
        .map_err(|e| BenchError::io(format!("create {}", path.display()), e))?;
    Ok((f, path))
}

fn spawn(cmd: &mut Command, what: &str) -> Result<Child, BenchError> {
    cmd.spawn()
        .map_err(|e| BenchError::io(format!("start {what} ({cmd:?})"), e))
}

/// Polls `probe` until it says ready, the process exits, or the deadline passes.
fn wait_ready(
    child: &mut Child,
    what: &str,
    log: &Path,
    started: Instant,
    mut probe: impl FnMut() -> bool,
) -> Result<Duration, BenchError> {
    loop {
        if probe() {
            return Ok(started.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BenchError::Start(format!(
                "{what} exited ({status}) before it was ready; log: {}",
                log.display()
            )));
        }
        if started.elapsed() > READY_DEADLINE {
            return Err(BenchError::Start(format!(
                "{what} was not ready within {}s; log: {}",
                READY_DEADLINE.as_secs(),
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn free_port() -> Result<u16, BenchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::io("find a free loopback port", e))?;
    Ok(l.local_addr()
        .map_err(|e| BenchError::io("local addr", e))?
        .port())
}

/// The raw loop process; ready when it says so on stdout.
pub fn start_raw(
    bin: &Path,
    model: &Path,
    shape: &Shape,
    work: &Path,
) -> Result<(Process, RawTarget), BenchError> {
    let (log, log_path) = log_file(work, "raw-loop")?;
    let started = Instant::now();
    let mut child = spawn(
        Command::new(bin)
            .arg("--model")
            .arg(model)
            .args(["--threads", &shape.threads.to_string()])
            .args(["--ctx-size", &shape.ctx_size.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log),
        "the raw loop",
    )?;
    let stdin = child.stdin.take().expect("piped");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    // A blocking read of the first line: the process either says ready or exits (EOF);
    // a hang is bounded by the deadline check on a helper thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        let r = stdout.read_line(&mut line);
        let _ = tx.send((
            r.map(|n| n > 0 && line.contains("\"ready\""))
                .unwrap_or(false),
            line,
        ));
        stdout
    });
    let ok = rx.recv_timeout(READY_DEADLINE);
    let ready = started.elapsed();
    match ok {
        Ok((true, _)) => {}
        Ok((false, line)) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::Start(format!(
                "the raw loop did not start ({line:?}); log: {}",
                log_path.display()
            )));
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::Start(format!(
                "the raw loop was not ready within {}s; log: {}",
                READY_DEADLINE.as_secs(),
                log_path.display()
            )));
        }
    }
    let stdout = reader.join().expect("reader thread");
    Ok((
        Process {
            child,
            ready,
            log: log_path,
        },
        RawTarget { stdin, stdout },
    ))
}

/// The daemon (sandbox at its default, best-effort: every layer the kernel allows), ready
/// when `/ready` answers 200.
pub struct Daemon {
    pub process: Process,
    pub socket: PathBuf,
    pub http: String,
    pub model: String,
}

pub fn start_daemon(
    bin: &Path,
    model_dir: &Path,
    model: &str,
    shape: &Shape,
    work: &Path,
) -> Result<Daemon, BenchError> {
    let (log, log_path) = log_file(work, "veritas-spark")?;
    let socket = work.join("veritas-spark.sock");
    let http = format!("127.0.0.1:{}", free_port()?);
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let started = Instant::now();
    let mut child = spawn(
        Command::new(bin)
            .arg("--socket")
            .arg(&socket)
            .arg("serve")
            .arg("--model-dir")
            .arg(model_dir)
            .args(["--model", model])
            .args(["--http-addr", &http, "--metrics-addr", &metrics])
            .args(["--threads", &shape.threads.to_string()])
            .args(["--parallel", &shape.parallel.to_string()])
            .args(["--ctx-size", &shape.ctx_size.to_string()])
            // Room for every concurrent client: the benchmark measures serving, not refusals.
            .args(["--queue-size", "64"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
        "veritas-spark",
    )?;
    let ready = wait_ready(&mut child, "veritas-spark", &log_path, started, || {
        matches!(http_get(&http, "/ready"), Ok((200, _)))
    })?;
    Ok(Daemon {
        process: Process {
            child,
            ready,
            log: log_path,
        },
        socket,
        http,
        model: model.to_string(),
    })
}

impl Daemon {
    pub fn ipc(&self) -> Result<Box<dyn Target>, BenchError> {
        Ok(Box::new(IpcTarget::connect(&self.socket)?))
    }

    pub fn http(&self) -> Box<dyn Target> {
        Box::new(HttpTarget::new(&self.http, &self.model, Default::default()))
    }

    /// The sandbox as the daemon reports it (`health --verbose` over HTTP).
    pub fn sandbox(&self) -> serde_json::Value {
        http_get(&self.http, "/health")
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .map(|v| v["sandbox"].clone())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// llama.cpp's server with the same threads, slots and per-slot context, ready when
/// `/health` answers 200.
pub struct LlamaServer {
    pub process: Process,
    pub http: String,
}

pub fn start_llama_server(
    bin: &Path,
    model: &Path,
    shape: &Shape,
    work: &Path,
) -> Result<LlamaServer, BenchError> {
    let (log, log_path) = log_file(work, "llama-server")?;
    let port = free_port()?;
    let http = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let mut child = spawn(
        Command::new(bin)
            .arg("--model")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--threads", &shape.threads.to_string()])
            .args(["--threads-batch", &shape.threads.to_string()])
            .args(["--parallel", &shape.parallel.to_string()])
            // Its context is shared by the slots: each gets what one of ours has.
            .args(["--ctx-size", &(shape.ctx_size * shape.parallel).to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
        "llama-server",
    )?;
    let ready = wait_ready(&mut child, "llama-server", &log_path, started, || {
        matches!(http_get(&http, "/health"), Ok((200, _)))
    })?;
    Ok(LlamaServer {
        process: Process {
            child,
            ready,
            log: log_path,
        },
        http,
    })
}

impl LlamaServer {
    pub fn http(&self, model: &str) -> Box<dyn Target> {
        let mut extra = serde_json::Map::new();
        // Its default reuses the KV cache of an identical prompt; ours decodes every prompt.
        // The same work on both sides.
        extra.insert("cache_prompt".into(), serde_json::Value::Bool(false));
        Box::new(HttpTarget::new(&self.http, model, extra))
    }
}

/// Where llama-server is: `--llama-server`, `VERITAS_LLAMA_SERVER`, else the newest build in
/// the cache of `ci/bench/build-llama-server.sh`.
pub fn find_llama_server(explicit: Option<&Path>, cache: &Path) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("{} does not exist", p.display()))
        };
    }
    let dir = cache.join("bin");
    let newest = std::fs::read_dir(&dir).ok().and_then(|d| {
        d.filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("llama-server-") && !n.ends_with(".tmp")
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .max()
            .map(|(_, p)| p)
    });
    newest.ok_or_else(|| {
        format!(
            "no llama-server in {} (build it with ci/bench/build-llama-server.sh, or pass --llama-server)",
            dir.display()
        )
    })
}
