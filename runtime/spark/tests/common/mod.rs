//! Test support: a real `veritas-spark serve` process on a generated model, driven through
//! its CLI, its socket and its HTTP ports.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use veritas_fixtures::corrupt::{write_corrupt_gguf, Corruption};
use veritas_fixtures::TinyModelSpec;
use veritas_vocab::manifest::ModelEntry;

pub const BIN: &str = env!("CARGO_BIN_EXE_veritas-spark");
pub const MODEL: &str = "tiny";
pub const VERSION: &str = "1.0.0";

/// Polls `f` until it returns `Some`, or panics after `deadline` naming `what`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A model registry in a temp dir holding the healthy `tiny` model.
pub struct Registry {
    pub dir: tempfile::TempDir,
}

impl Registry {
    pub fn new() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        veritas_fixtures::write_model_dir(dir.path(), MODEL, VERSION, &TinyModelSpec::default())
            .unwrap();
        Registry { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn add_healthy(&self, name: &str, version: &str, seed: u64) {
        veritas_fixtures::add_model(
            self.path(),
            name,
            version,
            &TinyModelSpec::default().with_seed(seed),
        )
        .unwrap();
    }

    /// Adds an entry by hand: `sha` `None` pins the file's real sha256.
    pub fn add_entry(&self, name: &str, file: &str, sha: Option<&str>) {
        let mut m = veritas_fixtures::read_manifest(self.path()).unwrap();
        // Hashed only when needed: a test's large file would take long in a debug build.
        let sha256 = sha.map(str::to_string).unwrap_or_else(|| {
            veritas_fixtures::sha256_file(&self.path().join(file))
                .unwrap_or_else(|_| "0".repeat(64))
        });
        m.models.push(ModelEntry {
            name: name.into(),
            version: VERSION.into(),
            file: file.into(),
            sha256,
            format: "gguf".into(),
        });
        veritas_fixtures::write_manifest(self.path(), &m).unwrap();
    }

    /// Adds a corrupt model whose manifest pins the corrupt file's own sha256, so only the
    /// content checks can catch it.
    pub fn add_corrupt(&self, name: &str, corruption: Corruption) {
        let file = format!("{name}.gguf");
        write_corrupt_gguf(
            &self.path().join(&file),
            &TinyModelSpec::default(),
            corruption,
        )
        .unwrap();
        self.add_entry(name, &file, None);
    }

    pub fn healthy_sha(&self) -> String {
        veritas_fixtures::sha256_file(&self.path().join(format!("{MODEL}.gguf"))).unwrap()
    }
}

pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub http: u16,
    pub metrics: u16,
    pub log: PathBuf,
    _tmp: tempfile::TempDir,
}

pub struct DaemonOptions<'a> {
    pub model: Option<&'a str>,
    pub extra: Vec<String>,
    /// Start the daemon under a seccomp filter denying user namespaces, as a container's
    /// default profile does.
    pub deny_userns: bool,
}

impl Default for DaemonOptions<'_> {
    fn default() -> Self {
        DaemonOptions {
            model: Some(MODEL),
            extra: Vec::new(),
            deny_userns: false,
        }
    }
}

impl Daemon {
    /// Starts the daemon and waits until it is ready (when a model is configured).
    pub fn start(reg: &Registry, opts: DaemonOptions) -> Daemon {
        let d = Daemon::spawn(reg, &opts);
        if opts.model.is_some() {
            d.wait_ready();
        } else {
            wait_for("socket", Duration::from_secs(30), || {
                d.socket.exists().then_some(())
            });
        }
        d
    }

    pub fn spawn(reg: &Registry, opts: &DaemonOptions) -> Daemon {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("run/veritas-spark.sock");
        Daemon::spawn_on(reg, opts, socket, tmp)
    }

