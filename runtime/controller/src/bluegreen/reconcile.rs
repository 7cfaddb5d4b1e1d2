//! The blue-green pass: observe → probe → decide → write status (when it changed) → act.
//!
//! The status is written **before** the actions, so the step a pass is about to carry out is
//! on record first; a controller killed in between finds the step in status and repeats its
//! (idempotent, level-triggered) action. A finalizer settles deletion: traffic is left where
//! the record says it is served, never half-way through a selector move
//! ([`super::decide::on_delete`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, CustomResourceExt, Resource, ResourceExt};
use veritas_crds::{EnvironmentName, VeritasEnvironment, FINALIZER};

use super::decide::{decide, Observed};
use super::drift::diff;
use crate::reconcile::{
    observed_or_report, report_or_clear, write_status, Context, Error, StatusWrite, STALE_REQUEUE,
};

/// Observes, probes, decides, records and acts for one `VeritasEnvironment`.
pub async fn apply(env: Arc<VeritasEnvironment>, ctx: &Context) -> Result<Requeue, Error> {
    let ns = env.namespace().ok_or(Error::NoNamespace)?;
    let name = env.name_any();
    let spec = &env.spec;
    let conditions = || env.status.clone().unwrap_or_default().conditions;
    let o = observed_or_report(
        ctx,
        env.as_ref(),
        conditions,
        "the environment's",
        super::observe::observe(&ctx.client, &ns, spec).await,
    )
    .await?;
    let hc = &spec.switch.health_check;
    let timeout = Duration::from_secs(hc.probe_timeout_seconds.max(1) as u64);
    let mut probes = BTreeMap::new();
    for (e, pods) in &o.ready_pods {
        let results = futures::future::join_all(
            pods.iter()
                .map(|p| ctx.pod_http.probe(p, hc.port, &hc.path, timeout)),
        )
        .await;
        probes.insert(*e, results);
    }
    let mut snaps = o.snapshots.clone();
    for (e, s) in snaps.iter_mut() {
        let mut models: Vec<_> = probes
            .get(e)
            .map(|ps: &Vec<super::decide::PodProbe>| {
                ps.iter().filter_map(|p| p.model.clone()).collect()
            })
            .unwrap_or_default();
        models.sort();
        models.dedup();
        s.models = models;
    }
    let drift = match (
        snaps.get(&EnvironmentName::Blue),
        snaps.get(&EnvironmentName::Green),
    ) {
        (Some(b), Some(g)) => diff(b, g),
        _ => Vec::new(),
    };
    let obs = Observed {
        now: Timestamp::now(),
        generation: env.metadata.generation,
        annotations: env.metadata.annotations.clone().unwrap_or_default(),
        blue: o.blue,
        green: o.green,
        active_service: o.active_service,
        preview_service: o.preview_service,
        probes,
        drift,
    };
    let d = decide(&name, spec, env.status.as_ref(), &obs);
    if env.status.as_ref() != Some(&d.status) {
        let api: Api<VeritasEnvironment> = Api::namespaced(ctx.client.clone(), &ns);
        // The step is on record before anything is done for it; a pass on a stale copy
        // records nothing and does nothing.
        if write_status(&api, env.as_ref(), &d.status).await? == StatusWrite::Stale {
            tracing::debug!(environment = %name, namespace = %ns, "read a stale copy; the next pass rereads");
            return Ok(Requeue::requeue(STALE_REQUEUE));
        }
        let old = env.status.as_ref();
        let old_step = old.and_then(|s| s.switch_progress.as_ref()).map(|p| p.step);
        let new_step = d.status.switch_progress.as_ref().map(|p| p.step);
        if old.map(|s| s.phase) != Some(d.status.phase) || old_step != new_step {
            tracing::info!(
                environment = %name, namespace = %ns, phase = %d.status.phase,
                from = ?old.map(|s| s.phase.as_str()), step = ?new_step.map(|s| s.as_str()),
                active = ?d.status.active_environment.map(|e| e.as_str()),
                reason = d.status.reason.as_deref().unwrap_or(""),
                "switch: phase {} step {}: {}", d.status.phase,
                new_step.map(|s| s.as_str()).unwrap_or("-"),
                d.status.message.as_deref().unwrap_or("")
            );
        }
        if let Some(rec) = &d.status.last_switch {
            if old.and_then(|s| s.last_switch.as_ref()) != Some(rec) {
                let kind = format!("{:?}", rec.kind);
                ctx.metrics
                    .switches
                    .with_label_values(&[kind.as_str(), rec.outcome.as_str(), rec.reason.as_str()])
                    .inc();
                if rec.outcome == "Completed" {
                    ctx.metrics
                        .switch_duration
                        .with_label_values(&[kind.as_str()])
                        .observe(rec.duration_seconds as f64);
                }
            }
        }
    }
    if let Some(freeze) = &ctx.freeze_after_status {
        if freeze(&d.status) {
            tracing::warn!(environment = %name, namespace = %ns, "fault injection: pass frozen after writing its status");
            std::future::pending::<()>().await;
        }
    }
    let acted = super::act::act(&ctx.client, &ctx.recorder, &env, &d.actions).await;
    report_or_clear(ctx, env.as_ref(), d.status.conditions, acted, ERROR_REQUEUE).await?;
    Ok(Requeue::requeue(Duration::from_secs(
        d.requeue_after_secs.max(1),
    )))
}

