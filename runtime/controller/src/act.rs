//! Carries out a decision's actions. Each write touches only what weights and promotion need:
//! a Deployment's replica count (scale subresource, as `kubectl scale`), the one owned key of
//! the shared Service's selector, a route's weights, an annotation the user set for us.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource};
use serde_json::json;
use veritas_crds::{RoutingKind, VeritasCanary, OWNED_SELECTOR_KEY};

use crate::decide::{route_name, route_weight_patch, Action, EventKind};
use crate::observe::{http_route_resource, virtual_service_resource};

/// Removes one annotation (the user's request, once acted on) of a namespaced resource; a JSON
/// merge patch of that key leaves the others alone. Canaries and environments share it.
pub(crate) async fn clear_annotation<K>(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {key: null}}})),
    )
    .await
    .map(|_| ())
}

/// Publishes an Event about `obj` (canary or environment). Best effort: a lost Event must not
/// stop a rollout or a switch, so a failure is only logged.
pub(crate) async fn publish<K>(
    recorder: &Recorder,
    obj: &K,
    kind: EventKind,
    reason: &str,
    message: &str,
    action: &str,
) where
    K: Resource<DynamicType = ()>,
{
    let ev = Event {
        type_: match kind {
            EventKind::Normal => EventType::Normal,
            EventKind::Warning => EventType::Warning,
        },
        reason: reason.to_string(),
        note: Some(message.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(
            name = obj.meta().name.as_deref().unwrap_or(""),
            namespace = obj.meta().namespace.as_deref().unwrap_or(""),
            error = %e,
            "event not published"
        );
    }
}

/// An action the API server refused (or that could not be sent), named as a human reads it.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {source}")]
pub struct ActFailed {
    pub action: String,
    #[source]
    pub source: kube::Error,
}

/// What an action does, for status messages and logs.
pub fn describe(a: &Action, spec: &veritas_crds::VeritasCanarySpec) -> String {
    match a {
        Action::Scale {
            deployment,
            replicas,
        } => format!("scaling Deployment {deployment} to {replicas} replicas"),
        Action::SetSelector { service, value } => match value {
            Some(v) => {
                format!("setting {OWNED_SELECTOR_KEY}={v} in the selector of Service {service}")
            }
            None => format!("removing {OWNED_SELECTOR_KEY} from the selector of Service {service}"),
        },
        Action::SetRouteWeights { stable, canary } => {
            let route = match spec.routing.kind() {
                Ok(k @ (RoutingKind::GatewayApi | RoutingKind::Istio)) => {
                    let (what, name) = route_name(spec, k);
                    format!("{what} {name}")
                }
                _ => "the route".into(),
            };
            format!("setting the weights of {route} to stable {stable} / canary {canary}")
        }
        Action::PromoteTemplate { deployment, .. } => {
            format!("promoting the canary's pod template into Deployment {deployment}")
        }
        Action::ClearAnnotation(key) => format!("removing annotation {key}"),
        Action::Event { reason, .. } => format!("publishing Event {reason}"),
    }
}

/// Carries out `actions` in order; the first failure stops the rest (the next pass retries)
/// and is returned with the action it stopped at.
pub async fn act(
    client: &Client,
    recorder: &Recorder,
    canary: &VeritasCanary,
    actions: &[Action],
) -> Result<(), ActFailed> {
    for a in actions {
        act_one(client, recorder, canary, a)
            .await
            .map_err(|source| ActFailed {
                action: describe(a, &canary.spec),
                source,
            })?;
    }
    Ok(())
}

async fn act_one(
    client: &Client,
    recorder: &Recorder,
    canary: &VeritasCanary,
    a: &Action,
) -> Result<(), kube::Error> {
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let name = canary.metadata.name.clone().unwrap_or_default();
    let merge = PatchParams::default();
    match a {
        Action::Scale {
            deployment,
            replicas,
        } => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            api.patch_scale(
                deployment,
                &merge,
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await?;
            tracing::info!(canary = %name, namespace = %ns, deployment = %deployment, replicas, "scaled deployment");
        }
        Action::SetSelector { service, value } => {
            let api: Api<Service> = Api::namespaced(client.clone(), &ns);
            // A JSON merge patch with null removes the key and leaves the user's keys alone.
            api.patch(
                service,
                &merge,
                &Patch::Merge(json!({"spec": {"selector": {OWNED_SELECTOR_KEY: value}}})),
            )
            .await?;
            tracing::info!(canary = %name, namespace = %ns, service = %service, key = OWNED_SELECTOR_KEY, value = ?value, "set shared service selector key");
        }
        Action::SetRouteWeights {
            stable,
            canary: to_canary,
        } => {
            let spec = &canary.spec;
            let (ar, route_name) = match (&spec.routing.gateway_api, &spec.routing.istio) {
                (Some(g), _) => (http_route_resource(), g.http_route.clone()),
                (None, Some(i)) => (virtual_service_resource(), i.virtual_service.clone()),
                (None, None) => return Ok(()),
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
            let route = serde_json::to_value(api.get(&route_name).await?)
                .map_err(kube::Error::SerdeError)?;
            // Observed a moment ago with such a rule; gone now, the next pass says so.
            let Some(patch) = route_weight_patch(&route, spec, *stable, *to_canary) else {
                tracing::warn!(canary = %name, namespace = %ns, route = %route_name, "route lost its rule for the two Services; weights not set");
                return Ok(());
            };
            let patch: json_patch::Patch =
                serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
            api.patch(&route_name, &merge, &Patch::Json::<()>(patch))
                .await?;
            tracing::info!(canary = %name, namespace = %ns, route = %route_name, kind = %ar.kind, stable, canary = to_canary, "set route weights");
        }
        Action::PromoteTemplate {
            deployment,
            template,
        } => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            let mut d = api.get(deployment).await?;
            let mut t: k8s_openapi::api::core::v1::PodTemplateSpec =
                serde_json::from_value(template.clone()).map_err(kube::Error::SerdeError)?;
            // Stable keeps its own track label and selector labels (its pods must still
            // match its selector and be counted as stable).
            let spec = d.spec.get_or_insert_with(Default::default);
            let mut keep = spec.selector.match_labels.clone().unwrap_or_default();
            if let Some(track) = spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.as_ref())
                .and_then(|l| l.get(veritas_vocab::labels::DEPLOYMENT))
            {
                keep.insert(veritas_vocab::labels::DEPLOYMENT.into(), track.clone());
            }
            t.metadata
                .get_or_insert_with(Default::default)
                .labels
                .get_or_insert_with(Default::default)
                .extend(keep);
            // One JSON patch (RBAC `patch`, not `update`), guarded by the version read so
            // a concurrent edit of stable is never overwritten.
            let patch: json_patch::Patch = serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": d.metadata.resource_version},
                {"op": "replace", "path": "/spec/template", "value": t},
            ]))
            .map_err(kube::Error::SerdeError)?;
            api.patch(
                deployment,
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await?;
            tracing::info!(canary = %name, namespace = %ns, deployment = %deployment, "promoted canary pod template into deployment");
        }
        Action::ClearAnnotation(key) => {
            clear_annotation::<VeritasCanary>(client, &ns, &name, key).await?;
            tracing::info!(canary = %name, namespace = %ns, annotation = %key, "consumed annotation");
        }
        Action::Event {
            kind,
            reason,
            message,
        } => {
            publish(recorder, canary, *kind, reason, message, "Reconcile").await;
            match kind {
                EventKind::Normal => {
                    tracing::info!(canary = %name, namespace = %ns, reason = %reason, "{message}")
                }
                EventKind::Warning => {
                    tracing::warn!(canary = %name, namespace = %ns, reason = %reason, "{message}")
                }
            }
        }
    }
    Ok(())
}

