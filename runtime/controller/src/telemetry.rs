//! The controller's own Prometheus metrics, failures labelled by error variant
//! (controller-rs `metrics.rs`).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use veritas_crds::Phase;
use veritas_vocab::metrics as m;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub failures: IntCounterVec,
    pub duration: HistogramVec,
    pub analyses: IntCounterVec,
    pub weight: IntGaugeVec,
    pub leader: IntGauge,
    pub switches: IntCounterVec,
    pub switch_duration: HistogramVec,
    pub phase: IntGaugeVec,
    pub prometheus_errors: IntCounterVec,
    /// Whether the watches keep working (`/healthz`).
    pub watch: WatchHealth,
}

/// How the controller's watches are doing: failing since when, and why. A watch that keeps
/// failing (API server unreachable, RBAC revoked) leaves the controller deciding nothing while
/// it looks alive; `/healthz` says so, and the kubelet restarts it.
#[derive(Clone, Default)]
pub struct WatchHealth(std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>>);

impl WatchHealth {
    /// How long a watch may fail before the controller counts as unhealthy.
    pub const GRACE: std::time::Duration = std::time::Duration::from_secs(60);

    /// A watch (or the reconcile it fed) worked.
    pub fn working(&self) {
        *self.0.lock().expect("not poisoned") = None;
    }

    /// A watch failed; the first failure of a run starts the clock.
    pub fn failed(&self, at: std::time::Instant, why: String) {
        let mut state = self.0.lock().expect("not poisoned");
        match state.as_mut() {
            Some((_, last)) => *last = why,
            None => *state = Some((at, why)),
        }
    }

    /// One item of a controller's stream: a failing watch is the controller's health, a failing
    /// reconcile is the object's.
    pub fn record<T, R, Q>(&self, res: &Result<T, kube::runtime::controller::Error<R, Q>>)
    where
        R: std::error::Error + 'static,
        Q: std::error::Error + 'static,
    {
        match res {
            Err(kube::runtime::controller::Error::QueueError(e)) => {
                self.failed(std::time::Instant::now(), e.to_string())
            }
            _ => self.working(),
        }
    }

    /// `Err(why)` when the watches have failed without a break for longer than `grace`.
    pub fn check(&self, now: std::time::Instant, grace: std::time::Duration) -> Result<(), String> {
        match self.0.lock().expect("not poisoned").as_ref() {
            Some((since, why)) if now.duration_since(*since) > grace => Err(format!(
                "watches failing for {}s: {why}",
                now.duration_since(*since).as_secs()
            )),
            _ => Ok(()),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                m::CONTROLLER_RECONCILE_TOTAL,
                "Reconcile passes by outcome.",
            ),
            &["result"],
        )
        .expect("valid");
        let failures = IntCounterVec::new(
            Opts::new(
                m::CONTROLLER_RECONCILE_ERRORS_TOTAL,
                "Failed reconcile passes by error kind.",
            ),
            &[m::LABEL_ERROR],
        )
        .expect("valid");
        let duration = HistogramVec::new(
            HistogramOpts::new(m::CONTROLLER_RECONCILE_DURATION, "Reconcile pass duration.")
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            &[],
        )
        .expect("valid");
        let analyses = IntCounterVec::new(
            Opts::new(
                m::CONTROLLER_ANALYSIS_TOTAL,
                "Canary analyses by verdict and reason.",
            ),
            &[m::LABEL_VERDICT, m::LABEL_REASON],
        )
        .expect("valid");
        let weight = IntGaugeVec::new(
            Opts::new(
                m::CONTROLLER_CANARY_WEIGHT,
                "Canary weight the routing achieves (percent).",
            ),
            &[m::LABEL_NAMESPACE, m::LABEL_CANARY],
        )
        .expect("valid");
        let leader = IntGauge::new(
            m::CONTROLLER_LEADER,
            "1 while this replica holds the leader Lease.",
        )
        .expect("valid");
        let switches = IntCounterVec::new(
            Opts::new(
                m::CONTROLLER_SWITCHES_TOTAL,
                "Blue-green switches and rollbacks that ended, by kind, outcome and reason.",
            ),
            &[m::LABEL_KIND, m::LABEL_OUTCOME, m::LABEL_REASON],
        )
        .expect("valid");
        let switch_duration = HistogramVec::new(
            HistogramOpts::new(
                m::CONTROLLER_SWITCH_DURATION,
                "Seconds from the start of a blue-green move to traffic on its target.",
            )
            .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]),
            &[m::LABEL_KIND],
        )
        .expect("valid");
        let phase = IntGaugeVec::new(
            Opts::new(
                m::CONTROLLER_CANARY_PHASE,
                "1 for the phase each canary is in, 0 for the others.",
            ),
            &[m::LABEL_NAMESPACE, m::LABEL_CANARY, m::LABEL_PHASE],
        )
        .expect("valid");
        let prometheus_errors = IntCounterVec::new(
            Opts::new(
                m::CONTROLLER_PROMETHEUS_ERRORS_TOTAL,
                "Analyses that could not ask Prometheus (unreachable, refused, timed out).",
            ),
            &[m::LABEL_NAMESPACE, m::LABEL_CANARY],
        )
        .expect("valid");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(analyses.clone()),
            Box::new(weight.clone()),
            Box::new(leader.clone()),
            Box::new(switches.clone()),
            Box::new(switch_duration.clone()),
            Box::new(phase.clone()),
            Box::new(prometheus_errors.clone()),
        ] {
            registry.register(c).expect("unique names");
        }
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            analyses,
            weight,
            leader,
            switches,
            switch_duration,
            phase,
            prometheus_errors,
            watch: WatchHealth::default(),
        }
    }
}

