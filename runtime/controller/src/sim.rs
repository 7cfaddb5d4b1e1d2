//! An in-memory model of what the decision acts on, for unit tests, property tests and the
//! decision benchmark: Deployments whose pods become ready at once (or not, on demand), a
//! shared Service whose selector the actions change, a route. It claims nothing about a real
//! cluster; the controller's cluster behaviour is tested against a real API server.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use veritas_crds::{RoutingKind, VeritasCanarySpec, VeritasCanaryStatus, OWNED_SELECTOR_KEY};
use veritas_vocab::labels;

use crate::decide::{
    analysis_due, decide, release_template, template_hash, Action, AnalysisSample, Decision,
    DeploymentObs, MonitorObs, Observed, ServiceObs, SharedServiceObs, TrackMetrics,
};

/// The modelled world of one canary.
#[derive(Clone, Debug)]
pub struct World {
    pub namespace: String,
    pub name: String,
    pub spec: VeritasCanarySpec,
    pub status: Option<VeritasCanaryStatus>,
    pub now: Timestamp,
    pub generation: i64,
    pub annotations: BTreeMap<String, String>,
    pub stable: Option<DeploymentObs>,
    pub canary: Option<DeploymentObs>,
    pub canary_service: Option<ServiceObs>,
    pub shared_selector: Option<BTreeMap<String, String>>,
    pub service_monitor: MonitorObs,
    pub route: Option<(i32, i32)>,
    /// When false, scaled pods never become ready.
    pub pods_become_ready: bool,
    pub events: Vec<(&'static str, String)>,
    pub passes: u64,
    /// Passes after a scale or a template change before the pods are ready (0: at once).
    pub ready_delay: u32,
    /// Passes left before `(stable, canary)` finish their rollout.
    pub starting: [u32; 2],
    /// Earlier canaries driving the same objects.
    pub prior_claims: Vec<crate::decide::PriorClaim>,
}

/// A canary spec as the guide's fixtures write it.
pub fn spec(weight: i32) -> VeritasCanarySpec {
    serde_json::from_value(serde_json::json!({ "trafficWeight": weight })).expect("defaults")
}

/// A user's HTTPRoute for `spec`'s tracks: parents, hosts, a rule of their own, and a rule with
/// matches and a filter that splits the tracks (100 / 0).
pub fn users_http_route(spec: &VeritasCanarySpec) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "veritas-spark"},
        "spec": {
            "parentRefs": [{"name": "edge"}],
            "hostnames": ["spark.example.com"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                 "backendRefs": [{"name": "admin", "port": 8080}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                 "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-env", "value": "prod"}]}}],
                 "backendRefs": [
                    {"name": spec.stable.service, "port": 8080, "weight": 100},
                    {"name": spec.canary.service, "port": 8080, "weight": 0}]}
            ]
        }
    })
}

fn labels_of(track: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::APP.to_string(), labels::APP_SPARK.to_string()),
        (labels::DEPLOYMENT.to_string(), track.to_string()),
    ])
}

impl World {
    /// A healthy starting point: both Deployments, both Services, the ServiceMonitor.
    pub fn new(spec: VeritasCanarySpec) -> World {
        let total = spec.replicas.unwrap_or(4);
        World {
            namespace: "veritas".into(),
            name: "spark".into(),
            status: None,
            now: Timestamp::from_second(1_800_000_000).expect("valid"),
            generation: 1,
            annotations: BTreeMap::new(),
            stable: Some(DeploymentObs {
                replicas: total,
                ready: total,
                template_labels: labels_of(labels::DEPLOYMENT_STABLE),
                ..Default::default()
            }),
            canary: Some(DeploymentObs {
                replicas: 1,
                ready: 1,
                template_labels: labels_of(labels::DEPLOYMENT_CANARY),
                ..Default::default()
            }),
            canary_service: Some(ServiceObs {
                selector: labels_of(labels::DEPLOYMENT_CANARY),
                ready_endpoints: 1,
            }),
            shared_selector: Some(BTreeMap::from([(
                labels::APP.to_string(),
                labels::APP_SPARK.to_string(),
            )])),
            service_monitor: MonitorObs::Present,
            // A router's route is the user's: it exists before the canary, all traffic on stable.
            route: matches!(
                spec.routing.kind(),
                Ok(RoutingKind::GatewayApi | RoutingKind::Istio)
            )
            .then_some((100, 0)),
            pods_become_ready: true,
            events: Vec::new(),
            passes: 0,
            ready_delay: 0,
            starting: [0, 0],
            prior_claims: Vec::new(),
            spec,
        }
    }

