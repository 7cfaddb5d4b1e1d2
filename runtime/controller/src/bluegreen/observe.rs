//! Reads what one blue-green decision needs: both Deployments and their ready pods, the
//! active and preview Services and the ready pods they select, and what drift compares
//! (ConfigMaps, pod templates, referenced Secrets hashed at once). Read-only; the writes are
//! in [`super::act`]. Shared with `veritas-spark bluegreen diff`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::ListParams;
use kube::{Api, Client};
use veritas_crds::{EnvironmentName, VeritasEnvironmentSpec};

use super::decide::{EnvObs, ServiceObs};
use super::drift::{referenced_secrets, secret_digest, template_parts, EnvSnapshot};
use super::probe::PodTarget;

/// Everything but the clock, the annotations and the probes.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub blue: Option<EnvObs>,
    pub green: Option<EnvObs>,
    pub active_service: Option<ServiceObs>,
    pub preview_service: Option<ServiceObs>,
    /// Ready pods of each environment (to probe).
    pub ready_pods: BTreeMap<EnvironmentName, Vec<PodTarget>>,
    /// Drift inputs without models (added from the probes).
    pub snapshots: BTreeMap<EnvironmentName, EnvSnapshot>,
}

/// Why `d`'s rollout is not complete, in `kubectl rollout status`'s order, or `None`.
pub fn rollout_pending(d: &Deployment) -> Option<String> {
    let generation = d.metadata.generation.unwrap_or(0);
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let none = Default::default();
    let st = d.status.as_ref().unwrap_or(&none);
    let updated = st.updated_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    if st.observed_generation.unwrap_or(0) < generation {
        Some(format!(
            "generation {generation} not yet observed by the Deployment controller"
        ))
    } else if updated < want {
        Some(format!("{updated} of {want} new replicas updated"))
    } else if total > updated {
        Some(format!(
            "{} old replicas pending termination",
            total - updated
        ))
    } else if available < updated {
        Some(format!(
            "{available} of {updated} updated replicas available"
        ))
    } else {
        None
    }
}

pub fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn selector_string(sel: &BTreeMap<String, String>) -> String {
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn match_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
}

/// Reads the objects of one `VeritasEnvironment`.
pub async fn observe(
    client: &Client,
    ns: &str,
    spec: &VeritasEnvironmentSpec,
) -> Result<Observation, kube::Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut o = Observation::default();
    let mut selectors = BTreeMap::new();
    for e in EnvironmentName::BOTH {
        let r = spec.env(e);
        let Some(d) = deployments.get_opt(&r.deployment).await? else {
            continue;
        };
        let sel = match_labels(&d);
        let mut ready = Vec::new();
        let mut ready_since = None;
        if !sel.is_empty() {
            let list = pods
                .list(&ListParams::default().labels(&selector_string(&sel)))
                .await?;
            for p in list.items.iter().filter(|p| pod_ready(p)) {
                let t = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                    .and_then(|c| c.last_transition_time.as_ref())
                    .map(|t| t.0);
                ready_since = ready_since.max(t);
                ready.push(PodTarget {
                    namespace: ns.to_string(),
                    name: p.metadata.name.clone().unwrap_or_default(),
                    ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
                });
            }
        }
        ready.sort_by(|a, b| a.name.cmp(&b.name));
        let template = d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let obs = EnvObs {
            replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ready: ready.len() as i32,
            template_labels: template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default(),
            ready_since,
            rollout_pending: rollout_pending(&d),
        };
        // Drift inputs.
        let config = config_maps
            .get_opt(&r.config_map)
            .await?
            .map(|c| c.data.unwrap_or_default());
        let (env_vars, mounts) = template_parts(&template, e);
        let mut snap = EnvSnapshot {
            config,
            env_vars,
            mounts,
            ..Default::default()
        };
        for name in referenced_secrets(&template) {
            let norm = super::drift::normalise(&name, e);
            match secrets.get_opt(&name).await {
                Ok(Some(s)) => {
                    // Digests only: the values are dropped here.
                    let mut keys: BTreeMap<String, String> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, secret_digest(&v.0)))
                        .collect();
                    for (k, v) in s.string_data.unwrap_or_default() {
                        keys.insert(k, secret_digest(v.as_bytes()));
                    }
                    snap.secrets.insert(norm, keys);
                }
                Ok(None) => {
                    snap.missing_secrets.insert(norm);
                }
                // Not allowed to read Secrets: whether they match is unknown, and said so.
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    snap.unreadable_secrets.insert(norm);
                }
                Err(e) => return Err(e),
            }
        }
        o.snapshots.insert(e, snap);
        o.ready_pods.insert(e, ready);
        selectors.insert(e, sel);
        match e {
            EnvironmentName::Blue => o.blue = Some(obs),
            EnvironmentName::Green => o.green = Some(obs),
        }
    }
    let svc_obs = |svc: Service, pods_list: &[Pod]| {
        let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
        let mut so = ServiceObs {
            selector: selector.clone(),
            ..Default::default()
        };
        for p in pods_list.iter().filter(|p| pod_ready(p)) {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            if !matches(&selector, &labels) {
                continue;
            }
            // Attributed by the Deployments' own selectors, not by the `environment` label
            // (which may be the very fault).
            if selectors
                .get(&EnvironmentName::Blue)
                .is_some_and(|s| matches(s, &labels))
            {
                so.ready_blue += 1;
            } else if selectors
                .get(&EnvironmentName::Green)
                .is_some_and(|s| matches(s, &labels))
            {
                so.ready_green += 1;
            }
        }
        so
    };
    // One list of the namespace's pods serves both Services.
    let all_pods = pods.list(&ListParams::default()).await?.items;
    if let Some(s) = services.get_opt(&spec.active_service).await? {
        o.active_service = Some(svc_obs(s, &all_pods));
    }
    if let Some(s) = services.get_opt(&spec.preview_service).await? {
        o.preview_service = Some(svc_obs(s, &all_pods));
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::rollout_pending;
    use k8s_openapi::api::apps::v1::Deployment;

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "veritas-spark-green", "generation": generation},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn rollout_is_complete_only_when_observed_updated_alone_and_available() {
        let done = serde_json::json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2});
        assert_eq!(rollout_pending(&deployment(3, done.clone())), None);
        // An image update the Deployment controller has not seen: the old pods are all ready.
        let why = rollout_pending(&deployment(4, done)).unwrap();
        assert!(why.contains("generation 4 not yet observed"), "{why}");
        let why = rollout_pending(&deployment(4, serde_json::json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 3}))).unwrap();
        assert_eq!(why, "1 of 2 new replicas updated");
        let why = rollout_pending(&deployment(4, serde_json::json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3}))).unwrap();
        assert_eq!(why, "1 old replicas pending termination");
        let why = rollout_pending(&deployment(4, serde_json::json!({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}))).unwrap();
        assert_eq!(why, "1 of 2 updated replicas available");
        // No status at all (nothing observed yet) is pending, not complete.
        assert!(rollout_pending(&deployment(1, serde_json::json!({}))).is_some());
    }
}
