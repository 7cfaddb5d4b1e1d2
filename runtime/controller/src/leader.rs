//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas never both act.
//!
//! kube-runtime 5 has no elector, so this is the client-go protocol reduced to what we need:
//! take the Lease when it is free or expired, with the `resourceVersion` of what was read
//! (the API server refuses a replace based on a stale read, so two candidates cannot both win);
//! renew it every `lease_duration / 3`; when a renewal fails or finds another holder, leadership
//! is lost and the caller must stop acting (the binary exits and restarts as a candidate).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaderError {
    #[error("lease {0} is held by {1}")]
    Lost(String, String),
    #[error("lease api: {0}")]
    Kube(#[from] kube::Error),
}

#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Acquired,
    HeldBy(String),
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let dur = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15) as i64);
    match &spec.renew_time {
        Some(t) => now.duration_since(t.0) > dur,
        None => true,
    }
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
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
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
                if !mine && !holder.is_empty() && !expired(&spec, now) {
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

    /// Renews the Lease until it is lost; returns why. A renewal must succeed within the
    /// lease duration, otherwise another replica may already have taken over.
    pub async fn hold(&self) -> LeaderError {
        let period = self.lease_duration / 3;
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(period).await;
            match self.try_acquire().await {
                Ok(Attempt::Acquired) => last_ok = tokio::time::Instant::now(),
                Ok(Attempt::HeldBy(h)) => return LeaderError::Lost(self.name.clone(), h),
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "lease renewal failed");
                    if last_ok.elapsed() >= self.lease_duration {
                        return e;
                    }
                }
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
