//! An in-memory model of what the blue-green decision acts on, for unit tests, property tests
//! and CLI snapshots: two Deployments whose ready count the test sets, the active and preview
//! Services whose selectors the actions change, a probe answer per environment, and a
//! controller that can be killed between writing its status and acting (or before writing).
//! It claims nothing about a real cluster; that is tested against a real API server.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use veritas_crds::{
    annotations, Drift, EnvironmentName, ModelIdentity, VeritasEnvironmentSpec,
    VeritasEnvironmentStatus, ENVIRONMENT_SELECTOR_KEY,
};
use veritas_vocab::labels;

use super::decide::{
    after, decide, Action, Decision, EnvObs, Observed, PodProbe, ProbeOutcome, ServiceObs,
};

/// One environment of the model.
#[derive(Clone, Debug)]
pub struct EnvModel {
    pub replicas: i32,
    pub ready: i32,
    pub template_labels: BTreeMap<String, String>,
    /// What every ready pod answers on its probe.
    pub probe: ProbeOutcome,
    pub model: Option<ModelIdentity>,
    /// When its pods became ready, as their Ready condition says (`None`: not reported).
    pub ready_since: Option<Timestamp>,
    /// `Some(why)` while the Deployment's rollout is not complete.
    pub rollout_pending: Option<String>,
}

/// The modelled world of one `VeritasEnvironment`.
#[derive(Clone, Debug)]
pub struct World {
    pub name: String,
    pub spec: VeritasEnvironmentSpec,
    pub status: Option<VeritasEnvironmentStatus>,
    pub now: Timestamp,
    pub generation: i64,
    pub annotations: BTreeMap<String, String>,
    pub blue: Option<EnvModel>,
    pub green: Option<EnvModel>,
    /// `None`: the Service does not exist.
    pub active_selector: Option<BTreeMap<String, String>>,
    pub preview_selector: Option<BTreeMap<String, String>>,
    /// Patches of the active Service fail (are not applied), e.g. an admission webhook.
    pub active_updates_fail: bool,
    /// Patches of the active Service dropped so far.
    pub failed_updates: u64,
    pub drift: Vec<Drift>,
    pub events: Vec<(&'static str, String)>,
    pub passes: u64,
}

/// A spec as the fixtures write it, with `active` desired.
pub fn spec(active: EnvironmentName) -> VeritasEnvironmentSpec {
    serde_json::from_value(serde_json::json!({ "activeEnvironment": active })).expect("defaults")
}

pub fn env_labels(e: EnvironmentName) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::APP.to_string(), labels::APP_SPARK.to_string()),
        (labels::ENVIRONMENT.to_string(), e.as_str().to_string()),
    ])
}

pub fn selector(e: Option<EnvironmentName>) -> BTreeMap<String, String> {
    let mut s = BTreeMap::from([(labels::APP.to_string(), labels::APP_SPARK.to_string())]);
    if let Some(e) = e {
        s.insert(ENVIRONMENT_SELECTOR_KEY.to_string(), e.as_str().to_string());
    }
    s
}

pub fn tiny_model(version: &str) -> ModelIdentity {
    ModelIdentity {
        name: "tiny".into(),
        version: version.into(),
        sha256: format!("{:0<64}", version.replace('.', "")),
    }
}

