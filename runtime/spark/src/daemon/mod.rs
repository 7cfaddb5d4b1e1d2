//! The runtime daemon: model registry, worker supervision, admission, and the operations
//! every front (IPC socket, HTTP) shares.

pub mod http;
pub mod ipc_server;
pub mod metrics;
pub mod supervisor;

use crate::cli::ServeArgs;
use anyhow::{bail, Context as _};
use metrics::Metrics;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use supervisor::{Startup, Worker, WorkerExit, WorkerSpec};
use tokio::sync::{mpsc, oneshot, Semaphore};
use veritas_engine::VerifiedModel;
use veritas_vocab::ipc::*;
use veritas_vocab::manifest::{Manifest, ModelEntry, MANIFEST_FILE, MANIFEST_SCHEMA};
use veritas_vocab::{ErrorBody, ErrorCode};

/// Validated daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub model_dir: PathBuf,
    pub model: Option<String>,
    pub http_addr: Option<String>,
    pub metrics_addr: Option<String>,
    pub deployment: String,
    pub ctx_size: u32,
    pub threads: u32,
    pub parallel: u32,
    pub queue_size: u32,
    pub max_frame: u32,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
    pub memory_limit: u64,
    pub log_format: String,
    pub sandbox: String,
    pub sandbox_layers: String,
    pub worker_memory_limit: Option<u64>,
    pub fault_injection: bool,
}

impl Config {
    pub fn from_args(socket: PathBuf, a: &ServeArgs) -> anyhow::Result<Config> {
        let off = |s: &str| (s != "off").then(|| s.to_string());
        if a.parallel == 0 {
            bail!("--parallel must be at least 1");
        }
        if !(a.request_timeout > 0.0 && a.drain_timeout >= 0.0) {
            bail!("--request-timeout must be positive and --drain-timeout not negative");
        }
        let socket_mode = u32::from_str_radix(&a.socket_mode, 8).with_context(|| {
            format!(
                "--socket-mode {:?} is not an octal mode like 660",
                a.socket_mode
            )
        })?;
        a.sandbox
            .parse::<veritas_sandbox::SandboxMode>()
            .map_err(|e| anyhow::anyhow!("--sandbox {:?}: {e}", a.sandbox))?;
        a.sandbox_layers
            .parse::<veritas_sandbox::LayerSet>()
            .map_err(|e| anyhow::anyhow!("--sandbox-layers {:?}: {e}", a.sandbox_layers))?;
        if !matches!(a.log_format.as_str(), "text" | "json") {
            bail!("--log-format must be text or json, not {:?}", a.log_format);
        }
        Ok(Config {
            socket,
            socket_mode,
            model_dir: a.model_dir.clone(),
            model: a.model.clone(),
            http_addr: off(&a.http_addr),
            metrics_addr: off(&a.metrics_addr),
            deployment: a.deployment.clone(),
            ctx_size: a.ctx_size,
            threads: a.threads.max(1),
            parallel: a.parallel,
            queue_size: a.queue_size,
            max_frame: a.max_frame,
            request_timeout: Duration::from_secs_f64(a.request_timeout),
            drain_timeout: Duration::from_secs_f64(a.drain_timeout),
            memory_limit: a
                .memory_limit
                .or_else(cgroup_memory_limit)
                .or_else(veritas_engine::verify::mem_total)
                .unwrap_or(0),
            log_format: a.log_format.clone(),
            sandbox: a.sandbox.clone(),
            sandbox_layers: a.sandbox_layers.clone(),
            worker_memory_limit: a.worker_memory_limit,
            fault_injection: a.enable_fault_injection,
        })
    }

    pub fn capacity(&self) -> u32 {
        self.parallel + self.queue_size
    }
}

/// cgroup v2 `memory.max` or v1 `memory.limit_in_bytes`, when a real limit is set.
fn cgroup_memory_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .filter_map(|s| s.trim().parse::<u64>().ok())
    .find(|&v| v < (1 << 60))
}

/// Splits `name@version`.
pub fn parse_model_ref(s: &str) -> (&str, Option<&str>) {
    match s.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    }
}