/// The finalizer's cleanup: observe, leave traffic where [`super::decide::on_delete`] says,
/// then let the resource go.
async fn cleanup(env: Arc<VeritasEnvironment>, ctx: &Context) -> Result<Requeue, Error> {
    let ns = env.namespace().ok_or(Error::NoNamespace)?;
    let o = super::observe::observe(&ctx.client, &ns, &env.spec).await?;
    let obs = Observed {
        now: Timestamp::now(),
        generation: env.metadata.generation,
        annotations: BTreeMap::new(),
        blue: o.blue,
        green: o.green,
        active_service: o.active_service,
        preview_service: o.preview_service,
        probes: BTreeMap::new(),
        drift: Vec::new(),
    };
    let actions = super::decide::on_delete(&env.name_any(), &env.spec, env.status.as_ref(), &obs);
    super::act::act(&ctx.client, &ctx.recorder, &env, &actions).await?;
    Ok(Requeue::await_change())
}

async fn reconcile(env: Arc<VeritasEnvironment>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let ns = env.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<VeritasEnvironment> = Api::namespaced(ctx.client.clone(), &ns);
    let res = finalizer(&api, FINALIZER, env, |ev| async {
        match ev {
            Finalizer::Apply(e) => apply(e, &ctx).await,
            Finalizer::Cleanup(e) => cleanup(e, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled(started, &res);
    res
}

fn error_policy(env: Arc<VeritasEnvironment>, err: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics
        .failures
        .with_label_values(&[err.metric_label()])
        .inc();
    tracing::warn!(environment = %env.name_any(), namespace = ?env.namespace(), error = %err, kind = err.metric_label(), "switch: reconcile failed");
    Requeue::requeue(ERROR_REQUEUE)
}

/// How soon a failed pass runs again.
const ERROR_REQUEUE: Duration = Duration::from_secs(2);

/// Whether the VeritasEnvironment CRD is installed.
pub async fn crd_installed(client: &Client) -> Result<bool, kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    Ok(crds
        .get_opt(VeritasEnvironment::crd_name())
        .await?
        .is_some())
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The environments in `ns` that reference an object by name.
fn referencing(
    store: &Store<VeritasEnvironment>,
    ns: Option<String>,
    name: &str,
    what: fn(&veritas_crds::VeritasEnvironmentSpec, &str) -> bool,
) -> Vec<ObjectRef<VeritasEnvironment>> {
    store
        .state()
        .into_iter()
        .filter(|e| e.namespace() == ns && what(&e.spec, name))
        .map(|e| ObjectRef::from_obj(&*e))
        .collect()
}

/// Runs the blue-green controller until the shutdown signal.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let envs: Api<VeritasEnvironment> = api(&client, &namespace);
    let controller = Controller::new(envs, watcher::Config::default().any_semantic());
    let (s1, s2, s3) = (controller.store(), controller.store(), controller.store());
    controller
        .watches(
            api::<Deployment>(&client, &namespace),
            watcher::Config::default(),
            move |d| {
                referencing(&s1, d.namespace(), &d.name_any(), |s, n| {
                    s.blue.deployment == n || s.green.deployment == n
                })
            },
        )
        .watches(
            api::<Service>(&client, &namespace),
            watcher::Config::default(),
            move |svc| {
                referencing(&s2, svc.namespace(), &svc.name_any(), |s, n| {
                    s.active_service == n || s.preview_service == n
                })
            },
        )
        .watches(
            api::<ConfigMap>(&client, &namespace),
            watcher::Config::default(),
            move |cm| {
                referencing(&s3, cm.namespace(), &cm.name_any(), |s, n| {
                    s.blue.config_map == n || s.green.config_map == n
                })
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| {
            ctx.metrics.watch.record(&res);
            if let Err(e) = res {
                tracing::debug!(error = %e, "switch: reconcile error");
            }
            async {}
        })
        .await;
}