    /// A world with pod templates (revisions): stable runs image `stable_image`, the canary
    /// `canary_image`; pods become ready `ready_delay` passes after a scale or template change.
    pub fn with_revisions(
        spec: VeritasCanarySpec,
        stable_image: &str,
        canary_image: &str,
        ready_delay: u32,
    ) -> World {
        let mut w = World::new(spec);
        w.ready_delay = ready_delay;
        if let Some(d) = &mut w.stable {
            set_template(d, labels::DEPLOYMENT_STABLE, &pod_template(stable_image));
        }
        w.set_canary_image(canary_image);
        w
    }

    /// A new canary revision (`kubectl set image` on the canary Deployment): its pods restart.
    pub fn set_canary_image(&mut self, image: &str) {
        if let Some(d) = &mut self.canary {
            set_template(d, labels::DEPLOYMENT_CANARY, &pod_template(image));
        }
        self.start(1);
    }

    /// The image the stable Deployment's template runs.
    pub fn stable_image(&self) -> Option<String> {
        self.stable
            .as_ref()
            .and_then(|d| d.template.as_ref())
            .and_then(|t| t.pointer("/spec/containers/0/image"))
            .and_then(|v| v.as_str())
            .map(String::from)
    }

    fn start(&mut self, i: usize) {
        if self.ready_delay == 0 {
            return;
        }
        self.starting[i] = self.ready_delay;
        let d = if i == 0 {
            &mut self.stable
        } else {
            &mut self.canary
        };
        if let Some(d) = d {
            d.rollout_pending = Some("pods starting".into());
        }
    }

    /// One pass of time for pods being started.
    fn tick(&mut self) {
        for (i, d) in [&mut self.stable, &mut self.canary].into_iter().enumerate() {
            if self.starting[i] > 0 {
                self.starting[i] -= 1;
                if self.starting[i] == 0 {
                    if let Some(d) = d {
                        d.ready = d.replicas;
                        d.rollout_pending = None;
                    }
                }
            }
        }
    }

    pub fn advance(&mut self, secs: i64) {
        self.now = self
            .now
            .checked_add(SignedDuration::from_secs(secs))
            .expect("in range");
    }

    /// Changes the spec as `kubectl apply` would (a new generation).
    pub fn edit(&mut self, f: impl FnOnce(&mut VeritasCanarySpec)) {
        f(&mut self.spec);
        self.generation += 1;
    }

    /// Runs `n` analyses with the same sample, each as soon as one is due: one interval apart,
    /// the first of a run once a whole window of routed traffic exists. A wait that finds none
    /// due within a window and an interval (paused, held) goes on without one.
    pub fn analyses(&mut self, sample: AnalysisSample, n: usize) {
        for _ in 0..n {
            let step = self.spec.analysis.interval_seconds;
            let mut waited = 0;
            let due = loop {
                self.advance(step);
                waited += step;
                let due = analysis_due(&self.spec, self.status.as_ref(), self.now);
                if due || waited >= self.spec.analysis.window_seconds + step {
                    break due;
                }
                self.pass(None);
            };
            self.pass(due.then(|| sample.clone()));
            self.settle(5);
        }
    }

    /// Pods scaled while `pods_become_ready` was false finish starting.
    pub fn pods_ready(&mut self) {
        for d in [&mut self.stable, &mut self.canary].into_iter().flatten() {
            d.ready = d.replicas;
        }
    }

    /// Ready pods behind the shared Service: what carries the traffic.
    pub fn serving(&self) -> i32 {
        self.observe(None)
            .shared_service
            .map_or(0, |s| s.ready_stable + s.ready_canary)
    }

    pub fn annotate(&mut self, key: &str, value: &str) {
        self.annotations.insert(key.into(), value.into());
    }

    fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    pub fn observe(&self, analysis: Option<AnalysisSample>) -> Observed {
        let shared_service = self.shared_selector.as_ref().map(|sel| {
            let ready = |d: &Option<DeploymentObs>| {
                d.as_ref()
                    .filter(|d| Self::matches(sel, &d.template_labels))
                    .map_or(0, |d| d.ready)
            };
            SharedServiceObs {
                selector: sel.clone(),
                ready_stable: ready(&self.stable),
                ready_canary: ready(&self.canary),
            }
        });
        let canary_service = self.canary_service.as_ref().map(|s| ServiceObs {
            selector: s.selector.clone(),
            ready_endpoints: self
                .canary
                .as_ref()
                .filter(|d| Self::matches(&s.selector, &d.template_labels))
                .map_or(0, |d| d.ready),
        });
        Observed {
            now: self.now,
            generation: Some(self.generation),
            annotations: self.annotations.clone(),
            stable: self.stable.clone(),
            canary: self.canary.clone(),
            canary_service,
            shared_service,
            service_monitor: self.service_monitor,
            route: self.route,
            analysis,
            prior_claims: self.prior_claims.clone(),
        }
    }