impl Metrics {
    /// One reconcile pass (canary or environment): its duration and outcome.
    pub fn reconciled<T, E>(&self, started: std::time::Instant, res: &Result<T, E>) {
        self.duration
            .with_label_values(&[] as &[&str])
            .observe(started.elapsed().as_secs_f64());
        self.reconciles
            .with_label_values(&[if res.is_ok() { "ok" } else { "error" }])
            .inc();
    }

    /// A canary's phase now: its phase's series 1, every other phase's 0.
    pub fn set_phase(&self, ns: &str, canary: &str, phase: Phase) {
        for p in Phase::ALL {
            self.phase
                .with_label_values(&[ns, canary, p.as_str()])
                .set(i64::from(*p == phase));
        }
    }

    /// A deleted canary's series go with it (a gauge left behind would keep alerting).
    pub fn forget(&self, ns: &str, canary: &str) {
        let _ = self.weight.remove_label_values(&[ns, canary]);
        let _ = self.prometheus_errors.remove_label_values(&[ns, canary]);
        for p in Phase::ALL {
            let _ = self.phase.remove_label_values(&[ns, canary, p.as_str()]);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let enc = prometheus::TextEncoder::new();
        enc.encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_phase_gauge_has_one_phase_set_and_a_deleted_canary_leaves_no_series() {
        let m = Metrics::default();
        m.set_phase("ns", "c", Phase::Progressing);
        m.set_phase("ns", "c", Phase::Succeeded);
        m.weight.with_label_values(&["ns", "c"]).set(100);
        m.prometheus_errors.with_label_values(&["ns", "c"]).inc();
        let text = m.render();
        assert!(
            text.contains(
                r#"veritas_controller_canary_phase{canary="c",namespace="ns",phase="Succeeded"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"veritas_controller_canary_phase{canary="c",namespace="ns",phase="Progressing"} 0"#),
            "{text}"
        );
        assert_eq!(
            text.matches("veritas_controller_canary_phase{").count(),
            Phase::ALL.len()
        );
        m.forget("ns", "c");
        let text = m.render();
        assert!(!text.contains(r#"canary="c""#), "{text}");
    }

    #[test]
    fn watch_health_fails_only_after_the_grace_and_recovers_on_the_next_success() {
        let h = WatchHealth::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(60);
        assert!(h.check(t0, grace).is_ok());
        h.failed(t0, "connection refused".into());
        h.failed(t0 + Duration::from_secs(30), "403 forbidden".into());
        assert!(h.check(t0 + Duration::from_secs(59), grace).is_ok());
        let why = h.check(t0 + Duration::from_secs(61), grace).unwrap_err();
        assert!(
            why.contains("61s") && why.contains("403 forbidden"),
            "{why}"
        );
        h.working();
        assert!(h.check(t0 + Duration::from_secs(120), grace).is_ok());
    }
}
