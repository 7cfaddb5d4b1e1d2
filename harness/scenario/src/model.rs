//! The typed scenario file. One file per catalog ID under `scenarios/`.
//!
//! A scenario walks one row of the troubleshooting guide: set up a healthy system, inject the
//! fault, observe the documented symptom (and check that it persists: the negative control),
//! run the guide's diagnostic commands, apply the guide's remedy, observe recovery within a
//! deadline, clean up. Every step is a one-of operation written `- <operation>: {...}`;
//! operations are executed by the engine's step library, the order and the waiting belong to
//! the runner.

use crate::duration::Span;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `apiVersion` every scenario file carries.
pub const API_VERSION: &str = "harness.veritas.hearthlink.ai/v1alpha1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// Always `harness.veritas.hearthlink.ai/v1alpha1`.
    pub api_version: String,
    /// Stable catalog ID (`CNT-1`, `MNR-2`, `E2001`, `E2001-corrupt`...): reports, snapshots
    /// and `cargo nextest -E 'test(=ID)'` use it. Must match the file name.
    pub id: String,
    /// One line: what goes wrong and what brings it back.
    pub title: String,
    /// The guide row this scenario proves.
    pub guide: GuideRef,
    #[serde(default)]
    pub requires: Requires,
    /// Per-kind default deadlines, overridable on a step.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Brings up the healthy system. A failure here is an error of the scenario, not a verdict.
    #[serde(default)]
    pub setup: Vec<Step>,
    /// Breaks it as the guide's cause says.
    pub fault: Vec<Step>,
    /// The documented symptom, observed; then held for `holdFor` (negative control).
    pub symptom: Observation,
    /// The guide's diagnostic commands and what each must show.
    #[serde(default)]
    pub diagnosis: Vec<Step>,
    /// The guide's remedy, as the on-call runs it.
    pub remedy: Vec<Step>,
    /// The system is back, within a deadline.
    pub recovery: Observation,
    /// What must hold throughout (the active Service has ready endpoints, weights stay within
    /// 0..=100): the fault breaks one thing, not everything. Checked once the setup is up,
    /// polled in the background from the fault until recovery, and checked again once
    /// recovered. A broken invariant fails the scenario even when the row's checks pass.
    #[serde(default)]
    pub invariants: Vec<Step>,
    /// Collectors run when any phase failed (evidence for the report).
    #[serde(default)]
    pub catch: Vec<Step>,
    /// Always runs, even after a failure or an interrupt: reverts every fault.
    #[serde(default)]
    pub finally: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuideRef {
    /// Section heading of the guide, e.g. `Canary Not Receiving Traffic` or `E2001: MODEL_LOAD_FAILED`.
    pub section: String,
    /// The cause (resolution table row, or symptom) this scenario reproduces.
    pub cause: String,
    /// The guide's remedy for that cause, verbatim.
    pub remedy: String,
    /// Who brings the system back. `remedy` (default): the on-call's remedy, which the
    /// without-remedy ablation proves necessary. `runtime`: the runtime heals itself by design
    /// (a supervised worker); the remedy verifies. `client`: the caller corrects its request.
    #[serde(default)]
    pub recovery_by: RecoveryBy,
    /// Notes where the scenario had to interpret the guide (e.g. a ClusterIP Service never
    /// changes its DNS answer on a switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Other rows of the guide that this same run proves: a Symptom to Action Map row (the
    /// symptom is this fault's, and the diagnosis runs the map's first command and shows its
    /// likely issue), rather than a second scenario that repeats the fault.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<AlsoRow>,
}