struct Slot {
    state: ModelState,
    model: Option<ModelInfo>,
    last_error: Option<ErrorBody>,
    worker: Option<Arc<Worker>>,
    sandbox: Option<serde_json::Value>,
}

enum SupervisorMsg {
    Load {
        model: VerifiedModel,
        done: oneshot::Sender<Result<ModelInfo, ErrorBody>>,
    },
}

pub struct Runtime {
    pub cfg: Config,
    pub metrics: Metrics,
    started: Instant,
    slot: Mutex<Slot>,
    admission: Arc<Semaphore>,
    inflight: AtomicU64,
    restarts: AtomicU64,
    draining: AtomicBool,
    /// Held (shared) by every IPC request until its answer is written; drain takes it whole.
    pub answers: tokio::sync::RwLock<()>,
    supervisor: mpsc::UnboundedSender<SupervisorMsg>,
}

impl Runtime {
    /// Builds the runtime and starts its supervisor; loads the configured model in the
    /// background (the daemon is live, not ready, meanwhile).
    pub fn start(cfg: Config) -> Arc<Runtime> {
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = Metrics::new(&cfg.deployment);
        metrics.memory_limit.set(cfg.memory_limit as i64);
        let rt = Arc::new(Runtime {
            admission: Arc::new(Semaphore::new(cfg.capacity() as usize)),
            cfg,
            metrics,
            started: Instant::now(),
            slot: Mutex::new(Slot {
                state: ModelState::Unloaded,
                model: None,
                last_error: None,
                worker: None,
                sandbox: None,
            }),
            inflight: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            answers: tokio::sync::RwLock::new(()),
            supervisor: tx,
        });
        tokio::spawn(supervise(rt.clone(), rx));
        if let Some(initial) = rt.cfg.model.clone() {
            let rt2 = rt.clone();
            tokio::spawn(async move {
                if let Err(e) = rt2.load_model(&initial).await {
                    tracing::error!(code = e.code.code(), "{e}");
                }
            });
        }
        rt
    }