/// Whether deleting a canary hands the shared Service back (the owned selector key removed):
/// only when its pods already carry traffic by decision (a realised weight above 0, or
/// promoted). A canary at weight 0 (never analysed), failed or rolling back keeps the Service
/// on stable: its pods must not get traffic because their resource was deleted.
pub fn releases_shared_service(status: Option<&veritas_crds::VeritasCanaryStatus>) -> bool {
    status.is_some_and(|s| {
        !matches!(
            s.phase,
            veritas_crds::Phase::Failed | veritas_crds::Phase::RollingBack
        ) && s.actual_weight > 0
    })
}

/// Cleanup when a canary is deleted: hand the shared Service back with the user's selector
/// when [`releases_shared_service`] says so, so traffic does not stay pinned by a canary that
/// is gone; otherwise leave it on stable.
pub async fn release(client: &Client, canary: &VeritasCanary) -> Result<(), kube::Error> {
    if !releases_shared_service(canary.status.as_ref()) {
        return Ok(());
    }
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    if api.get_opt(&canary.spec.shared_service).await?.is_some() {
        api.patch(
            &canary.spec.shared_service,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {OWNED_SELECTOR_KEY: null}}})),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::releases_shared_service;
    use veritas_crds::{Phase, VeritasCanaryStatus};

    #[test]
    fn deleting_a_canary_releases_the_service_only_when_its_pods_carry_traffic_by_decision() {
        let st = |phase, actual_weight| VeritasCanaryStatus {
            phase,
            actual_weight,
            ..Default::default()
        };
        assert!(!releases_shared_service(None));
        // Weight 0: the canary was never analysed; its pods stay out.
        assert!(!releases_shared_service(Some(&st(Phase::Progressing, 0))));
        assert!(!releases_shared_service(Some(&st(Phase::Failed, 0))));
        assert!(!releases_shared_service(Some(&st(Phase::RollingBack, 25))));
        assert!(releases_shared_service(Some(&st(Phase::Progressing, 25))));
        assert!(releases_shared_service(Some(&st(Phase::Succeeded, 100))));
    }
}
