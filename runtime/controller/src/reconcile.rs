//! The reconcile pass: observe → decide → write status (only when it changed, and only over
//! the version read) → act.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, CustomResourceExt, Resource, ResourceExt};
use serde_json::json;
use veritas_crds::reasons::{self, types};
use veritas_crds::{find_condition, Condition, VeritasCanary, FIELD_MANAGER, FINALIZER};

use crate::analysis::Prometheus;
use crate::decide::{analysis_due, decide, judge, AnalysisSample, EventKind, Observed};
use crate::telemetry::Metrics;

/// Errors of one pass, each with a stable label for the failure metric.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Act(#[from] crate::act::ActFailed),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("resource has no namespace")]
    NoNamespace,
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "kube_api",
            Error::Kube(_) => "kube_client",
            Error::Act(f) if matches!(f.source, kube::Error::Api(_)) => "kube_api",
            Error::Act(_) => "kube_client",
            Error::Finalizer(_) => "finalizer",
            Error::NoNamespace => "no_namespace",
        }
    }
}

/// How a guarded status write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWrite {
    Written,
    /// The object changed since this pass read it: nothing was written.
    Stale,
}

/// How soon a pass that read a stale copy runs again (the watch is usually a few ms behind).
pub(crate) const STALE_REQUEUE: Duration = Duration::from_secs(1);

/// Writes `status` (server-side apply of the status subresource) only if the object is still
/// at the `resourceVersion` this pass read. The watch cache can lag our own writes by a pass:
/// without the guard, a pass deciding on the older copy puts back the status a newer pass
/// replaced (a canary restarted by `retry` went back to `Failed` that way).
pub async fn write_status<K, S>(
    api: &Api<K>,
    obj: &K,
    status: &S,
) -> Result<StatusWrite, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"resourceVersion": obj.meta().resource_version},
        "status": status,
    });
    let name = obj.meta().name.clone().unwrap_or_default();
    match api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
    {
        Ok(_) => Ok(StatusWrite::Written),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(StatusWrite::Stale),
        Err(e) => Err(e),
    }
}

/// See [`Context::freeze_after_status`].
pub type FreezeHook = Arc<dyn Fn(&veritas_crds::VeritasEnvironmentStatus) -> bool + Send + Sync>;

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    /// How blue-green health probes reach pods (their IPs, from inside the cluster).
    pub pod_http: crate::bluegreen::probe::PodHttp,
    /// Fault injection for the crash tests only: when it returns true for the status a
    /// blue-green pass has just written, that pass stops there (never acts), as a controller
    /// killed between recording a step and carrying it out.
    pub freeze_after_status: Option<FreezeHook>,
    pub recorder: Recorder,
    pub prometheus: Prometheus,
    pub metrics: Metrics,
    pub query_timeout: Duration,
}

impl Context {
    pub fn new(
        client: Client,
        prometheus: Prometheus,
        metrics: Metrics,
        instance: Option<String>,
    ) -> Context {
        let reporter = Reporter {
            controller: veritas_vocab::labels::APP_CONTROLLER.into(),
            instance,
        };
        Context {
            pod_http: crate::bluegreen::probe::PodHttp::direct(),
            freeze_after_status: None,
            recorder: Recorder::new(client.clone(), reporter),
            client,
            prometheus,
            metrics,
            query_timeout: Duration::from_secs(10),
        }
    }
}

