//! The runtime daemon: the operations every front (IPC socket, HTTP) shares, admission,
//! and the supervisor that drives the worker's [`lifecycle`].
//!
//! Rooms: [`config`] (validated flags), [`registry`] (manifest and lookups), [`lifecycle`]
//! (the worker's state machine), [`supervisor`] (the worker process and its channel),
//! [`health`] (probes, health report, memory), [`metrics`], and the fronts [`ipc_server`]
//! and [`http`].

pub mod admission;
pub mod config;
pub mod health;
pub mod http;
pub mod ipc_server;
pub mod lifecycle;
pub mod metrics;
pub mod openai;
pub mod recent;
pub mod registry;
pub mod supervisor;

pub use config::Config;
pub use registry::parse_model_ref;

use lifecycle::{AfterExit, Lifecycle};
use metrics::Metrics;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use supervisor::{Startup, Worker, WorkerExit, WorkerSpec};
use tokio::sync::{mpsc, oneshot, Semaphore};
use veritas_engine::{Budget, VerifiedModel};
use veritas_vocab::ipc::*;
use veritas_vocab::manifest::ModelEntry;
use veritas_vocab::{ErrorBody, ErrorCode};

/// How long a worker may take to load its model and say it is ready.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Attempts to start a new worker after the serving one died, before giving up (state
/// `failed`, health critical, until a `models load`).
const RESTART_ATTEMPTS: u32 = 3;

struct Slot {
    life: Lifecycle,
    /// The last failed load of another model while one is served: reported, not fatal.
    last_load_error: Option<ErrorBody>,
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
    /// The last minute of admissions, for `metrics summary`.
    recent: recent::RecentAdmissions,
    restarts: AtomicU64,
    draining: AtomicBool,
    /// Held (shared) by every IPC request until its answer is written; drain takes it whole.
    pub answers: tokio::sync::RwLock<()>,
    supervisor: mpsc::UnboundedSender<SupervisorMsg>,
}

/// Records a request as cancelled if its future is dropped before it is answered.
struct Abandoned<'a> {
    metrics: &'a Metrics,
    started: Instant,
    armed: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if self.armed {
            let secs = self.started.elapsed().as_secs_f64();
            self.metrics.record_cancelled(secs);
            tracing::info!(seconds = secs, "request abandoned by its caller");
        }
    }
}

/// What a request's `max_tokens` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// The client's bound: a prompt plus `max_tokens` above the window is E4003.
    AtMost,
    /// A default (the chat API's): lowered to what the window leaves after the prompt.
    Fit,
}

impl Runtime {
    /// Builds the runtime and starts its supervisor; loads the configured model in the
    /// background (the daemon is live, not ready, meanwhile).
    pub fn start(cfg: Config) -> Arc<Runtime> {
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = Metrics::new(&cfg.deployment);
        metrics.memory_limit.set(cfg.memory_limit() as i64);
        let rt = Arc::new(Runtime {
            admission: Arc::new(Semaphore::new(cfg.capacity() as usize)),
            cfg,
            metrics,
            started: Instant::now(),
            slot: Mutex::new(Slot {
                life: Lifecycle::Unloaded,
                last_load_error: None,
            }),
            inflight: AtomicU64::new(0),
            recent: recent::RecentAdmissions::default(),
            restarts: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            answers: tokio::sync::RwLock::new(()),
            supervisor: tx,
        });
        tokio::spawn(supervise(rt.clone(), rx));
        if let Some(initial) = rt.cfg.model.clone() {
            let rt2 = rt.clone();
            // A failure is logged (and counted) by load_model itself.
            tokio::spawn(async move {
                let _ = rt2.load_model(&initial).await;
            });
        }
        rt
    }

    /// Verifies and loads a model, replacing the current one once the new worker is ready.
    pub async fn load_model(&self, model_ref: &str) -> Result<ModelInfo, ErrorBody> {
        let result = self.load_model_inner(model_ref).await;
        if let Err(e) = &result {
            self.metrics.count_error(e.code);
            // The caller gets the error; the daemon's log keeps it for whoever reads it later
            // (the guide's "view sandbox logs").
            tracing::error!(
                code = e.code.code(),
                model = model_ref,
                "model load failed: {e}"
            );
        }
        result
    }

