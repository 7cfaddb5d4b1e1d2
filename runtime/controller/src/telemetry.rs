//! The controller's own Prometheus metrics, failures labelled by error variant
//! (controller-rs `metrics.rs`).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
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
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(analyses.clone()),
            Box::new(weight.clone()),
            Box::new(leader.clone()),
            Box::new(switches.clone()),
            Box::new(switch_duration.clone()),
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

    pub fn render(&self) -> String {
        let mut out = String::new();
        let enc = prometheus::TextEncoder::new();
        enc.encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding");
        out
    }
}
