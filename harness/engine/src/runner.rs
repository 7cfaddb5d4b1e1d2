//! The runner: one scenario's phases in order, its waits, its negative control, its
//! catch/finally, its leak audit, and its verdict.

use crate::cluster::{scoped_user, Caller, ClusterEnv, ONCALL_SA};
use crate::context::Context;
use crate::journal::Journal;
use crate::report::{PhaseReport, ScenarioReport, StepReport, Verdict};
use crate::{describe, execute, StepError};
use futures_util::FutureExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use veritas_scenario::{Component, DriverClass, Observation, Scenario, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DriverKind {
    /// Real local processes (runtime rows); cluster rows are skipped.
    Process,
    /// A kind cluster the harness creates (or reuses when its node image matches).
    Kind,
    /// The current kubeconfig context: only the run's own namespaces are touched.
    Existing,
}

/// Everything a scenario run needs from outside.
#[derive(Clone)]
pub struct RunConfig {
    pub driver: DriverKind,
    pub spark_bin: std::path::PathBuf,
    pub cluster: Option<Arc<ClusterEnv>>,
    /// Optional components present on the cluster.
    pub components: Vec<Component>,
    pub seed: u64,
    pub keep: bool,
    pub pause_on_failure: bool,
    /// Ablation: skip the remedy; recovery still waits its whole deadline. A scenario whose
    /// recovery passes anyway proves its remedy is not what brings the system back.
    pub without_remedy: bool,
    /// Where the revert journal goes (`journal::dir()` unless a test isolates its own).
    pub journal_dir: std::path::PathBuf,
    /// Set to true on Ctrl-C / SIGTERM: the running phase stops, `finally` still runs.
    pub interrupted: watch::Receiver<bool>,
    pub events: Arc<dyn Fn(Event) + Send + Sync>,
}

/// Progress, for live output.
#[derive(Debug, Clone)]
pub enum Event {
    Started {
        id: String,
    },
    Phase {
        id: String,
        phase: &'static str,
    },
    Step {
        id: String,
        phase: &'static str,
        description: String,
        ok: bool,
        elapsed: Duration,
    },
    Finished {
        id: String,
        verdict: Verdict,
        elapsed: Duration,
    },
}

/// Why the main phases stopped early.
enum Stop {
    /// The scenario itself could not be brought up (setup, fault or remedy could not act).
    Error(&'static str, StepError),
    /// The system did not behave as the guide says.
    Failed(&'static str, StepError),
    Interrupted,
    /// A bug of the harness (a panicking step), caught so that `finally` still runs.
    Panicked(String),
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Why a scenario cannot run with this configuration, if it cannot.
pub fn skip_reason(s: &Scenario, cfg: &RunConfig) -> Option<String> {
    if s.requires.driver == DriverClass::Cluster && cfg.driver == DriverKind::Process {
        return Some("needs a cluster: run with --driver kind or --driver existing".into());
    }
    if s.requires.driver == DriverClass::Cluster && cfg.cluster.is_none() {
        return Some("needs a cluster, and none is configured".into());
    }
    if s.requires.cluster_wide
        && cfg.driver == DriverKind::Existing
        && !cfg.cluster.as_ref().is_some_and(|c| c.allow_cluster_wide)
    {
        return Some(
            "changes cluster-wide state: pass --allow-cluster-wide to run it on this cluster"
                .into(),
        );
    }
    if cfg.without_remedy && s.guide.recovery_by != veritas_scenario::RecoveryBy::Remedy {
        return Some(
            format!(
                "recovered by the {:?} by design, not by an on-call remedy: nothing to ablate",
                s.guide.recovery_by
            )
            .to_lowercase(),
        );
    }
    let missing: Vec<String> = s
        .requires
        .components
        .iter()
        .filter(|c| !cfg.components.contains(c))
        .map(|c| format!("{c:?}"))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "needs {} (not found on this cluster or host)",
            missing.join(", ")
        ));
    }
    None
}

/// Runs one scenario to its verdict. Never panics on a scenario's behaviour.
pub async fn run(s: &Scenario, cfg: &RunConfig) -> ScenarioReport {
    let t0 = Instant::now();
    let mut report = ScenarioReport::new(s, cfg.seed);
    (cfg.events)(Event::Started { id: s.id.clone() });
    if let Some(reason) = skip_reason(s, cfg) {
        report.verdict = Verdict::Skipped;
        report.reason = Some(reason);
        (cfg.events)(Event::Finished {
            id: s.id.clone(),
            verdict: report.verdict,
            elapsed: t0.elapsed(),
        });
        return report;
    }
    // The ablation gets a namespace of its own: a row and its ablation run side by side, also
    // when a fixed seed makes their random parts equal.
    let namespace = (s.requires.driver == DriverClass::Cluster).then(|| {
        format!(
            "veritas-{}{}-{:04x}",
            s.id.to_lowercase(),
            if cfg.without_remedy { "-nr" } else { "" },
            cfg.seed & 0xffff
        )
    });
    let cluster = if s.requires.driver == DriverClass::Cluster {
        cfg.cluster.clone()
    } else {
        None
    };
    let mut ctx = match Context::new(&s.id, cfg.spark_bin.clone(), cluster, namespace, cfg.seed) {
        Ok(c) => c,
        Err(e) => {
            report.verdict = Verdict::Error;
            report.reason = Some(format!("cannot create the work directory: {e}"));
            return report;
        }
    };

    // `skip_reason` has refused a cluster-wide scenario the run does not allow.
    ctx.cluster_wide = s.requires.cluster_wide;
    ctx.journal = Some(Journal::new(&cfg.journal_dir, &ctx, &s.finally));
    ctx.journal_now();
    // What the checks read, over the whole run, for the report's charts.
    let sampler = match (&ctx.cluster, &ctx.namespace) {
        (Some(env), Some(ns)) if cfg.components.contains(&Component::Prometheus) => Some(
            crate::sampler::Sampler::start(env.clone(), ns.clone(), report.started_at),
        ),
        _ => None,
    };

    let mut interrupted = cfg.interrupted.clone();
    // A panic in a step must not skip `finally`: it is caught here and becomes an error.
    let phases =
        std::panic::AssertUnwindSafe(main_phases(s, cfg, &mut ctx, &mut report)).catch_unwind();
    let outcome = tokio::select! {
        r = phases => r.unwrap_or_else(|panic| Err(Stop::Panicked(panic_text(&*panic)))),
        _ = interrupted.wait_for(|v| *v) => Err(Stop::Interrupted),
    };
    match outcome {
        Ok(()) => report.verdict = Verdict::Passed,
        Err(Stop::Error(phase, e)) => {
            report.verdict = Verdict::Error;
            report.failed_phase = Some(phase.into());
            report.reason = Some(format!("{phase}: {e}"));
        }
        Err(Stop::Failed(phase, e)) => {
            report.verdict = Verdict::Failed;
            report.failed_phase = Some(phase.into());
            report.reason = Some(format!("{phase}: {e}"));
        }
        Err(Stop::Panicked(text)) => {
            report.verdict = Verdict::Error;
            report.reason = Some(format!(
                "the harness panicked ({text}); faults reverted by `finally`"
            ));
        }
        Err(Stop::Interrupted) => {
            report.verdict = Verdict::Error;
            report.reason = Some("interrupted: faults reverted by `finally`, then stopped".into());
        }
    }
    let failed = report.verdict != Verdict::Passed;
    if failed && !s.catch.is_empty() {
        let phase = collect(&mut ctx, "catch", &s.catch).await;
        report.push_phase(phase);
    }
    if failed && cfg.pause_on_failure {
        eprintln!(
            "{}: failed; paused before `finally` (work dir {}). Press Enter to continue.",
            s.id,
            ctx.work_dir().display()
        );
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)
        })
        .await;
    }
    if failed {
        collect_evidence(&mut ctx).await;
    }
    // `finally` always runs, interrupt or not: it reverts the faults.
    if let Some(sampler) = sampler {
        report.series = sampler.finish();
    }
    let phase = collect(&mut ctx, "finally", &s.finally).await;
    // A revert that failed leaves its fault in place: that is a leak, whatever the verdict.
    let mut leaks: Vec<String> = phase
        .steps
        .iter()
        .enumerate()
        .filter(|(_, st)| !st.ok)
        .map(|(i, st)| {
            format!(
                "finally step {} ({}) failed, what it reverts may still be changed: {}",
                i + 1,
                st.description,
                st.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    report.push_phase(phase);
    leaks.extend(audit_outside(&ctx).await);
    leaks.extend(audit_and_release(&mut ctx, cfg).await);
    // Reverted: nothing for `cleanup` to replay. A failed revert keeps the entry, so
    // `veritas-harness cleanup` can try again.
    if leaks.is_empty() {
        if let Some(j) = &ctx.journal {
            j.remove();
        }
    }
    if report.verdict == Verdict::Passed && !leaks.is_empty() {
        report.verdict = Verdict::Failed;
        report.failed_phase = Some("finally".into());
        report.reason = Some(format!("leak audit: {}", leaks.join("; ")));
    }
    report.leaks = leaks;
    report.evidence = std::mem::take(&mut ctx.evidence);
    if cfg.keep {
        let path = ctx.work.keep();
        report
            .evidence
            .push(("work dir kept".into(), path.display().to_string()));
    }
    report.duration = t0.elapsed();
    (cfg.events)(Event::Finished {
        id: s.id.clone(),
        verdict: report.verdict,
        elapsed: report.duration,
    });
    report
}

async fn main_phases(
    s: &Scenario,
    cfg: &RunConfig,
    ctx: &mut Context,
    report: &mut ScenarioReport,
) -> Result<(), Stop> {
    let op = s.timeouts.operation.as_duration();
    let ready = s.timeouts.ready.as_duration();
    if ctx.namespace.is_some() {
        prepare_namespace(ctx, op)
            .await
            .map_err(|e| Stop::Error("setup", e))?;
    }
    act(cfg, ctx, report, "setup", &s.setup, op, ready)
        .await
        .map_err(|e| Stop::Error("setup", e))?;
    if !s.invariants.is_empty() {
        act(
            cfg,
            ctx,
            report,
            "invariants before the fault",
            &s.invariants,
            op,
            ready,
        )
        .await
        .map_err(|e| Stop::Error("invariants before the fault", e))?;
    }
    baseline(cfg, ctx, report, &s.symptom, op, ready).await?;
    // The fault breaks one thing, not everything: the invariants keep being checked beside
    // the fault, the symptom, the diagnosis and the remedy, until recovery.
    let watch = InvariantWatch::start(ctx, &s.invariants, s.symptom.poll.as_duration(), op, ready)
        .map_err(|e| Stop::Error("fault", e))?;
    act(cfg, ctx, report, "fault", &s.fault, op, ready)
        .await
        .map_err(|e| Stop::Error("fault", e))?;
    let fault_done = Instant::now();
    observe(cfg, ctx, report, "symptom", &s.symptom, op, ready)
        .await
        .map_err(|e| Stop::Failed("symptom", e))?;
    report.time_to_detect = Some(fault_done.elapsed());
    if let Some(hold) = s.symptom.hold_for {
        hold_symptom(cfg, ctx, report, &s.symptom, hold.as_duration(), op, ready)
            .await
            .map_err(|e| Stop::Failed("negative control", e))?;
    }
    // Only the on-call's remedy is what recovery must prove: a runtime that heals itself has
    // recovered by design before any remedy, and a client row's corrected request never failed.
    if s.guide.recovery_by == veritas_scenario::RecoveryBy::Remedy {
        recovery_absent_under_fault(cfg, ctx, report, &s.recovery, op, ready).await?;
    }
    act(cfg, ctx, report, "diagnosis", &s.diagnosis, op, ready)
        .await
        .map_err(|e| Stop::Failed("diagnosis", e))?;
    let remedy_start = Instant::now();
    // The ablation waits the whole recovery deadline: only recovery that never came within
    // it shows the remedy, not time, is what brings the system back.
    let recovery = &s.recovery;
    if !cfg.without_remedy {
        act(cfg, ctx, report, "remedy", &s.remedy, op, ready)
            .await
            .map_err(|e| Stop::Failed("remedy", e))?;
    }
    observe(cfg, ctx, report, "recovery", recovery, op, ready)
        .await
        .map_err(|e| Stop::Failed("recovery", e))?;
    report.time_to_recover = Some(remedy_start.elapsed());
    if let Some(watch) = watch {
        watch
            .finish(cfg, ctx, report)
            .await
            .map_err(|e| Stop::Failed("invariants during the fault", e))?;
    }
    if !s.invariants.is_empty() {
        act(
            cfg,
            ctx,
            report,
            "invariants after recovery",
            &s.invariants,
            op,
            ready,
        )
        .await
        .map_err(|e| Stop::Failed("invariants after recovery", e))?;
    }
    Ok(())
}

/// The invariants, polled in the background from the fault until recovery on a context of
/// their own. Dropped early (the scenario stopped), it stops polling.
struct InvariantWatch {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<WatchOutcome>>,
    started: Instant,
}

struct WatchOutcome {
    rounds: u32,
    /// The first invariant that did not hold: when (after the fault began), which, why.
    broken: Option<(Duration, String, StepError)>,
}

impl InvariantWatch {
    /// Polls no faster than every 5 s: the invariants are cheap reads, and runs share 2 cores.
    const MIN_POLL: Duration = Duration::from_secs(5);

    fn start(
        ctx: &Context,
        invariants: &[Step],
        poll: Duration,
        op: Duration,
        ready: Duration,
    ) -> Result<Option<InvariantWatch>, StepError> {
        if invariants.is_empty() {
            return Ok(None);
        }
        let mut fork = ctx
            .fork()
            .map_err(|e| StepError::new(format!("a work dir for the invariants: {e}")))?;
        let steps = invariants.to_vec();
        let (stop, mut stopped) = watch::channel(false);
        let poll = poll.max(Self::MIN_POLL);
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut rounds = 0;
            loop {
                rounds += 1;
                for step in &steps {
                    if let (Err(e), _) = timed(&mut fork, step, op, ready).await {
                        return WatchOutcome {
                            rounds,
                            broken: Some((started.elapsed(), describe(step), e)),
                        };
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = stopped.wait_for(|v| *v) => return WatchOutcome { rounds, broken: None },
                }
            }
        });
        Ok(Some(InvariantWatch {
            stop,
            task: Some(task),
            started,
        }))
    }

    /// Stops polling and reports: an invariant that broke at any round fails the scenario.
    async fn finish(
        mut self,
        cfg: &RunConfig,
        ctx: &Context,
        report: &mut ScenarioReport,
    ) -> Result<(), StepError> {
        let phase = "invariants during the fault";
        let _ = self.stop.send(true);
        let task = self.task.take().expect("finished once");
        let outcome = task.await.map_err(|e| {
            StepError::new(format!("the invariant watch stopped unexpectedly: {e}"))
        })?;
        let elapsed = self.started.elapsed();
        let mut pr = PhaseReport::new(phase);
        pr.elapsed = elapsed;
        let (ok, text) = match &outcome.broken {
            None => (
                true,
                format!(
                    "held over {} rounds, {:.0}s from the fault to recovery",
                    outcome.rounds,
                    elapsed.as_secs_f64()
                ),
            ),
            Some((at, which, e)) => (
                false,
                format!(
                    "{which} broke {:.1}s after the fault began (round {}): {}",
                    at.as_secs_f64(),
                    outcome.rounds,
                    e.message
                ),
            ),
        };
        (cfg.events)(Event::Step {
            id: ctx.id.clone(),
            phase,
            description: text.clone(),
            ok,
            elapsed,
        });
        pr.steps.push(StepReport {
            op: "invariants".into(),
            description: "every invariant, polled from the fault to recovery".into(),
            ok,
            elapsed,
            attempts: outcome.rounds,
            observed: Some(match &outcome.broken {
                Some((_, _, e)) => e.observed.clone().unwrap_or_else(|| text.clone()),
                None => text.clone(),
            }),
            error: (!ok).then(|| text.clone()),
        });
        report.push_phase(pr);
        match outcome.broken {
            None => Ok(()),
            Some((_, _, e)) => Err(StepError {
                message: text,
                observed: e.observed,
            }),
        }
    }
}

impl Drop for InvariantWatch {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn timed(
    ctx: &mut Context,
    step: &Step,
    op: Duration,
    ready: Duration,
) -> (Result<String, StepError>, Duration) {
    let t = Instant::now();
    let r = execute(ctx, step, op, ready).await;
    (r, t.elapsed())
}

fn step_report(
    step: &Step,
    r: &Result<String, StepError>,
    elapsed: Duration,
    attempts: u32,
) -> StepReport {
    StepReport {
        op: step.op_name().into(),
        description: describe(step),
        ok: r.is_ok(),
        elapsed,
        attempts,
        observed: match r {
            Ok(o) => Some(o.clone()),
            Err(e) => e.observed.clone(),
        },
        error: r.as_ref().err().map(|e| e.message.clone()),
    }
}

/// The phases the on-call performs: their steps run as the on-call unless they say otherwise.
const ONCALL_PHASES: &[&str] = &["diagnosis", "remedy"];

/// Runs steps once each, in order; the first failure stops the phase.
async fn act(
    cfg: &RunConfig,
    ctx: &mut Context,
    report: &mut ScenarioReport,
    phase: &'static str,
    steps: &[Step],
    op: Duration,
    ready: Duration,
) -> Result<(), StepError> {
    (cfg.events)(Event::Phase {
        id: ctx.id.clone(),
        phase,
    });
    ctx.oncall_phase = ONCALL_PHASES.contains(&phase);
    let t = Instant::now();
    let mut pr = PhaseReport::new(phase);
    let mut result = Ok(());
    for (i, step) in steps.iter().enumerate() {
        ctx.journal_now();
        let (r, elapsed) = timed(ctx, step, op, ready).await;
        (cfg.events)(Event::Step {
            id: ctx.id.clone(),
            phase,
            description: describe(step),
            ok: r.is_ok(),
            elapsed,
        });
        pr.steps.push(step_report(step, &r, elapsed, 1));
        if let Err(e) = r {
            result = Err(StepError {
                message: format!("step {} ({}): {}", i + 1, describe(step), e.message),
                observed: e.observed,
            });
            break;
        }
    }
    pr.elapsed = t.elapsed();
    report.push_phase(pr);
    result
}

/// Polls all checks together until they pass at once, or `within` runs out.
async fn observe(
    cfg: &RunConfig,
    ctx: &mut Context,
    report: &mut ScenarioReport,
    phase: &'static str,
    obs: &Observation,
    op: Duration,
    ready: Duration,
) -> Result<(), StepError> {
    (cfg.events)(Event::Phase {
        id: ctx.id.clone(),
        phase,
    });
    ctx.oncall_phase = false;
    let t = Instant::now();
    let end = t + obs.within.as_duration();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut round = Vec::new();
        let mut first_bad = None;
        for (i, step) in obs.checks.iter().enumerate() {
            let left = end
                .saturating_duration_since(Instant::now())
                .max(crate::LAST_POLL_FLOOR.min(op));
            let (r, elapsed) = timed(ctx, step, op.min(left), ready).await;
            if let Err(e) = &r {
                first_bad.get_or_insert_with(|| (i, e.clone()));
            }
            round.push(step_report(step, &r, elapsed, attempts));
        }
        let done = first_bad.is_none();
        if done || Instant::now() >= end {
            for sr in &round {
                (cfg.events)(Event::Step {
                    id: ctx.id.clone(),
                    phase,
                    description: sr.description.clone(),
                    ok: sr.ok,
                    elapsed: sr.elapsed,
                });
            }
            let mut pr = PhaseReport::new(phase);
            pr.steps = round;
            pr.elapsed = t.elapsed();
            report.push_phase(pr);
            return match first_bad {
                None => Ok(()),
                Some((i, e)) => Err(StepError {
                    message: format!(
                        "not seen within {} ({attempts} polls); check {} ({}): {}",
                        obs.within,
                        i + 1,
                        describe(&obs.checks[i]),
                        e.message
                    ),
                    observed: e.observed,
                }),
            };
        }
        tokio::time::sleep(obs.poll.as_duration()).await;
    }
}

/// Each check of `obs` once, in order: which held. These phases want the checks *not* to hold,
/// so the report marks a check that failed as ok (absent, as required) and one that held as
/// the problem.
async fn evaluate_once(
    ctx: &mut Context,
    pr: &mut PhaseReport,
    obs: &Observation,
    op: Duration,
    ready: Duration,
) -> Vec<bool> {
    let mut held = Vec::new();
    for step in &obs.checks {
        let (r, elapsed) = timed(ctx, step, op, ready).await;
        held.push(r.is_ok());
        let mut sr = step_report(step, &r, elapsed, 1);
        sr.ok = r.is_err();
        match &r {
            Ok(_) => sr.error = Some(format!("holds already ({})", pr.name)),
            Err(e) => {
                sr.observed = Some(format!(
                    "absent, as required: {}",
                    e.observed.as_deref().unwrap_or(&e.message)
                ));
                sr.error = None;
            }
        }
        pr.steps.push(sr);
    }
    held
}

/// The baseline: on the healthy system, before the fault, the symptom must be absent. A
/// symptom that already holds proves nothing about the fault; each check that held is named.
async fn baseline(
    cfg: &RunConfig,
    ctx: &mut Context,
    report: &mut ScenarioReport,
    symptom: &Observation,
    op: Duration,
    ready: Duration,
) -> Result<(), Stop> {
    let phase = "baseline";
    (cfg.events)(Event::Phase {
        id: ctx.id.clone(),
        phase,
    });
    let t = Instant::now();
    let mut pr = PhaseReport::new(phase);
    let held = evaluate_once(ctx, &mut pr, symptom, op, ready).await;
    report.non_discriminating = symptom
        .checks
        .iter()
        .zip(&held)
        .filter(|(_, h)| **h)
        .map(|(c, _)| describe(c))
        .collect();
    let all_held = held.iter().all(|h| *h);
    (cfg.events)(Event::Step {
        id: ctx.id.clone(),
        phase,
        description: format!(
            "symptom absent before the fault ({} of {} checks held)",
            held.iter().filter(|h| **h).count(),
            held.len()
        ),
        ok: !all_held,
        elapsed: t.elapsed(),
    });
    pr.elapsed = t.elapsed();
    report.push_phase(pr);
    if all_held {
        return Err(Stop::Error(
            phase,
            StepError::new(format!(
                "symptom present before the fault: every check held on the healthy system, so it cannot show the fault ({})",
                report.non_discriminating.join("; ")
            )),
        ));
    }
    Ok(())
}

/// At the end of the hold, with the fault in place and no remedy, the recovery checks must
/// not pass: recovery checks that hold under the fault cannot show the remedy worked.
async fn recovery_absent_under_fault(
    cfg: &RunConfig,
    ctx: &mut Context,
    report: &mut ScenarioReport,
    recovery: &Observation,
    op: Duration,
    ready: Duration,
) -> Result<(), Stop> {
    let phase = "recovery under the fault";
    (cfg.events)(Event::Phase {
        id: ctx.id.clone(),
        phase,
    });
    let t = Instant::now();
    let mut pr = PhaseReport::new(phase);
    let held = evaluate_once(ctx, &mut pr, recovery, op, ready).await;
    let all_held = held.iter().all(|h| *h);
    (cfg.events)(Event::Step {
        id: ctx.id.clone(),
        phase,
        description: "recovery checks fail while the fault is in place".into(),
        ok: !all_held,
        elapsed: t.elapsed(),
    });
    pr.elapsed = t.elapsed();
    report.push_phase(pr);
    if all_held {
        return Err(Stop::Error(
            phase,
            StepError::new(
                "recovery holds under the fault: every recovery check passed before any remedy, so recovery cannot show the remedy worked",
            ),
        ));
    }
    Ok(())
}

/// The negative control: the symptom, once seen, must keep holding for `hold` without the
/// remedy. A fault that did not take, or that heals by itself, fails here.
async fn hold_symptom(
    cfg: &RunConfig,
    ctx: &mut Context,
    report: &mut ScenarioReport,
    obs: &Observation,
    hold: Duration,
    op: Duration,
    ready: Duration,
) -> Result<(), StepError> {
    let phase = "negative control";
    (cfg.events)(Event::Phase {
        id: ctx.id.clone(),
        phase,
    });
    let t = Instant::now();
    let mut pr = PhaseReport::new(phase);
    let mut rounds = 0u32;
    // At least two rounds, however short the hold.
    while rounds < 2 || t.elapsed() < hold {
        tokio::time::sleep(obs.poll.as_duration()).await;
        rounds += 1;
        for step in &obs.checks {
            let (r, elapsed) = timed(ctx, step, op, ready).await;
            if let Err(e) = r {
                pr.steps
                    .push(step_report(step, &Err(e.clone()), elapsed, rounds));
                pr.elapsed = t.elapsed();
                report.push_phase(pr);
                return Err(StepError {
                    message: format!(
                        "the symptom stopped holding after {:.1}s of the required {} without any remedy (the fault did not take, or healed by itself): {} ({})",
                        t.elapsed().as_secs_f64(),
                        veritas_scenario::Span(hold),
                        describe(step),
                        e.message
                    ),
                    observed: e.observed,
                });
            }
        }
    }
    (cfg.events)(Event::Step {
        id: ctx.id.clone(),
        phase,
        description: format!("symptom held {rounds} rounds"),
        ok: true,
        elapsed: t.elapsed(),
    });
    let mut sr = step_report(
        &obs.checks[0],
        &Ok(format!(
            "held for {:.1}s over {rounds} rounds",
            t.elapsed().as_secs_f64()
        )),
        t.elapsed(),
        rounds,
    );
    sr.description = format!("symptom held for {}", veritas_scenario::Span(hold));
    pr.steps.push(sr);
    pr.elapsed = t.elapsed();
    report.push_phase(pr);
    Ok(())
}

/// catch / finally: every step runs, failures are recorded but do not stop the phase.
async fn collect(ctx: &mut Context, phase: &'static str, steps: &[Step]) -> PhaseReport {
    ctx.oncall_phase = false;
    let t = Instant::now();
    let mut pr = PhaseReport::new(phase);
    for step in steps {
        let (r, elapsed) = timed(ctx, step, Duration::from_secs(30), Duration::from_secs(60)).await;
        if let Ok(o) = &r {
            ctx.add_evidence(format!("{phase}: {}", describe(step)), o.clone());
        }
        pr.steps.push(step_report(step, &r, elapsed, 1));
    }
    pr.elapsed = t.elapsed();
    pr
}

/// Daemon logs (process) or events, pods and controller logs (cluster) for a failed scenario.
async fn collect_evidence(ctx: &mut Context) {
    let logs: Vec<(String, std::path::PathBuf)> = ctx
        .daemons
        .iter()
        .map(|(n, d)| (n.clone(), d.log.clone()))
        .collect();
    for (name, log) in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        ctx.add_evidence(
            format!("daemon `{name}` log (last 40 lines)"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        );
    }
    if let (Some(env), Some(ns)) = (ctx.cluster.clone(), ctx.namespace.clone()) {
        let cmds: [&[&str]; 4] = [
            &["get", "events", "--sort-by=.lastTimestamp"],
            &["get", "pods,svc,endpoints,deploy", "-o", "wide"],
            &["get", "veritascanary,veritasenvironment", "-o", "yaml"],
            &[
                "logs",
                "-l",
                "app=veritas-spark",
                "--tail=30",
                "--all-containers",
            ],
        ];
        for args in cmds {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            if let Ok(out) = env
                .kubectl(
                    Some(&ns),
                    &Caller::Admin,
                    &args,
                    None,
                    Duration::from_secs(20),
                )
                .await
            {
                ctx.add_evidence(
                    format!("kubectl {}", args.join(" ")),
                    format!("{}{}", out.stdout, out.stderr),
                );
            }
        }
        let ctl: Vec<String> = [
            "logs",
            "-n",
            "veritas-system",
            "-l",
            "app=veritas-controller",
            "--tail=50",
        ]
        .map(String::from)
        .to_vec();
        if let Ok(out) = env
            .kubectl(None, &Caller::Admin, &ctl, None, Duration::from_secs(20))
            .await
        {
            ctx.add_evidence("controller log", format!("{}{}", out.stdout, out.stderr));
        }
    }
}

/// A namespace for the scenario with its two identities: the on-call (least privilege) and
/// the harness's scoped one (everything here, nothing elsewhere).
async fn prepare_namespace(ctx: &mut Context, op: Duration) -> Result<(), StepError> {
    let env = ctx
        .cluster
        .clone()
        .ok_or_else(|| StepError::new("no cluster"))?;
    let ns = ctx.namespace.clone().expect("cluster scenario");
    let read = |name: &str| {
        std::fs::read_to_string(env.manifests.join("harness").join(name))
            .map_err(|e| StepError::new(format!("harness manifest {name}: {e}")))
    };
    let manifest = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    app.kubernetes.io/managed-by: veritas-harness\n---\n{}\n---\n{}",
        read("oncall-rbac.yaml")?
            .replace("${namespace}", &ns)
            .replace("${oncall}", ONCALL_SA),
        read("scoped-rbac.yaml")?
            .replace("${namespace}", &ns)
            .replace("${user}", &scoped_user(&ns)),
    );
    // Server-side: runs side by side create the shared reader role at once without conflict.
    let args = crate::cluster::server_side_apply_args();
    let out = env
        .kubectl(None, &Caller::Admin, &args, Some(&manifest), op)
        .await?;
    if out.exit != Some(0) {
        return Err(StepError::observed(
            "cannot create the scenario namespace",
            out.summary(),
        ));
    }
    Ok(())
}