fn matches(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl World {
    /// Two healthy environments of 2 pods; the Service selects `active`, preview the other;
    /// the spec asks for `active`; no status yet.
    pub fn new(active: EnvironmentName) -> World {
        let env = |e| EnvModel {
            replicas: 2,
            ready: 2,
            template_labels: env_labels(e),
            probe: ProbeOutcome::Healthy,
            model: Some(tiny_model("1.0.0")),
            ready_since: None,
            rollout_pending: None,
        };
        World {
            name: "veritas-spark".into(),
            spec: spec(active),
            status: None,
            now: Timestamp::from_second(1_800_000_000).expect("valid"),
            generation: 1,
            annotations: BTreeMap::new(),
            blue: Some(env(EnvironmentName::Blue)),
            green: Some(env(EnvironmentName::Green)),
            active_selector: Some(selector(Some(active))),
            preview_selector: Some(selector(Some(active.other()))),
            active_updates_fail: false,
            failed_updates: 0,
            drift: Vec::new(),
            events: Vec::new(),
            passes: 0,
        }
    }

    pub fn env_mut(&mut self, e: EnvironmentName) -> &mut EnvModel {
        match e {
            EnvironmentName::Blue => self.blue.as_mut().expect("blue exists"),
            EnvironmentName::Green => self.green.as_mut().expect("green exists"),
        }
    }

    pub fn env(&self, e: EnvironmentName) -> Option<&EnvModel> {
        match e {
            EnvironmentName::Blue => self.blue.as_ref(),
            EnvironmentName::Green => self.green.as_ref(),
        }
    }

    pub fn ready(&self, e: EnvironmentName) -> i32 {
        self.env(e).map_or(0, |d| d.ready)
    }

    pub fn advance(&mut self, secs: i64) {
        self.now = after(self.now, secs);
    }

    /// `kubectl patch ... spec.activeEnvironment` (a new generation).
    pub fn request(&mut self, e: EnvironmentName) {
        if self.spec.active_environment != e {
            self.spec.active_environment = e;
            self.generation += 1;
        }
    }

    /// What `veritas-spark rollback --bluegreen [--force]` does: the previous environment (or,
    /// after a failed switch, the one that serves) becomes desired, marked as a rollback.
    pub fn rollback(&mut self, force: bool) {
        let st = self.status.clone().unwrap_or_default();
        let target = super::decide::rollback_target(&st);
        if let Some(t) = target {
            self.request(t);
            self.annotations.insert(
                annotations::ROLLBACK.into(),
                if force {
                    annotations::FORCE
                } else {
                    annotations::TRUE
                }
                .into(),
            );
        }
    }

    /// The environment the active Service's owned key names.
    pub fn selected(&self) -> Option<EnvironmentName> {
        self.active_selector
            .as_ref()
            .and_then(|s| s.get(ENVIRONMENT_SELECTOR_KEY))
            .and_then(|v| EnvironmentName::parse(v))
    }

    fn service_obs(&self, sel: &BTreeMap<String, String>) -> ServiceObs {
        let ready = |e: EnvironmentName| {
            self.env(e)
                .filter(|d| matches(sel, &d.template_labels))
                .map_or(0, |d| d.ready)
        };
        ServiceObs {
            selector: sel.clone(),
            ready_blue: ready(EnvironmentName::Blue),
            ready_green: ready(EnvironmentName::Green),
        }
    }

    pub fn observe(&self) -> Observed {
        let env_obs = |m: &Option<EnvModel>| {
            m.as_ref().map(|m| EnvObs {
                replicas: m.replicas,
                ready: m.ready,
                template_labels: m.template_labels.clone(),
                ready_since: m.ready_since,
                rollout_pending: m.rollout_pending.clone(),
            })
        };
        let mut probes = BTreeMap::new();
        for e in EnvironmentName::BOTH {
            if let Some(m) = self.env(e) {
                let ps: Vec<PodProbe> = (0..m.ready)
                    .map(|i| PodProbe {
                        pod: format!("{}-{}-{i}", self.spec.env(e).deployment, "pod"),
                        outcome: m.probe.clone(),
                        model: (m.probe == ProbeOutcome::Healthy)
                            .then(|| m.model.clone())
                            .flatten(),
                    })
                    .collect();
                probes.insert(e, ps);
            }
        }
        Observed {
            now: self.now,
            generation: Some(self.generation),
            annotations: self.annotations.clone(),
            blue: env_obs(&self.blue),
            green: env_obs(&self.green),
            active_service: self.active_selector.as_ref().map(|s| self.service_obs(s)),
            preview_service: self.preview_selector.as_ref().map(|s| self.service_obs(s)),
            probes,
            drift: self.drift.clone(),
        }
    }

    pub fn decide(&self) -> Decision {
        decide(
            &self.name,
            &self.spec,
            self.status.as_ref(),
            &self.observe(),
        )
    }

    /// Carries out the first `n` actions (a controller killed after them).
    pub fn apply(&mut self, actions: &[Action], n: usize) {
        for a in actions.iter().take(n) {
            match a {
                Action::SetSelector { service, env } => {
                    let target = if *service == self.spec.active_service {
                        if self.active_updates_fail {
                            self.failed_updates += 1;
                            continue;
                        }
                        &mut self.active_selector
                    } else {
                        &mut self.preview_selector
                    };
                    if let Some(sel) = target {
                        sel.insert(ENVIRONMENT_SELECTOR_KEY.into(), env.as_str().into());
                    }
                }
                Action::ClearAnnotation(k) => {
                    self.annotations.remove(k);
                }
                Action::Event {
                    reason, message, ..
                } => self.events.push((reason, message.clone())),
            }
        }
    }

    /// One whole pass: decide, write the status, act.
    pub fn pass(&mut self) -> Decision {
        let d = self.decide();
        self.status = Some(d.status.clone());
        self.apply(&d.actions, usize::MAX);
        self.passes += 1;
        d
    }

    /// A pass killed after writing its status and carrying out `n` of its actions.
    pub fn crash_after(&mut self, n: usize) -> Decision {
        let d = self.decide();
        self.status = Some(d.status.clone());
        self.apply(&d.actions, n);
        self.passes += 1;
        d
    }

    /// Passes, moving the clock by each requeue, until the status stops changing (at most
    /// `n` passes).
    pub fn settle(&mut self, n: usize) {
        for _ in 0..n {
            let before = self.status.clone();
            let d = self.pass();
            let moved = d.actions.iter().any(|a| !matches!(a, Action::Event { .. }));
            if !moved && before.as_ref() == Some(&d.status) {
                return;
            }
            self.advance(d.requeue_after_secs as i64);
        }
    }
}
