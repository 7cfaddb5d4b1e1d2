//! Bounded traffic to a Service from inside the cluster: a one-shot busybox Pod that sends a
//! fixed number of generation requests at a fixed pace and prints its counts. Used by the
//! canary tests on kind and by the harness's traffic step, so both count requests the same way.
//!
//! busybox (`docker.io/library/busybox:1.35`, built offline by `ci/kind/build-extra-images.sh`)
//! has `wget`; its `-T` flag is broken (segfaults), so each request is bounded with `timeout`.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, LogParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use veritas_vocab::labels;

/// What to send.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficSpec {
    /// Pod name (unique per run).
    pub name: String,
    /// Service to send to, e.g. `veritas-spark`.
    pub service: String,
    pub port: u16,
    pub requests: u32,
    /// Pause between requests, milliseconds.
    pub interval_ms: u32,
    /// Seconds one request may take.
    pub request_timeout_s: u32,
    /// Body of `POST /v1/generate`.
    pub body: String,
    pub image: String,
}

impl TrafficSpec {
    pub fn new(name: &str, requests: u32) -> TrafficSpec {
        TrafficSpec {
            name: name.into(),
            service: labels::SERVICE_SPARK.into(),
            port: labels::DEFAULT_HTTP_PORT,
            requests,
            interval_ms: 100,
            request_timeout_s: 10,
            body: r#"{"prompt":"Hello","max_tokens":4}"#.into(),
            image: "docker.io/library/busybox:1.35".into(),
        }
    }

    /// The shell loop the Pod runs; prints one final line `ok=N fail=M`.
    pub fn script(&self) -> String {
        let usleep = self.interval_ms as u64 * 1000;
        let body = self.body.replace('\'', r"'\''");
        format!(
            "ok=0; fail=0; i=0; while [ $i -lt {n} ]; do \
             if timeout {t} wget -q -O /dev/null --header 'Content-Type: application/json' --post-data '{body}' http://{svc}:{port}/v1/generate; \
             then ok=$((ok+1)); else fail=$((fail+1)); fi; i=$((i+1)); usleep {usleep}; done; echo \"ok=$ok fail=$fail\"",
            n = self.requests,
            t = self.request_timeout_s,
            svc = self.service,
            port = self.port,
        )
    }

    pub fn pod(&self) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.name, "labels": {"app": "veritas-traffic"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "traffic", "image": self.image, "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", self.script()]}]
            }
        }))
        .expect("valid pod")
    }

    /// Upper bound of the run's duration (for the caller's deadline).
    pub fn max_duration(&self) -> Duration {
        Duration::from_millis(
            self.requests as u64 * (self.interval_ms as u64 + self.request_timeout_s as u64 * 1000),
        )
    }
}

/// Counts a run reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrafficResult {
    pub ok: u32,
    pub failed: u32,
}

/// Parses the Pod's last `ok=N fail=M` line.
pub fn parse_result(log: &str) -> Option<TrafficResult> {
    let line = log.lines().rev().find(|l| l.starts_with("ok="))?;
    let mut r = TrafficResult::default();
    for part in line.split_whitespace() {
        match part.split_once('=')? {
            ("ok", v) => r.ok = v.parse().ok()?,
            ("fail", v) => r.failed = v.parse().ok()?,
            _ => return None,
        }
    }
    Some(r)
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrafficError {
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    #[error("traffic pod {0} did not finish within {1:?} (last phase {2})")]
    Timeout(String, Duration, String),
    #[error("traffic pod {0} printed no result: {1}")]
    NoResult(String, String),
}

/// Runs the traffic Pod in `namespace`, waits for it (polling with a deadline), returns the
/// counts and deletes the Pod.
pub async fn run(
    client: &Client,
    namespace: &str,
    spec: &TrafficSpec,
) -> Result<TrafficResult, TrafficError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &spec.pod()).await?;
    // Pod start (image present locally) plus the bounded run.
    let limit = spec.max_duration() + Duration::from_secs(120);
    let deadline = Instant::now() + limit;
    let phase = loop {
        let p = api.get(&spec.name).await?;
        let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            break phase;
        }
        if Instant::now() >= deadline {
            let _ = api.delete(&spec.name, &DeleteParams::default()).await;
            return Err(TrafficError::Timeout(spec.name.clone(), limit, phase));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let log = api.logs(&spec.name, &LogParams::default()).await?;
    let _ = api.delete(&spec.name, &DeleteParams::default()).await;
    parse_result(&log).ok_or_else(|| {
        TrafficError::NoResult(
            spec.name.clone(),
            format!(
                "phase {phase}, log: {}",
                log.chars()
                    .rev()
                    .take(300)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect::<String>()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_bounded_and_counts() {
        let s = TrafficSpec::new("t1", 50);
        let sc = s.script();
        assert!(sc.contains("while [ $i -lt 50 ]"));
        assert!(
            sc.contains("timeout 10 wget"),
            "busybox wget -T is broken: bound with timeout"
        );
        assert!(sc.contains("http://veritas-spark:8080/v1/generate"));
        assert_eq!(
            s.pod().spec.unwrap().restart_policy.as_deref(),
            Some("Never")
        );
        assert_eq!(s.max_duration(), Duration::from_millis(50 * 10_100));
    }

    #[test]
    fn parses_the_last_result_line() {
        assert_eq!(
            parse_result("noise\nok=47 fail=3\n"),
            Some(TrafficResult { ok: 47, failed: 3 })
        );
        assert_eq!(parse_result("Connecting...\n"), None);
    }

    #[test]
    fn quotes_in_the_body_survive_the_shell() {
        let mut s = TrafficSpec::new("t", 1);
        s.body = r#"{"prompt":"it's"}"#.into();
        assert!(s.script().contains(r#"'{"prompt":"it'\''s"}'"#));
    }
}
