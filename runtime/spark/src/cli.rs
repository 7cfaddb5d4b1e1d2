//! Command-line arguments (raw flags; validated into [`crate::daemon::Config`] by `serve`).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use veritas_vocab::labels;

#[derive(Debug, Parser)]
#[command(
    name = "veritas-spark",
    version,
    about = "Hearthlink CORE Runtime: LLM inference daemon and its operator CLI",
    long_about = "Hearthlink CORE Runtime: LLM inference daemon and its operator CLI.\n\n\
`veritas-spark serve` runs the daemon. Every other command talks to a running daemon over its \
Unix socket and exits 0 when healthy, 1 when critical (the troubleshooting guide's Health \
Status Matrix). Failures print `CODE NAME: detail`, e.g. `E1001 IPC_CONNECTION_FAILED: ...`; \
with --json they print {\"code\",\"name\",\"severity\",\"detail\"}.",
    after_help = "Examples:\n  veritas-spark serve --model-dir /models --model tiny\n  veritas-spark health --verbose\n  veritas-spark generate 'Hello' --max-tokens 16\n  veritas-spark models load tiny --verbose"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Runtime socket path.
    #[arg(long, global = true, env = "VERITAS_SOCKET", default_value = labels::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for the runtime's answer before failing with E1002 IPC_TIMEOUT.
    #[arg(long, global = true, env = "VERITAS_TIMEOUT", default_value_t = 30.0)]
    pub timeout: f64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the runtime daemon (IPC socket, HTTP :8080, metrics :9090).
    Serve(Box<ServeArgs>),
    /// Full health check (exit 0 healthy, 1 critical).
    Health {
        /// Detailed report: model, worker, queue, sandbox, checks.
        #[arg(long)]
        verbose: bool,
    },
    /// Liveness probe: is the daemon answering at all.
    Live,
    /// Readiness probe: is a model loaded and the worker serving.
    Ready,
    /// The model registry.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Metrics of this runtime.
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// Telemetry configuration and state.
    #[command(subcommand)]
    Telemetry(TelemetryCommand),
    /// Generate a completion for a prompt (greedy decoding).
    Generate(GenerateArgs),
    /// Inference sandbox: prove the confinement of the running worker, or check this node.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Canary operations on the cluster (VeritasCanary, through the Kubernetes API).
    #[command(subcommand)]
    Canary(veritas_cluster::CanaryCommand),
    /// Roll back a canary (--canary) or a blue-green switch (--bluegreen), --force to
    /// override checks, or show rollback progress (--status).
    Rollback(veritas_cluster::RollbackArgs),
    /// Blue-green operations on the cluster (VeritasEnvironment): inspect, diff, switch.
    #[command(subcommand)]
    Bluegreen(veritas_cluster::BluegreenCommand),
    /// Deployment state on the cluster: the Health Status Matrix of the runtime pods, the
    /// canary and blue-green resources (exit 0 healthy or degraded, 1 critical or failed:
    /// E5001 DEPLOYMENT_FAILED / E5002 ROLLBACK_FAILED with the guide's checks).
    #[command(subcommand)]
    Deployment(DeploymentCommand),
    /// Internal: ask a daemon started with --enable-fault-injection to misbehave.
    #[command(hide = true)]
    Fault {
        /// `sandbox-violation` (the worker makes a forbidden syscall), `worker-abort`, or
        /// `unreadable-event` (the worker sends an event frame the daemon cannot read).
        kind: String,
    },
    /// Internal (chaos harness): run a command under the restrictions a container runtime's
    /// default profile imposes, e.g. `chaos-exec --deny-userns -- veritas-spark serve ...`.
    #[command(hide = true)]
    ChaosExec {
        /// Make creating user namespaces fail with EPERM, as Docker's default seccomp profile does.
        #[arg(long)]
        deny_userns: bool,
        /// Make installing seccomp filters fail with EINVAL, as on a kernel without
        /// CONFIG_SECCOMP_FILTER or under a profile that forbids seccomp(2).
        #[arg(long)]
        deny_seccomp: bool,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Internal: the inference worker the daemon spawns. Not for operators.
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Models in the registry and which one is loaded.
    List,
    /// Verify and load a model (replaces the loaded one once it is ready).
    Load {
        /// `name` or `name@version`.
        name: String,
        /// Show each verification step and the full error cause.
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Attempt forbidden operations inside the running worker's sandbox (open a file outside
    /// the model directory, open a socket, unshare, exec, ptrace...) and report each;
    /// exit 1 if any was allowed.
    Selftest,
    /// Without a daemon: confine this process as a worker would be and report each layer
    /// (the init-container check; E3001 names the layer that fails and the kernel checks).
    Check {
        /// `required`, `best-effort` or `off`.
        #[arg(long, default_value = "required")]
        mode: String,
        /// Layers to check (see `serve --sandbox-layers`).
        #[arg(long, default_value = "all")]
        layers: String,
        /// Directory the worker would read models from.
        #[arg(long, env = "VERITAS_MODEL_DIR", default_value = labels::DEFAULT_MODEL_DIR)]
        model_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Key metrics: requests, error rate, latency, tokens, memory.
    Summary,
    /// Canary metrics from Prometheus: requests, error rate, p99.
    Canary(veritas_cluster::Target),
    /// Canary vs stable metrics from Prometheus.
    Compare(veritas_cluster::Target),
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Overview of deployment state: Pods, Health, Metrics and IPC, each Healthy, Degraded or
    /// Critical (the guide's Health Status Matrix); --verbose adds every pod, recent events,
    /// node allocation and the controller's recent warnings.
    Status(veritas_cluster::StatusArgs),
}

#[derive(Debug, Subcommand)]
pub enum TelemetryCommand {
    /// Where metrics and logs go and whether they are on.
    Status,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The prompt; `-` reads it from standard input.
    pub prompt: String,
    #[arg(long, default_value_t = 32)]
    pub max_tokens: u32,
    /// `name` or `name@version`; defaults to the loaded model.
    #[arg(long)]
    pub model: Option<String>,
    /// Sample at this temperature (0 to 2) instead of decoding greedily.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Sample from the k most likely tokens only.
    #[arg(long)]
    pub top_k: Option<i32>,
    /// Sample from the most likely tokens making up this probability (0 to 1).
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Seed of the draw: the same seed and prompt give the same text.
    #[arg(long)]
    pub seed: Option<u32>,
    /// End the answer before this string (repeatable, up to 4).
    #[arg(long)]
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory holding manifest.json and the model files.
    #[arg(long, env = "VERITAS_MODEL_DIR", default_value = labels::DEFAULT_MODEL_DIR)]
    pub model_dir: PathBuf,
    /// Model to load at start (`name` or `name@version`); none when absent.
    #[arg(long, env = "VERITAS_MODEL")]
    pub model: Option<String>,
    /// Another name clients may use for the served model in the OpenAI API (`model`),
    /// listed by /v1/models and echoed in answers; repeat or separate with commas.
    #[arg(long, env = "VERITAS_SERVED_MODEL_NAME", value_delimiter = ',')]
    pub served_model_name: Vec<String>,
    /// HTTP address for /health, /live, /ready and /v1/generate; `off` disables it.
    #[arg(long, env = "VERITAS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: String,
    /// Prometheus /metrics address; `off` disables it.
    #[arg(long, env = "VERITAS_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: String,
    /// Value of the `deployment` metric label (canary or stable).
    #[arg(long, env = "VERITAS_DEPLOYMENT", default_value = labels::DEPLOYMENT_STABLE)]
    pub deployment: String,
    /// Context window in tokens of each request (the worker's one context holds this many
    /// for each of --parallel requests); 0 uses the model's training context capped at 4096.
    #[arg(long, env = "VERITAS_CTX_SIZE", default_value_t = 0)]
    pub ctx_size: u32,
    /// CPU threads of the inference worker's decode (all requests in flight are decoded
    /// together, one batch per token). Set it to the cores the worker may use (a pod's CPU
    /// limit): ggml's threads spin while they wait, so more threads than free cores slow
    /// every decode down.
    #[arg(long, env = "VERITAS_THREADS", default_value_t = 1)]
    pub threads: u32,
    /// Requests decoded at the same time, 1 to 256 (continuous batching: each is a sequence
    /// of one llama.cpp context, and one decode per token serves them all).
    #[arg(long, env = "VERITAS_PARALLEL", default_value_t = 2)]
    pub parallel: u32,
    /// Admitted requests waiting beyond `parallel`; more are refused at once with E3003.
    #[arg(long, env = "VERITAS_QUEUE_SIZE", default_value_t = 16)]
    pub queue_size: u32,
    /// Largest IPC frame accepted, in bytes.
    #[arg(long, env = "VERITAS_MAX_FRAME", default_value_t = veritas_vocab::ipc::DEFAULT_MAX_FRAME)]
    pub max_frame: u32,
    /// HTTP connections open at once, on :8080 and on :9090 each; one more is answered 503
    /// (E3003, Retry-After) and closed, so no client can exhaust the daemon's descriptors.
    #[arg(long, env = "VERITAS_MAX_HTTP_CONNECTIONS", default_value_t = 256)]
    pub max_http_connections: u32,
    /// Seconds an HTTP client has to send a request's headers, or its body (408 after), and
    /// that a keep-alive connection may sit idle.
    #[arg(long, env = "VERITAS_HTTP_TIMEOUT", default_value_t = 30.0)]
    pub http_timeout: f64,
    /// Runtime-socket connections served at once; more are answered with E3003 and closed.
    #[arg(long, env = "VERITAS_MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: u32,
    /// Requests one socket connection may have in flight; further requests on it are read
    /// only as earlier ones are answered.
    #[arg(long, env = "VERITAS_MAX_PIPELINED", default_value_t = 16)]
    pub max_pipelined: u32,
    /// Seconds a socket connection may sit idle (nothing in flight), or take to deliver a
    /// started frame, before it is closed.
    #[arg(long, env = "VERITAS_IPC_IDLE_TIMEOUT", default_value_t = 300.0)]
    pub ipc_idle_timeout: f64,
    /// Seconds an inference request may take before E1002 IPC_TIMEOUT.
    #[arg(long, env = "VERITAS_REQUEST_TIMEOUT", default_value_t = 120.0)]
    pub request_timeout: f64,
    /// Seconds to drain in-flight requests after SIGTERM.
    #[arg(long, env = "VERITAS_DRAIN_TIMEOUT", default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Memory the runtime may use, in bytes (reported as veritas_spark_memory_limit_bytes and
    /// checked at model load); defaults to the cgroup limit, read at each use so that a limit
    /// changed live counts, or the machine's memory.
    #[arg(long, env = "VERITAS_MEMORY_LIMIT")]
    pub memory_limit: Option<u64>,
    /// Socket file mode, octal.
    #[arg(long, env = "VERITAS_SOCKET_MODE", default_value = "660")]
    pub socket_mode: String,
    /// Log format: text or json.
    #[arg(long, env = "VERITAS_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Confinement of the inference worker: `required` refuses to serve without every
    /// enabled layer (E3001), `best-effort` applies what the kernel allows and reports the
    /// rest, `off` applies nothing.
    #[arg(long, env = "VERITAS_SANDBOX", default_value = "best-effort")]
    pub sandbox: String,
    /// Sandbox layers to enable: `all`, `none`, or a list of
    /// userns,mountns,netns,rlimits,landlock,capabilities,seccomp.
    #[arg(long, env = "VERITAS_SANDBOX_LAYERS", default_value = "all")]
    pub sandbox_layers: String,
    /// Address-space ceiling of the inference worker in bytes (RLIMIT_AS); a model or request
    /// that needs more fails with E3003 and the daemon stays up.
    #[arg(long, env = "VERITAS_WORKER_MEMORY_LIMIT")]
    pub worker_memory_limit: Option<u64>,
    /// Accept fault-injection requests from the chaos harness (never in production).
    #[arg(long, env = "VERITAS_FAULT_INJECTION")]
    pub enable_fault_injection: bool,
    /// Chaos: each inference worker waits this many seconds before loading its model, so a
    /// test can act while a load is in progress. Needs --enable-fault-injection.
    #[arg(long, env = "VERITAS_FAULT_SLOW_LOAD", default_value_t = 0.0)]
    pub fault_slow_load: f64,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub ipc_fd: i32,
    #[arg(long)]
    pub model_path: PathBuf,
    /// Inherited descriptor of the verified model file; loaded instead of `model_path`.
    #[arg(long)]
    pub model_fd: Option<i32>,
    #[arg(long)]
    pub ctx_size: u32,
    #[arg(long)]
    pub threads: u32,
    #[arg(long)]
    pub parallel: u32,
    #[arg(long)]
    pub max_frame: u32,
    /// Chaos (--fault-slow-load): wait this long before loading the model.
    #[arg(long, default_value_t = 0)]
    pub load_delay_ms: u64,
    /// Largest event frame the daemon reads from the worker: a larger answer is refused
    /// (E3003) instead of being written, since the daemon could not read it.
    #[arg(long, default_value_t = veritas_vocab::ipc::DEFAULT_MAX_FRAME)]
    pub event_limit: u32,
    #[arg(long)]
    pub model_dir: PathBuf,
    #[arg(long)]
    pub sandbox: String,
    #[arg(long)]
    pub sandbox_layers: String,
    #[arg(long)]
    pub memory_limit: Option<u64>,
}
