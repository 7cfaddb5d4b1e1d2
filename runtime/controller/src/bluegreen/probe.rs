//! HTTP GETs to a runtime pod: the switch's health probe (and the model the pod reports),
//! and, for `veritas-spark deployment status`, `/health`, `/ready` and `/metrics`.
//!
//! Two ways to reach a pod: its IP directly (the controller, in the cluster), or the API
//! server's pod proxy (the CLI, from outside; `pods/proxy` permission).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use veritas_crds::ModelIdentity;

use super::decide::{PodProbe, ProbeOutcome};

/// A ready pod to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTarget {
    pub namespace: String,
    pub name: String,
    /// `status.podIP`; `None` until the pod has one.
    pub ip: Option<String>,
}

/// What a GET got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The pod answered with this HTTP status and body.
    Http { status: u16, body: Bytes },
    /// No answer in time.
    Timeout,
    /// No connection (refused, unreachable, no IP), with the cause.
    Unreachable(String),
}

/// How pods are reached.
#[derive(Clone)]
pub enum PodHttp {
    // Boxed: the client is ten times the size of the other variant.
    Direct(Box<HyperClient<HttpConnector, Full<Bytes>>>),
    ApiProxy(kube::Client),
}

impl std::fmt::Debug for PodHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PodHttp::Direct(_) => f.write_str("direct"),
            PodHttp::ApiProxy(_) => f.write_str("api-proxy"),
        }
    }
}

impl PodHttp {
    pub fn direct() -> PodHttp {
        PodHttp::Direct(Box::new(
            HyperClient::builder(TokioExecutor::new()).build_http(),
        ))
    }

    /// `GET http://POD:port/path`, bounded by `timeout`.
    pub async fn get(&self, pod: &PodTarget, port: i32, path: &str, timeout: Duration) -> Answer {
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let fut = async {
            match self {
                PodHttp::Direct(http) => {
                    let Some(ip) = &pod.ip else {
                        return Answer::Unreachable("pod has no IP yet".into());
                    };
                    let uri = match pod_uri(ip, port, &path) {
                        Ok(u) => u,
                        Err(e) => return Answer::Unreachable(format!("bad address: {e}")),
                    };
                    match http.get(uri).await {
                        Err(e) => Answer::Unreachable(e.to_string()),
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            match read_bounded(resp.into_body()).await {
                                Ok(body) => Answer::Http { status, body },
                                Err(e) => Answer::Unreachable(e),
                            }
                        }
                    }
                }
                PodHttp::ApiProxy(client) => {
                    let uri = format!(
                        "/api/v1/namespaces/{}/pods/{}:{port}/proxy{path}",
                        pod.namespace, pod.name
                    );
                    let req = match http::Request::get(uri).body(Vec::new()) {
                        Ok(r) => r,
                        Err(e) => return Answer::Unreachable(e.to_string()),
                    };
                    match client.send(req.map(kube::client::Body::from)).await {
                        Err(e) => Answer::Unreachable(e.to_string()),
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let body = match read_bounded(resp.into_body()).await {
                                Ok(b) => b,
                                Err(e) => return Answer::Unreachable(e),
                            };
                            // The API server answers 502/503 itself when it cannot reach the
                            // pod; its answers are Status objects, the runtime's are not.
                            if (status == 502 || status == 503) && is_api_status(&body) {
                                return Answer::Unreachable(summary(&body));
                            }
                            Answer::Http { status, body }
                        }
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(a) => a,
            Err(_) => Answer::Timeout,
        }
    }

    /// The switch's health probe of one pod: healthy on a 2xx, with the model its body names.
    pub async fn probe(
        &self,
        pod: &PodTarget,
        port: i32,
        path: &str,
        timeout: Duration,
    ) -> PodProbe {
        let answer = self.get(pod, port, path, timeout).await;
        probe_of(&pod.name, answer, timeout)
    }
}

/// The most of a probe's body read: a health answer is a few hundred bytes, and a pod must not
/// make the controller buffer without bound.
pub const MAX_PROBE_BODY: usize = 64 * 1024;

/// `http://IP:PORT/path`, with an IPv6 pod address in brackets (`http://[fd00::5]:8080/`).
pub fn pod_uri(ip: &str, port: i32, path: &str) -> Result<http::Uri, String> {
    let addr: std::net::IpAddr = ip
        .parse()
        .map_err(|e| format!("pod IP {ip:?} is not an address: {e}"))?;
    let port = u16::try_from(port).map_err(|_| format!("port {port} out of range"))?;
    format!("http://{}{path}", std::net::SocketAddr::new(addr, port))
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())
}

