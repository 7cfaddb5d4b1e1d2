//! The runtime's Prometheus metrics, named by `veritas_vocab::metrics`.

use prometheus::core::Metric as _;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use veritas_vocab::ipc::ModelState;
use veritas_vocab::metrics as m;
use veritas_vocab::ErrorCode;

pub struct Metrics {
    registry: Registry,
    deployment: String,
    requests: IntCounterVec,
    duration: HistogramVec,
    prompt_tokens: IntCounterVec,
    generated_tokens: IntCounterVec,
    pub memory_used: IntGauge,
    pub memory_limit: IntGauge,
    pub queue_depth: IntGauge,
    pub inflight: IntGauge,
    model_state: IntGaugeVec,
    errors: IntCounterVec,
    pub worker_restarts: IntCounter,
    sandbox_layers: IntGaugeVec,
    sandbox_violations: IntCounterVec,
}

impl Metrics {
    pub fn new(deployment: &str) -> Metrics {
        let registry = Registry::new();
        let dep = [m::LABEL_DEPLOYMENT];
        let requests = IntCounterVec::new(
            Opts::new(m::REQUESTS_TOTAL, "Inference requests by outcome."),
            &[m::LABEL_STATUS, m::LABEL_DEPLOYMENT],
        )
        .unwrap();
        let duration = HistogramVec::new(
            HistogramOpts::new(
                m::REQUEST_DURATION,
                "Inference request duration in seconds.",
            )
            .buckets(m::DURATION_BUCKETS.to_vec()),
            &dep,
        )
        .unwrap();
        let prompt_tokens = IntCounterVec::new(
            Opts::new(m::PROMPT_TOKENS_TOTAL, "Prompt tokens processed."),
            &dep,
        )
        .unwrap();
        let generated_tokens = IntCounterVec::new(
            Opts::new(m::GENERATED_TOKENS_TOTAL, "Tokens generated."),
            &dep,
        )
        .unwrap();
        let memory_used = IntGauge::new(
            m::MEMORY_USED_BYTES,
            "Resident memory of the daemon and its worker.",
        )
        .unwrap();
        let memory_limit =
            IntGauge::new(m::MEMORY_LIMIT_BYTES, "Memory the runtime may use.").unwrap();
        let queue_depth = IntGauge::new(
            m::QUEUE_DEPTH,
            "Admitted requests waiting for a decode slot.",
        )
        .unwrap();
        let inflight =
            IntGauge::new(m::INFLIGHT_REQUESTS, "Admitted requests not yet answered.").unwrap();
        let model_state = IntGaugeVec::new(
            Opts::new(m::MODEL_STATE, "1 for the loaded model's current state."),
            &[m::LABEL_MODEL, m::LABEL_STATE],
        )
        .unwrap();
        let errors = IntCounterVec::new(
            Opts::new(m::ERRORS_TOTAL, "Errors by guide error code."),
            &[m::LABEL_CODE],
        )
        .unwrap();
        let worker_restarts =
            IntCounter::new(m::WORKER_RESTARTS_TOTAL, "Inference worker restarts.").unwrap();
        let sandbox_layers = IntGaugeVec::new(
            Opts::new(
                m::SANDBOX_LAYER_ACTIVE,
                "1 for each sandbox layer active in the inference worker.",
            ),
            &[m::LABEL_LAYER],
        )
        .unwrap();
        let sandbox_violations = IntCounterVec::new(
            Opts::new(
                m::SANDBOX_VIOLATIONS_TOTAL,
                "Syscalls the sandbox stopped, by syscall.",
            ),
            &[m::LABEL_SYSCALL],
        )
        .unwrap();
        registry.register(Box::new(sandbox_layers.clone())).unwrap();
        registry
            .register(Box::new(sandbox_violations.clone()))
            .unwrap();
        for c in [&requests, &prompt_tokens, &generated_tokens, &errors] {
            registry.register(Box::new(c.clone())).unwrap();
        }
        registry.register(Box::new(duration.clone())).unwrap();
        registry.register(Box::new(model_state.clone())).unwrap();
        for g in [&memory_used, &memory_limit, &queue_depth, &inflight] {
            registry.register(Box::new(g.clone())).unwrap();
        }
        registry
            .register(Box::new(worker_restarts.clone()))
            .unwrap();
        // Zero-valued series exist from the start so rate() and absent() behave in queries.
        for status in [m::STATUS_SUCCESS, m::STATUS_ERROR, m::STATUS_CANCELLED] {
            requests.with_label_values(&[status, deployment]);
        }
        duration.with_label_values(&[deployment]);
        prompt_tokens.with_label_values(&[deployment]);
        generated_tokens.with_label_values(&[deployment]);
        Metrics {
            registry,
            deployment: deployment.to_string(),
            requests,
            duration,
            prompt_tokens,
            generated_tokens,
            memory_used,
            memory_limit,
            queue_depth,
            inflight,
            model_state,
            errors,
            worker_restarts,
            sandbox_layers,
            sandbox_violations,
        }
    }