    pub fn spawn_on(
        reg: &Registry,
        opts: &DaemonOptions,
        socket: PathBuf,
        tmp: tempfile::TempDir,
    ) -> Daemon {
        let (http, metrics) = (free_port(), free_port());
        let log = tmp.path().join("daemon.log");
        let mut cmd = Command::new(BIN);
        if opts.deny_userns {
            cmd.args(["chaos-exec", "--deny-userns", "--", BIN]);
        }
        cmd.arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--model-dir")
            .arg(reg.path())
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http}"))
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics}"))
            .args(&opts.extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(m) = opts.model {
            cmd.arg("--model").arg(m);
        }
        let child = cmd.spawn().expect("start veritas-spark serve");
        Daemon {
            child: Some(child),
            socket,
            http,
            metrics,
            log,
            _tmp: tmp,
        }
    }

    pub fn wait_ready(&self) {
        wait_for("daemon ready", Duration::from_secs(60), || {
            if let Some(status) = self.exited() {
                panic!(
                    "daemon exited with {status} before ready; log:\n{}",
                    self.log_text()
                );
            }
            self.cli(&["ready"]).status.success().then_some(())
        });
    }

    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        // `try_wait` needs `&mut`; read the state from /proc instead.
        let pid = self.pid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        match stat {
            None => Some(std::os::unix::process::ExitStatusExt::from_raw(0)),
            Some(s) if s.split_whitespace().nth(2) == Some("Z") => {
                Some(std::os::unix::process::ExitStatusExt::from_raw(0))
            }
            _ => None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.socket, args)
    }

    pub fn cli_json(&self, args: &[&str]) -> (bool, serde_json::Value) {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.cli(&a);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?} --json printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out.status.success(), v)
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        http(self.http, "GET", path, None)
    }

    pub fn http_post(&self, path: &str, body: &str) -> (u16, String) {
        http(self.http, "POST", path, Some(body))
    }

    pub fn scrape(&self) -> String {
        let (status, body) = http(self.metrics, "GET", "/metrics", None);
        assert_eq!(status, 200, "metrics endpoint answered {status}");
        body
    }

    pub fn worker_pid(&self) -> u32 {
        let (_, v) = self.cli_json(&["health", "--verbose"]);
        v["worker"]["pid"].as_u64().expect("worker pid") as u32
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_child(&mut child, Duration::from_secs(60))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn wait_child(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    wait_for("process exit", deadline, || child.try_wait().unwrap())
}

pub fn cli(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run veritas-spark")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A minimal HTTP/1.1 client: one request per connection.
/// A refused connection (the daemon stopped listening, e.g. after SIGTERM) is status 0:
/// never accepted, so never lost.
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (status, _, body) = http_with_headers(port, method, path, body);
    (status, body)
}

/// [`http`], with the response's header lines.
pub fn http_with_headers(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String, String) {
    let mut s = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => return (0, String::new(), format!("connection refused: {e}")),
    };
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (headers, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (status, headers.to_string(), body.to_string())
}

/// The value of one series in a Prometheus text exposition, e.g.
/// `metric_value(text, "veritas_spark_requests_total", &[("status","success")])`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = match series.split_once('{') {
            Some((n, r)) => (n, r.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}

impl Daemon {
    /// Sends `n` generation requests over HTTP at once, each on its own thread; join the
    /// handles for `(status, body)`.
    pub fn generate_concurrently(
        &self,
        n: usize,
        tag: &str,
        max_tokens: u32,
    ) -> Vec<std::thread::JoinHandle<(u16, String)>> {
        (0..n)
            .map(|i| {
                let (port, body) = (
                    self.http,
                    format!(r#"{{"prompt":"{tag} {i}","max_tokens":{max_tokens}}}"#),
                );
                std::thread::spawn(move || http(port, "POST", "/v1/generate", Some(&body)))
            })
            .collect()
    }

    /// Starts batches of concurrent generations until at least `min_inflight` of them are
    /// seen in flight at once (a fast machine can finish a small batch before the first
    /// scrape), and returns the handles of that batch.
    pub fn requests_in_flight(
        &self,
        tag: &str,
        max_tokens: u32,
        min_inflight: f64,
    ) -> Vec<std::thread::JoinHandle<(u16, String)>> {
        let mut n = 4;
        for attempt in 0..8 {
            let handles = self.generate_concurrently(n, &format!("{tag} {attempt}"), max_tokens);
            loop {
                let inflight = metric_value(
                    &self.scrape(),
                    veritas_vocab::metrics::INFLIGHT_REQUESTS,
                    &[],
                );
                if inflight.is_some_and(|v| v >= min_inflight) {
                    return handles;
                }
                if handles.iter().all(|h| h.is_finished()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            for h in handles {
                h.join().unwrap();
            }
            n = (n * 2).min(16);
        }
        panic!("never saw {min_inflight} requests in flight");
    }
}

/// Runs `args` with `--json` against `d`, expects exit 1 with `code`, returns the error body.
pub fn expect_error(d: &Daemon, args: &[&str], code: &str) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = d.cli(&a);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?} --json printed no JSON ({e}): {}", stdout(&out)));
    // The documented exit status for a failed command, not merely "not success".
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should exit 1 with {code}: {v}"
    );
    assert_eq!(v["code"], code, "{args:?}: {v}");
    v
}
