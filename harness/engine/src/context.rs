//! Per-scenario state: the run's work directory, its variables, the daemons it started, and
//! (on a cluster) its namespace. Owned by the runner; operations borrow it mutably one at a time.

use crate::cluster::ClusterEnv;
use crate::process::Daemon;
use crate::snapshot::Redactions;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Context {
    pub id: String,
    pub work: tempfile::TempDir,
    pub vars: BTreeMap<String, String>,
    pub daemons: BTreeMap<String, Daemon>,
    pub spark_bin: PathBuf,
    pub cluster: Option<Arc<ClusterEnv>>,
    /// The scenario's namespace on a cluster.
    pub namespace: Option<String>,
    /// Evidence collected along the way (logs, outputs), for the report on failure.
    pub evidence: Vec<(String, String)>,
    pub seed: u64,
    /// The revert journal of this run, refreshed before each acting step.
    pub journal: Option<crate::journal::Journal>,
    /// The scenario declared `requires.clusterWide` (and the run allows it): its steps may
    /// change objects outside its namespace.
    pub cluster_wide: bool,
    /// The phase running now is the on-call's (diagnosis, remedy): steps that name no
    /// identity run as the on-call.
    pub oncall_phase: bool,
    /// Objects outside the namespace the run changed, as they were before (`None`: absent),
    /// for the leak audit after `finally`.
    pub touched: BTreeMap<crate::scope::Target, Option<serde_json::Value>>,
    /// Memory cgroups made for daemons (`startDaemon.memoryLimit`), removed at release.
    pub cgroups: Vec<PathBuf>,
}

