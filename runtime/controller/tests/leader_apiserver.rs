//! Leader election against a real API server (`ci/kind/apiserver.sh`): expiry is measured on
//! the candidate's own monotonic clock, never against the holder's `renewTime`, and a paused
//! leader stops acting (exits) before a candidate may take over.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{client, eventually, install_crds, unique};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use veritas_controller::leader::{Attempt, LeaderElector};
use veritas_vocab::labels;

const NEEDS: &str =
    "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)";

async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    let _ = api.create(&PostParams::default(), &ns).await;
}

/// Writes the Lease as a holder on another machine would: its identity, its clock.
async fn write_lease(api: &Api<Lease>, holder: &str, renew: Timestamp, secs: i32) {
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("veritas-controller".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(secs),
            renew_time: Some(MicroTime(renew)),
            acquire_time: Some(MicroTime(renew)),
            ..Default::default()
        }),
    };
    api.patch(
        "veritas-controller",
        &PatchParams::apply("other-machine").force(),
        &Patch::Apply(&lease),
    )
    .await
    .expect("write lease");
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn a_dead_holder_whose_clock_ran_ahead_loses_the_lease_after_one_duration() {
    let _ = NEEDS;
    let client = client().await;
    let ns = unique("leader-ahead");
    namespace(&client, &ns).await;
    let api: Api<Lease> = Api::namespaced(client.clone(), &ns);
    // Renewed "an hour from now" by a clock that is fast, then the holder died.
    write_lease(
        &api,
        "dead-fast-clock",
        Timestamp::now() + SignedDuration::from_hours(1),
        2,
    )
    .await;
    let b = LeaderElector::new(
        client.clone(),
        &ns,
        "veritas-controller",
        "b",
        Duration::from_secs(2),
    );
    assert_eq!(
        b.try_acquire().await.unwrap(),
        Attempt::HeldBy("dead-fast-clock".into()),
        "a record just seen is not expired"
    );
    // Two seconds of an unchanged record on b's own clock: taken over (the holder's clock
    // would have said "valid for another hour").
    eventually("the standby takes over", 10, || {
        let b = b.clone();
        async move {
            match b.try_acquire().await.map_err(|e| e.to_string())? {
                Attempt::Acquired => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn a_live_holder_whose_clock_runs_behind_is_never_deposed() {
    let client = client().await;
    let ns = unique("leader-behind");
    namespace(&client, &ns).await;
    let api: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let b = LeaderElector::new(
        client.clone(),
        &ns,
        "veritas-controller",
        "b",
        Duration::from_secs(2),
    );
    // The holder renews every 300 ms, stamping times an hour in the past (a slow clock).
    // Against its own wall clock a candidate would call that expired at once.
    let behind = Timestamp::now() - SignedDuration::from_hours(1);
    for i in 0..20 {
        write_lease(
            &api,
            "alive-slow-clock",
            behind + SignedDuration::from_millis(300 * i),
            2,
        )
        .await;
        assert_eq!(
            b.try_acquire().await.unwrap(),
            Attempt::HeldBy("alive-slow-clock".into()),
            "renewal {i}: a holder that keeps renewing is not deposed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A TCP relay between a controller and the API server that can be cut: the controller is
/// partitioned from the API server while everything else still reaches it.
struct Relay {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                if *cut_rx.borrow() {
                    continue; // dropped: refused
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Relay { port, cut }
    }
}

/// The test kubeconfig with its server moved to `port` on loopback; returns the file.
fn kubeconfig_via(port: u16) -> (tempfile::NamedTempFile, std::net::SocketAddr) {
    let path = std::env::var("VERITAS_TEST_KUBECONFIG").expect(NEEDS);
    let mut kc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let server = kc["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("a server")
        .to_string();
    let upstream: std::net::SocketAddr = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .expect("the test API server listens on an IP:port");
    kc["clusters"][0]["cluster"]["server"] = format!("https://127.0.0.1:{port}").into();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_yaml::to_string(&kc).unwrap()).unwrap();
    (file, upstream)
}

fn test_server() -> std::net::SocketAddr {
    let (_, upstream) = kubeconfig_via(0);
    upstream
}

struct Controller {
    child: Child,
    identity: String,
}

impl Controller {
    fn start(ns: &str, identity: &str, kubeconfig: &std::path::Path) -> Controller {
        let child = Command::new(env!("CARGO_BIN_EXE_veritas-controller"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--namespace",
                ns,
                "--lease-namespace",
                ns,
                "--identity",
                identity,
                "--lease-seconds",
                "3",
                "--log-format",
                "text",
                "--prometheus",
                "http://127.0.0.1:9",
            ])
            .env("KUBECONFIG", kubeconfig)
            // tracing writes to stdout.
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start veritas-controller");
        Controller {
            child,
            identity: identity.into(),
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn holder(api: &Api<Lease>) -> Result<String, String> {
    let l = api
        .get_opt(labels::CONTROLLER_LEASE)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no lease yet")?;
    l.spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "no holder".to_string())
}

#[tokio::test]
#[ignore = "needs a real API server: VERITAS_TEST_KUBECONFIG=$(ci/kind/apiserver.sh start | tail -1)"]
async fn two_controller_processes_a_partitioned_leader_stops_before_the_standby_takes_over() {
    let client = client().await;
    install_crds(&client).await;
    let ns = unique("leader-procs");
    namespace(&client, &ns).await;
    let api: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let relay = Relay::start(test_server()).await;
    let (via_relay, _) = kubeconfig_via(relay.port);
    let direct = std::path::PathBuf::from(std::env::var("VERITAS_TEST_KUBECONFIG").expect(NEEDS));
    // a reaches the API server through the relay, and leads; b stands by, directly connected.
    let mut a = Controller::start(&ns, "controller-a", via_relay.path());
    let first = eventually("a leader", 30, || holder(&api)).await;
    assert_eq!(first, a.identity);
    let mut b = Controller::start(&ns, "controller-b", &direct);
    // Partitioned: a can no longer renew. It must stop acting (exit) before b, which sees an
    // unchanged record for a whole lease, takes over: never two leaders.
    relay.cut.send(true).unwrap();
    let t0 = std::time::Instant::now();
    let (mut a_exited, mut b_leads) = (None, None);
    while (a_exited.is_none() || b_leads.is_none()) && t0.elapsed() < Duration::from_secs(30) {
        if a_exited.is_none() {
            if let Some(st) = a.child.try_wait().unwrap() {
                a_exited = Some((t0.elapsed(), st));
            }
        }
        if b_leads.is_none() && holder(&api).await.as_deref() == Ok(b.identity.as_str()) {
            b_leads = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (exited_at, status) = a_exited.expect("the partitioned leader exits");
    let leads_at = b_leads.expect("the standby takes over");
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert!(
        exited_at < leads_at,
        "the old leader exited {exited_at:?} after the cut, the standby led from {leads_at:?}: two leaders"
    );
    let mut log = String::new();
    use std::io::Read;
    a.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("leadership lost"), "{log}");
    assert!(
        b.child.try_wait().unwrap().is_none(),
        "the new leader keeps running"
    );
}