    pub fn manifest(&self) -> Result<Manifest, ErrorBody> {
        let path = self.cfg.model_dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ErrorBody::new(
                ErrorCode::ModelNotFound,
                format!("cannot read registry manifest {}: {e}", path.display()),
            )
        })?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
            ErrorBody::new(
                ErrorCode::ModelLoadFailed,
                format!("registry manifest {} is invalid: {e}", path.display()),
            )
        })?;
        if manifest.schema != MANIFEST_SCHEMA {
            return Err(ErrorBody::new(
                ErrorCode::ModelVersionMismatch,
                format!(
                    "registry manifest schema {} is not supported (expected {MANIFEST_SCHEMA})",
                    manifest.schema
                ),
            ));
        }
        Ok(manifest)
    }

    /// Looks `name[@version]` up in the registry: E2002 when absent, E2003 when the version
    /// asked for is not the one registered.
    pub fn resolve(&self, model_ref: &str) -> Result<ModelEntry, ErrorBody> {
        let (name, version) = parse_model_ref(model_ref);
        let manifest = self.manifest()?;
        let entry = manifest.find(name).ok_or_else(|| {
            let known: Vec<_> = manifest.models.iter().map(|m| m.name.as_str()).collect();
            ErrorBody::new(
                ErrorCode::ModelNotFound,
                format!(
                    "model {name:?} is not in the registry {} (known: {})",
                    self.cfg.model_dir.display(),
                    known.join(", ")
                ),
            )
        })?;
        if let Some(v) = version {
            if v != entry.version {
                return Err(ErrorBody::new(
                    ErrorCode::ModelVersionMismatch,
                    format!(
                        "model {name} version {v} requested, registry has version {}",
                        entry.version
                    ),
                ));
            }
        }
        Ok(entry.clone())
    }

    /// Verifies and loads a model, replacing the current one once the new worker is ready.
    pub async fn load_model(&self, model_ref: &str) -> Result<ModelInfo, ErrorBody> {
        let result = self.load_model_inner(model_ref).await;
        if let Err(e) = &result {
            self.metrics.count_error(e.code);
        }
        result
    }

    async fn load_model_inner(&self, model_ref: &str) -> Result<ModelInfo, ErrorBody> {
        let entry = self.resolve(model_ref)?;
        let budget = Some(self.cfg.memory_limit).filter(|&b| b > 0);
        let verified = match veritas_engine::verify_model(&self.cfg.model_dir, &entry, budget) {
            Ok(v) => v,
            Err(e) => {
                self.set_failed(&entry, e.clone());
                return Err(e);
            }
        };
        let (done, rx) = oneshot::channel();
        self.supervisor
            .send(SupervisorMsg::Load {
                model: verified,
                done,
            })
            .map_err(|_| ErrorBody::new(ErrorCode::ModelLoadFailed, "runtime is shutting down"))?;
        rx.await.unwrap_or_else(|_| {
            Err(ErrorBody::new(
                ErrorCode::ModelLoadFailed,
                "runtime is shutting down",
            ))
        })
    }

    fn set_failed(&self, entry: &ModelEntry, e: ErrorBody) {
        let mut slot = self.slot.lock().unwrap();
        // A verification failure of another model does not take down the one being served.
        if slot.state != ModelState::Ready {
            slot.state = ModelState::Failed;
            self.metrics
                .set_model_state(&entry.name, ModelState::Failed);
        }
        slot.last_error = Some(e);
    }

    /// One inference request, admitted or refused at once.
    pub async fn generate(&self, req: GenerateRequest) -> Result<GenerateResponse, ErrorBody> {
        let started = Instant::now();
        let result = self.generate_inner(req).await;
        let secs = started.elapsed().as_secs_f64();
        match &result {
            Ok(r) => self
                .metrics
                .record_success(secs, r.prompt_tokens, r.generated_tokens),
            Err(e) => self.metrics.record_failure(secs, e.code),
        }
        result
    }

    async fn generate_inner(&self, req: GenerateRequest) -> Result<GenerateResponse, ErrorBody> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(ErrorBody::new(
                ErrorCode::HealthCheckFailed,
                "runtime is shutting down; not accepting requests",
            ));
        }
        let _permit = self.admission.clone().try_acquire_owned().map_err(|_| {
            ErrorBody::new(
                ErrorCode::ResourceLimitExceeded,
                format!(
                    "request queue full: {} requests admitted (parallel {}, queue {}); retry later",
                    self.cfg.capacity(),
                    self.cfg.parallel,
                    self.cfg.queue_size
                ),
            )
        })?;
        let _inflight = InflightGuard::new(self);
        let (worker, model) = {
            let slot = self.slot.lock().unwrap();
            match (slot.state, &slot.worker, &slot.model) {
                (ModelState::Ready, Some(w), Some(m)) => (w.clone(), m.clone()),
                (ModelState::Failed, ..) => {
                    // The cause keeps its own code: E2001 for a bad model, E3001 for a sandbox
                    // that could not be set up, E3003 for a model above the worker's ceiling.
                    let cause = slot.last_error.clone();
                    let code = cause
                        .as_ref()
                        .map(|e| e.code)
                        .unwrap_or(ErrorCode::ModelLoadFailed);
                    let why = cause.map(|e| e.detail).unwrap_or_default();
                    return Err(ErrorBody::new(code, format!("no model is loaded: {why}")));
                }
                (state, ..) => {
                    return Err(ErrorBody::new(
                        ErrorCode::HealthCheckFailed,
                        format!("runtime not ready: model state is {}", state.as_str()),
                    ))
                }
            }
        };
        if let Some(wanted) = &req.model {
            let entry = self.resolve(wanted)?;
            if entry.name != model.name || entry.version != model.version {
                return Err(ErrorBody::new(
                    ErrorCode::ModelNotFound,
                    format!(
                        "model {}@{} is in the registry but not loaded (serving {}@{}); run `veritas-spark models load {}`",
                        entry.name, entry.version, model.name, model.version, entry.name
                    ),
                ));
            }
        }
        let started = Instant::now();
        let out = tokio::time::timeout(
            self.cfg.request_timeout,
            worker.generate(req.prompt, req.max_tokens),
        )
        .await
        .map_err(|_| {
            ErrorBody::new(
                ErrorCode::IpcTimeout,
                format!(
                    "inference did not finish within {:.1}s",
                    self.cfg.request_timeout.as_secs_f64()
                ),
            )
        })??;
        Ok(GenerateResponse {
            model: model.name,
            version: model.version,
            text: out.text,
            prompt_tokens: out.prompt_tokens,
            generated_tokens: out.generated_tokens,
            finish_reason: out.finish_reason,
            duration_us: started.elapsed().as_micros() as u64,
        })
    }

    pub fn readiness(&self) -> ProbeReport {
        let slot = self.slot.lock().unwrap();
        let ok = slot.state == ModelState::Ready
            && slot.worker.is_some()
            && !self.draining.load(Ordering::SeqCst);
        let detail = match (&slot.model, slot.state) {
            _ if self.draining.load(Ordering::SeqCst) => "shutting down".to_string(),
            (Some(m), ModelState::Ready) => format!("serving {}@{}", m.name, m.version),
            (_, ModelState::Loading) => "model loading".to_string(),
            (_, ModelState::Failed) => format!(
                "model failed: {}",
                slot.last_error
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            ),
            _ => "no model loaded".to_string(),
        };
        ProbeReport { ok, detail }
    }

    pub fn health(&self, verbose: bool) -> HealthReport {
        if verbose {
            self.refresh_memory();
        }
        let slot = self.slot.lock().unwrap();
        let draining = self.draining.load(Ordering::SeqCst);
        let worker_up = slot.worker.is_some();
        let mut checks = vec![
            Check {
                name: "model".into(),
                ok: slot.state == ModelState::Ready,
                detail: match (&slot.model, slot.state) {
                    (Some(m), ModelState::Ready) => format!("{}@{} ready", m.name, m.version),
                    (_, s) => format!(
                        "state {}{}",
                        s.as_str(),
                        slot.last_error
                            .as_ref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ),
                },
            },
            Check {
                name: "worker".into(),
                ok: worker_up,
                detail: match &slot.worker {
                    Some(w) => format!("pid {}", w.pid),
                    None => "not running".into(),
                },
            },
            Check {
                name: "accepting".into(),
                ok: !draining,
                detail: if draining {
                    "draining for shutdown".into()
                } else {
                    "accepting requests".into()
                },
            },
        ];
        if verbose {
            let used = self.metrics.memory_used.get() as u64;
            checks.push(Check {
                name: "memory".into(),
                ok: self.cfg.memory_limit == 0 || used < self.cfg.memory_limit,
                detail: format!("{used} of {} bytes", self.cfg.memory_limit),
            });
        }
        let status = if checks.iter().all(|c| c.ok) {
            HealthStatus::Healthy
        } else if slot.state == ModelState::Loading
            || (slot.state == ModelState::Ready && !worker_up)
            || draining
        {
            HealthStatus::Degraded
        } else {
            HealthStatus::Critical
        };
        let inflight = self.inflight.load(Ordering::SeqCst) as u32;
        HealthReport {
            status,
            version: env!("CARGO_PKG_VERSION").to_string(),
            deployment: self.cfg.deployment.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            model_state: slot.state,
            model: slot.model.clone(),
            last_error: slot.last_error.clone(),
            checks,
            queue: QueueInfo {
                inflight,
                capacity: self.cfg.capacity(),
                parallel: self.cfg.parallel,
            },
            worker: WorkerInfo {
                pid: slot.worker.as_ref().map(|w| w.pid),
                restarts: self.restarts.load(Ordering::SeqCst),
            },
            sandbox: slot.sandbox.clone(),
        }
    }

    pub fn models(&self) -> Result<ModelsReport, ErrorBody> {
        let manifest = self.manifest()?;
        let slot = self.slot.lock().unwrap();
        let models = manifest
            .models
            .iter()
            .map(|m| {
                let size = std::fs::metadata(self.cfg.model_dir.join(&m.file))
                    .ok()
                    .map(|md| md.len());
                let loaded = slot
                    .model
                    .as_ref()
                    .is_some_and(|l| l.name == m.name && l.version == m.version);
                let state = if loaded {
                    slot.state.as_str().to_string()
                } else if size.is_some() {
                    "available".to_string()
                } else {
                    "missing".to_string()
                };
                RegistryModel {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    file: m.file.clone(),
                    format: m.format.clone(),
                    sha256: m.sha256.clone(),
                    size_bytes: size,
                    state,
                }
            })
            .collect();
        Ok(ModelsReport {
            model_dir: self.cfg.model_dir.display().to_string(),
            models,
        })
    }

    pub fn metrics_summary(&self) -> MetricsSummary {
        self.refresh_memory();
        let ok = self
            .metrics
            .requests(veritas_vocab::metrics::STATUS_SUCCESS);
        let err = self.metrics.requests(veritas_vocab::metrics::STATUS_ERROR);
        let h = self.metrics.duration_histogram();
        let (prompt_tokens, generated_tokens) = self.metrics.tokens();
        MetricsSummary {
            deployment: self.cfg.deployment.clone(),
            requests_success: ok,
            requests_error: err,
            error_rate: if ok + err == 0 {
                0.0
            } else {
                err as f64 / (ok + err) as f64
            },
            latency_p50_ms: metrics::histogram_quantile(&h, 0.5).map(|s| s * 1e3),
            latency_p99_ms: metrics::histogram_quantile(&h, 0.99).map(|s| s * 1e3),
            prompt_tokens,
            generated_tokens,
            inflight: self.inflight.load(Ordering::SeqCst) as u32,
            memory_used_bytes: self.metrics.memory_used.get() as u64,
            memory_limit_bytes: self.cfg.memory_limit,
            errors_by_code: self.metrics.errors_by_code(),
        }
    }

    fn current_worker(&self) -> Result<Arc<Worker>, ErrorBody> {
        self.slot.lock().unwrap().worker.clone().ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::HealthCheckFailed,
                "no inference worker is running (is a model loaded?)",
            )
        })
    }

    /// Runs the sandbox self-test inside the running worker.
    pub async fn sandbox_selftest(&self) -> Result<SelftestReport, ErrorBody> {
        let worker = self.current_worker()?;
        let (probes, all_ok) = worker.selftest().await?;
        let sandbox = self.slot.lock().unwrap().sandbox.clone();
        Ok(SelftestReport {
            pid: Some(worker.pid),
            sandbox,
            probes,
            all_ok,
        })
    }

    pub fn inject_fault(&self, kind: FaultKind) -> Result<(), ErrorBody> {
        if !self.cfg.fault_injection {
            return Err(ErrorBody::new(
                ErrorCode::IpcProtocolError,
                "fault injection is disabled on this runtime (start it with --enable-fault-injection)",
            ));
        }
        tracing::warn!(?kind, "injecting a fault on request");
        self.current_worker()?.inject(kind);
        Ok(())
    }

    pub fn telemetry(&self) -> TelemetryStatus {
        TelemetryStatus {
            metrics_enabled: self.cfg.metrics_addr.is_some(),
            metrics_address: self.cfg.metrics_addr.clone(),
            http_address: self.cfg.http_addr.clone(),
            socket: self.cfg.socket.display().to_string(),
            log_format: self.cfg.log_format.clone(),
            series: self.metrics.series(),
        }
    }

    /// Resident memory of the daemon plus its worker.
    pub fn refresh_memory(&self) {
        let worker_pid = self.slot.lock().unwrap().worker.as_ref().map(|w| w.pid);
        let used = rss_bytes("self") + worker_pid.map(|p| rss_bytes(&p.to_string())).unwrap_or(0);
        self.metrics.memory_used.set(used as i64);
    }

    /// Stops admitting, waits for admitted requests (up to the drain timeout), stops the worker.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let all = self.cfg.capacity();
        let waited =
            tokio::time::timeout(self.cfg.drain_timeout, self.admission.acquire_many(all)).await;
        match waited {
            Ok(_) => tracing::info!("drained: no request in flight"),
            Err(_) => tracing::warn!(
                inflight = self.inflight.load(Ordering::SeqCst),
                "drain timeout reached with requests still in flight"
            ),
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.answers.write()).await;
        if let Some(w) = self.slot.lock().unwrap().worker.take() {
            w.shutdown();
        }
    }
}