/// A guide row by its section and cause, as `veritas-harness coverage` names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlsoRow {
    pub section: String,
    pub cause: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryBy {
    #[default]
    Remedy,
    Runtime,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DriverClass {
    /// Real local processes, no cluster (runtime rows).
    #[default]
    Process,
    /// A real Kubernetes cluster: the kind driver or the existing context.
    Cluster,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Component {
    Prometheus,
    Controller,
    Istio,
    GatewayApi,
    ExternalDns,
    /// kube-state-metrics scraped by the cluster's Prometheus (`kube_pod_status_ready`...):
    /// `ci/kind/kube-state-metrics.sh` installs it on the kind cluster.
    KubeStateMetrics,
    /// The host's AppArmor: enabled in the kernel (`aa-enabled` says Yes), `apparmor_parser`
    /// and `aa-exec` installed, and the harness root so it may load profiles. The process
    /// driver's security-policy rows need it; `ci/setup.sh` installs the tools where the kernel
    /// has AppArmor.
    AppArmor,
    /// AppArmor that mediates unix sockets (its securityfs lists
    /// `features/network/af_unix`: Ubuntu's kernels; upstream ones before 6.17 let a path
    /// socket's connect(2) through whatever a profile says).
    AppArmorUnix,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Requires {
    #[serde(default)]
    pub driver: DriverClass,
    /// Optional components; where one is missing the scenario is reported skipped, never passed.
    #[serde(default)]
    pub components: Vec<Component>,
    /// Touches state shared by the whole cluster (CoreDNS, the controller, node resources):
    /// on `--driver existing` only with `--allow-cluster-wide`.
    #[serde(default)]
    pub cluster_wide: bool,
    /// What this scenario breaks for every other one while its fault is in place. Such a
    /// scenario runs alone: after the others, one at a time (the CLI and `.ci/run` alike), so
    /// no row is judged while another row's fault, or remedy, is in its way.
    #[serde(default)]
    pub exclusive: Vec<SharedResource>,
}

/// Cluster state every scenario depends on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum SharedResource {
    /// Cluster DNS: every Service name a client or the controller resolves.
    Coredns,
    /// The installed veritas-controller: every VeritasCanary and VeritasEnvironment.
    Controller,
    /// The node's schedulable resources.
    Node,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Timeouts {
    /// Default deadline of one operation (a command, a request, an apply).
    pub operation: Span,
    /// Default deadline for setup's readiness waits.
    pub ready: Span,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            operation: Span::secs(30),
            ready: Span::secs(60),
        }
    }
}

/// Checks polled together until all pass ("eventually within").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Observation {
    /// Deadline for all checks to pass at once. On timeout the report shows the last value
    /// each failing check saw.
    pub within: Span,
    /// For a symptom: how long it must keep holding (without the remedy) before the remedy
    /// runs. A fault that never took, or that heals by itself, fails here.
    #[serde(default)]
    pub hold_for: Option<Span>,
    /// Pause between polls.
    #[serde(default = "default_poll")]
    pub poll: Span,
    pub checks: Vec<Step>,
}

fn default_poll() -> Span {
    Span(std::time::Duration::from_millis(250))
}

/// One operation. Written as a single-key map: `- spark: {args: [health]}`.
///
/// Deserialized by hand ([`crate::step_de`]): serde_yaml would want YAML tags (`!spark`) for an
/// enum, while the single-key map is what people write and what the schema describes.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Step {
    // --- process driver -------------------------------------------------------------------
    /// Writes a generated model into the run's registry (`${models}`), healthy or corrupted.
    Model(ModelStep),
    /// Adds a raw registry entry (a file that may not exist, a pinned sha256).
    ManifestEntry(ManifestEntryStep),
    /// Damages or removes a registry model's file.
    ModelFile(ModelFileStep),
    /// Starts `veritas-spark serve` on the run's registry.
    StartDaemon(StartDaemonStep),
    /// Stops a daemon (SIGTERM drains; SIGKILL does not).
    StopDaemon(StopDaemonStep),
    /// Freezes a daemon (SIGSTOP): the process lives and holds its socket but answers
    /// nothing, as a wedged runtime does. `stopDaemon` (or the run's cleanup) ends it.
    FreezeDaemon(FreezeDaemonStep),
    /// Runs a `veritas-spark` command against a daemon's socket.
    Spark(SparkStep),
    /// An HTTP request to a daemon's :8080 or :9090 port.
    Http(HttpStep),
    /// Scrapes a daemon's /metrics and checks one series.
    Metric(MetricStep),
    /// Writes a raw IPC frame to a daemon's socket and checks the answer.
    IpcFrame(IpcFrameStep),
    /// Runs a local command (the guide's `ls -la`, `sha256sum`, `stat`...).
    Exec(ExecStep),
    /// Injects a worker fault while generations are really in flight, and checks what the
    /// in-flight requests got.
    FaultUnderLoad(FaultUnderLoadStep),
    // --- cluster drivers -------------------------------------------------------------------
    /// Runs `kubectl` in the scenario's namespace (admin or the on-call identity).
    Kubectl(KubectlStep),
    /// Server-side applies manifests (a fixtures file or inline YAML) into the namespace.
    Apply(ApplyStep),
    /// Deletes an object by kind and name (or label selector).
    Delete(DeleteStep),
    /// Patches an object (merge patch).
    Patch(PatchStep),
    /// Reads one field of an object and compares it.
    Get(GetStep),
    /// Runs a PromQL query against the cluster's Prometheus.
    Promql(PromqlStep),
    /// Sends bounded HTTP traffic to a Service from inside the cluster.
    Traffic(TrafficStep),
    /// Waits for a Deployment's rollout (all replicas updated and ready).
    Rollout(RolloutStep),
    // --- both ------------------------------------------------------------------------------
    /// Waits until all its checks pass at once: a gate inside setup, fault, diagnosis or
    /// remedy ("Prometheus scrapes the new targets", "the old pods are gone").
    Wait(WaitStep),
    /// Records evidence (a note, or the output of a command) without asserting.
    Note(NoteStep),
}

