//! The revert journal: before a scenario's faults, what a later process needs to undo them
//! (the `finally` steps with the variables captured so far, the namespace, the work dir, the
//! cluster). Removed once `finally` has reverted everything. A run that was SIGKILLed leaves its
//! entry behind; `veritas-harness cleanup` (and the next run's start) replays it.

use crate::cluster::{Caller, ClusterEnv};
use crate::context::Context;
use crate::runner::processes_mentioning;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use veritas_scenario::Step;

/// Where journal entries live by default: `VERITAS_HARNESS_STATE`, else
/// `/var/tmp/veritas-harness` (it outlives the harness that wrote it).
pub fn dir() -> PathBuf {
    std::env::var_os("VERITAS_HARNESS_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/veritas-harness"))
        .join("journal")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub scenario: String,
    /// The harness process that wrote it: a live one still owns its faults.
    pub pid: u32,
    pub work_dir: PathBuf,
    pub namespace: Option<String>,
    pub cluster: Option<ClusterRef>,
    /// Every variable at the time of writing (captures such as CoreDNS's replica count).
    pub vars: BTreeMap<String, String>,
    /// How to restore: the scenario's `finally`.
    pub finally: Vec<Step>,
    /// Memory cgroups made for the run's daemons, removed once its processes are gone.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub manifests: PathBuf,
}

/// One scenario run's journal file.
pub struct Journal {
    path: PathBuf,
    finally: Vec<Step>,
}