struct InflightGuard<'a>(&'a Runtime);

impl<'a> InflightGuard<'a> {
    fn new(rt: &'a Runtime) -> Self {
        let n = rt.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        rt.update_queue_gauges(n);
        InflightGuard(rt)
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let n = self.0.inflight.fetch_sub(1, Ordering::SeqCst) - 1;
        self.0.update_queue_gauges(n);
    }
}

impl Runtime {
    fn update_queue_gauges(&self, inflight: u64) {
        self.metrics.inflight.set(inflight as i64);
        self.metrics
            .queue_depth
            .set(inflight.saturating_sub(self.cfg.parallel as u64) as i64);
    }
}

impl Runtime {
    /// Records what a worker's death says: a sandbox violation, a resource limit.
    fn note_worker_exit(&self, e: &WorkerExit) {
        match e.error.code {
            // errors_total counts the requests that failed with these codes; the event
            // itself is counted here.
            ErrorCode::SandboxViolation => {
                self.metrics
                    .count_violation(e.violation.as_deref().unwrap_or("unknown"));
                tracing::error!(code = "E3002", "{}", e.error.detail);
            }
            ErrorCode::ResourceLimitExceeded => {
                tracing::error!(code = "E3003", "{}", e.error.detail);
            }
            _ => {}
        }
    }
}