/// Stops what the scenario left running and reports leaks: daemon processes still alive, any
/// process still running from the work dir (an orphaned worker), a namespace that will not go.
async fn audit_and_release(ctx: &mut Context, cfg: &RunConfig) -> Vec<String> {
    let mut leaks = Vec::new();
    let names: Vec<String> = ctx.daemons.keys().cloned().collect();
    for name in names {
        if let Some(mut d) = ctx.daemons.remove(&name) {
            let _ = crate::process::stop(
                &mut d,
                veritas_scenario::Signal::Term,
                Duration::from_secs(20),
            )
            .await;
        }
    }
    let work = ctx.work_dir().display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let survivors = processes_mentioning(&work);
        if survivors.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for (pid, cmd) in &survivors {
                leaks.push(format!("process {pid} still running: {cmd}"));
                // SAFETY: a process of this run, named by pid from /proc just now.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for dir in std::mem::take(&mut ctx.cgroups) {
        if let Err(e) = crate::cgroup::remove(&dir).await {
            leaks.push(e);
        }
    }
    if let (Some(env), Some(ns)) = (ctx.cluster.clone(), ctx.namespace.clone()) {
        if !cfg.keep {
            let args: Vec<String> = ["delete", "namespace", &ns, "--wait=true", "--timeout=120s"]
                .map(String::from)
                .to_vec();
            match env
                .kubectl(None, &Caller::Admin, &args, None, Duration::from_secs(130))
                .await
            {
                Ok(out) if out.exit == Some(0) => {}
                Ok(out) => leaks.push(format!("namespace {ns} not deleted: {}", out.summary())),
                Err(e) => leaks.push(format!("namespace {ns} not deleted: {e}")),
            }
        }
    }
    leaks
}

