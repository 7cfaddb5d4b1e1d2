//! Canary analysis against Prometheus's HTTP API, with the guide's PromQL.
//!
//! The queries are the guide's ("Canary error rate comparison", "P99 latency") restricted to
//! the canary's namespace and track, plus a request count for significance. Building the
//! queries and reading the answers are pure functions; [`Prometheus`] only moves bytes,
//! either straight to Prometheus (in the cluster) or through the API server's service proxy
//! (from a laptop or a test, no port-forward needed).

use std::time::Duration;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use veritas_crds::VeritasCanarySpec;
use veritas_vocab::{labels, metrics as m};

use crate::decide::{AnalysisSample, TrackMetrics};

/// Prometheus duration of a window: `5m` when whole minutes (as the guide writes it).
pub fn promql_duration(seconds: i64) -> String {
    let s = seconds.max(1);
    if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// `s` as a literal inside a PromQL regex in a double-quoted string (Deployment names are DNS
/// labels, so only `.` could be special; escaped anyway).
fn regex_literal(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$' => {
                vec!['\\', '\\', c]
            }
            '\\' | '"' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// The three queries of one track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackQueries {
    pub requests: String,
    pub error_rate: String,
    pub latency_p99: String,
}

/// Queries for `track` (`canary` or `stable`) in `namespace` over `window_seconds`: the
/// guide's, with the pods of `deployment` only (its pods are `<deployment>-<hash>-<id>`), so two
/// canaries in one namespace never read each other's series.
pub fn track_queries(
    namespace: &str,
    track: &str,
    deployment: &str,
    window_seconds: i64,
) -> TrackQueries {
    let w = promql_duration(window_seconds);
    let sel = format!(
        "namespace=\"{namespace}\",{}=\"{track}\",pod=~\"{}-[a-z0-9]+-[a-z0-9]+\"",
        m::LABEL_DEPLOYMENT,
        regex_literal(deployment)
    );
    TrackQueries {
        requests: format!("sum(increase({}{{{sel}}}[{w}]))", m::REQUESTS_TOTAL),
        error_rate: format!(
            "sum(rate({r}{{{st}=\"{err}\",{sel}}}[{w}])) /\nsum(rate({r}{{{sel}}}[{w}]))",
            r = m::REQUESTS_TOTAL,
            st = m::LABEL_STATUS,
            err = m::STATUS_ERROR
        ),
        latency_p99: format!(
            "histogram_quantile(0.99, sum(rate({}_bucket{{{sel}}}[{w}])) by (le))",
            m::REQUEST_DURATION
        ),
    }
}

/// An error with its causes (reqwest's own message hides why a connection failed: refused,
/// certificate unknown...).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Errors of a Prometheus query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromError {
    #[error("prometheus request failed: {0}")]
    Transport(String),
    #[error("prometheus answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("prometheus answered with an error: {0}")]
    Api(String),
    #[error("unreadable prometheus answer: {0}")]
    Decode(String),
    #[error("prometheus did not answer within {0:?}")]
    Timeout(Duration),
}

impl PromError {
    /// Stable label for the controller's failure metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PromError::Transport(_) => "transport",
            PromError::Http { .. } => "http",
            PromError::Api(_) => "api",
            PromError::Decode(_) => "decode",
            PromError::Timeout(_) => "timeout",
        }
    }
}

/// Reads one instant-vector answer: `None` when there is no series or the value is not a
/// number (0/0 over an idle window), the sum of the series otherwise.
pub fn parse_scalar(body: &[u8]) -> Result<Option<f64>, PromError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| PromError::Decode(e.to_string()))?;
    if v["status"] != "success" {
        return Err(PromError::Api(format!(
            "{}: {}",
            v["errorType"].as_str().unwrap_or("error"),
            v["error"].as_str().unwrap_or("no message")
        )));
    }
    let data = &v["data"];
    let value_of = |pair: &Value| -> Result<f64, PromError> {
        pair.get(1)
            .and_then(Value::as_str)
            .ok_or_else(|| PromError::Decode(format!("sample without value: {pair}")))?
            .parse::<f64>()
            .map_err(|e| PromError::Decode(e.to_string()))
    };
    let values: Vec<f64> = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .ok_or_else(|| PromError::Decode("vector without result".into()))?
            .iter()
            .map(|s| value_of(&s["value"]))
            .collect::<Result<_, _>>()?,
        Some("scalar") => vec![value_of(&data["result"])?],
        other => {
            return Err(PromError::Decode(format!(
                "unexpected resultType {other:?}"
            )))
        }
    };
    let finite: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    Ok(if finite.is_empty() {
        None
    } else {
        Some(finite.iter().sum())
    })
}

/// How to reach Prometheus.
#[derive(Clone)]
pub enum Prometheus {
    /// `http://prometheus-operated.monitoring:9090`, or `https://...` with the CA bundle and
    /// bearer token of [`PrometheusAuth`] (as Prometheus behind an auth proxy needs).
    Direct {
        base: String,
        http: reqwest::Client,
        /// Read at every query: projected ServiceAccount tokens rotate.
        token_file: Option<PathBuf>,
    },
    /// Through the API server's service proxy:
    /// `/api/v1/namespaces/{ns}/services/{svc}:{port}/proxy/api/v1/query`.
    ApiProxy {
        client: kube::Client,
        namespace: String,
        service: String,
        port: u16,
    },
}