impl Step {
    /// Operation name as written in the file.
    pub fn op_name(&self) -> &'static str {
        match self {
            Step::Model(_) => "model",
            Step::ManifestEntry(_) => "manifestEntry",
            Step::ModelFile(_) => "modelFile",
            Step::StartDaemon(_) => "startDaemon",
            Step::StopDaemon(_) => "stopDaemon",
            Step::FreezeDaemon(_) => "freezeDaemon",
            Step::Spark(_) => "spark",
            Step::Http(_) => "http",
            Step::Metric(_) => "metric",
            Step::IpcFrame(_) => "ipcFrame",
            Step::Exec(_) => "exec",
            Step::FaultUnderLoad(_) => "faultUnderLoad",
            Step::Kubectl(_) => "kubectl",
            Step::Apply(_) => "apply",
            Step::Delete(_) => "delete",
            Step::Patch(_) => "patch",
            Step::Get(_) => "get",
            Step::Promql(_) => "promql",
            Step::Traffic(_) => "traffic",
            Step::Rollout(_) => "rollout",
            Step::Wait(_) => "wait",
            Step::Note(_) => "note",
        }
    }

    /// Which driver class can run this operation (`None`: both).
    pub fn driver(&self) -> Option<DriverClass> {
        match self {
            Step::Model(_)
            | Step::ManifestEntry(_)
            | Step::ModelFile(_)
            | Step::StartDaemon(_)
            | Step::StopDaemon(_)
            | Step::FreezeDaemon(_)
            | Step::Metric(_)
            | Step::IpcFrame(_)
            | Step::FaultUnderLoad(_)
            | Step::Http(_) => Some(DriverClass::Process),
            Step::Kubectl(_)
            | Step::Apply(_)
            | Step::Delete(_)
            | Step::Patch(_)
            | Step::Get(_)
            | Step::Promql(_)
            | Step::Traffic(_)
            | Step::Rollout(_) => Some(DriverClass::Cluster),
            // `spark` runs locally on the process driver and in a pod (`pod:`) on clusters.
            Step::Spark(_) | Step::Exec(_) | Step::Note(_) | Step::Wait(_) => None,
        }
    }

    /// The identity a cluster step asks for and why, if it can name one.
    pub fn identity(&self) -> Option<(Option<Identity>, Option<&str>)> {
        match self {
            Step::Kubectl(s) => Some((s.identity, s.because.as_deref())),
            Step::Apply(s) => Some((s.identity, s.because.as_deref())),
            Step::Delete(s) => Some((s.identity, s.because.as_deref())),
            Step::Patch(s) => Some((s.identity, s.because.as_deref())),
            _ => None,
        }
    }

    /// The expectation of a checking step, if it has one.
    pub fn expect(&self) -> Option<&Expect> {
        match self {
            Step::Spark(s) => Some(&s.expect),
            Step::Exec(s) => Some(&s.expect),
            Step::Kubectl(s) => Some(&s.expect),
            Step::IpcFrame(s) => Some(&s.expect),
            _ => None,
        }
    }
}

/// `- wait: {within: 120s, poll: 2s, checks: [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaitStep {
    /// Deadline for all checks to pass at once; on timeout the step fails with the last value
    /// the first failing check saw.
    pub within: Span,
    /// Pause between polls.
    #[serde(default = "default_poll")]
    pub poll: Span,
    /// Checks (any checking operation; not another wait).
    pub checks: Vec<Step>,
}

fn default_daemon() -> String {
    "spark".into()
}