/// Every object outside the namespace the run changed must be as it was before its first
/// change, once `finally` has run: what differs is named, field by field.
async fn audit_outside(ctx: &Context) -> Vec<String> {
    let Some(env) = ctx.cluster.clone() else {
        return Vec::new();
    };
    let mut leaks = Vec::new();
    for (target, before) in &ctx.touched {
        let now = match crate::cluster::current(&env, target, Duration::from_secs(20)).await {
            Ok(now) => now,
            Err(e) => {
                leaks.push(format!("{target}: cannot read it back: {e}"));
                continue;
            }
        };
        match (before, now) {
            (Some(b), Some(n)) => {
                let diff = crate::scope::differences(b, &n, 5);
                if !diff.is_empty() {
                    leaks.push(format!(
                        "{target} differs from before the run: {}",
                        diff.join(", ")
                    ));
                }
            }
            (Some(_), None) => leaks.push(format!("{target} was deleted and not restored")),
            (None, Some(_)) => leaks.push(format!("{target} was created and not removed")),
            (None, None) => {}
        }
    }
    leaks
}

/// Processes (other than this one) whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        // Zombies have an empty cmdline and are not running anything.
        if cmd.contains(needle) {
            found.push((pid, cmd.trim().to_string()));
        }
    }
    found
}
