//! What the runtime says about itself: readiness, the health report and its status,
//! the metrics summary, telemetry, and the resident memory of the daemon and its worker.

use super::{metrics, recent, Runtime};
use std::sync::atomic::Ordering;
use veritas_vocab::ipc::*;

impl Runtime {
    pub fn readiness(&self) -> ProbeReport {
        let slot = self.slot.lock().unwrap();
        let draining = self.draining.load(Ordering::SeqCst);
        let ok = slot.life.worker().is_some() && !draining;
        let detail = if draining {
            "shutting down".to_string()
        } else {
            slot.life.describe()
        };
        ProbeReport { ok, detail }
    }

    pub fn health(&self, verbose: bool) -> HealthReport {
        if verbose {
            self.refresh_memory();
        }
        let slot = self.slot.lock().unwrap();
        let life = &slot.life;
        let draining = self.draining.load(Ordering::SeqCst);
        let state = life.model_state();
        let last_error = life.error().or(slot.last_load_error.as_ref()).cloned();
        let mut checks = vec![
            Check {
                name: "model".into(),
                ok: state == ModelState::Ready,
                detail: match (life.model(), state) {
                    (Some(m), ModelState::Ready) => format!("{}@{} ready", m.name, m.version),
                    _ => format!(
                        "state {}{}",
                        state.as_str(),
                        last_error
                            .as_ref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ),
                },
            },
            Check {
                name: "worker".into(),
                ok: life.worker().is_some(),
                detail: match life.worker() {
                    Some(w) => format!("pid {}", w.pid),
                    None if life.is_restarting() => life.describe(),
                    None => "not running".into(),
                },
            },
            Check {
                name: "accepting".into(),
                ok: !draining,
                detail: if draining {
                    "draining for shutdown".into()
                } else {
                    "accepting requests".into()
                },
            },
        ];
        // Best-effort confinement that could not apply every enabled layer still serves,
        // but is not healthy: say which layers are missing and why.
        let missing = missing_layers(life.sandbox());
        let sandbox_degraded = !missing.is_empty();
        if sandbox_degraded {
            checks.push(Check {
                name: "sandbox".into(),
                ok: false,
                detail: format!("running without layers: {}", missing.join("; ")),
            });
        }
        if verbose {
            let used = self.metrics.memory_used.get() as u64;
            let limit = self.metrics.memory_limit.get() as u64;
            checks.push(Check {
                name: "memory".into(),
                ok: limit == 0 || used < limit,
                detail: format!("{used} of {limit} bytes"),
            });
        }
        let only_sandbox = checks.iter().all(|c| c.ok || c.name == "sandbox");
        let status = if checks.iter().all(|c| c.ok) {
            HealthStatus::Healthy
        } else if only_sandbox
            || matches!(
                life,
                super::lifecycle::Lifecycle::Loading { .. }
                    | super::lifecycle::Lifecycle::Restarting { .. }
            )
            || draining
        {
            HealthStatus::Degraded
        } else {
            HealthStatus::Critical
        };
        let inflight = self.inflight.load(Ordering::SeqCst) as u32;
        HealthReport {
            status,
            version: env!("CARGO_PKG_VERSION").to_string(),
            deployment: self.cfg.deployment.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            model_state: state,
            model: life.model().cloned(),
            last_error,
            checks,
            queue: QueueInfo {
                inflight,
                capacity: self.cfg.capacity(),
                parallel: self.cfg.parallel,
            },
            worker: WorkerInfo {
                pid: life.worker().map(|w| w.pid),
                restarts: self.restarts.load(Ordering::SeqCst),
            },
            // The layer-by-layer report is for the verbose answer: a probe's answer stays
            // small (the report is most of its bytes and of its cost), and its `sandbox`
            // check still names any missing layer.
            sandbox: if verbose {
                life.sandbox().cloned()
            } else {
                None
            },
        }
    }

    pub fn metrics_summary(&self) -> MetricsSummary {
        self.refresh_memory();
        let ok = self
            .metrics
            .requests(veritas_vocab::metrics::STATUS_SUCCESS);
        let err = self.metrics.requests(veritas_vocab::metrics::STATUS_ERROR);
        let h = self.metrics.duration_histogram();
        let (prompt_tokens, generated_tokens) = self.metrics.tokens();
        let inflight = self.inflight.load(Ordering::SeqCst);
        let (requests, waited_for_slot) = self.recent.counts();
        MetricsSummary {
            deployment: self.cfg.deployment.clone(),
            requests_success: ok,
            requests_error: err,
            error_rate: if ok + err == 0 {
                0.0
            } else {
                err as f64 / (ok + err) as f64
            },
            latency_p50_ms: metrics::histogram_quantile(&h, 0.5).map(|s| s * 1e3),
            latency_p99_ms: metrics::histogram_quantile(&h, 0.99).map(|s| s * 1e3),
            prompt_tokens,
            generated_tokens,
            inflight: inflight as u32,
            memory_used_bytes: self.metrics.memory_used.get() as u64,
            memory_limit_bytes: self.metrics.memory_limit.get() as u64,
            errors_by_code: self.metrics.errors_by_code(),
            slots: self.cfg.parallel,
            queued: inflight.saturating_sub(self.cfg.parallel as u64) as u32,
            recent: RecentLoad {
                window_seconds: recent::WINDOW.as_secs() as u32,
                requests,
                waited_for_slot,
            },
        }
    }

    pub fn telemetry(&self) -> TelemetryStatus {
        TelemetryStatus {
            metrics_enabled: self.cfg.metrics_addr.is_some(),
            metrics_address: self.cfg.metrics_addr.clone(),
            http_address: self.cfg.http_addr.clone(),
            socket: self.cfg.socket.display().to_string(),
            log_format: self.cfg.log_format.clone(),
            series: self.metrics.series(),
        }
    }

    /// Resident memory of the daemon plus its worker, in bytes.
    pub fn resident_bytes(&self) -> u64 {
        let worker_pid = self.slot.lock().unwrap().life.worker().map(|w| w.pid);
        rss_bytes("self") + worker_pid.map(|p| rss_bytes(&p.to_string())).unwrap_or(0)
    }

    /// Updates the memory gauges: what is used, and the limit in force now.
    pub fn refresh_memory(&self) {
        self.metrics.memory_used.set(self.resident_bytes() as i64);
        self.metrics
            .memory_limit
            .set(self.cfg.memory_limit() as i64);
    }
}

fn rss_bytes(pid: &str) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as u64,
        _ => 4096,
    };
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page)
        .unwrap_or(0)
}

/// Enabled sandbox layers the worker reported as unavailable, each with its reason.
fn missing_layers(report: Option<&serde_json::Value>) -> Vec<String> {
    let Some(layers) = report.and_then(|r| r["layers"].as_array()) else {
        return Vec::new();
    };
    layers
        .iter()
        .filter(|l| l["state"] == "unavailable")
        .map(|l| {
            format!(
                "{} ({})",
                l["layer"].as_str().unwrap_or("?"),
                l["reason"].as_str().unwrap_or("no reason given")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unavailable_layers_are_named() {
        let report = serde_json::json!({"mode": "best-effort", "layers": [
            {"layer": "userns", "state": "unavailable", "reason": "EPERM"},
            {"layer": "seccomp", "state": "active"},
            {"layer": "netns", "state": "disabled"},
        ]});
        assert_eq!(super::missing_layers(Some(&report)), vec!["userns (EPERM)"]);
        assert!(super::missing_layers(None).is_empty());
    }
}
