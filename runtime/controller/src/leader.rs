//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas never both act.
//!
//! kube-runtime 5 has no elector, so this is the client-go protocol reduced to what we need:
//! take the Lease when it is free or expired, with the `resourceVersion` of what was read
//! (the API server refuses a replace based on a stale read, so two candidates cannot both win);
//! renew it every `retry_period`; when no renewal succeeded for `renew_deadline` or one finds
//! another holder, leadership is lost and the caller must stop acting (the binary exits and
//! restarts as a candidate).
//!
//! Clocks, as client-go has them: nobody trusts another machine's clock. A candidate never
//! compares the holder's `renewTime` with its own wall clock; it notes, on its own monotonic
//! clock, when it last saw the Lease record change, and the Lease is expired only after a whole
//! `leaseDuration` without a change. The holder gives up after `renew_deadline` (two thirds of
//! the lease) without a successful renewal, so it has stopped before any candidate may take
//! over: two leaders never act at once, whatever the clocks say.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaderError {
    #[error("lease {0} is held by {1}")]
    Lost(String, String),
    #[error("lease {0} not renewed within the renew deadline ({1:?})")]
    RenewDeadline(String, Duration),
    #[error("lease api: {0}")]
    Kube(#[from] kube::Error),
}

#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    /// The Lease record last seen and when (this process's monotonic clock).
    observed: Arc<Mutex<Option<(String, Instant)>>>,
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Acquired,
    HeldBy(String),
}

/// What identifies one version of the Lease record: any change restarts the expiry clock.
fn record(spec: &LeaseSpec) -> String {
    format!(
        "{}|{:?}|{:?}|{:?}",
        spec.holder_identity.as_deref().unwrap_or_default(),
        spec.renew_time.as_ref().map(|t| t.0),
        spec.acquire_time.as_ref().map(|t| t.0),
        spec.lease_transitions
    )
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            observed: Arc::default(),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How long the leader keeps trying to renew before it stops acting: shorter than the
    /// lease, so it has stopped before a candidate may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }

    /// How often the leader renews and a candidate retries.
    pub fn retry_period(&self) -> Duration {
        (self.lease_duration / 7).max(Duration::from_millis(200))
    }

    /// Notes `spec` as seen now (if it changed); returns how long it has been unchanged.
    fn unchanged_for(&self, spec: &LeaseSpec) -> Duration {
        let key = record(spec);
        let mut seen = self.observed.lock().expect("not poisoned");
        match seen.as_ref() {
            Some((k, at)) if *k == key => at.elapsed(),
            _ => {
                *seen = Some((key, Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// One try to take or renew the Lease.
    pub async fn try_acquire(&self) -> Result<Attempt, LeaderError> {
        let now = Timestamp::now();
        let secs = self.lease_duration.as_secs().max(1) as i32;
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Attempt::Acquired),
                    // Someone created it between our read and our create.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        Ok(Attempt::HeldBy("another candidate".into()))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.clone().unwrap_or_default();
                let mine = holder == self.identity;
                let their_lease =
                    Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
                if !mine && !holder.is_empty() && self.unchanged_for(&spec) < their_lease {
                    return Ok(Attempt::HeldBy(holder));
                }
                let mut new = spec.clone();
                new.holder_identity = Some(self.identity.clone());
                new.lease_duration_seconds = Some(secs);
                new.renew_time = Some(MicroTime(now));
                if !mine {
                    new.acquire_time = Some(MicroTime(now));
                    new.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                lease.spec = Some(new);
                // `lease` carries the resourceVersion we read: a concurrent writer makes this a 409.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(Attempt::Acquired),
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        Ok(Attempt::HeldBy("another candidate".into()))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Waits until this replica holds the Lease, polling every `retry`.
    pub async fn acquire(&self, retry: Duration) -> Result<(), LeaderError> {
        let mut last = String::new();
        loop {
            match self.try_acquire().await {
                Ok(Attempt::Acquired) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return Ok(());
                }
                Ok(Attempt::HeldBy(h)) => {
                    if h != last {
                        tracing::info!(lease = %self.name, holder = %h, "standing by: lease held by another replica");
                        last = h;
                    }
                }
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "lease attempt failed"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews the Lease until it is lost; returns why. Leadership ends when no renewal
    /// succeeded for `renew_deadline` (a renewal that hangs counts as failed), before any
    /// candidate can see the Lease expire.
    pub async fn hold(&self) -> LeaderError {
        let deadline = self.renew_deadline();
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.retry_period()).await;
            let left = deadline.saturating_sub(last_ok.elapsed());
            match tokio::time::timeout(left, self.try_acquire()).await {
                Ok(Ok(Attempt::Acquired)) => last_ok = Instant::now(),
                Ok(Ok(Attempt::HeldBy(h))) => return LeaderError::Lost(self.name.clone(), h),
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.name, error = %e, "lease renewal failed")
                }
                Err(_) => tracing::warn!(lease = %self.name, "lease renewal timed out"),
            }
            if last_ok.elapsed() >= deadline {
                return LeaderError::RenewDeadline(self.name.clone(), deadline);
            }
        }
    }

    /// Gives the Lease up (on shutdown) so a standby takes over at once.
    pub async fn release(&self) -> Result<(), LeaderError> {
        if let Some(mut lease) = self.api.get_opt(&self.name).await? {
            if lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.identity.as_str())
            {
                if let Some(spec) = lease.spec.as_mut() {
                    spec.holder_identity = None;
                    spec.renew_time = None;
                }
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await?;
            }
        }
        Ok(())
    }
}