    /// One reconcile pass: decide, then carry out the actions in the model.
    pub fn pass(&mut self, analysis: Option<AnalysisSample>) -> Decision {
        self.tick();
        let obs = self.observe(analysis);
        let d = decide(&self.name, &self.spec, self.status.as_ref(), &obs);
        self.apply(&d.actions);
        self.status = Some(d.status.clone());
        self.passes += 1;
        d
    }

    /// Passes (without analysis) until nothing changes, at most `n`.
    pub fn settle(&mut self, n: usize) {
        for _ in 0..n {
            let before = self.status.clone();
            let d = self.pass(None);
            let moved = d.actions.iter().any(|a| !matches!(a, Action::Event { .. }));
            if !moved
                && before
                    .as_ref()
                    .map(|s| (s.phase, s.current_step, s.desired_weight, s.actual_weight))
                    == Some((
                        d.status.phase,
                        d.status.current_step,
                        d.status.desired_weight,
                        d.status.actual_weight,
                    ))
            {
                return;
            }
        }
    }

    pub fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Scale {
                    deployment,
                    replicas,
                } => {
                    let i = usize::from(*deployment == self.spec.canary.deployment);
                    let target = if i == 1 {
                        &mut self.canary
                    } else {
                        &mut self.stable
                    };
                    let delay = self.ready_delay;
                    if let Some(d) = target {
                        let up = *replicas > d.replicas;
                        d.replicas = *replicas;
                        if delay > 0 && up {
                            // New pods start; the ready ones keep serving.
                            d.rollout_pending = Some("pods starting".into());
                            self.starting[i] = delay;
                        } else if delay > 0 {
                            d.ready = d.ready.min(*replicas);
                        } else if self.pods_become_ready {
                            d.ready = *replicas;
                        } else {
                            d.ready = d.ready.min(*replicas);
                        }
                    }
                }
                Action::SetSelector { value, .. } => {
                    if let Some(sel) = &mut self.shared_selector {
                        match value {
                            Some(v) => sel.insert(OWNED_SELECTOR_KEY.into(), v.clone()),
                            None => sel.remove(OWNED_SELECTOR_KEY),
                        };
                    }
                }
                Action::SetRouteWeights { stable, canary } => {
                    if self.route.is_some() {
                        self.route = Some((*stable, *canary));
                    }
                }
                Action::PromoteTemplate { template, .. } => {
                    if let Some(d) = &mut self.stable {
                        set_template(d, labels::DEPLOYMENT_STABLE, template);
                        if self.ready_delay > 0 {
                            d.rollout_pending = Some("rolling out the promoted template".into());
                            self.starting[0] = self.ready_delay;
                        }
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
}

/// A pod template running `image`.
pub fn pod_template(image: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"labels": {labels::APP: labels::APP_SPARK}},
        "spec": {"containers": [{"name": "spark", "image": image}]}
    })
}

fn set_template(d: &mut DeploymentObs, track: &str, template: &serde_json::Value) {
    let mut t = release_template(template);
    d.template_hash = Some(template_hash(&t));
    d.template = Some(t.clone());
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(|l| l.as_object_mut())
    {
        l.insert(labels::DEPLOYMENT.into(), track.into());
    }
    d.template_labels = labels_of(track);
}

/// A healthy canary sample.
pub fn healthy() -> AnalysisSample {
    AnalysisSample::Data {
        canary: TrackMetrics {
            requests: Some(500.0),
            error_rate: Some(0.001),
            latency_p99: Some(0.05),
        },
        stable: None,
    }
}

/// A sample with the canary erroring at `rate`.
pub fn erroring(rate: f64) -> AnalysisSample {
    AnalysisSample::Data {
        canary: TrackMetrics {
            requests: Some(500.0),
            error_rate: Some(rate),
            latency_p99: Some(0.05),
        },
        stable: None,
    }
}

/// Prometheus has no canary series.
pub fn no_data() -> AnalysisSample {
    AnalysisSample::Data {
        canary: TrackMetrics::default(),
        stable: None,
    }
}