impl Journal {
    pub fn new(dir: &Path, ctx: &Context, finally: &[Step]) -> Journal {
        let name = format!(
            "{}-{}-{:x}.json",
            ctx.id,
            std::process::id(),
            ctx.seed & 0xffff_ffff
        );
        Journal {
            path: dir.join(name),
            finally: finally.to_vec(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes (or refreshes) the entry from the context as it is now; atomically, so a kill
    /// mid-write leaves the previous entry.
    pub fn record(&self, ctx: &Context) -> std::io::Result<()> {
        let entry = Entry {
            scenario: ctx.id.clone(),
            pid: std::process::id(),
            work_dir: ctx.work_dir().to_path_buf(),
            namespace: ctx.namespace.clone(),
            cluster: ctx.cluster.as_ref().map(|c| ClusterRef {
                kubeconfig: c.kubeconfig.clone(),
                kubectl: c.kubectl.clone(),
                manifests: c.manifests.clone(),
            }),
            vars: ctx.vars.clone(),
            finally: self.finally.clone(),
            cgroups: ctx.cgroups.clone(),
        };
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = self.path.with_extension("json.part");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&entry)?)?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Everything was reverted: nothing left to replay.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What one replayed entry did.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    pub scenario: String,
    pub file: PathBuf,
    pub pid: u32,
    /// One line per action: processes stopped, `finally` steps run, namespace deleted.
    pub actions: Vec<String>,
    /// What could not be restored (the entry is kept for another try).
    pub failures: Vec<String>,
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Replays every entry whose writer is dead. Each entry is claimed by renaming it first, so
/// two harnesses starting at once never replay the same one.
pub async fn recover_stale(dir: &Path, spark_bin: &Path) -> Vec<Recovered> {
    let mut done = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return done;
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let entry: Entry = match serde_json::from_str(&text) {
            Ok(e) => e,
            Err(e) => {
                done.push(Recovered {
                    scenario: "?".into(),
                    file: file.clone(),
                    pid: 0,
                    actions: vec![],
                    failures: vec![format!("unreadable journal entry: {e}")],
                });
                continue;
            }
        };
        if alive(entry.pid) && entry.pid != std::process::id() {
            continue;
        }
        let claimed = file.with_extension(format!("claimed-{}", std::process::id()));
        if std::fs::rename(&file, &claimed).is_err() {
            continue; // another harness took it
        }
        let r = replay(&entry, &claimed, spark_bin).await;
        if r.failures.is_empty() {
            let _ = std::fs::remove_file(&claimed);
        } else {
            let _ = std::fs::rename(&claimed, &file);
        }
        done.push(r);
    }
    done
}

async fn replay(entry: &Entry, file: &Path, spark_bin: &Path) -> Recovered {
    let mut r = Recovered {
        scenario: entry.scenario.clone(),
        file: file.to_path_buf(),
        pid: entry.pid,
        actions: Vec::new(),
        failures: Vec::new(),
    };
    // Daemons and workers of the dead run: nothing else mentions its work dir.
    let work = entry.work_dir.display().to_string();
    for (pid, cmd) in processes_mentioning(&work) {
        // SAFETY: a process of the dead run, named by pid from /proc just now.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        r.actions.push(format!("stopped process {pid}: {cmd}"));
    }
    // SIGKILL is delivered when the process next runs: on a loaded machine it can still be
    // listed for a moment. Cleanup returns once they are gone (a zombie's cmdline is empty).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&work).is_empty() {
        if std::time::Instant::now() > deadline {
            r.failures.push(format!(
                "processes of the dead run still alive 10 s after SIGKILL: {:?}",
                processes_mentioning(&work)
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for dir in &entry.cgroups {
        match crate::cgroup::remove(dir).await {
            Ok(()) => r
                .actions
                .push(format!("memory cgroup {} removed", dir.display())),
            Err(e) => r.failures.push(e),
        }
    }
    let cluster = entry.cluster.as_ref().map(|c| {
        Arc::new(ClusterEnv::new(
            c.kubeconfig.clone(),
            c.kubectl.clone(),
            c.manifests.clone(),
            true,
        ))
    });
    match Context::new(
        &entry.scenario,
        spark_bin.to_path_buf(),
        cluster.clone(),
        entry.namespace.clone(),
        0,
    ) {
        Err(e) => r.failures.push(format!("cannot create a work dir: {e}")),
        Ok(mut ctx) => {
            ctx.vars = entry.vars.clone();
            // The reverts of a run that was allowed its faults: they go where its faults went.
            ctx.cluster_wide = true;
            for (i, step) in entry.finally.iter().enumerate() {
                // A daemon of the dead run is gone with it: there is nothing to stop.
                if matches!(step, Step::StopDaemon(_)) {
                    continue;
                }
                let what = crate::describe(step);
                // A variable never captured means the run died before the fault that needs
                // this revert: there is nothing to restore, and a placeholder must not be
                // written into a live object.
                let unset = ctx.unset_vars(&serde_json::to_string(step).unwrap_or_default());
                if !unset.is_empty() {
                    r.actions.push(format!(
                        "finally step {} skipped: ${{{}}} was never captured, so its fault never ran ({what})",
                        i + 1,
                        unset.join("}, ${")
                    ));
                    continue;
                }
                match crate::execute(
                    &mut ctx,
                    step,
                    Duration::from_secs(60),
                    Duration::from_secs(120),
                )
                .await
                {
                    Ok(_) => r.actions.push(format!("finally step {}: {what}", i + 1)),
                    Err(e) => {
                        r.failures
                            .push(format!("finally step {} ({what}): {}", i + 1, e.message))
                    }
                }
            }
        }
    }
    if let (Some(env), Some(ns)) = (cluster, &entry.namespace) {
        let args: Vec<String> = [
            "delete",
            "namespace",
            ns,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
        ]
        .map(String::from)
        .to_vec();
        match env
            .kubectl(None, &Caller::Admin, &args, None, Duration::from_secs(130))
            .await
        {
            Ok(out) if out.exit == Some(0) => r.actions.push(format!("namespace {ns} deleted")),
            Ok(out) => r
                .failures
                .push(format!("namespace {ns} not deleted: {}", out.summary())),
            Err(e) => r.failures.push(format!("namespace {ns} not deleted: {e}")),
        }
    }
    if entry.work_dir.starts_with(std::env::temp_dir()) && entry.work_dir.exists() {
        match std::fs::remove_dir_all(&entry.work_dir) {
            Ok(()) => r
                .actions
                .push(format!("work dir {} removed", entry.work_dir.display())),
            Err(e) => r.failures.push(format!(
                "work dir {} not removed: {e}",
                entry.work_dir.display()
            )),
        }
    }
    r
}
