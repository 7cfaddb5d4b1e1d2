//! The direct Prometheus client against an HTTPS endpoint, as a Prometheus behind TLS and a
//! token-checking proxy (kube-rbac-proxy, an ingress) answers: a certificate signed by a CA of
//! our own (`--prometheus-ca-file`), a bearer token read from its file at every query
//! (`--prometheus-bearer-token-file`, rotated by the kubelet), and the refusals that go with
//! them. The server is a TLS listener on loopback speaking just enough HTTP/1.1.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use veritas_controller::analysis::{PromError, Prometheus, PrometheusAuth};

/// A CA, and a server certificate for 127.0.0.1 it signed: (CA PEM, server chain, server key).
fn pki() -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    (
        ca_cert.pem(),
        vec![server.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// Serves `/api/v1/query` over TLS: 200 with a scalar vector when the request carries
/// `Authorization: Bearer <want>`, 401 otherwise. Records each request's Authorization value.
async fn serve(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    want: &'static str,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        // Bounded: the tests make a handful of connections.
        for _ in 0..32 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                // A client that refuses our certificate ends the handshake: nothing to serve.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let auth = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let ok = auth == format!("Bearer {want}");
                log.lock().unwrap().push(auth);
                let (status, body) = if ok {
                    (
                        "200 OK",
                        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"42"]}]}}"#,
                    )
                } else {
                    ("401 Unauthorized", "Unauthorized\n")
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://127.0.0.1:{}", addr.port()), seen)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

const Q: &str = "sum(veritas_spark_requests_total)";
const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn https_with_our_ca_and_a_token_read_at_every_query() {
    let (ca_pem, chain, key) = pki();
    let (base, seen) = serve(chain, key, "rotated-token").await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, token) = (dir.path().join("ca.pem"), dir.path().join("token"));
    write(&ca, &ca_pem);
    write(&token, "first-token\n");
    let prom = Prometheus::direct(
        &base,
        &PrometheusAuth {
            ca_file: Some(ca.clone()),
            token_file: Some(token.clone()),
        },
    )
    .unwrap();

    // The token it sends is the file's (trimmed); this one the server refuses.
    match prom.query(Q, T).await {
        Err(PromError::Http { status: 401, .. }) => {}
        other => panic!("want HTTP 401 for a wrong token, got {other:?}"),
    }
    // The kubelet rotates the token: the next query reads the new one, no restart.
    write(&token, "rotated-token\n");
    assert_eq!(prom.query(Q, T).await.unwrap(), Some(42.0));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            "Bearer first-token".to_string(),
            "Bearer rotated-token".to_string()
        ]
    );

    // A token file that went away is a transport error naming the file, not an empty token.
    std::fs::remove_file(&token).unwrap();
    match prom.query(Q, T).await {
        Err(PromError::Transport(m)) => assert!(m.contains("bearer token file"), "{m}"),
        other => panic!("want a transport error naming the token file, got {other:?}"),
    }
}

#[tokio::test]
async fn a_certificate_from_a_ca_we_were_not_given_is_refused() {
    let (_, chain, key) = pki();
    let (base, seen) = serve(chain, key, "t").await;
    let prom = Prometheus::direct(&base, &PrometheusAuth::default()).unwrap();
    match prom.query(Q, T).await {
        Err(PromError::Transport(m)) => {
            assert!(m.to_lowercase().contains("certificate"), "{m}")
        }
        other => panic!("want a certificate error, got {other:?}"),
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "no request may reach an untrusted server"
    );

    // Another CA's bundle does not help either.
    let (other_ca, _, _) = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    write(&ca, &other_ca);
    let prom = Prometheus::direct(
        &base,
        &PrometheusAuth {
            ca_file: Some(ca),
            token_file: None,
        },
    )
    .unwrap();
    assert!(matches!(
        prom.query(Q, T).await,
        Err(PromError::Transport(_))
    ));
}

#[test]
fn bad_tls_settings_are_refused_when_the_client_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    write(&empty, "not a certificate\n");
    let auth = |p: &Path| PrometheusAuth {
        ca_file: Some(p.to_path_buf()),
        token_file: None,
    };
    let e = Prometheus::direct("https://127.0.0.1:9090", &auth(&empty)).unwrap_err();
    assert!(e.contains("no PEM certificate"), "{e}");
    let e = Prometheus::direct(
        "https://127.0.0.1:9090",
        &auth(&dir.path().join("missing.pem")),
    )
    .unwrap_err();
    assert!(e.contains("missing.pem"), "{e}");
    // A CA for a plain-HTTP address is a mistake worth saying, not ignoring.
    let e = Prometheus::direct("http://127.0.0.1:9090", &auth(&empty)).unwrap_err();
    assert!(e.contains("not https://"), "{e}");
}