/// How to reach a Prometheus that wants TLS or a token (`--prometheus-ca-file`,
/// `--prometheus-bearer-token-file`).
#[derive(Clone, Debug, Default)]
pub struct PrometheusAuth {
    /// PEM bundle of the CAs that sign Prometheus's certificate, trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// File holding a bearer token sent as `Authorization: Bearer ...`.
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prometheus::Direct { base, .. } => write!(f, "Prometheus({base})"),
            Prometheus::ApiProxy {
                namespace,
                service,
                port,
                ..
            } => write!(f, "Prometheus(api proxy {namespace}/{service}:{port})"),
        }
    }
}

/// Default in-cluster address of the Prometheus that `ci/kind/monitoring.sh` installs.
pub const DEFAULT_PROMETHEUS_NAMESPACE: &str = "monitoring";
pub const DEFAULT_PROMETHEUS_SERVICE: &str = "prometheus-operated";
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9090;

/// The TLS setup of the direct client: the system's roots plus `ca_file`'s, rustls on ring (the
/// provider the kube client already uses).
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot parse is skipped, as curl does.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("prometheus CA file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("prometheus CA file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "prometheus CA file {}: no PEM certificate in it",
                path.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("prometheus CA file {}: {e}", path.display()))?;
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

impl Prometheus {
    /// A direct client for `base` (`http://` or `https://`).
    pub fn direct(base: &str, auth: &PrometheusAuth) -> Result<Prometheus, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("veritas-controller/", env!("CARGO_PKG_VERSION")));
        if auth.ca_file.is_some() && !base.starts_with("https://") {
            return Err(format!(
                "prometheus address {base}: a CA file is given but the address is not https://"
            ));
        }
        // Always ours, so no process-wide rustls provider is needed even for http://.
        builder = builder.tls_backend_preconfigured(tls_config(auth.ca_file.as_deref())?);
        let http = builder
            .build()
            .map_err(|e| format!("prometheus client: {e}"))?;
        Ok(Prometheus::Direct {
            base: base.trim_end_matches('/').to_string(),
            http,
            token_file: auth.token_file.clone(),
        })
    }

    /// Parses `http(s)://host:port` (direct) or `proxy:NAMESPACE/SERVICE:PORT` (API server proxy).
    pub fn from_spec(
        spec: &str,
        client: kube::Client,
        auth: &PrometheusAuth,
    ) -> Result<Prometheus, String> {
        if let Some(rest) = spec.strip_prefix("proxy:") {
            let (ns, svc) = rest.split_once('/').ok_or("proxy:NAMESPACE/SERVICE:PORT")?;
            let (svc, port) = svc.split_once(':').unwrap_or((svc, "9090"));
            let port = port.parse().map_err(|_| format!("bad port in {spec}"))?;
            Ok(Prometheus::ApiProxy {
                client,
                namespace: ns.into(),
                service: svc.into(),
                port,
            })
        } else if spec.starts_with("http://") || spec.starts_with("https://") {
            Prometheus::direct(spec, auth)
        } else {
            Err(format!("prometheus address {spec:?}: want http(s)://HOST:PORT or proxy:NAMESPACE/SERVICE:PORT"))
        }
    }

    /// Runs one instant query.
    pub async fn query(&self, promql: &str, timeout: Duration) -> Result<Option<f64>, PromError> {
        let qs: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", promql)
            .finish();
        let fut = async {
            match self {
                Prometheus::Direct {
                    base,
                    http,
                    token_file,
                } => {
                    let mut req = http.get(format!("{base}/api/v1/query?{qs}"));
                    if let Some(path) = token_file {
                        let token = std::fs::read_to_string(path).map_err(|e| {
                            PromError::Transport(format!(
                                "bearer token file {}: {e}",
                                path.display()
                            ))
                        })?;
                        req = req.bearer_auth(token.trim());
                    }
                    let resp = req
                        .send()
                        .await
                        .map_err(|e| PromError::Transport(error_chain(&e)))?;
                    let status = resp.status().as_u16();
                    let body = resp
                        .bytes()
                        .await
                        .map_err(|e| PromError::Transport(error_chain(&e)))?;
                    // 400/422 carry Prometheus's own error JSON (a bad query), read below.
                    if status != 200 && status != 400 && status != 422 {
                        return Err(PromError::Http {
                            status,
                            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
                        });
                    }
                    parse_scalar(&body)
                }
                Prometheus::ApiProxy {
                    client,
                    namespace,
                    service,
                    port,
                } => {
                    let path = format!("/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/api/v1/query?{qs}");
                    let req = http::Request::get(path)
                        .body(Vec::new())
                        .map_err(|e| PromError::Transport(e.to_string()))?;
                    let text = client
                        .request_text(req)
                        .await
                        .map_err(|e| PromError::Transport(e.to_string()))?;
                    parse_scalar(text.as_bytes())
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| PromError::Timeout(timeout))?
    }

    /// Metrics of one track.
    pub async fn track(
        &self,
        namespace: &str,
        track: &str,
        deployment: &str,
        window_seconds: i64,
        timeout: Duration,
    ) -> Result<TrackMetrics, PromError> {
        let q = track_queries(namespace, track, deployment, window_seconds);
        let (requests, error_rate, latency_p99) = futures::try_join!(
            self.query(&q.requests, timeout),
            self.query(&q.error_rate, timeout),
            self.query(&q.latency_p99, timeout)
        )?;
        Ok(TrackMetrics {
            requests,
            error_rate,
            latency_p99,
        })
    }

    /// One analysis sample for a canary. A failed query is a sample of its own kind (never
    /// a pass): the decision records it as `PrometheusUnreachable`.
    pub async fn sample(
        &self,
        namespace: &str,
        spec: &VeritasCanarySpec,
        timeout: Duration,
    ) -> AnalysisSample {
        let w = spec.analysis.window_seconds;
        let canary = self
            .track(
                namespace,
                labels::DEPLOYMENT_CANARY,
                &spec.canary.deployment,
                w,
                timeout,
            )
            .await;
        let stable = if spec.analysis.compare_with_stable {
            Some(
                self.track(
                    namespace,
                    labels::DEPLOYMENT_STABLE,
                    &spec.stable.deployment,
                    w,
                    timeout,
                )
                .await,
            )
        } else {
            None
        };
        match (canary, stable) {
            (Err(e), _) | (_, Some(Err(e))) => AnalysisSample::Unreachable(e.to_string()),
            (Ok(canary), stable) => AnalysisSample::Data {
                canary,
                stable: stable.map(|s| s.expect("checked")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_the_guides_with_namespace_and_track() {
        let q = track_queries("shop", "canary", "spark-canary", 300);
        let sel = r#"namespace="shop",deployment="canary",pod=~"spark-canary-[a-z0-9]+-[a-z0-9]+""#;
        assert_eq!(
            q.error_rate,
            format!("sum(rate(veritas_spark_requests_total{{status=\"error\",{sel}}}[5m])) /\nsum(rate(veritas_spark_requests_total{{{sel}}}[5m]))")
        );
        assert_eq!(
            q.latency_p99,
            format!("histogram_quantile(0.99, sum(rate(veritas_spark_request_duration_bucket{{{sel}}}[5m])) by (le))")
        );
        assert_eq!(
            q.requests,
            format!("sum(increase(veritas_spark_requests_total{{{sel}}}[5m]))")
        );
        assert_eq!(promql_duration(45), "45s");
    }

    /// Two canaries in one namespace: each one's pod matcher (anchored, as PromQL's `=~` is)
    /// takes its own Deployment's pods and never the other's, even when one name extends the
    /// other.
    #[test]
    fn the_pod_matcher_separates_two_canaries_in_one_namespace() {
        let matcher = |deployment: &str| {
            let q = track_queries("shop", "canary", deployment, 60);
            let re = q.requests.split("pod=~\"").nth(1).unwrap();
            let re = &re[..re.find("\"}").unwrap()];
            // The PromQL string literal unescaped (\\ is one backslash), then anchored.
            regex::Regex::new(&format!("^(?:{})$", re.replace("\\\\", "\\"))).unwrap()
        };
        let (a, b) = (matcher("spark-canary"), matcher("spark-canary-2"));
        assert!(a.is_match("spark-canary-7d9f8b6c5-x2x9k"));
        assert!(!a.is_match("spark-canary-2-5c8d7f6b4-q8w7e"));
        assert!(b.is_match("spark-canary-2-5c8d7f6b4-q8w7e"));
        assert!(!b.is_match("spark-canary-7d9f8b6c5-x2x9k"));
        // A dot in a name is a literal, not "any character".
        let dotted = matcher("spark.canary");
        assert!(dotted.is_match("spark.canary-7d9f8b6c5-x2x9k"));
        assert!(!dotted.is_match("sparkxcanary-7d9f8b6c5-x2x9k"));
    }

    #[test]
    fn empty_vector_is_no_data() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_scalar(body).unwrap(), None);
    }

    #[test]
    fn nan_is_no_data_and_values_sum() {
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.0,"NaN"]}]}}"#;
        assert_eq!(parse_scalar(nan).unwrap(), None);
        let two = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1.0,"0.25"]},{"metric":{"a":"2"},"value":[1.0,"0.5"]}]}}"#;
        assert_eq!(parse_scalar(two).unwrap(), Some(0.75));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.0,"3"]}}"#;
        assert_eq!(parse_scalar(scalar).unwrap(), Some(3.0));
    }

    #[test]
    fn api_errors_are_errors_not_data() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        let e = parse_scalar(body).unwrap_err();
        assert_eq!(e.kind(), "api");
        assert!(e.to_string().contains("bad_data: parse error"));
        assert_eq!(parse_scalar(b"<html>").unwrap_err().kind(), "decode");
    }
}
