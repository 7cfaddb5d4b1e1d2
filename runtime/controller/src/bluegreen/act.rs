//! Carries out a blue-green decision's actions: the one owned selector key (`environment`) of
//! the active or preview Service, an annotation consumed, an Event.

use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::Recorder;
use kube::{Api, Client};
use serde_json::json;
use veritas_crds::{VeritasEnvironment, ENVIRONMENT_SELECTOR_KEY};

use super::decide::Action;
use crate::decide::EventKind;

/// Carries out `actions` in order; the first failure stops the rest (the next pass, reading
/// the recorded step, repeats them).
pub async fn act(
    client: &Client,
    recorder: &Recorder,
    env: &VeritasEnvironment,
    actions: &[Action],
) -> Result<(), crate::act::ActFailed> {
    for a in actions {
        act_one(client, recorder, env, a)
            .await
            .map_err(|source| crate::act::ActFailed {
                action: describe(a),
                source,
            })?;
    }
    Ok(())
}

/// What an action does, for status messages and logs.
pub fn describe(a: &Action) -> String {
    match a {
        Action::SetSelector { service, env } => {
            format!("setting {ENVIRONMENT_SELECTOR_KEY}={env} in the selector of Service {service}")
        }
        Action::ClearAnnotation(key) => format!("removing annotation {key}"),
        Action::Event { reason, .. } => format!("publishing Event {reason}"),
    }
}

async fn act_one(
    client: &Client,
    recorder: &Recorder,
    env: &VeritasEnvironment,
    a: &Action,
) -> Result<(), kube::Error> {
    let ns = env.metadata.namespace.clone().unwrap_or_default();
    let name = env.metadata.name.clone().unwrap_or_default();
    let merge = PatchParams::default();
    match a {
        Action::SetSelector { service, env: e } => {
            let api: Api<Service> = Api::namespaced(client.clone(), &ns);
            // A JSON merge patch of one key leaves the user's other keys alone.
            api.patch(
                service,
                &merge,
                &Patch::Merge(
                    json!({"spec": {"selector": {ENVIRONMENT_SELECTOR_KEY: e.as_str()}}}),
                ),
            )
            .await
            .inspect_err(|err| {
                tracing::warn!(environment = %name, namespace = %ns, service = %service, error = %err, "switch: service selector update failed");
            })?;
            tracing::info!(environment = %name, namespace = %ns, service = %service, key = ENVIRONMENT_SELECTOR_KEY, value = %e, "switch: set service selector");
        }
        Action::ClearAnnotation(key) => {
            crate::act::clear_annotation::<VeritasEnvironment>(client, &ns, &name, key).await?;
            tracing::info!(environment = %name, namespace = %ns, annotation = %key, "consumed annotation");
        }
        Action::Event {
            kind,
            reason,
            message,
        } => {
            crate::act::publish(recorder, env, *kind, reason, message, "Switch").await;
            match kind {
                EventKind::Normal => {
                    tracing::info!(environment = %name, namespace = %ns, reason = %reason, "switch: {message}")
                }
                EventKind::Warning => {
                    tracing::warn!(environment = %name, namespace = %ns, reason = %reason, "switch: {message}")
                }
            }
        }
    }
    Ok(())
}
