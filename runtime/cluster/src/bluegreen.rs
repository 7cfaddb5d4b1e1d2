//! The guide's "Blue-Green Operations": `bluegreen inspect`, `bluegreen diff`, `bluegreen
//! switch [--dry-run]`, and the blue-green half of `rollback` (`--bluegreen`, `--force`,
//! `--status`). The controller carries out switches and rollbacks; these commands ask for them
//! (by changing `spec.activeEnvironment`, with the rollback annotation for a rollback) and
//! wait for the recorded outcome.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::json;
use veritas_controller::bluegreen::decide::{max_move_seconds, rollback_target};
use veritas_controller::bluegreen::drift::{diff, is_unknown};
use veritas_controller::bluegreen::probe::PodHttp;
use veritas_crds::{annotations, EnvironmentName, EnvironmentPhase, VeritasEnvironment};
use veritas_vocab::{labels, ErrorCode};

use crate::bgrender::{self, PlanFacts};
use crate::CliError;

/// Which `VeritasEnvironment`.
#[derive(Debug, Clone, Args)]
pub struct EnvTarget {
    /// Namespace of the VeritasEnvironment (default: the kubeconfig context's).
    #[arg(long, short = 'n', env = "VERITAS_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of the VeritasEnvironment (default: the only one in the namespace).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum BluegreenCommand {
    /// Current environment state: phase, active/standby/previous environment, switch
    /// progress (step, since when, what it waits for), ready pods and model of each
    /// environment, conditions with reasons.
    #[command(
        after_help = "The guide's first step for \"Switch Not Completing\". Raw status:\n  kubectl get veritasenvironment <name> -o jsonpath=\"{.status.switchProgress}\""
    )]
    Inspect(EnvTarget),
    /// Configuration drift between blue and green: ConfigMap data (veritas-config-blue /
    /// veritas-config-green), the model each environment's pods report (name, version,
    /// sha256), env vars, volumes and PVC mounts, Secrets compared by a keyed hash (values are
    /// never printed). Exit 0 in sync, 1 when they differ, 3 when everything readable matches
    /// but some Secrets could not be read (unknown is not "in sync").
    Diff(EnvTarget),
    /// Switch traffic to the other environment (or --to). The controller verifies the target
    /// (all replicas ready, minReadySeconds, health probe on every pod) before the active
    /// Service's selector moves; a target that fails leaves traffic where it is (E5001 with the
    /// reason). --dry-run prints each step and what it would change.
    Switch(SwitchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SwitchArgs {
    /// Environment to switch to (default: the standby one).
    #[arg(long, value_parser = parse_env)]
    pub to: Option<EnvironmentName>,
    /// Print the steps and the changes, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for the switch to finish (default: the health-check deadline plus the
    /// Service update timeouts).
    #[arg(long)]
    pub wait: Option<u64>,
    #[command(flatten)]
    pub target: EnvTarget,
}

fn parse_env(s: &str) -> Result<EnvironmentName, String> {
    EnvironmentName::parse(s).ok_or_else(|| format!("{s:?} is not an environment (blue, green)"))
}

fn failed(code: ErrorCode, detail: impl Into<String>) -> CliError {
    CliError {
        code,
        detail: detail.into(),
    }
}

/// Finds the environment: by name, or the only one in the namespace. `code` is the error code
/// the caller reports failures with.
pub async fn find(
    client: &Client,
    t: &EnvTarget,
    code: ErrorCode,
) -> Result<(Api<VeritasEnvironment>, VeritasEnvironment), CliError> {
    let ns = t
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<VeritasEnvironment> = Api::namespaced(client.clone(), &ns);
    let crd_hint = |e: kube::Error| {
        match &e {
        kube::Error::Api(s) if s.code == 404 => failed(
            code,
            "the VeritasEnvironment CRD is not installed (kubectl apply -f fixtures/manifests/crds/)",
        ),
        _ => failed(code, format!("failed to read VeritasEnvironments in {ns}: {e}")),
    }
    };
    let e = match &t.name {
        Some(name) => api.get_opt(name).await.map_err(crd_hint)?.ok_or_else(|| {
            failed(
                code,
                format!("no VeritasEnvironment {name} in namespace {ns}"),
            )
        })?,
        None => {
            let mut list = api.list(&Default::default()).await.map_err(crd_hint)?.items;
            match list.len() {
                0 => {
                    return Err(failed(
                        code,
                        format!(
                            "no VeritasEnvironment in namespace {ns} (crd {})",
                            VeritasEnvironment::crd_name()
                        ),
                    ))
                }
                1 => list.remove(0),
                n => {
                    let names: Vec<String> = list.iter().map(|e| e.name_any()).collect();
                    return Err(failed(
                        code,
                        format!(
                            "{n} VeritasEnvironments in namespace {ns} ({}); pick one with --name",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
    };
    Ok((api, e))
}

/// What `bluegreen diff` compares, read live: the environment and its facts.
pub async fn diff_facts(
    client: &Client,
    t: &EnvTarget,
) -> Result<(VeritasEnvironment, PlanFacts), CliError> {
    let (_, e) = find(client, t, ErrorCode::DeploymentFailed).await?;
    let f = facts(client, &e).await?;
    Ok((e, f))
}

/// Live facts for `diff` and the dry run (the controller's own reads, and the models the
/// pods' runtime reports now).
async fn facts(client: &Client, e: &VeritasEnvironment) -> Result<PlanFacts, CliError> {
    let ns = e.namespace().unwrap_or_default();
    let o = veritas_controller::bluegreen::observe::observe(client, &ns, &e.spec)
        .await
        .map_err(|err| {
            failed(
                ErrorCode::DeploymentFailed,
                format!("failed to read the environments' objects: {err}"),
            )
        })?;
    let mut snaps = o.snapshots.clone();
    // Models as each environment's pods report them now: the runtime's health JSON (name,
    // version, sha256) of every ready pod, through the API server's pod proxy (this runs
    // outside the cluster). Not the status: that is what the controller saw at its last pass.
    let http = PodHttp::ApiProxy(client.clone());
    let hc = &e.spec.switch.health_check;
    let timeout = Duration::from_secs(hc.probe_timeout_seconds.max(1) as u64);
    for (env, s) in snaps.iter_mut() {
        let pods = o.ready_pods.get(env).cloned().unwrap_or_default();
        let probes = futures::future::join_all(
            pods.iter()
                .map(|p| http.probe(p, hc.port, &hc.path, timeout)),
        )
        .await;
        let mut models: Vec<_> = probes.into_iter().filter_map(|p| p.model).collect();
        models.sort();
        models.dedup();
        s.models = models;
    }
    let drift = match (
        snaps.get(&EnvironmentName::Blue),
        snaps.get(&EnvironmentName::Green),
    ) {
        (Some(b), Some(g)) => diff(b, g),
        _ => Vec::new(),
    };
    Ok(PlanFacts {
        blue: o.blue,
        green: o.green,
        active_service: o.active_service,
        preview_service: o.preview_service,
        drift,
    })
}

fn print_json(v: serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(&v).expect("serialisable")
    );
}

pub async fn run(
    client: &Client,
    cmd: BluegreenCommand,
    json_out: bool,
) -> Result<ExitCode, CliError> {
    match cmd {
        BluegreenCommand::Inspect(t) => {
            let (_, e) = find(client, &t, ErrorCode::DeploymentFailed).await?;
            if json_out {
                print_json(json!({"schema": 1, "environment": bgrender::inspect_json(&e)}));
            } else {
                print!("{}", bgrender::inspect(&e));
            }
            Ok(ExitCode::SUCCESS)
        }
        BluegreenCommand::Diff(t) => {
            let (e, f) = diff_facts(client, &t).await?;
            let differs = f.drift.iter().any(|d| !is_unknown(d));
            let unknown = f.drift.iter().any(is_unknown);
            // `inSync` is null when it cannot be told.
            let in_sync = match (differs, unknown) {
                (true, _) => Some(false),
                (false, true) => None,
                (false, false) => Some(true),
            };
            if json_out {
                print_json(
                    json!({"schema": 1, "environment": e.name_any(), "inSync": in_sync, "drift": f.drift}),
                );
            } else {
                print!("{}", bgrender::diff(&f.drift));
            }
            Ok(match in_sync {
                Some(true) => ExitCode::SUCCESS,
                Some(false) => ExitCode::from(1),
                None => ExitCode::from(3),
            })
        }
        BluegreenCommand::Switch(a) => switch(client, a, json_out).await,
    }
}

async fn switch(client: &Client, a: SwitchArgs, json_out: bool) -> Result<ExitCode, CliError> {
    let code = ErrorCode::DeploymentFailed;
    let (api, e) = find(client, &a.target, code).await?;
    let name = e.name_any();
    let st = e.status.clone().unwrap_or_default();
    let to =
        a.to.or(st.active_environment.map(|x| x.other()))
            .unwrap_or(e.spec.active_environment.other());
    if a.dry_run {
        let f = facts(client, &e).await?;
        let plan = bgrender::switch_plan(&e, to, &f);
        if json_out {
            print_json(json!({"schema": 1, "environment": name, "dryRun": true, "plan": plan}));
        } else {
            print!("{}", bgrender::plan_text(&e, &plan));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if st.phase.in_progress() {
        return Err(failed(
            code,
            format!(
                "a switch of {name} is in progress (phase {}, {}); wait for it (veritas-spark bluegreen inspect) or roll it back (veritas-spark rollback --bluegreen)",
                st.phase,
                st.message.unwrap_or_default()
            ),
        ));
    }
    if st.phase == EnvironmentPhase::Stable
        && st.active_environment == Some(to)
        && e.spec.active_environment == to
    {
        if json_out {
            print_json(json!({"schema": 1, "environment": name, "active": to, "changed": false}));
        } else {
            println!("{to} is already active in {name}: nothing to switch");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    let before = st.last_switch.clone();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"activeEnvironment": to}})),
    )
    .await
    .map_err(|err| {
        failed(
            code,
            format!("failed to request the switch of {name} to {to}: {err}"),
        )
    })?;
    let wait = a.wait.unwrap_or(max_move_seconds(&e.spec) as u64 + 30);
    let e = wait_for_move(&api, &name, to, before, wait, code).await?;
    let st = e.status.clone().unwrap_or_default();
    if json_out {
        print_json(
            json!({"schema": 1, "environment": name, "active": st.active_environment, "lastSwitch": st.last_switch, "seconds": started.elapsed().as_secs_f64()}),
        );
    } else {
        println!(
            "switched {name} to {to} in {:.1}s: {}",
            started.elapsed().as_secs_f64(),
            st.message.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for the move to `to` to end: Ok when traffic is on `to`, the failure with its reason
/// otherwise (`code`: E5001 for a switch, E5002 for a rollback).
async fn wait_for_move(
    api: &Api<VeritasEnvironment>,
    name: &str,
    to: EnvironmentName,
    before: Option<veritas_crds::SwitchRecord>,
    wait: u64,
    code: ErrorCode,
) -> Result<VeritasEnvironment, CliError> {
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        let e = api
            .get(name)
            .await
            .map_err(|err| failed(code, format!("failed to read {name}: {err}")))?;
        let st = e.status.clone().unwrap_or_default();
        if st.phase == EnvironmentPhase::Stable
            && st.active_environment == Some(to)
            && st.switch_progress.is_none()
        {
            return Ok(e);
        }
        // A failure counts only once it is a new record (not the one from before the ask).
        if st.phase.failed() && st.last_switch.is_some() && st.last_switch != before {
            return Err(failed(
                code,
                format!(
                    "{} of {name} to {to} failed: {} ({}); traffic is on {}",
                    if code == ErrorCode::RollbackFailed {
                        "rollback"
                    } else {
                        "switch"
                    },
                    st.reason.as_deref().unwrap_or("-"),
                    st.message.as_deref().unwrap_or(""),
                    st.active_environment
                        .map(|a| a.as_str())
                        .unwrap_or("unknown"),
                ),
            ));
        }
        if Instant::now() >= deadline {
            let p = st.switch_progress.as_ref();
            return Err(failed(
                code,
                format!(
                    "{name} not on {to} within {wait}s: phase {}, step {}, waiting for {} ({}); is veritas-controller running? (kubectl logs -l {}={} | grep -i switch)",
                    st.phase,
                    p.map(|p| p.step.as_str()).unwrap_or("-"),
                    p.and_then(|p| p.waiting_for.clone()).unwrap_or_else(|| "-".into()),
                    p.and_then(|p| p.reason.clone()).or(st.reason.clone()).unwrap_or_else(|| "-".into()),
                    labels::APP,
                    labels::APP_CONTROLLER
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `rollback --bluegreen [--force]`: traffic back to the previous environment.
pub async fn rollback(
    client: &Client,
    t: &EnvTarget,
    force: bool,
    wait: u64,
    json_out: bool,
) -> Result<ExitCode, CliError> {
    let code = ErrorCode::RollbackFailed;
    let (api, e) = find(client, t, code).await?;
    let name = e.name_any();
    let st = e.status.clone().unwrap_or_default();
    let Some(to) = rollback_target(&st) else {
        return Err(failed(
            code,
            format!(
                "{name} has no previous environment to roll back to (phase {}, active {})",
                st.phase,
                st.active_environment
                    .map(|a| a.as_str())
                    .unwrap_or("unknown")
            ),
        ));
    };
    let value = if force {
        annotations::FORCE
    } else {
        annotations::TRUE
    };
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {annotations::ROLLBACK: value}}, "spec": {"activeEnvironment": to}})),
    )
    .await
    .map_err(|err| failed(code, format!("failed to request the rollback of {name}: {err}")))?;
    let e = wait_for_move(&api, &name, to, st.last_switch.clone(), wait, code).await?;
    if json_out {
        print_json(
            json!({"schema": 1, "environment": name, "rollback": bgrender::env_rollback_state(&e)}),
        );
    } else {
        print!("{}", bgrender::env_rollback_status(&e));
    }
    Ok(ExitCode::SUCCESS)
}

/// `rollback --status` for an environment; E5002 when the last rollback failed.
pub fn rollback_status(e: &VeritasEnvironment, json_out: bool) -> Result<ExitCode, CliError> {
    let st = bgrender::env_rollback_state(e);
    if json_out {
        print_json(json!({"schema": 1, "environment": e.name_any(), "rollback": st}));
    } else {
        print!("{}", bgrender::env_rollback_status(e));
    }
    if st.state == "failed" {
        return Err(failed(
            ErrorCode::RollbackFailed,
            format!(
                "rollback of {} failed: {} ({})",
                e.name_any(),
                st.reason.unwrap_or_default(),
                st.detail
            ),
        ));
    }
    Ok(ExitCode::SUCCESS)
}