    /// Mirrors the worker's sandbox report: 1 for active layers, 0 for the others.
    pub fn set_sandbox(&self, report: Option<&serde_json::Value>) {
        self.sandbox_layers.reset();
        let layers = report
            .and_then(|r| r["layers"].as_array().cloned())
            .unwrap_or_default();
        for l in layers {
            if let Some(name) = l["layer"].as_str() {
                self.sandbox_layers
                    .with_label_values(&[name])
                    .set(i64::from(l["state"] == "active"));
            }
        }
    }

    pub fn count_violation(&self, syscall: &str) {
        self.sandbox_violations.with_label_values(&[syscall]).inc();
    }

    pub fn record_success(&self, seconds: f64, prompt_tokens: u32, generated_tokens: u32) {
        self.requests
            .with_label_values(&[m::STATUS_SUCCESS, &self.deployment])
            .inc();
        self.duration
            .with_label_values(&[&self.deployment])
            .observe(seconds);
        self.prompt_tokens
            .with_label_values(&[&self.deployment])
            .inc_by(prompt_tokens as u64);
        self.generated_tokens
            .with_label_values(&[&self.deployment])
            .inc_by(generated_tokens as u64);
    }

    pub fn record_failure(&self, seconds: f64, code: ErrorCode) {
        self.requests
            .with_label_values(&[m::STATUS_ERROR, &self.deployment])
            .inc();
        self.duration
            .with_label_values(&[&self.deployment])
            .observe(seconds);
        self.count_error(code);
    }

    /// A request abandoned by its caller before it was answered.
    pub fn record_cancelled(&self, seconds: f64) {
        self.requests
            .with_label_values(&[m::STATUS_CANCELLED, &self.deployment])
            .inc();
        self.duration
            .with_label_values(&[&self.deployment])
            .observe(seconds);
    }

    /// Counts an error that is not an inference request (a failed load, a bad frame...).
    pub fn count_error(&self, code: ErrorCode) {
        self.errors.with_label_values(&[code.code()]).inc();
    }

    pub fn set_model_state(&self, model: &str, state: ModelState) {
        self.model_state.reset();
        self.model_state
            .with_label_values(&[model, state.as_str()])
            .set(1);
    }

    pub fn requests(&self, status: &str) -> u64 {
        self.requests
            .with_label_values(&[status, &self.deployment])
            .get()
    }

    pub fn tokens(&self) -> (u64, u64) {
        (
            self.prompt_tokens
                .with_label_values(&[&self.deployment])
                .get(),
            self.generated_tokens
                .with_label_values(&[&self.deployment])
                .get(),
        )
    }

    pub fn duration_histogram(&self) -> Histogram {
        self.duration.with_label_values(&[&self.deployment])
    }

    pub fn errors_by_code(&self) -> Vec<(String, u64)> {
        ErrorCode::ALL
            .iter()
            .filter_map(|c| {
                let v = self
                    .errors
                    .get_metric_with_label_values(&[c.code()])
                    .ok()?
                    .get();
                (v > 0).then(|| (c.code().to_string(), v))
            })
            .collect()
    }

    pub fn series(&self) -> u32 {
        self.registry
            .gather()
            .iter()
            .map(|f| f.get_metric().len() as u32)
            .sum()
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("metrics are UTF-8")
    }
}

/// Quantile `q` of a histogram by linear interpolation inside the bucket, as PromQL's
/// `histogram_quantile` does. `None` without observations.
pub fn histogram_quantile(h: &Histogram, q: f64) -> Option<f64> {
    let proto = h.metric();
    let hist = proto.get_histogram();
    let total = hist.get_sample_count();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut prev_bound = 0.0;
    let mut prev_count = 0u64;
    for b in hist.get_bucket() {
        let count = b.cumulative_count();
        if count as f64 >= rank {
            let in_bucket = (count - prev_count) as f64;
            let frac = if in_bucket == 0.0 {
                0.0
            } else {
                (rank - prev_count as f64) / in_bucket
            };
            return Some(prev_bound + (b.upper_bound() - prev_bound) * frac);
        }
        prev_bound = b.upper_bound();
        prev_count = count;
    }
    Some(prev_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets_like_promql() {
        let m = Metrics::new("canary");
        let h = m.duration_histogram();
        assert_eq!(histogram_quantile(&h, 0.5), None);
        // 10 observations in (0.005, 0.01], 10 in (0.05, 0.1].
        for _ in 0..10 {
            h.observe(0.007);
            h.observe(0.07);
        }
        let p50 = histogram_quantile(&h, 0.5).unwrap();
        assert!((p50 - 0.01).abs() < 1e-9, "{p50}");
        let p99 = histogram_quantile(&h, 0.99).unwrap();
        assert!(p99 > 0.05 && p99 <= 0.1, "{p99}");
    }

    #[test]
    fn exposition_uses_the_guide_names_and_labels() {
        let m = Metrics::new("canary");
        m.record_success(0.01, 3, 4);
        m.record_failure(0.02, ErrorCode::ContextOverflow);
        let text = m.render();
        assert!(
            text.contains(
                "veritas_spark_requests_total{deployment=\"canary\",status=\"success\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("veritas_spark_requests_total{deployment=\"canary\",status=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "veritas_spark_request_duration_bucket{deployment=\"canary\",le=\"0.025\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("veritas_spark_errors_total{code=\"E4003\"} 1"),
            "{text}"
        );
        assert_eq!(m.errors_by_code(), vec![("E4003".to_string(), 1)]);
    }
}