fn rss_bytes(pid: &str) -> u64 {
    let page = 4096;
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page)
        .unwrap_or(0)
}

/// The supervisor loop: owns the worker's lifecycle.
async fn supervise(rt: Arc<Runtime>, mut rx: mpsc::UnboundedReceiver<SupervisorMsg>) {
    let load_timeout = Duration::from_secs(300);
    let mut current: Option<(VerifiedModel, WorkerSpec)> = None;
    let mut exit: Option<oneshot::Receiver<WorkerExit>> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let exited = async {
            match exit.as_mut() {
                Some(rx) => rx.await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = rx.recv() => {
                let Some(SupervisorMsg::Load { model, done }) = msg else { return };
                let spec = WorkerSpec {
                    model_path: model.path.clone(),
                    model_dir: rt.cfg.model_dir.clone(),
                    ctx_size: rt.cfg.ctx_size,
                    threads: rt.cfg.threads,
                    parallel: rt.cfg.parallel,
                    max_frame: rt.cfg.max_frame,
                    sandbox: rt.cfg.sandbox.clone(),
                    sandbox_layers: rt.cfg.sandbox_layers.clone(),
                    memory_limit: rt.cfg.worker_memory_limit,
                };
                {
                    let mut slot = rt.slot.lock().unwrap();
                    if slot.state != ModelState::Ready {
                        slot.state = ModelState::Loading;
                        rt.metrics.set_model_state(&model.entry.name, ModelState::Loading);
                    }
                }
                match start_worker(&rt, &model, &spec, load_timeout).await {
                    Ok((info, exit_rx)) => {
                        // The old worker finishes its queued requests, then exits.
                        exit = Some(exit_rx);
                        current = Some((model, spec));
                        backoff = Duration::from_millis(100);
                        let _ = done.send(Ok(info));
                    }
                    Err(e) => {
                        rt.set_failed(&model.entry, e.clone());
                        let _ = done.send(Err(e));
                    }
                }
            }
            ended = exited => {
                exit = None;
                let why = match &ended {
                    Some(e) => {
                        rt.note_worker_exit(e);
                        e.error.detail.clone()
                    }
                    None => "unknown".to_string(),
                };
                if rt.draining.load(Ordering::SeqCst) {
                    tracing::info!(%why, "inference worker stopped");
                    continue;
                }
                rt.slot.lock().unwrap().worker = None;
                tracing::warn!(%why, backoff_ms = backoff.as_millis() as u64, "inference worker exited; restarting");
                let Some((model, spec)) = current.clone() else { continue };
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                rt.restarts.fetch_add(1, Ordering::SeqCst);
                rt.metrics.worker_restarts.inc();
                match start_worker(&rt, &model, &spec, load_timeout).await {
                    Ok((_, exit_rx)) => exit = Some(exit_rx),
                    Err(e) => {
                        tracing::error!(code = e.code.code(), "restart failed: {e}");
                        rt.set_failed(&model.entry, e);
                    }
                }
            }
        }
    }
}