impl Context {
    pub fn new(
        id: &str,
        spark_bin: PathBuf,
        cluster: Option<Arc<ClusterEnv>>,
        namespace: Option<String>,
        seed: u64,
    ) -> std::io::Result<Context> {
        let work = tempfile::Builder::new()
            .prefix(&format!("veritas-harness-{id}-"))
            .tempdir()?;
        std::fs::create_dir_all(work.path().join("models"))?;
        let mut vars = BTreeMap::new();
        vars.insert("work".into(), work.path().display().to_string());
        vars.insert(
            "models".into(),
            work.path().join("models").display().to_string(),
        );
        vars.insert("seed".into(), seed.to_string());
        // Unique to this run on the host (its work directory's name): for what is global to
        // the host, such as a loaded AppArmor profile, while a row and its ablation run at once.
        vars.insert(
            "runId".into(),
            work.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        // The CLI under test, for steps that run it another way than `spark:` does (as
        // another user, under `setpriv`).
        vars.insert("sparkBin".into(), spark_bin.display().to_string());
        if let Some(ns) = &namespace {
            vars.insert("namespace".into(), ns.clone());
        }
        Ok(Context {
            id: id.to_string(),
            work,
            vars,
            daemons: BTreeMap::new(),
            spark_bin,
            cluster,
            namespace,
            evidence: Vec::new(),
            seed,
            journal: None,
            cluster_wide: false,
            oncall_phase: false,
            touched: BTreeMap::new(),
            cgroups: Vec::new(),
        })
    }

    /// Who a cluster step that asks for `identity` runs as now.
    pub fn caller(&self, identity: Option<veritas_scenario::Identity>) -> crate::cluster::Caller {
        use crate::cluster::Caller;
        use veritas_scenario::Identity;
        let ns = self.namespace.clone().unwrap_or_else(|| "default".into());
        let oncall = match identity {
            Some(Identity::Oncall) => true,
            Some(Identity::Admin) => false,
            None => self.oncall_phase,
        };
        if oncall {
            Caller::Oncall(ns)
        } else if self.cluster_wide {
            Caller::Admin
        } else {
            Caller::Scoped(ns)
        }
    }

    /// A second context for checks run beside the main phases (invariants during the fault):
    /// the same variables and cluster, its own work directory, no daemons of its own.
    pub fn fork(&self) -> std::io::Result<Context> {
        let mut c = Context::new(
            &self.id,
            self.spark_bin.clone(),
            self.cluster.clone(),
            self.namespace.clone(),
            self.seed,
        )?;
        c.vars = self.vars.clone();
        c.cluster_wide = self.cluster_wide;
        Ok(c)
    }

    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    pub fn models_dir(&self) -> PathBuf {
        self.work.path().join("models")
    }

    /// Replaces `${name}` with the variable's value; unknown names are left as written so the
    /// failing command shows them.
    pub fn subst(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) => {
                    let name = &after[..end];
                    match self.vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&rest[start..start + 3 + end]),
                    }
                    rest = &after[end + 1..];
                }
                None => {
                    out.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    pub fn subst_all(&self, args: &[String]) -> Vec<String> {
        args.iter().map(|a| self.subst(a)).collect()
    }

    /// Names written as `${name}` in `s` that no variable answers (a capture that never ran).
    pub fn unset_vars(&self, s: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else { break };
            let name = &after[..end];
            if !self.vars.contains_key(name) && !out.iter().any(|n| n == name) {
                out.push(name.to_string());
            }
            rest = &after[end + 1..];
        }
        out
    }

    /// A JSON value with variables filled into every string in it (keys included).
    pub fn subst_json(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.subst(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.subst_json(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (self.subst(k), self.subst_json(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// An expectation with variables filled into its text (`output: ["${blueIp}"]`).
    pub fn subst_expect(&self, e: &veritas_scenario::Expect) -> veritas_scenario::Expect {
        veritas_scenario::Expect {
            output: self.subst_all(&e.output),
            not_output: self.subst_all(&e.not_output),
            words: self.subst_all(&e.words),
            not_words: self.subst_all(&e.not_words),
            ..e.clone()
        }
    }

    /// What snapshots must not contain: this run's paths and names.
    pub fn redactions(&self) -> Redactions {
        let mut literals = vec![(self.work.path().display().to_string(), "[work]".to_string())];
        if let Some(ns) = &self.namespace {
            literals.push((ns.clone(), "[namespace]".into()));
        }
        Redactions { literals }
    }

    /// Refreshes the revert journal (if any) with the variables as they are now. A journal
    /// that cannot be written is reported, not fatal: `finally` still runs in-process.
    pub fn journal_now(&self) {
        if let Some(j) = &self.journal {
            if let Err(e) = j.record(self) {
                tracing::warn!("revert journal {}: {e}", j.path().display());
            }
        }
    }

    pub fn add_evidence(&mut self, title: impl Into<String>, body: impl Into<String>) {
        self.evidence.push((title.into(), body.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_replaces_known_names_and_keeps_unknown_ones() {
        let mut c = Context::new("T", PathBuf::from("/bin/true"), None, None, 7).unwrap();
        c.vars.insert("spark.socket".into(), "/tmp/s.sock".into());
        assert_eq!(c.subst("--socket=${spark.socket}"), "--socket=/tmp/s.sock");
        assert_eq!(c.subst("${seed}-${nope}-${"), "7-${nope}-${");
        assert!(c
            .subst("${models}/tiny.gguf")
            .ends_with("/models/tiny.gguf"));
    }

    #[test]
    fn json_substitution_keeps_a_multi_line_value_one_string() {
        let mut c = Context::new("T", PathBuf::from("/bin/true"), None, None, 7).unwrap();
        c.vars
            .insert("corefile".into(), ".:53 {\n    \"errors\"\n}".into());
        let patch = serde_json::json!({"data": {"Corefile": "${corefile}"}, "n": 1});
        let body = c.subst_json(&patch).to_string();
        let back: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(back["data"]["Corefile"], c.vars["corefile"].as_str());
        assert_eq!(back["n"], 1);
        assert_eq!(c.unset_vars("${corefile} ${later} ${later}"), vec!["later"]);
    }
}