async fn read_bounded<B>(body: B) -> Result<Bytes, String>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match http_body_util::Limited::new(body, MAX_PROBE_BODY)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(format!(
            "probe body larger than {MAX_PROBE_BODY} bytes: not read further"
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn is_api_status(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .is_some_and(|v| v["kind"] == "Status")
}

/// A short account of a body: the runtime's health fields when it is its JSON, else the
/// first line.
pub fn summary(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let mut parts = Vec::new();
        for k in ["status", "model_state", "detail", "message"] {
            if let Some(s) = v[k].as_str() {
                parts.push(format!("{k}={s}"));
            }
        }
        if let Some(code) = v["last_error"]["code"].as_str() {
            parts.push(format!(
                "last_error={code} {}",
                v["last_error"]["detail"].as_str().unwrap_or("")
            ));
        }
        if !parts.is_empty() {
            return parts.join(" ");
        }
    }
    String::from_utf8_lossy(body)
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(160)
        .collect()
}

/// The model a runtime's `/health` JSON names (`model: {name, version, sha256}`).
pub fn model_of(body: &[u8]) -> Option<ModelIdentity> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let m = &v["model"];
    Some(ModelIdentity {
        name: m["name"].as_str()?.to_string(),
        version: m["version"].as_str()?.to_string(),
        sha256: m["sha256"].as_str()?.to_string(),
    })
}

/// Turns an answer into a probe result.
pub fn probe_of(pod: &str, answer: Answer, timeout: Duration) -> PodProbe {
    match answer {
        Answer::Http { status, body } if (200..300).contains(&status) => PodProbe {
            pod: pod.to_string(),
            outcome: ProbeOutcome::Healthy,
            model: model_of(&body),
        },
        Answer::Http { status, body } => PodProbe {
            pod: pod.to_string(),
            outcome: ProbeOutcome::Unhealthy(format!("HTTP {status} {}", summary(&body))),
            model: model_of(&body),
        },
        Answer::Timeout => PodProbe {
            pod: pod.to_string(),
            outcome: ProbeOutcome::NoAnswer(format!("no answer within {}s", timeout.as_secs())),
            model: None,
        },
        Answer::Unreachable(why) => PodProbe {
            pod: pod.to_string(),
            outcome: ProbeOutcome::NoAnswer(why),
            model: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_uri_brackets_ipv6_and_refuses_what_is_not_an_address() {
        assert_eq!(
            pod_uri("10.244.0.7", 8080, "/health").unwrap().to_string(),
            "http://10.244.0.7:8080/health"
        );
        assert_eq!(
            pod_uri("fd00:10:244::7", 8080, "/health")
                .unwrap()
                .to_string(),
            "http://[fd00:10:244::7]:8080/health"
        );
        assert!(pod_uri("pod-7", 8080, "/").is_err());
        assert!(pod_uri("10.0.0.1", 70000, "/").is_err());
    }

    /// A real server on IPv6 loopback: the probe reaches it, and a body past the bound is
    /// refused instead of buffered.
    #[tokio::test]
    async fn probes_reach_an_ipv6_pod_and_bound_the_body() {
        let app = axum::Router::new()
            .route(
                "/health",
                axum::routing::get(|| async { r#"{"status":"healthy"}"# }),
            )
            .route(
                "/huge",
                axum::routing::get(|| async { "x".repeat(MAX_PROBE_BODY + 1) }),
            );
        let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let port = i32::from(listener.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let pod = PodTarget {
            namespace: "ns".into(),
            name: "blue-0".into(),
            ip: Some("::1".into()),
        };
        let http = PodHttp::direct();
        let ok = http
            .get(&pod, port, "/health", Duration::from_secs(5))
            .await;
        assert!(matches!(ok, Answer::Http { status: 200, .. }), "{ok:?}");
        let huge = http.get(&pod, port, "/huge", Duration::from_secs(5)).await;
        match huge {
            Answer::Unreachable(why) => assert!(why.contains("larger than"), "{why}"),
            other => panic!("unbounded body read: {other:?}"),
        }
    }

    #[test]
    fn runtime_health_json_gives_model_and_summary() {
        let body = br#"{"status":"critical","model_state":"failed","model":{"name":"tiny","version":"1.0.0","sha256":"ab12"},"last_error":{"code":"E2001","detail":"sha256 mismatch"}}"#;
        let p = probe_of(
            "p",
            Answer::Http {
                status: 503,
                body: Bytes::from_static(body),
            },
            Duration::from_secs(2),
        );
        assert_eq!(
            p.outcome,
            ProbeOutcome::Unhealthy(
                "HTTP 503 status=critical model_state=failed last_error=E2001 sha256 mismatch"
                    .into()
            )
        );
        assert_eq!(p.model.unwrap().sha256, "ab12");
        let p = probe_of("p", Answer::Timeout, Duration::from_secs(2));
        assert_eq!(
            p.outcome,
            ProbeOutcome::NoAnswer("no answer within 2s".into())
        );
        assert!(model_of(b"not json").is_none());
    }
}