/// Observes, decides, acts and writes the status of one canary.
pub async fn apply(canary: Arc<VeritasCanary>, ctx: &Context) -> Result<Requeue, Error> {
    let ns = canary.namespace().ok_or(Error::NoNamespace)?;
    let name = canary.name_any();
    let now = Timestamp::now();
    let conditions = || canary.status.clone().unwrap_or_default().conditions;
    let o = observed_or_report(
        ctx,
        canary.as_ref(),
        conditions,
        "the canary's",
        crate::observe::observe(&ctx.client, &ns, &canary.spec).await,
    )
    .await?;
    let prior_claims = crate::observe::earlier_claims(&ctx.client, canary.as_ref())
        .await
        .map_err(Error::Kube)?;
    let analysis = if analysis_due(&canary.spec, canary.status.as_ref(), now) {
        let s = ctx
            .prometheus
            .sample(&ns, &canary.spec, ctx.query_timeout)
            .await;
        let (verdict, reason, message) = judge(&canary.spec, &s, o.service_monitor);
        ctx.metrics
            .analyses
            .with_label_values(&[&format!("{verdict:?}"), reason])
            .inc();
        tracing::info!(canary = %name, namespace = %ns, verdict = ?verdict, reason, "analysis: {message}");
        if let AnalysisSample::Unreachable(why) = &s {
            ctx.metrics
                .prometheus_errors
                .with_label_values(&[ns.as_str(), name.as_str()])
                .inc();
            tracing::warn!(canary = %name, namespace = %ns, "prometheus unreachable: {why}");
        }
        Some(s)
    } else {
        None
    };
    let obs = Observed {
        now,
        generation: canary.metadata.generation,
        annotations: canary.metadata.annotations.clone().unwrap_or_default(),
        stable: o.stable,
        canary: o.canary,
        canary_service: o.canary_service,
        shared_service: o.shared_service,
        service_monitor: o.service_monitor,
        route: o.route,
        analysis,
        prior_claims,
    };
    let d = decide(&name, &canary.spec, canary.status.as_ref(), &obs);
    // The status goes first, guarded by the version this pass read: a pass on a stale copy
    // stops here, before its actions (a stale `Failed` would route traffic back to stable).
    if canary.status.as_ref() != Some(&d.status) {
        let api: Api<VeritasCanary> = Api::namespaced(ctx.client.clone(), &ns);
        if write_status(&api, canary.as_ref(), &d.status).await? == StatusWrite::Stale {
            tracing::debug!(canary = %name, namespace = %ns, "read a stale copy; the next pass rereads");
            return Ok(Requeue::requeue(STALE_REQUEUE));
        }
        let old_phase = canary.status.as_ref().map(|s| s.phase);
        if old_phase != Some(d.status.phase) {
            tracing::info!(
                canary = %name, namespace = %ns, phase = %d.status.phase, from = ?old_phase.map(|p| p.as_str()),
                reason = d.status.reason.as_deref().unwrap_or(""), step = d.status.current_step, weight = d.status.actual_weight,
                "phase {}: {}", d.status.phase, d.status.message.as_deref().unwrap_or("")
            );
        }
    }
    ctx.metrics
        .weight
        .with_label_values(&[ns.as_str(), name.as_str()])
        .set(d.status.actual_weight as i64);
    ctx.metrics.set_phase(&ns, &name, d.status.phase);
    let acted = crate::act::act(&ctx.client, &ctx.recorder, &canary, &d.actions).await;
    report_or_clear(
        ctx,
        canary.as_ref(),
        d.status.conditions,
        acted,
        ERROR_REQUEUE,
    )
    .await?;
    Ok(Requeue::requeue(Duration::from_secs(
        d.requeue_after_secs.max(1),
    )))
}

/// A namespaced resource of ours whose status the reconcilers write (canaries, environments).
pub(crate) trait StatusObject:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> StatusObject for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// The observation of a pass, or (when a read failed) the failure reported by
/// [`report_failure`] and returned. `conditions`: the status's, read when needed.
pub(crate) async fn observed_or_report<K, T>(
    ctx: &Context,
    obj: &K,
    conditions: impl FnOnce() -> Vec<Condition>,
    whose: &str,
    observed: Result<T, kube::Error>,
) -> Result<T, Error>
where
    K: StatusObject,
{
    match observed {
        Ok(o) => Ok(o),
        Err(e) => {
            let message = format!("reading {whose} objects failed, nothing decided: {e}");
            report_failure(ctx, obj, conditions(), reasons::OBSERVE_FAILED, message).await;
            Err(e.into())
        }
    }
}

/// After a pass's actions: a refused one is reported by [`report_failure`] and returned; when
/// all were carried out, a `Reconciled` condition left by an earlier failure goes.
/// `conditions`: those the pass wrote.
pub(crate) async fn report_or_clear<K>(
    ctx: &Context,
    obj: &K,
    conditions: Vec<Condition>,
    acted: Result<(), crate::act::ActFailed>,
    retry: Duration,
) -> Result<(), Error>
where
    K: StatusObject,
{
    match acted {
        Ok(()) => {
            clear_failure(ctx, obj, &conditions).await;
            Ok(())
        }
        Err(e) => {
            let message = format!("{e} (retried in {}s)", retry.as_secs());
            report_failure(ctx, obj, conditions, reasons::ACTION_FAILED, message).await;
            Err(e.into())
        }
    }
}