fn default_version() -> String {
    "1.0.0".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelStep {
    pub name: String,
    #[serde(default = "default_version")]
    pub version: String,
    /// Weights seed: two seeds give two different (healthy) models.
    #[serde(default)]
    pub seed: u64,
    /// `empty`, `bad-magic`, `unsupported-version`, `truncated`, `unknown-architecture`,
    /// `missing-tensor`, `flipped-data-byte` (the manifest keeps the healthy file's sha256).
    #[serde(default)]
    pub corruption: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestEntryStep {
    pub name: String,
    pub file: String,
    #[serde(default = "default_version")]
    pub version: String,
    /// Pinned sha256; default: the file's real one (zeros when it does not exist).
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFileAction {
    /// Delete the file.
    Remove,
    /// Flip one byte of the tensor data in place (the sha256 pin no longer matches).
    Tamper,
    /// Permissions 000 (unreadable to anyone but root's DAC override).
    Unreadable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelFileStep {
    pub name: String,
    pub action: ModelFileAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReadyWait {
    /// Wait until `veritas-spark ready` exits 0.
    #[default]
    Ready,
    /// Wait until `veritas-spark live` exits 0 (the daemon answers, model or not).
    Live,
    /// Do not wait (the scenario observes what happens).
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartDaemonStep {
    #[serde(default = "default_daemon")]
    pub name: String,
    /// Model to serve at start; `null` starts without one.
    #[serde(default = "default_model")]
    pub model: Option<String>,
    /// `required`, `best-effort` or `off`.
    #[serde(default)]
    pub sandbox: Option<String>,
    /// Extra `serve` flags (e.g. `[--worker-memory-limit, "64000000"]`).
    #[serde(default)]
    pub args: Vec<String>,
    /// Run under the user-namespace denial of a container runtime's default seccomp profile.
    #[serde(default)]
    pub deny_userns: bool,
    /// Run where seccomp filters cannot be installed (a kernel without
    /// `CONFIG_SECCOMP_FILTER`, a profile forbidding `seccomp(2)`).
    #[serde(default)]
    pub deny_seccomp: bool,
    /// Run the daemon (and so its workers) confined by this loaded AppArmor profile
    /// (`aa-exec -p`), as a distribution's policy for the service confines it. Needs
    /// `requires.components: [appArmor]`.
    #[serde(default)]
    pub apparmor_profile: Option<String>,
    /// Run the daemon as this uid (gid the same, no supplementary groups) instead of the
    /// harness's own, as a packaged service runs: root's DAC override hides every permission
    /// fault. The daemon gets the work directory, where it creates its socket.
    #[serde(default)]
    pub user: Option<u32>,
    /// Run the daemon in a user namespace of its own (root mapped to root) whose
    /// `user.max_user_namespaces` is this: 0 is a kernel with user namespaces disabled, for
    /// this daemon and its workers only. `nsenter -t ${<daemon>.pid} -U` reaches that setting.
    #[serde(default)]
    pub max_user_namespaces: Option<u32>,
    /// Run the daemon and its workers in a memory cgroup of their own limited to this many
    /// bytes, as a service manager's `MemoryMax=` does (needs root and a writable cgroup
    /// mount). `${<daemon>.memoryLimitFile}` is the limit's file: writing it changes the
    /// limit live.
    #[serde(default)]
    pub memory_limit: Option<u64>,
    #[serde(default)]
    pub wait: ReadyWait,
}

fn default_model() -> Option<String> {
    Some("tiny".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    #[default]
    Term,
    Kill,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StopDaemonStep {
    #[serde(default = "default_daemon")]
    pub name: String,
    #[serde(default)]
    pub signal: Signal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FreezeDaemonStep {
    #[serde(default = "default_daemon")]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SparkStep {
    /// Daemon whose socket to use (process driver).
    #[serde(default = "default_daemon")]
    pub daemon: String,
    /// Cluster drivers: run inside the first pod matching this label selector
    /// (`kubectl exec`), as the guide's `kubectl exec -it <pod> -- veritas-spark ...` does.
    #[serde(default)]
    pub pod: Option<String>,
    pub args: Vec<String>,
    #[serde(default)]
    pub expect: Expect,
    #[serde(default)]
    pub timeout: Option<Span>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpStep {
    #[serde(default = "default_daemon")]
    pub daemon: String,
    /// `http` (:8080) or `metrics` (:9090).
    #[serde(default = "default_port")]
    pub port: String,
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub expect: HttpExpect,
}

fn default_port() -> String {
    "http".into()
}
fn default_method() -> String {
    "GET".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpExpect {
    #[serde(default)]
    pub status: Option<u16>,
    /// Error code carried by the JSON body (`{"code": ...}`).
    #[serde(default)]
    pub code: Option<String>,
    /// Substrings the body must contain.
    #[serde(default)]
    pub body: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricStep {
    #[serde(default = "default_daemon")]
    pub daemon: String,
    /// Metric name as exposed (a histogram's `_count` etc. included).
    pub name: String,
    /// Labels the series must carry (others may be present).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub expect: ValueExpect,
}

/// A comparison of one number. `absent: true` means no such series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueExpect {
    #[serde(default)]
    pub equals: Option<f64>,
    #[serde(default)]
    pub at_least: Option<f64>,
    #[serde(default)]
    pub at_most: Option<f64>,
    #[serde(default)]
    pub absent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FrameFault {
    /// `XX` instead of `VS`.
    BadMagic,
    /// Protocol version 99.
    BadVersion,
    /// A header announcing a frame above the daemon's `--max-frame`.
    Oversize,
    /// A well-framed payload that is not a request.
    MalformedJson,
    /// A well-formed health request (the control).
    Health,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpcFrameStep {
    #[serde(default = "default_daemon")]
    pub daemon: String,
    pub frame: FrameFault,
    /// `code` is the answer's error code; `json` checks its fields.
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerFault {
    /// The worker aborts (E4001 for what was in flight).
    WorkerAbort,
    /// The worker makes a syscall outside its allow-list (E3002).
    SandboxViolation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultUnderLoadStep {
    #[serde(default = "default_daemon")]
    pub daemon: String,
    pub fault: WorkerFault,
    /// Concurrent generations per batch (batches repeat until one is seen in flight).
    #[serde(default = "default_load_requests")]
    pub requests: u32,
    #[serde(default = "default_load_tokens")]
    pub max_tokens: u32,
    /// Error code at least one in-flight request must get.
    pub code: String,
}

fn default_load_requests() -> u32 {
    4
}
fn default_load_tokens() -> u32 {
    220
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecStep {
    /// argv; `${models}`, `${work}`, `${sparkBin}` (the `veritas-spark` under test),
    /// `${<daemon>.socket}` are substituted.
    pub command: Vec<String>,
    #[serde(default)]
    pub expect: Expect,
    #[serde(default)]
    pub timeout: Option<Span>,
}

/// What a command must show. Every field that is set must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expect {
    /// Exit status (the Health Status Matrix: 0 healthy, 1 critical). Unset means 0: a step
    /// that asserts nothing else must at least succeed. `any` accepts every status, and then
    /// needs `reason`.
    #[serde(default)]
    pub exit: Option<ExitExpect>,
    /// Why any exit status is acceptable (required with `exit: any`, refused without it).
    #[serde(default)]
    pub reason: Option<String>,
    /// Guide error code the output must carry (`E2001`), as `CODE NAME:` text or `"code"` JSON.
    #[serde(default)]
    pub code: Option<String>,
    /// Substrings of stdout or stderr, all required (case-insensitive when they start with `(?i)`).
    #[serde(default)]
    pub output: Vec<String>,
    /// Substrings that must not appear.
    #[serde(default)]
    pub not_output: Vec<String>,
    /// Whole words of stdout or stderr, all required: the output split at anything but
    /// letters, digits, `.`, `-` and `_` (`10.244.0.4` is not found in `10.244.0.44:8080`).
    #[serde(default)]
    pub words: Vec<String>,
    /// Whole words that must not appear.
    #[serde(default)]
    pub not_words: Vec<String>,
    /// JSON fields of stdout: JSON pointer (`/sandbox/state`) to expected value.
    #[serde(default)]
    pub json: BTreeMap<String, serde_json::Value>,
    /// Name of an insta snapshot of the output (paths, ports, durations, pids redacted).
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// `exit: 1`, or `exit: any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ExitExpect {
    Code(i32),
    Any(AnyExit),
}

/// The word `any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnyExit {
    Any,
}

impl ExitExpect {
    /// The status required, `None` for `any`; an unset `exit` requires 0.
    pub fn required(e: Option<ExitExpect>) -> Option<i32> {
        match e {
            None => Some(0),
            Some(ExitExpect::Code(c)) => Some(c),
            Some(ExitExpect::Any(_)) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Identity {
    /// The harness's own identity: full rights in the run's namespace and reads everywhere;
    /// cluster-admin only in a `requires.clusterWide` scenario.
    #[default]
    Admin,
    /// The least-privilege on-call ServiceAccount: only what the guide's commands need.
    Oncall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubectlStep {
    /// Arguments after `kubectl`; `-n <scenario namespace>` is added unless `-n`/`-A` is given.
    pub args: Vec<String>,
    /// Who runs the step: the on-call in `diagnosis` and `remedy`, the harness elsewhere,
    /// unless set.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Why a `diagnosis` or `remedy` step runs as `admin` and not as the on-call (a
    /// cluster-wide read, the platform team's action, the world rather than the on-call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
    #[serde(default)]
    pub expect: Expect,
    #[serde(default)]
    pub timeout: Option<Span>,
    /// Stores the trimmed stdout of a successful run as `${<name>}` for later steps (a pod IP
    /// before a switch, to show that DNS still answers it after).
    #[serde(default)]
    pub capture: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyStep {
    /// A manifest file relative to the repository's `fixtures/manifests/`.
    #[serde(default)]
    pub file: Option<String>,
    /// Inline YAML (one or more documents).
    #[serde(default)]
    pub manifest: Option<String>,
    /// The namespace the manifests were written for (e.g. `veritas`): every
    /// `namespace: <it>` is moved to the scenario's own namespace.
    #[serde(default)]
    pub from_namespace: Option<String>,
    /// Who runs the step: the on-call in `diagnosis` and `remedy`, the harness elsewhere,
    /// unless set.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Why a `diagnosis` or `remedy` step runs as `admin` and not as the on-call (a
    /// cluster-wide read, the platform team's action, the world rather than the on-call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteStep {
    /// `Deployment`, `Service`, `servicemonitor`, `veritascanary`... (anything kubectl knows).
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Label selector instead of a name.
    #[serde(default)]
    pub selector: Option<String>,
    /// Another namespace (e.g. `kube-system`); needs `requires.clusterWide`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Who runs the step: the on-call in `diagnosis` and `remedy`, the harness elsewhere,
    /// unless set.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Why a `diagnosis` or `remedy` step runs as `admin` and not as the on-call (a
    /// cluster-wide read, the platform team's action, the world rather than the on-call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchStep {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    /// Merge patch, as YAML or JSON.
    pub patch: serde_json::Value,
    /// Who runs the step: the on-call in `diagnosis` and `remedy`, the harness elsewhere,
    /// unless set.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Why a `diagnosis` or `remedy` step runs as `admin` and not as the on-call (a
    /// cluster-wide read, the platform team's action, the world rather than the on-call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetStep {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    /// JSON pointer into the object, e.g. `/status/phase`.
    pub field: String,
    /// Expected value (a missing field never equals anything).
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// Numeric comparison of the field.
    #[serde(default)]
    pub value: Option<ValueExpect>,
    /// Stores the field (a string as is, anything else as JSON) as `${<name>}`.
    #[serde(default)]
    pub capture: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromqlStep {
    /// PromQL; `${namespace}` is substituted.
    pub query: String,
    /// Every series of the answer must meet it; `absent: true` means an empty result.
    pub expect: ValueExpect,
    /// Stores the value of the answer's single series as `${<name>}` (more than one series
    /// fails the step).
    #[serde(default)]
    pub capture: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficStep {
    /// Service name in the scenario namespace.
    pub service: String,
    #[serde(default = "default_traffic_port")]
    pub port: u16,
    /// Total `POST /v1/generate` requests (bounded).
    pub requests: u32,
    /// Pause between requests.
    #[serde(default = "default_traffic_interval")]
    pub interval: Span,
    /// Request body (default: a 4-token generation).
    #[serde(default)]
    pub body: Option<String>,
    /// At least this many requests must succeed (default: no requirement).
    #[serde(default)]
    pub min_ok: Option<u32>,
    /// At most this many may fail (default: no requirement).
    #[serde(default)]
    pub max_failed: Option<u32>,
}

fn default_traffic_port() -> u16 {
    8080
}
fn default_traffic_interval() -> Span {
    Span(std::time::Duration::from_millis(100))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutStep {
    pub deployment: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub timeout: Option<Span>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NoteStep {
    pub text: String,
}