    async fn load_model_inner(&self, model_ref: &str) -> Result<ModelInfo, ErrorBody> {
        let entry = self.resolve(model_ref)?;
        let verified = match self.verify(&entry).await {
            Ok(v) => v,
            Err(e) => {
                self.record_load_failure(&entry.name, e.clone());
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

    /// Checks a registry entry's file before any worker sees it; the result holds the open
    /// file the worker will load, so what was verified is what is loaded.
    async fn verify(&self, entry: &ModelEntry) -> Result<VerifiedModel, ErrorBody> {
        let limit = Some(self.cfg.memory_limit()).filter(|&b| b > 0);
        let (in_use, free) = (
            self.resident_bytes(),
            veritas_engine::verify::mem_available(),
        );
        let memory = veritas_engine::MemoryCheck {
            available: Some(veritas_engine::verify::available_memory(
                limit, in_use, free,
            )),
            n_ctx: self.cfg.ctx_size,
            contexts: self.cfg.parallel,
            // Named only when the limit, not the machine's free memory, is what is short.
            limit: limit.filter(|&l| free.is_none_or(|f| l.saturating_sub(in_use) <= f)),
        };
        let (dir, entry) = (self.cfg.model_dir.clone(), entry.clone());
        // Hashing a multi-gigabyte file takes seconds: never on the async threads that
        // answer /live and /ready.
        tokio::task::spawn_blocking(move || veritas_engine::verify_model_with(&dir, &entry, memory))
            .await
            .unwrap_or_else(|e| {
                Err(ErrorBody::new(
                    ErrorCode::ModelLoadFailed,
                    format!("model verification did not complete: {e}"),
                ))
            })
    }

    fn record_load_failure(&self, model: &str, e: ErrorBody) {
        let mut slot = self.slot.lock().unwrap();
        // A failed load of another model does not take down the one being served.
        slot.life.load_failed(e.clone());
        slot.last_load_error = Some(e);
        let named = slot.life.state_model().unwrap_or(model);
        self.metrics.set_model_state(named, slot.life.model_state());
    }

    /// One inference request, admitted or refused at once.
    pub async fn generate(&self, req: GenerateRequest) -> Result<GenerateResponse, ErrorBody> {
        self.generate_with(req, Length::AtMost, None).await
    }

    /// [`Runtime::generate`], streaming the text to `pieces` as the worker decodes it (the
    /// OpenAI-compatible `stream: true`); the pieces together are the response's text.
    /// `length` says whether `max_tokens` is a client's bound or a default to fit.
    pub async fn generate_with(
        &self,
        req: GenerateRequest,
        length: Length,
        pieces: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<GenerateResponse, ErrorBody> {
        let started = Instant::now();
        // Dropped with this future when the caller goes away (an HTTP client that hung up):
        // the request is then counted as cancelled instead of vanishing from the metrics.
        let mut abandoned = Abandoned {
            metrics: &self.metrics,
            started,
            armed: true,
        };
        let result = self.generate_inner(req, length, pieces).await;
        abandoned.armed = false;
        let secs = started.elapsed().as_secs_f64();
        match &result {
            Ok(r) => self
                .metrics
                .record_success(secs, r.prompt_tokens, r.generated_tokens),
            Err(e) => {
                self.metrics.record_failure(secs, e.code);
                // What `kubectl logs -l deployment=canary` must show during a failure window:
                // each failed request with its code, not only the error-rate metric.
                tracing::warn!(
                    code = e.code.code(),
                    seconds = secs,
                    "request failed: {}",
                    e.detail
                );
            }
        }
        result
    }

    async fn generate_inner(
        &self,
        mut req: GenerateRequest,
        length: Length,
        pieces: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<GenerateResponse, ErrorBody> {
        let permit = admission::admit(
            &self.admission,
            self.draining.load(Ordering::SeqCst),
            admission::Bound {
                parallel: self.cfg.parallel,
                queue_size: self.cfg.queue_size,
            },
        )?;
        let _inflight = InflightGuard::new(self);
        let (worker, model) = {
            let slot = self.slot.lock().unwrap();
            match &slot.life {
                Lifecycle::Serving { worker, model, .. } => (worker.clone(), model.clone()),
                // The cause keeps its own code: E2001 for a bad model, E3001 for a sandbox
                // that could not be set up, E3003 for a model above the worker's ceiling.
                Lifecycle::Failed { error, .. } => {
                    return Err(ErrorBody::new(
                        error.code,
                        format!("no model is loaded: {}", error.detail),
                    ))
                }
                other => {
                    return Err(ErrorBody::new(
                        ErrorCode::HealthCheckFailed,
                        format!(
                            "runtime not ready: model state is {} ({})",
                            other.model_state().as_str(),
                            other.describe()
                        ),
                    ))
                }
            }
        };
        // A request naming the model being served (`name` or `name@version`) is served by it
        // without reading the registry: clients that always send the field (every OpenAI
        // client does) would otherwise pay for reading and parsing manifest.json each time.
        let names_served = |wanted: &str| {
            let (name, version) = registry::parse_model_ref(wanted);
            self.is_served_alias(wanted)
                || (name == model.name && version.is_none_or(|v| v == model.version))
        };
        // Any other model: the registry says why it cannot be served (absent: E2002, another
        // version: E2003), and a model it lists is still not the one loaded.
        if let Some(wanted) = req.model.as_deref().filter(|w| !names_served(w)) {
            let entry = self.resolve(wanted)?;
            return Err(ErrorBody::new(
                ErrorCode::ModelNotFound,
                format!(
                    "model {}@{} is in the registry but not loaded (serving {}@{}); run `veritas-spark models load {}`",
                    entry.name, entry.version, model.name, model.version, entry.name
                ),
            ));
        }
        if let Some((field, why)) = req.decoding.invalid_field() {
            return Err(ErrorBody::new(
                ErrorCode::InferenceFailed,
                format!("invalid `{field}`: {why}"),
            ));
        }
        if !req.messages.is_empty() && !req.prompt.is_empty() {
            return Err(ErrorBody::new(
                ErrorCode::IpcProtocolError,
                "a request carries a prompt or messages, not both",
            ));
        }
        let budget = match length {
            Length::AtMost => Budget::AtMost(req.max_tokens),
            // A default: what the window leaves after the prompt, counted by the worker.
            Length::Fit => {
                req.max_tokens = req.max_tokens.min(model.n_ctx);
                Budget::Fit(req.max_tokens)
            }
        };
        // Refused here, before the worker sees it: no request may ask for more tokens than
        // the context window holds, whatever the prompt (the worker checks the sum).
        if req.max_tokens > model.n_ctx {
            return Err(ErrorBody::new(
                ErrorCode::ContextOverflow,
                format!(
                    "max_tokens {} exceeds the context window of {} tokens",
                    req.max_tokens, model.n_ctx
                ),
            ));
        }
        let started = Instant::now();
        let out = tokio::time::timeout(
            self.cfg.request_timeout,
            // The permit travels with the request: released when the worker is done with it,
            // not when we stop waiting, so a timed-out request still counts against the queue.
            worker.generate(
                supervisor::Work {
                    prompt: req.prompt,
                    messages: req.messages,
                    decoding: req.decoding,
                },
                budget,
                Some(permit),
                pieces,
            ),
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

    /// Whether `name` is one of the served model's other names (`--served-model-name`).
    pub fn is_served_alias(&self, name: &str) -> bool {
        self.cfg.served_model_names.iter().any(|n| n == name)
    }

    /// The model being served, if any.
    pub fn served_model(&self) -> Option<ModelInfo> {
        self.slot.lock().unwrap().life.model().cloned()
    }

    fn current_worker(&self) -> Result<Arc<Worker>, ErrorBody> {
        let slot = self.slot.lock().unwrap();
        slot.life.worker().cloned().ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::HealthCheckFailed,
                format!("no inference worker is running ({})", slot.life.describe()),
            )
        })
    }

    /// Runs the sandbox self-test inside the running worker.
    pub async fn sandbox_selftest(&self) -> Result<SelftestReport, ErrorBody> {
        let worker = self.current_worker()?;
        let (probes, all_ok) = worker.selftest().await?;
        let sandbox = self.slot.lock().unwrap().life.sandbox().cloned();
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
        let worker = self.slot.lock().unwrap().life.stop();
        if let Some(w) = worker {
            w.shutdown();
        }
    }
}

struct InflightGuard<'a>(&'a Runtime);

impl<'a> InflightGuard<'a> {
    fn new(rt: &'a Runtime) -> Self {
        let n = rt.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        rt.update_queue_gauges(n);
        rt.recent.record(n > rt.cfg.parallel as u64);
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

    /// Records what a worker's death says: a sandbox violation, a resource limit.
    fn note_worker_exit(&self, e: &WorkerExit) {
        match e.error.code {
            // errors_total counts the requests that failed with these codes; the event
            // itself is counted here.
            ErrorCode::SandboxViolation => {
                self.metrics
                    .count_violation(e.violation.as_deref().unwrap_or("unknown"));
                tracing::error!(code = e.error.code.code(), "{}", e.error.detail);
            }
            ErrorCode::ResourceLimitExceeded => {
                tracing::error!(code = e.error.code.code(), "{}", e.error.detail);
            }
            _ => {}
        }
    }

    fn worker_spec(&self, model: &VerifiedModel) -> WorkerSpec {
        WorkerSpec {
            model_path: model.path.clone(),
            model_file: model.file.clone(),
            model_dir: self.cfg.model_dir.clone(),
            ctx_size: self.cfg.ctx_size,
            threads: self.cfg.threads,
            parallel: self.cfg.parallel,
            max_frame: self.cfg.max_frame,
            sandbox: self.cfg.sandbox.clone(),
            sandbox_layers: self.cfg.sandbox_layers.clone(),
            memory_limit: self.cfg.worker_memory_limit,
            load_delay: self.cfg.slow_load,
        }
    }

    /// A worker is ready: it serves from now on; the one it replaces finishes its queue.
    fn now_serving(
        &self,
        info: ModelInfo,
        worker: Arc<Worker>,
        sandbox: Option<serde_json::Value>,
    ) -> ModelInfo {
        let mut slot = self.slot.lock().unwrap();
        self.metrics.set_sandbox(sandbox.as_ref());
        tracing::info!(model = %info.name, version = %info.version, n_ctx = info.n_ctx, pid = worker.pid, "model ready");
        if let Some(old) = slot.life.serving(worker, info.clone(), sandbox) {
            old.shutdown();
        }
        slot.last_load_error = None;
        self.metrics.set_model_state(&info.name, ModelState::Ready);
        info
    }
}

/// A worker that said it is ready.
struct Started {
    info: ModelInfo,
    worker: Arc<Worker>,
    sandbox: Option<serde_json::Value>,
    exit: oneshot::Receiver<WorkerExit>,
}

/// The supervisor loop: the only place that starts workers and moves the lifecycle on
/// their account.
async fn supervise(rt: Arc<Runtime>, mut rx: mpsc::UnboundedReceiver<SupervisorMsg>) {
    // The serving worker's exit, and the registry entry it was verified against.
    let mut exit: Option<oneshot::Receiver<WorkerExit>> = None;
    let mut current: Option<ModelEntry> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut serving_since = Instant::now();
    loop {
        tokio::select! {
            // A dead worker is taken before the next load is.
            biased;
            ended = served_exit(&mut exit) => {
                let restart = served_exited(&rt, ended, current.as_ref(), serving_since);
                let (Some(served_for), Some(entry)) = (restart, current.clone()) else {
                    continue;
                };
                tracing::warn!(model = %entry.name, "restarting the inference worker");
                exit = restart_served(&rt, &entry, &mut backoff, served_for, &mut serving_since).await;
            }
            msg = rx.recv() => {
                let Some(SupervisorMsg::Load { model, done }) = msg else { return };
                {
                    let mut slot = rt.slot.lock().unwrap();
                    slot.life.begin_load(&model.entry.name);
                    let named = slot.life.state_model().unwrap_or(&model.entry.name);
                    rt.metrics.set_model_state(named, slot.life.model_state());
                }
                // The served worker keeps serving while the new one loads: its death
                // meanwhile is taken now (not ready), not when the load ends.
                let started = start_worker(&rt, &model);
                tokio::pin!(started);
                let mut served_died: Option<Duration> = None;
                let result = loop {
                    tokio::select! {
                        r = &mut started => break r,
                        ended = served_exit(&mut exit) => {
                            served_died = served_exited(&rt, ended, current.as_ref(), serving_since);
                            if served_died.is_some() {
                                tracing::warn!("the serving inference worker exited while another model loads; it is restarted if that load fails");
                            }
                        }
                    }
                };
                match result {
                    Ok(Started { info, worker, sandbox, exit: exit_rx }) => {
                        let info = rt.now_serving(info, worker, sandbox);
                        exit = Some(exit_rx);
                        current = Some(model.entry.clone());
                        backoff = FIRST_BACKOFF;
                        serving_since = Instant::now();
                        let _ = done.send(Ok(info));
                    }
                    Err(e) => {
                        let e = e.into_error();
                        rt.record_load_failure(&model.entry.name, e.clone());
                        let _ = done.send(Err(e));
                        if let (Some(served_for), Some(entry)) = (served_died, current.clone()) {
                            exit = restart_served(&rt, &entry, &mut backoff, served_for, &mut serving_since).await;
                        }
                    }
                }
            }
        }
    }
}

/// The serving worker's exit, once; pending for ever while no worker serves.
async fn served_exit(exit: &mut Option<oneshot::Receiver<WorkerExit>>) -> Option<WorkerExit> {
    let ended = match exit.as_mut() {
        Some(rx) => rx.await.ok(),
        None => std::future::pending().await,
    };
    *exit = None;
    ended
}

/// Records the serving worker's exit. `Some(how long it served)` when it must be restarted:
/// not while draining, not for a worker already replaced, not when nothing was served.
fn served_exited(
    rt: &Runtime,
    ended: Option<WorkerExit>,
    current: Option<&ModelEntry>,
    serving_since: Instant,
) -> Option<Duration> {
    let ended = ended?;
    // Measured now: a restart that waits for another load must not count that wait as health.
    let served_for = serving_since.elapsed();
    rt.note_worker_exit(&ended);
    if rt.draining.load(Ordering::SeqCst) {
        tracing::info!(why = %ended.error.detail, "inference worker stopped");
        return None;
    }
    let after = rt
        .slot
        .lock()
        .unwrap()
        .life
        .worker_exited(ended.pid, ended.error.clone());
    let entry = current?;
    if after != AfterExit::Restart {
        return None;
    }
    tracing::warn!(why = %ended.error.detail, model = %entry.name, "inference worker exited");
    rt.metrics.set_model_state(&entry.name, ModelState::Loading);
    Some(served_for)
}

/// Restarts the served model's worker with the backoff its last run earned.
async fn restart_served(
    rt: &Runtime,
    entry: &ModelEntry,
    backoff: &mut Duration,
    served_for: Duration,
    serving_since: &mut Instant,
) -> Option<oneshot::Receiver<WorkerExit>> {
    *backoff = backoff_after_exit(*backoff, served_for);
    let exit = restart(rt, entry, backoff).await;
    if exit.is_some() {
        *serving_since = Instant::now();
    }
    exit
}

/// Wait before the first restart of a worker.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// A worker that served this long before it died was healthy: its restart starts over at
/// [`FIRST_BACKOFF`] instead of where the last crash loop left the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

fn backoff_after_exit(current: Duration, served_for: Duration) -> Duration {
    if served_for >= HEALTHY_RUN {
        FIRST_BACKOFF
    } else {
        current
    }
}

/// Starts a new worker for `entry` after the serving one died: the file is verified again
/// (it may have been replaced or damaged since), start failures are retried with backoff,
/// and a final failure leaves the lifecycle `Failed` with its cause, never `Ready`. A
/// failure for want of descriptors, processes or memory (E3003) is the daemon's passing
/// state, not the model's: retried until it clears, without using up the attempts.
async fn restart(
    rt: &Runtime,
    entry: &ModelEntry,
    backoff: &mut Duration,
) -> Option<oneshot::Receiver<WorkerExit>> {
    let mut attempt = 0;
    loop {
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
        if !rt.slot.lock().unwrap().life.is_restarting() {
            return None;
        }
        rt.restarts.fetch_add(1, Ordering::SeqCst);
        rt.metrics.worker_restarts.inc();
        let started = match rt.verify(entry).await {
            Ok(verified) => start_worker(rt, &verified).await,
            // Out of descriptors opening the file: the daemon's state, like a spawn failure.
            Err(e) if e.code == ErrorCode::ResourceLimitExceeded => Err(StartError::Spawn(e)),
            Err(e) => {
                // A file that fails verification will not pass by retrying.
                tracing::error!(code = e.code.code(), "restart refused: {e}");
                rt.slot.lock().unwrap().life.restart_failed(e, false);
                rt.metrics.set_model_state(&entry.name, ModelState::Failed);
                return None;
            }
        };
        match started {
            Ok(Started {
                info,
                worker,
                sandbox,
                exit,
            }) => {
                rt.now_serving(info, worker, sandbox);
                return Some(exit);
            }
            Err(e) => {
                if !e.transient() {
                    attempt += 1;
                }
                let e = e.into_error();
                let retry = attempt < RESTART_ATTEMPTS;
                tracing::error!(code = e.code.code(), attempt, retry, "restart failed: {e}");
                rt.slot.lock().unwrap().life.restart_failed(e, retry);
                if !retry {
                    rt.metrics.set_model_state(&entry.name, ModelState::Failed);
                    return None;
                }
            }
        }
    }
}

/// Why no worker started.
enum StartError {
    /// The daemon could not start one (socketpair, descriptor, process): E3003 when it ran
    /// out of descriptors, processes or memory, a state that passes.
    Spawn(ErrorBody),
    /// The worker started and could not load the model.
    Load(ErrorBody),
}

impl StartError {
    /// A shortage of the daemon's own resources: worth retrying once they are free.
    fn transient(&self) -> bool {
        matches!(self, StartError::Spawn(e) if e.code == ErrorCode::ResourceLimitExceeded)
    }

    fn into_error(self) -> ErrorBody {
        match self {
            StartError::Spawn(e) | StartError::Load(e) => e,
        }
    }
}

async fn start_worker(rt: &Runtime, model: &VerifiedModel) -> Result<Started, StartError> {
    let spec = rt.worker_spec(model);
    let (worker, startup, exit_rx) = Worker::spawn(&spec, LOAD_TIMEOUT)
        .await
        .map_err(StartError::Spawn)?;
    let failed = |e| Err(StartError::Load(e));
    match startup {
        Startup::Ready {
            n_ctx,
            n_vocab,
            sandbox,
        } => Ok(Started {
            info: ModelInfo {
                name: model.entry.name.clone(),
                version: model.entry.version.clone(),
                file: model.entry.file.clone(),
                sha256: model.entry.sha256.clone(),
                format: model.entry.format.clone(),
                size_bytes: model.size_bytes,
                n_ctx,
                n_vocab,
            },
            worker,
            sandbox,
            exit: exit_rx,
        }),
        Startup::Failed(e) => {
            worker.kill();
            failed(e)
        }
        Startup::Died => {
            let ended = exit_rx.await.ok();
            if let Some(e) = &ended {
                rt.note_worker_exit(e);
            }
            // E3002 and E3003 come from the exit itself (a seccomp kill, an allocation
            // failure in the worker's last words); a ceiling merely configured proves nothing.
            failed(match ended {
                Some(e) if e.error.code != ErrorCode::InferenceFailed => e.error,
                other => ErrorBody::new(
                    ErrorCode::ModelLoadFailed,
                    format!(
                        "inference worker exited while loading {} ({}); llama.cpp rejected the file (check model format compatibility)",
                        spec.model_path.display(),
                        other.map(|e| supervisor::describe_exit(&e.status)).unwrap_or_default()
                    ),
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_run_resets_the_restart_backoff_and_a_crash_loop_keeps_it() {
        let grown = Duration::from_secs(5);
        assert_eq!(backoff_after_exit(grown, HEALTHY_RUN), FIRST_BACKOFF);
        assert_eq!(
            backoff_after_exit(grown, Duration::from_secs(3600)),
            FIRST_BACKOFF
        );
        assert_eq!(backoff_after_exit(grown, Duration::from_secs(2)), grown);
        assert_eq!(
            backoff_after_exit(FIRST_BACKOFF, Duration::ZERO),
            FIRST_BACKOFF
        );
    }
}
