//! Reads what one decision needs from the cluster. Read-only; the controller's writes are in
//! [`crate::act`].

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client, ResourceExt};
use veritas_crds::{RoutingKind, VeritasCanary, VeritasCanarySpec};

use crate::decide::{
    prior_claims, CanaryClaim, DeploymentObs, MonitorObs, PriorClaim, RouteWeights, ServiceObs,
    SharedServiceObs,
};

/// The ServiceMonitor kind of the Prometheus Operator.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

pub fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

/// Everything but the clock, the annotations and the analysis.
pub struct Observation {
    pub stable: Option<DeploymentObs>,
    pub canary: Option<DeploymentObs>,
    pub canary_service: Option<ServiceObs>,
    pub shared_service: Option<SharedServiceObs>,
    pub service_monitor: MonitorObs,
    pub route: RouteWeights,
}

fn deployment_obs(d: &Deployment) -> DeploymentObs {
    let spec = d.spec.as_ref();
    let template = spec.and_then(|s| serde_json::to_value(&s.template).ok());
    DeploymentObs {
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        ready: d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
        template_labels: spec
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        template_hash: template.as_ref().map(crate::decide::template_hash),
        template: template.as_ref().map(crate::decide::release_template),
        rollout_pending: crate::bluegreen::observe::rollout_pending(d),
    }
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn selector_string(sel: &BTreeMap<String, String>) -> String {
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads the Deployments, Services, endpoints, pods, ServiceMonitor and route of a canary.
pub async fn observe(
    client: &Client,
    ns: &str,
    spec: &VeritasCanarySpec,
) -> Result<Observation, kube::Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let stable_d = deployments.get_opt(&spec.stable.deployment).await?;
    let canary_d = deployments.get_opt(&spec.canary.deployment).await?;

    let canary_service = match services.get_opt(&spec.canary.service).await? {
        None => None,
        Some(svc) => {
            let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
            let lp = ListParams::default().labels(&format!(
                "kubernetes.io/service-name={}",
                spec.canary.service
            ));
            let ready = slices
                .list(&lp)
                .await?
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .count() as i32;
            Some(ServiceObs {
                selector: svc.spec.and_then(|s| s.selector).unwrap_or_default(),
                ready_endpoints: ready,
            })
        }
    };

    let shared_service = match services.get_opt(&spec.shared_service).await? {
        None => None,
        Some(svc) => {
            let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
            // Ready pods behind the shared Service, attributed to a track by the Deployment's
            // own selector (not by the `deployment` label, which may be the very fault).
            let (mut ready_stable, mut ready_canary) = (0, 0);
            if !selector.is_empty() {
                let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
                let list = pods
                    .list(&ListParams::default().labels(&selector_string(&selector)))
                    .await?;
                let track_sel = |d: &Option<Deployment>| {
                    d.as_ref()
                        .and_then(|d| d.spec.as_ref())
                        .and_then(|s| s.selector.match_labels.clone())
                        .unwrap_or_default()
                };
                let (ss, cs) = (track_sel(&stable_d), track_sel(&canary_d));
                for p in list.items.iter().filter(|p| pod_ready(p)) {
                    let labels = p.metadata.labels.clone().unwrap_or_default();
                    if matches(&cs, &labels) {
                        ready_canary += 1;
                    } else if matches(&ss, &labels) {
                        ready_stable += 1;
                    }
                }
            }
            Some(SharedServiceObs {
                selector,
                ready_stable,
                ready_canary,
            })
        }
    };

    let monitors: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &service_monitor_resource());
    let service_monitor = match monitors.get_opt(&spec.service_monitor).await {
        Ok(Some(_)) => MonitorObs::Present,
        // A 404 is either "no such object" or "no such resource": ask which. Any other refusal
        // (403...) is an error, never read as "missing".
        Ok(None) => monitor_missing_or_no_crd(client).await?,
        Err(kube::Error::Api(e)) if e.code == 404 => monitor_missing_or_no_crd(client).await?,
        Err(e) => return Err(e),
    };

    let route = match spec.routing.kind() {
        Ok(RoutingKind::GatewayApi) | Ok(RoutingKind::Istio) => {
            let (ar, name) = if spec.routing.gateway_api.is_some() {
                (
                    http_route_resource(),
                    spec.routing
                        .gateway_api
                        .as_ref()
                        .map(|g| g.http_route.clone())
                        .unwrap_or_default(),
                )
            } else {
                (
                    virtual_service_resource(),
                    spec.routing
                        .istio
                        .as_ref()
                        .map(|i| i.virtual_service.clone())
                        .unwrap_or_default(),
                )
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            match api.get_opt(&name).await {
                Ok(Some(obj)) => crate::decide::route_weights(
                    &serde_json::to_value(&obj).unwrap_or_default(),
                    spec,
                ),
                // No such route, or no such resource (CRD absent): RouteMisconfigured. Any
                // other refusal (403...) is an error, never read as "missing".
                Ok(None) => None,
                Err(kube::Error::Api(e)) if e.code == 404 => None,
                Err(e) => return Err(e),
            }
        }
        _ => None,
    };

    Ok(Observation {
        stable: stable_d.as_ref().map(deployment_obs),
        canary: canary_d.as_ref().map(deployment_obs),
        canary_service,
        shared_service,
        service_monitor,
        route,
    })
}

/// The canaries of the namespace created before `canary` that drive some of its objects.
pub async fn earlier_claims(
    client: &Client,
    canary: &VeritasCanary,
) -> Result<Vec<PriorClaim>, kube::Error> {
    let ns = canary.namespace().unwrap_or_default();
    let api: Api<VeritasCanary> = Api::namespaced(client.clone(), &ns);
    let claim = |c: &VeritasCanary| {
        CanaryClaim::of(
            &c.name_any(),
            c.metadata.creation_timestamp.as_ref().map(|t| t.0),
            &c.spec,
        )
    };
    let all: Vec<CanaryClaim> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        // A canary being deleted drives nothing any more (its finalizer only releases).
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(claim)
        .collect();
    Ok(prior_claims(&claim(canary), &all))
}

/// The ServiceMonitor is not there: is it the object or the whole resource (CRD)?
async fn monitor_missing_or_no_crd(client: &Client) -> Result<MonitorObs, kube::Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    Ok(
        match crds
            .get_opt("servicemonitors.monitoring.coreos.com")
            .await?
        {
            Some(_) => MonitorObs::Missing,
            None => MonitorObs::CrdMissing,
        },
    )
}
