//! The Veritas harness engine: runs scenario files (`veritas-scenario`) on a driver and gives
//! each a verdict an SRE and a CI system can trust.
//!
//! - [`runner`] owns the order: setup → fault → symptom (eventually, then held: the negative
//!   control) → diagnosis → remedy → recovery (eventually) → catch on failure → finally always,
//!   and turns an interrupt into "revert, then stop".
//! - The step library ([`process`], [`cluster`]) executes one operation with its bindings and
//!   returns what it observed; it never decides order or retries.
//! - [`report`] renders the result tree as text, JSON and JUnit; [`html`] as a page for people.

pub mod cgroup;
pub mod cluster;
pub mod context;
pub mod coverage;
pub mod expect;
pub mod html;
pub mod journal;
pub mod kind;
pub mod process;
pub mod report;
pub mod runner;
pub mod sampler;
pub mod scope;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::time::Duration;
use veritas_scenario::Step;

/// A step that did not do or show what it should. `observed` is the last value it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    pub message: String,
    pub observed: Option<String>,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> StepError {
        StepError {
            message: message.into(),
            observed: None,
        }
    }

    pub fn observed(message: impl Into<String>, observed: impl Into<String>) -> StepError {
        StepError {
            message: message.into(),
            observed: Some(observed.into()),
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.observed {
            Some(o) => write!(f, "{} (last seen: {o})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The repository root (scenarios/, fixtures/, snapshots/): `VERITAS_REPO`, else the nearest
/// ancestor of the working directory (or of this crate at build time) holding `scenarios/`.
pub fn repo_root() -> PathBuf {
    if let Some(p) = std::env::var_os("VERITAS_REPO") {
        return PathBuf::from(p);
    }
    let candidates = [
        std::env::current_dir().ok(),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")),
    ];
    for start in candidates.into_iter().flatten() {
        for dir in start.ancestors() {
            if dir.join("scenarios").is_dir() && dir.join("Cargo.toml").is_file() {
                return dir.to_path_buf();
            }
        }
    }
    PathBuf::from(".")
}

/// The `veritas-spark` binary: `VERITAS_SPARK_BIN`, else the one cargo built beside this
/// executable (target/<profile>/, also from target/<profile>/deps/ for test binaries).
pub fn spark_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("VERITAS_SPARK_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("veritas-spark");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "veritas-spark is not built beside {} (run `cargo build -p veritas-spark`, or set VERITAS_SPARK_BIN)",
        exe.display()
    ))
}

/// The least time a check gets when its phase's deadline is near: enough for a `kubectl` on a
/// loaded machine to answer, so the last poll reports what it saw rather than "timed out".
pub const LAST_POLL_FLOOR: Duration = Duration::from_secs(10);

/// Executes one step. `deadline` bounds the operation itself (not the phase's polling).
pub async fn execute(
    ctx: &mut context::Context,
    step: &Step,
    deadline: Duration,
    ready: Duration,
) -> Result<String, StepError> {
    match step {
        Step::Model(m) => process::model(ctx, m),
        Step::ManifestEntry(m) => process::manifest_entry(ctx, m),
        Step::ModelFile(m) => process::model_file(ctx, m),
        Step::StartDaemon(d) => process::start_daemon(ctx, d, ready).await,
        Step::StopDaemon(s) => process::stop_daemon(ctx, s, deadline).await,
        Step::FreezeDaemon(s) => process::freeze_daemon(ctx, s),
        Step::Spark(s) => {
            let deadline = s.timeout.map_or(deadline, |t| t.as_duration());
            let out = match &s.pod {
                Some(sel) => cluster::spark_in_pod(ctx, sel, &s.args, deadline).await?,
                None => process::spark_cli(ctx, &s.daemon, &s.args, deadline).await?,
            };
            let bad = expect::check(&ctx.subst_expect(&s.expect), &out, &ctx.redactions());
            process::verdict(bad, out.summary())
        }
        Step::Http(h) => process::http(ctx, h, deadline).await,
        Step::Metric(m) => process::metric(ctx, m, deadline).await,
        Step::IpcFrame(f) => process::ipc_frame(ctx, f, deadline).await,
        Step::FaultUnderLoad(f) => process::fault_under_load(ctx, f, deadline).await,
        Step::Exec(e) => {
            let deadline = e.timeout.map_or(deadline, |t| t.as_duration());
            let argv = ctx.subst_all(&e.command);
            let out = process::run_command(&argv, deadline).await?;
            let bad = expect::check(&ctx.subst_expect(&e.expect), &out, &ctx.redactions());
            process::verdict(bad, out.summary())
        }
        Step::Kubectl(k) => {
            let deadline = k.timeout.map_or(deadline, |t| t.as_duration());
            cluster::kubectl(ctx, k, deadline).await
        }
        Step::Apply(a) => cluster::apply(ctx, a, deadline).await,
        Step::Delete(d) => cluster::delete(ctx, d, deadline).await,
        Step::Patch(p) => cluster::patch(ctx, p, deadline).await,
        Step::Get(g) => cluster::get(ctx, g, deadline).await,
        Step::Promql(q) => cluster::promql(ctx, q, deadline).await,
        Step::Traffic(t) => cluster::traffic(ctx, t, deadline).await,
        Step::Rollout(r) => {
            let deadline = r.timeout.map_or(ready, |t| t.as_duration());
            cluster::rollout(ctx, r, deadline).await
        }
        Step::Wait(w) => Box::pin(wait(ctx, w, deadline, ready)).await,
        Step::Note(n) => Ok(ctx.subst(&n.text)),
    }
}

/// Polls a wait's checks until they all pass in one round, or its deadline passes.
async fn wait(
    ctx: &mut context::Context,
    w: &veritas_scenario::WaitStep,
    op: Duration,
    ready: Duration,
) -> Result<String, StepError> {
    let start = std::time::Instant::now();
    let end = start + w.within.as_duration();
    let mut polls = 0u32;
    loop {
        polls += 1;
        let mut bad = None;
        for (i, check) in w.checks.iter().enumerate() {
            let left = end
                .saturating_duration_since(std::time::Instant::now())
                .max(crate::LAST_POLL_FLOOR.min(op));
            if let Err(e) = execute(ctx, check, op.min(left), ready).await {
                bad = Some((i, e));
                break;
            }
        }
        match bad {
            None => {
                return Ok(format!(
                    "{} check(s) passed after {polls} poll(s), {:.1}s",
                    w.checks.len(),
                    start.elapsed().as_secs_f64()
                ))
            }
            Some((i, e)) if std::time::Instant::now() >= end => {
                return Err(StepError {
                    message: format!(
                        "not within {} ({polls} polls); check {} ({}): {}",
                        w.within,
                        i + 1,
                        describe(&w.checks[i]),
                        e.message
                    ),
                    observed: e.observed,
                })
            }
            Some(_) => tokio::time::sleep(w.poll.as_duration()).await,
        }
    }
}

/// A short human description of a step for progress lines and reports.
pub fn describe(step: &Step) -> String {
    match step {
        Step::Model(m) => match &m.corruption {
            Some(c) => format!("model {} ({c})", m.name),
            None => format!("model {}", m.name),
        },
        Step::ManifestEntry(m) => format!("registry entry {} -> {}", m.name, m.file),
        Step::ModelFile(m) => format!("model file {} {:?}", m.name, m.action),
        Step::StartDaemon(d) => format!("start daemon {}", d.name),
        Step::StopDaemon(d) => format!("stop daemon {} ({:?})", d.name, d.signal),
        Step::FreezeDaemon(d) => format!("freeze daemon {} (SIGSTOP)", d.name),
        Step::Spark(s) => match &s.pod {
            Some(p) => format!("kubectl exec <{p}> -- veritas-spark {}", s.args.join(" ")),
            None => format!("veritas-spark {}", s.args.join(" ")),
        },
        Step::Http(h) => format!("{} {} ({})", h.method, h.path, h.port),
        Step::Metric(m) => format!("metric {}{:?}", m.name, m.labels),
        Step::IpcFrame(f) => format!("IPC frame {:?}", f.frame),
        Step::FaultUnderLoad(f) => format!(
            "{:?} under load ({} x {} tokens)",
            f.fault, f.requests, f.max_tokens
        ),
        Step::Exec(e) => e.command.join(" "),
        Step::Kubectl(k) => format!("kubectl {}", k.args.join(" ")),
        Step::Apply(a) => format!("apply {}", a.file.as_deref().unwrap_or("(inline)")),
        Step::Delete(d) => format!(
            "delete {} {}",
            d.kind,
            d.name.as_deref().or(d.selector.as_deref()).unwrap_or("")
        ),
        Step::Patch(p) => format!("patch {} {}", p.kind, p.name),
        Step::Get(g) => format!("get {} {} {}", g.kind, g.name, g.field),
        Step::Promql(q) => format!("promql {}", q.query),
        Step::Traffic(t) => format!("traffic {}x -> {}", t.requests, t.service),
        Step::Rollout(r) => format!("rollout status {}", r.deployment),
        Step::Wait(w) => format!(
            "wait up to {} for: {}",
            w.within,
            w.checks.iter().map(describe).collect::<Vec<_>>().join("; ")
        ),
        Step::Note(n) => format!("note: {}", n.text),
    }
}