/// A pass that could not read or act says so in the status (condition `Reconciled=False`, the
/// call and the server's answer) and in a warning Event: a 403 or a webhook's refusal is
/// otherwise only in the controller's log, and the status would describe a world the
/// controller failed to make. Canaries and environments share it; `conditions` are those the
/// pass ends with (written by it, or read when it wrote nothing).
async fn report_failure<K>(
    ctx: &Context,
    obj: &K,
    mut conditions: Vec<Condition>,
    reason: &str,
    message: String,
) where
    K: StatusObject,
{
    tracing::warn!(name = %obj.name_any(), namespace = ?obj.namespace(), kind = %K::kind(&()), reason, "{message}");
    crate::decide::set_condition(
        &mut conditions,
        Timestamp::now(),
        obj.meta().generation,
        types::RECONCILED,
        false,
        reason,
        message.clone(),
    );
    write_conditions(ctx, obj, &conditions).await;
    crate::act::publish(
        &ctx.recorder,
        obj,
        EventKind::Warning,
        reason,
        &message,
        "Reconcile",
    )
    .await;
}

/// After a pass that succeeded: a `Reconciled` condition left by an earlier failure goes.
async fn clear_failure<K>(ctx: &Context, obj: &K, conditions: &[Condition])
where
    K: StatusObject,
{
    if find_condition(conditions, types::RECONCILED).is_none() {
        return;
    }
    let kept: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != types::RECONCILED)
        .cloned()
        .collect();
    write_conditions(ctx, obj, &kept).await;
    tracing::info!(name = %obj.name_any(), namespace = ?obj.namespace(), kind = %K::kind(&()), "a pass succeeded again: Reconciled condition removed");
}

/// Writes the status conditions alone (a merge patch, not guarded by the version read: it
/// follows this pass's own guarded write, which moved the version). Best effort: the failure
/// that brought us here is returned by the pass either way.
async fn write_conditions<K>(ctx: &Context, obj: &K, conditions: &[Condition])
where
    K: StatusObject,
{
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = Patch::Merge(json!({"status": {"conditions": conditions}}));
    if let Err(e) = api
        .patch_status(&obj.name_any(), &PatchParams::default(), &patch)
        .await
    {
        tracing::warn!(name = %obj.name_any(), namespace = %ns, error = %e, "status conditions not written");
    }
}

async fn reconcile(canary: Arc<VeritasCanary>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let ns = canary.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<VeritasCanary> = Api::namespaced(ctx.client.clone(), &ns);
    let res = finalizer(&api, FINALIZER, canary, |ev| async {
        match ev {
            Finalizer::Apply(c) => apply(c, &ctx).await,
            Finalizer::Cleanup(c) => {
                crate::act::release(&ctx.client, &c).await?;
                ctx.metrics.forget(&ns, &c.name_any());
                tracing::info!(canary = %c.name_any(), namespace = %ns, "canary deleted: released the shared service");
                Ok(Requeue::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled(started, &res);
    res
}

fn error_policy(canary: Arc<VeritasCanary>, err: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics
        .failures
        .with_label_values(&[err.metric_label()])
        .inc();
    tracing::warn!(canary = %canary.name_any(), namespace = ?canary.namespace(), error = %err, kind = err.metric_label(), "reconcile failed");
    Requeue::requeue(ERROR_REQUEUE)
}

/// How soon a failed pass runs again.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);

/// Whether the VeritasCanary CRD is installed (the binary exits with a hint when not).
pub async fn crd_installed(client: &Client) -> Result<bool, kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    Ok(crds.get_opt(VeritasCanary::crd_name()).await?.is_some())
}

/// Runs the controller until the stream ends (shutdown signal).
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let canaries: Api<VeritasCanary> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let deployments: Api<Deployment> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let services: Api<Service> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let controller = Controller::new(canaries, watcher::Config::default().any_semantic());
    let store = controller.store();
    let store2 = store.clone();
    // A change to a referenced Deployment or Service wakes its canaries at once.
    let refs = move |ns: Option<String>,
                     name: String,
                     is_deploy: bool,
                     store: &kube::runtime::reflector::Store<VeritasCanary>| {
        store
            .state()
            .into_iter()
            .filter(|c| c.namespace() == ns)
            .filter(|c| {
                let s = &c.spec;
                if is_deploy {
                    s.stable.deployment == name || s.canary.deployment == name
                } else {
                    s.stable.service == name || s.canary.service == name || s.shared_service == name
                }
            })
            .map(|c| ObjectRef::from_obj(&*c))
            .collect::<Vec<_>>()
    };
    controller
        .watches(
            deployments,
            watcher::Config::default(),
            move |d: Deployment| refs(d.namespace(), d.name_any(), true, &store),
        )
        .watches(services, watcher::Config::default(), move |s: Service| {
            refs(s.namespace(), s.name_any(), false, &store2)
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| {
            ctx.metrics.watch.record(&res);
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile error");
            }
            async {}
        })
        .await;
}