async fn start_worker(
    rt: &Runtime,
    model: &VerifiedModel,
    spec: &WorkerSpec,
    load_timeout: Duration,
) -> Result<(ModelInfo, oneshot::Receiver<WorkerExit>), ErrorBody> {
    let (worker, startup, exit_rx) = Worker::spawn(spec, load_timeout).await?;
    let startup = match startup {
        Startup::Died => {
            let ended = exit_rx.await.ok();
            if let Some(e) = &ended {
                rt.note_worker_exit(e);
            }
            return Err(match ended {
                Some(e) if e.error.code != ErrorCode::InferenceFailed => e.error,
                Some(e) if spec.memory_limit.is_some() => ErrorBody::new(
                    ErrorCode::ResourceLimitExceeded,
                    format!(
                        "inference worker died while loading {} ({}): the model ({} bytes) does not fit the worker's memory ceiling of {} bytes",
                        spec.model_path.display(),
                        supervisor::describe_exit(&e.status),
                        model.size_bytes,
                        spec.memory_limit.unwrap_or(0)
                    ),
                ),
                other => ErrorBody::new(
                    ErrorCode::ModelLoadFailed,
                    format!(
                        "inference worker exited while loading {} ({}); llama.cpp rejected the file (check model format compatibility)",
                        spec.model_path.display(),
                        other.map(|e| supervisor::describe_exit(&e.status)).unwrap_or_default()
                    ),
                ),
            });
        }
        s => s,
    };
    match startup {
        Startup::Ready {
            n_ctx,
            n_vocab,
            sandbox,
        } => {
            let info = ModelInfo {
                name: model.entry.name.clone(),
                version: model.entry.version.clone(),
                file: model.entry.file.clone(),
                sha256: model.entry.sha256.clone(),
                format: model.entry.format.clone(),
                size_bytes: model.size_bytes,
                n_ctx,
                n_vocab,
            };
            let mut slot = rt.slot.lock().unwrap();
            if let Some(old) = slot.worker.replace(worker) {
                if old.pid != slot.worker.as_ref().unwrap().pid {
                    old.shutdown();
                }
            }
            slot.state = ModelState::Ready;
            slot.model = Some(info.clone());
            slot.last_error = None;
            rt.metrics.set_sandbox(sandbox.as_ref());
            slot.sandbox = sandbox;
            rt.metrics.set_model_state(&info.name, ModelState::Ready);
            tracing::info!(model = %info.name, version = %info.version, n_ctx, pid = slot.worker.as_ref().unwrap().pid, "model ready");
            Ok((info, exit_rx))
        }
        Startup::Failed(e) => {
            worker.kill();
            Err(e)
        }
        Startup::Died => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> anyhow::Result<Config> {
        let mut argv = vec!["veritas-spark", "serve"];
        argv.extend_from_slice(extra);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        match cli.command {
            crate::cli::Command::Serve(a) => Config::from_args(cli.global.socket, &a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_follow_the_guide() {
        let c = args(&[]).unwrap();
        assert_eq!(
            c.socket,
            PathBuf::from("/var/run/veritas/veritas-spark.sock")
        );
        assert_eq!(c.http_addr.as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(c.metrics_addr.as_deref(), Some("0.0.0.0:9090"));
        assert_eq!(c.deployment, "stable");
        assert_eq!(c.socket_mode, 0o660);
        assert_eq!(c.capacity(), 18);
    }

    #[test]
    fn invalid_settings_are_refused_with_the_flag_named() {
        for (flags, needle) in [
            (&["--parallel", "0"][..], "--parallel"),
            (&["--socket-mode", "rw"][..], "--socket-mode"),
            (&["--log-format", "xml"][..], "--log-format"),
            (&["--request-timeout", "0"][..], "--request-timeout"),
        ] {
            let err = args(flags).unwrap_err().to_string();
            assert!(err.contains(needle), "{flags:?}: {err}");
        }
        assert_eq!(args(&["--http-addr", "off"]).unwrap().http_addr, None);
    }

    #[test]
    fn model_references() {
        assert_eq!(parse_model_ref("tiny"), ("tiny", None));
        assert_eq!(parse_model_ref("tiny@1.0.0"), ("tiny", Some("1.0.0")));
    }
}
