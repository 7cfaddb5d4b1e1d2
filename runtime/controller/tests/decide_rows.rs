//! One test per row of the guide's four canary sections (and the catalog ID of the row), on
//! the pure decision. Each shows the cause producing the documented symptom in status,
//! conditions and actions, and (where the row has one) the remedy making it recover.

use veritas_controller::decide::{
    analysis_due, judge, replica_split, Action, AnalysisSample, MonitorObs, TrackMetrics,
};
use veritas_controller::sim::{erroring, healthy, no_data, spec, World};
use veritas_crds::reasons::{self, types};
use veritas_crds::{
    annotations, find_condition, Phase, Step, StepPause, Verdict, OWNED_SELECTOR_KEY,
};
use veritas_vocab::labels;

fn cond<'a>(w: &'a World, t: &str) -> &'a veritas_crds::Condition {
    find_condition(&w.status.as_ref().unwrap().conditions, t)
        .unwrap_or_else(|| panic!("no condition {t}"))
}

fn phase(w: &World) -> Phase {
    w.status.as_ref().unwrap().phase
}

fn reason(w: &World) -> String {
    w.status
        .as_ref()
        .unwrap()
        .reason
        .clone()
        .unwrap_or_default()
}

fn started(weight: i32) -> World {
    let mut w = World::new(spec(weight));
    w.settle(5);
    w
}

// ---------------- Canary Not Receiving Traffic ----------------

#[test]
fn cnt_1_traffic_weight_zero_keeps_canary_running_out_of_the_shared_service() {
    let mut w = started(0);
    let st = w.status.clone().unwrap();
    assert_eq!(st.phase, Phase::Progressing);
    assert_eq!(st.reason.as_deref(), Some(reasons::ZERO_WEIGHT));
    assert_eq!(st.actual_weight, 0);
    assert_eq!(cond(&w, types::TRAFFIC_ROUTED).reason, reasons::ZERO_WEIGHT);
    // Canary pods Running, the shared Service selects stable only.
    assert!(w.canary.as_ref().unwrap().ready >= 1);
    assert_eq!(
        w.shared_selector
            .as_ref()
            .unwrap()
            .get(OWNED_SELECTOR_KEY)
            .map(String::as_str),
        Some(labels::DEPLOYMENT_STABLE)
    );
    // No analysis while nothing reaches the canary, and no deadline either.
    assert!(!analysis_due(&w.spec, w.status.as_ref(), w.now));
    w.advance(10_000);
    w.pass(None);
    assert_eq!(phase(&w), Phase::Progressing);
    // Remedy: set trafficWeight > 0.
    w.edit(|s| s.traffic_weight = 25);
    w.settle(5);
    assert_eq!(
        cond(&w, types::TRAFFIC_ROUTED).reason,
        reasons::WEIGHT_REALISED
    );
    assert!(w
        .shared_selector
        .as_ref()
        .unwrap()
        .get(OWNED_SELECTOR_KEY)
        .is_none());
    assert_eq!(w.status.as_ref().unwrap().actual_weight, 25);
}

#[test]
fn cnt_2_pod_labels_wrong_is_reported_not_repaired() {
    let mut w = World::new(spec(25));
    w.canary
        .as_mut()
        .unwrap()
        .template_labels
        .insert(labels::DEPLOYMENT.into(), "canry".into());
    w.settle(5);
    let c = cond(&w, types::REFERENCES_VALID);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reasons::POD_LABELS_WRONG)
    );
    assert!(c.message.contains("deployment=canry"), "{}", c.message);
    // Remedy: fix the pod labels.
    w.canary
        .as_mut()
        .unwrap()
        .template_labels
        .insert(labels::DEPLOYMENT.into(), labels::DEPLOYMENT_CANARY.into());
    w.pass(None);
    assert!(cond(&w, types::REFERENCES_VALID).is_true());
}

#[test]
fn cnt_3_service_selector_mismatch_is_reported() {
    let mut w = World::new(spec(25));
    w.canary_service
        .as_mut()
        .unwrap()
        .selector
        .insert(labels::DEPLOYMENT.into(), "canary-v2".into());
    w.settle(5);
    let c = cond(&w, types::REFERENCES_VALID);
    assert_eq!(c.reason, reasons::SELECTOR_MISMATCH);
    assert!(c.message.contains(labels::SERVICE_CANARY));
    w.canary_service
        .as_mut()
        .unwrap()
        .selector
        .insert(labels::DEPLOYMENT.into(), labels::DEPLOYMENT_CANARY.into());
    w.pass(None);
    assert!(cond(&w, types::REFERENCES_VALID).is_true());
}

#[test]
fn cnt_3_no_endpoints_when_canary_pods_ready_but_service_has_none() {
    let mut w = World::new(spec(25));
    w.settle(5);
    let mut obs = w.observe(None);
    obs.canary_service.as_mut().unwrap().ready_endpoints = 0;
    let d = veritas_controller::decide::decide("spark", &w.spec, w.status.as_ref(), &obs);
    let c = veritas_crds::find_condition(&d.status.conditions, types::REFERENCES_VALID).unwrap();
    assert_eq!(c.reason, reasons::NO_ENDPOINTS);
}

fn route_weights_set(d: &veritas_controller::decide::Decision) -> Option<(i32, i32)> {
    d.actions.iter().find_map(|a| match a {
        Action::SetRouteWeights { stable, canary } => Some((*stable, *canary)),
        _ => None,
    })
}

#[test]
fn cnt_4_service_mesh_misconfigured_virtualservice_is_reported_and_reset() {
    let mut s = spec(20);
    s.routing.istio = Some(serde_json::from_value(serde_json::json!({})).unwrap());
    let mut w = World::new(s);
    w.route = Some((100, 0)); // someone left the VirtualService at 100/0
    let d = w.pass(None);
    assert_eq!(
        cond(&w, types::TRAFFIC_ROUTED).reason,
        reasons::ROUTE_MISCONFIGURED
    );
    assert_eq!(route_weights_set(&d), Some((80, 20)));
    w.pass(None);
    assert_eq!(
        cond(&w, types::TRAFFIC_ROUTED).reason,
        reasons::WEIGHT_REALISED
    );
    assert_eq!(w.status.as_ref().unwrap().actual_weight, 20);
}

#[test]
fn cnt_4_gateway_api_httproute_carries_the_weights() {
    let mut s = spec(30);
    s.routing.gateway_api =
        Some(serde_json::from_value(serde_json::json!({"httpRoute": "veritas-spark"})).unwrap());
    let mut w = World::new(s);
    let d = w.pass(None);
    assert_eq!(route_weights_set(&d), Some((70, 30)));
    // No replica changes with a router.
    assert!(!d
        .actions
        .iter()
        .any(|a| matches!(a, Action::Scale { .. } | Action::SetSelector { .. })));
}

#[test]
fn cnt_4_a_missing_route_is_reported_never_created() {
    let mut s = spec(30);
    s.routing.gateway_api =
        Some(serde_json::from_value(serde_json::json!({"httpRoute": "veritas-spark"})).unwrap());
    let mut w = World::new(s);
    w.route = None;
    let d = w.pass(None);
    assert_eq!(route_weights_set(&d), None);
    let c = cond(&w, types::TRAFFIC_ROUTED);
    assert_eq!(c.reason, reasons::ROUTE_MISCONFIGURED);
    assert!(
        c.message.contains("HTTPRoute veritas-spark not found"),
        "{}",
        c.message
    );
    assert!(c.message.contains(labels::SERVICE_CANARY), "{}", c.message);
}

fn users_http_route(s: &veritas_crds::VeritasCanarySpec) -> serde_json::Value {
    let mut route = veritas_controller::sim::users_http_route(s);
    route["metadata"]["resourceVersion"] = "42".into();
    route
}

#[test]
fn cnt_4_route_weights_are_read_from_the_rule_that_sends_to_both_tracks() {
    let s = spec(30);
    let route = users_http_route(&s);
    let slots = veritas_controller::decide::route_slots(&route, &s);
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].stable, "/spec/rules/1/backendRefs/0/weight");
    assert_eq!(slots[0].canary, "/spec/rules/1/backendRefs/1/weight");
    assert_eq!(
        veritas_controller::decide::route_weights(&route, &s),
        Some((100, 0))
    );
    // No weight on an entry is weight 1 (Gateway API).
    let mut unweighted = route.clone();
    unweighted["spec"]["rules"][1]["backendRefs"][0]
        .as_object_mut()
        .unwrap()
        .remove("weight");
    assert_eq!(
        veritas_controller::decide::route_weights(&unweighted, &s),
        Some((1, 0))
    );
    let mut only_stable = route.clone();
    only_stable["spec"]["rules"][1]["backendRefs"]
        .as_array_mut()
        .unwrap()
        .pop();
    assert_eq!(
        veritas_controller::decide::route_weights(&only_stable, &s),
        None
    );
}

#[test]
fn cnt_4_every_rule_that_splits_the_tracks_carries_the_weight() {
    let s = spec(30);
    let mut route = users_http_route(&s);
    // A second path split between the tracks, at another weight.
    let mut v2 = route["spec"]["rules"][1].clone();
    v2["matches"][0]["path"]["value"] = "/v2".into();
    v2["backendRefs"][1]["weight"] = 20.into();
    route["spec"]["rules"].as_array_mut().unwrap().push(v2);
    // Rules that disagree are no split at all: never "realised", never "rolled back".
    assert_eq!(
        veritas_controller::decide::route_weights(&route, &s),
        Some((0, 0))
    );
    let patch: json_patch::Patch = serde_json::from_value(
        veritas_controller::decide::route_weight_patch(&route, &s, 100, 0).unwrap(),
    )
    .unwrap();
    json_patch::patch(&mut route, &patch).unwrap();
    for rule in [1, 2] {
        let refs = &route["spec"]["rules"][rule]["backendRefs"];
        assert_eq!(
            (&refs[0]["weight"], &refs[1]["weight"]),
            (&100.into(), &0.into())
        );
    }
    assert_eq!(
        veritas_controller::decide::route_weights(&route, &s),
        Some((100, 0))
    );
}

#[test]
fn cnt_4_only_this_namespaces_services_are_the_tracks() {
    let s = spec(30);
    let mut route = users_http_route(&s);
    route["metadata"]["namespace"] = "veritas".into();
    // The canary's name, but another namespace's Service, or not a Service at all.
    for (k, v) in [("namespace", "elsewhere"), ("kind", "ServiceImport")] {
        let mut r = route.clone();
        r["spec"]["rules"][1]["backendRefs"][1][k] = v.into();
        assert_eq!(
            veritas_controller::decide::route_weights(&r, &s),
            None,
            "{k}={v}"
        );
    }
    let mut same_ns = route.clone();
    same_ns["spec"]["rules"][1]["backendRefs"][1]["namespace"] = "veritas".into();
    assert_eq!(
        veritas_controller::decide::route_weights(&same_ns, &s),
        Some((100, 0))
    );
}

#[test]
fn cnt_4_istio_hosts_may_be_qualified_and_an_unweighted_destination_weighs_0() {
    let s = spec(30);
    let vs = serde_json::json!({
        "metadata": {"name": "veritas-spark", "namespace": "veritas", "resourceVersion": "7"},
        "spec": {"hosts": ["spark.example.com"], "http": [{"route": [
            {"destination": {"host": format!("{}.veritas.svc.cluster.local", s.stable.service)}, "weight": 100},
            {"destination": {"host": format!("{}.veritas", s.canary.service)}},
        ]}]}
    });
    assert_eq!(
        veritas_controller::decide::route_weights(&vs, &s),
        Some((100, 0))
    );
    let mut other_ns = vs.clone();
    other_ns["spec"]["http"][0]["route"][1]["destination"]["host"] =
        format!("{}.elsewhere.svc.cluster.local", s.canary.service).into();
    assert_eq!(
        veritas_controller::decide::route_weights(&other_ns, &s),
        None
    );
}

#[test]
fn cnt_4_a_rollback_onto_a_missing_route_says_so() {
    let mut s = spec(30);
    s.routing.gateway_api =
        Some(serde_json::from_value(serde_json::json!({"httpRoute": "veritas-spark"})).unwrap());
    let mut w = World::new(s);
    w.settle(3);
    w.route = None;
    w.annotations.insert(
        veritas_crds::annotations::ROLLBACK.into(),
        veritas_crds::annotations::TRUE.into(),
    );
    w.pass(None);
    w.pass(None);
    let st = w.status.clone().unwrap();
    assert_eq!(st.phase, Phase::RollingBack);
    assert_eq!(
        cond(&w, types::TRAFFIC_ROUTED).reason,
        reasons::ROUTE_MISCONFIGURED
    );
}

#[test]
fn cnt_4_the_weight_patch_changes_the_two_weights_and_nothing_else() {
    let s = spec(30);
    let route = users_http_route(&s);
    let patch: json_patch::Patch = serde_json::from_value(
        veritas_controller::decide::route_weight_patch(&route, &s, 70, 30).unwrap(),
    )
    .unwrap();
    let mut patched = route.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let mut expected = route.clone();
    expected["spec"]["rules"][1]["backendRefs"][0]["weight"] = 70.into();
    expected["spec"]["rules"][1]["backendRefs"][1]["weight"] = 30.into();
    assert_eq!(patched, expected);
    // Written against the route as read: a route changed since is refused, not overwritten.
    let mut changed = route.clone();
    changed["metadata"]["resourceVersion"] = "43".into();
    assert!(json_patch::patch(&mut changed, &patch).is_err());
}

#[test]
fn cnt_5_network_policy_blocking_shows_as_insufficient_traffic() {
    let mut w = started(25);
    let blocked = AnalysisSample::Data {
        canary: TrackMetrics {
            requests: Some(0.0),
            error_rate: None,
            latency_p99: None,
        },
        stable: None,
    };
    w.analyses(blocked, 1);
    let last = w
        .status
        .as_ref()
        .unwrap()
        .analysis_history
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last.verdict, last.reason.as_str()),
        (Verdict::Failed, reasons::INSUFFICIENT_TRAFFIC)
    );
}

// ---------------- Metrics Not Reporting ----------------

#[test]
fn mnr_1_metrics_endpoint_down_is_no_metrics_data_never_a_pass() {
    let mut w = started(25);
    w.analyses(no_data(), 1);
    let st = w.status.clone().unwrap();
    assert_eq!(st.consecutive_successes, 0);
    assert_eq!(st.consecutive_failures, 1);
    assert_eq!(
        cond(&w, types::ANALYSIS_SUCCESSFUL).reason,
        reasons::NO_METRICS_DATA
    );
    assert_eq!(
        cond(&w, types::METRICS_AVAILABLE).reason,
        reasons::NO_METRICS_DATA
    );
}

#[test]
fn mnr_2_service_monitor_missing_is_a_condition_and_fails_analysis() {
    let mut w = World::new(spec(25));
    w.service_monitor = MonitorObs::Missing;
    w.settle(5);
    let c = cond(&w, types::METRICS_AVAILABLE);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reasons::SERVICE_MONITOR_MISSING)
    );
    assert!(c.message.contains(labels::SERVICE_MONITOR_CANARY));
    w.analyses(no_data(), 1);
    let last = w
        .status
        .as_ref()
        .unwrap()
        .analysis_history
        .last()
        .unwrap()
        .clone();
    assert_eq!(last.reason, reasons::NO_METRICS_DATA);
    assert!(
        last.message
            .contains("ServiceMonitor veritas-spark-canary is missing"),
        "{}",
        last.message
    );
    // Remedy: create the ServiceMonitor; data comes back and the analysis passes.
    w.service_monitor = MonitorObs::Present;
    w.analyses(healthy(), 1);
    assert!(cond(&w, types::METRICS_AVAILABLE).is_true());
    assert_eq!(w.status.as_ref().unwrap().consecutive_successes, 1);
}

#[test]
fn mnr_3_label_selector_wrong_and_mnr_4_port_mismatch_look_like_no_data() {
    // Both leave Prometheus without canary series; the hint names what to check.
    let s = spec(25);
    let (v, r, m) = judge(&s, &no_data(), MonitorObs::Present);
    assert_eq!((v, r), (Verdict::Failed, reasons::NO_METRICS_DATA));
    assert!(m.contains("selector and port"), "{m}");
}

#[test]
fn mnr_5_unreachable_prometheus_is_inconclusive_and_error_limit_rolls_back() {
    let s = spec(25);
    let (v, r, _) = judge(
        &s,
        &AnalysisSample::Unreachable("403 Forbidden".into()),
        MonitorObs::Present,
    );
    assert_eq!(
        (v, r),
        (Verdict::Inconclusive, reasons::PROMETHEUS_UNREACHABLE)
    );
    // Neither a success nor a failure: successes so far are kept, failures not counted.
    let mut w = started(25);
    w.analyses(healthy(), 1);
    let unreachable = AnalysisSample::Unreachable("connection refused".into());
    w.analyses(unreachable.clone(), 3);
    let st = w.status.clone().unwrap();
    assert_eq!(phase(&w), Phase::Progressing);
    assert_eq!(
        (
            st.consecutive_successes,
            st.failed_analyses,
            st.inconclusive_analyses
        ),
        (1, 0, 3)
    );
    assert!(st.message.unwrap().contains("3/4 in a row"));
    // One measurement that works resets the run of errors.
    w.analyses(healthy(), 1);
    assert_eq!(w.status.as_ref().unwrap().inconclusive_analyses, 0);
    // errorLimit (4) in a row: rolled back with its own reason.
    w.analyses(unreachable, 4);
    assert_eq!(reason(&w), reasons::ERROR_LIMIT_REACHED);
    w.settle(5);
    rolled_back(&w);
}

#[test]
fn traffic_without_latency_data_is_no_metrics_data_never_a_pass() {
    let s = spec(25);
    for p99 in [None, Some(f64::NAN)] {
        let sample = AnalysisSample::Data {
            canary: TrackMetrics {
                requests: Some(500.0),
                error_rate: Some(0.0),
                latency_p99: p99,
            },
            stable: None,
        };
        let (v, r, m) = judge(&s, &sample, MonitorObs::Present);
        assert_eq!(
            (v, r),
            (Verdict::Failed, reasons::NO_METRICS_DATA),
            "{p99:?}"
        );
        assert!(m.contains("p99") && m.contains("_bucket"), "{m}");
    }
    // Compared with stable, stable's latency must exist too.
    let mut s = spec(25);
    s.analysis.compare_with_stable = true;
    let sample = AnalysisSample::Data {
        canary: TrackMetrics {
            requests: Some(500.0),
            error_rate: Some(0.0),
            latency_p99: Some(0.05),
        },
        stable: Some(TrackMetrics {
            requests: Some(500.0),
            error_rate: Some(0.0),
            latency_p99: None,
        }),
    };
    let (v, r, m) = judge(&s, &sample, MonitorObs::Present);
    assert_eq!((v, r), (Verdict::Failed, reasons::NO_METRICS_DATA));
    assert!(m.contains("deployment=\"stable\""), "{m}");
}

#[test]
fn failures_count_per_run_so_a_canary_failing_every_other_analysis_is_rolled_back() {
    let mut s = spec(25);
    s.promotion.success_limit = 1;
    s.promotion.steps = vec![
        Step {
            weight: 40,
            pause: None,
        },
        Step {
            weight: 60,
            pause: None,
        },
        Step {
            weight: 80,
            pause: None,
        },
    ];
    let mut w = World::new(s);
    w.settle(5);
    for _ in 0..3 {
        if phase(&w) != Phase::Progressing {
            break;
        }
        w.analyses(erroring(0.5), 1);
        w.analyses(healthy(), 1);
    }
    assert_eq!(reason(&w), reasons::FAILURE_LIMIT_REACHED, "{:?}", w.status);
    assert!(
        w.status.as_ref().unwrap().current_step < 4,
        "never promoted"
    );
    let st = w.status.clone().unwrap();
    assert_eq!(st.failed_analyses, 3);
    assert!(st
        .message
        .unwrap()
        .contains("3 failed analyses in this run"));
}

#[test]
fn successes_that_never_reach_the_limit_do_not_hold_off_the_deadline() {
    let mut s = spec(25);
    s.analysis.failure_limit = 100;
    let mut w = World::new(s);
    w.settle(5);
    // S,S,F repeated with successLimit 3 never advances; only the deadline can end it.
    for _ in 0..40 {
        if phase(&w) != Phase::Progressing {
            break;
        }
        w.analyses(healthy(), 2);
        w.analyses(erroring(0.5), 1);
    }
    assert_eq!(
        reason(&w),
        reasons::PROGRESS_DEADLINE_EXCEEDED,
        "{:?}",
        w.status
    );
    assert_eq!(w.status.as_ref().unwrap().current_step, 0);
}

// ---------------- Unexpected Rollback ----------------

fn rolled_back(w: &World) {
    let st = w.status.as_ref().unwrap();
    assert_eq!(st.phase, Phase::Failed, "{st:?}");
    assert_eq!(st.actual_weight, 0);
    assert_eq!(
        w.shared_selector
            .as_ref()
            .unwrap()
            .get(OWNED_SELECTOR_KEY)
            .map(String::as_str),
        Some(labels::DEPLOYMENT_STABLE)
    );
    assert!(
        w.canary.as_ref().unwrap().ready >= 1,
        "canary pods kept for their logs"
    );
    assert_eq!(w.stable.as_ref().unwrap().replicas, 4);
}

#[test]
fn urb_1_threshold_too_strict_rolls_back_and_raising_it_recovers() {
    let mut w = started(25);
    w.spec.analysis.error_rate_threshold = 0.001;
    w.analyses(erroring(0.01), 3);
    rolled_back(&w);
    assert_eq!(reason(&w), reasons::FAILURE_LIMIT_REACHED);
    let last = w
        .status
        .as_ref()
        .unwrap()
        .analysis_history
        .last()
        .unwrap()
        .clone();
    assert_eq!(last.reason, reasons::THRESHOLD_EXCEEDED);
    assert!(
        last.message.contains("error rate 0.0100 exceeds 0.0010"),
        "{}",
        last.message
    );
    assert!(w.events.iter().any(|(r, _)| *r == reasons::ROLLED_BACK));
    // Remedy: increase the threshold (a new generation restarts the canary).
    w.edit(|s| s.analysis.error_rate_threshold = 0.05);
    w.settle(5);
    assert_eq!(phase(&w), Phase::Progressing);
    assert_eq!(reason(&w), reasons::ANALYSIS_PENDING);
    w.analyses(erroring(0.01), 3);
    assert_eq!(w.status.as_ref().unwrap().current_step, 1);
}

#[test]
fn urb_2_interval_too_short_means_analyses_as_often_as_the_interval_allows() {
    let mut w = started(25);
    w.spec.analysis.interval_seconds = 60;
    w.pass(Some(healthy()));
    w.advance(30);
    assert!(
        !analysis_due(&w.spec, w.status.as_ref(), w.now),
        "not due before the interval"
    );
    w.advance(30);
    assert!(analysis_due(&w.spec, w.status.as_ref(), w.now));
}

#[test]
fn urb_3_canary_with_a_real_bug_rolls_back_on_error_burst() {
    let mut w = started(50);
    w.analyses(healthy(), 1);
    w.analyses(erroring(0.4), 3);
    rolled_back(&w);
    let st = w.status.as_ref().unwrap();
    assert_eq!(st.analysis_history.len(), 4);
    assert_eq!(
        find_condition(&st.conditions, types::PROGRESSING)
            .unwrap()
            .reason,
        reasons::FAILURE_LIMIT_REACHED
    );
}

/// The first analysis of a run judges only the run's own traffic: a window reaching back past
/// the (re)start would count the rolled-back canary's idle time (too little traffic) or the
/// broken build's errors against the fixed one.
#[test]
fn first_analysis_of_a_run_waits_for_a_whole_window_of_routed_traffic() {
    let mut w = started(50);
    let window = w.spec.analysis.window_seconds;
    let due = |w: &World| analysis_due(&w.spec, w.status.as_ref(), w.now);
    assert!(!due(&w), "due as soon as traffic is routed");
    w.advance(window - 1);
    assert!(!due(&w), "due before a whole window of routed traffic");
    w.advance(1);
    assert!(due(&w));
    w.analyses(erroring(0.4), 3);
    rolled_back(&w);
    // Restarted by the retry annotation: traffic is routed again (the kept `RolledBack`
    // condition does not count as routed), and the wait starts over.
    w.annotate(annotations::RETRY, "true");
    w.settle(5);
    assert_eq!(phase(&w), Phase::Progressing);
    assert_eq!(w.status.as_ref().unwrap().actual_weight, 50);
    assert!(
        !due(&w),
        "the restarted canary judged at once, on the broken build's window"
    );
    w.advance(window);
    assert!(due(&w));
    // Later analyses follow the interval.
    w.analyses(healthy(), 1);
    w.advance(w.spec.analysis.interval_seconds - 1);
    assert!(!due(&w));
    w.advance(1);
    assert!(due(&w));
}

#[test]
fn urb_4_traffic_too_low_counts_as_failure_until_rollback() {
    let mut w = started(10);
    let low = AnalysisSample::Data {
        canary: TrackMetrics {
            requests: Some(5.0),
            error_rate: Some(0.0),
            latency_p99: Some(0.01),
        },
        stable: None,
    };
    w.analyses(low, 3);
    rolled_back(&w);
    let last = w
        .status
        .as_ref()
        .unwrap()
        .analysis_history
        .last()
        .unwrap()
        .clone();
    assert_eq!(last.reason, reasons::INSUFFICIENT_TRAFFIC);
    assert!(last.message.contains("minRequests is 20"));
}

#[test]
fn urb_5_baseline_wrong_compare_with_stable() {
    let mut s = spec(25);
    s.analysis.compare_with_stable = true;
    // Stable itself errors at 8 %: an absolute 5 % threshold would fail the canary at 9 %,
    // relative to stable it passes.
    let both = |c: f64, st: f64| AnalysisSample::Data {
        canary: TrackMetrics {
            requests: Some(400.0),
            error_rate: Some(c),
            latency_p99: Some(0.1),
        },
        stable: Some(TrackMetrics {
            requests: Some(1200.0),
            error_rate: Some(st),
            latency_p99: Some(0.1),
        }),
    };
    assert_eq!(
        judge(&s, &both(0.09, 0.08), MonitorObs::Present).0,
        Verdict::Successful
    );
    assert_eq!(
        judge(&s, &both(0.20, 0.08), MonitorObs::Present).1,
        reasons::THRESHOLD_EXCEEDED
    );
    let no_stable = AnalysisSample::Data {
        canary: TrackMetrics {
            requests: Some(400.0),
            error_rate: Some(0.0),
            latency_p99: None,
        },
        stable: Some(TrackMetrics::default()),
    };
    assert_eq!(
        judge(&s, &no_stable, MonitorObs::Present).1,
        reasons::NO_METRICS_DATA
    );
}

#[test]
fn latency_breach_names_metric_value_and_limit() {
    let s = spec(25);
    let slow = AnalysisSample::Data {
        canary: TrackMetrics {
            requests: Some(400.0),
            error_rate: Some(0.0),
            latency_p99: Some(3.5),
        },
        stable: None,
    };
    let (v, r, m) = judge(&s, &slow, MonitorObs::Present);
    assert_eq!((v, r), (Verdict::Failed, reasons::THRESHOLD_EXCEEDED));
    assert_eq!(
        m,
        "p99 latency 3.500s exceeds 2.000s (latencyP99Threshold 2)"
    );
}

// ---------------- Promotion Stuck ----------------

#[test]
fn pst_1_auto_promotion_disabled_holds_until_enabled() {
    let mut s = spec(25);
    s.promotion.auto = false;
    let mut w = World::new(s);
    w.settle(5);
    w.analyses(healthy(), 5);
    let st = w.status.clone().unwrap();
    assert_eq!(
        (st.phase, st.current_step, st.reason.as_deref()),
        (
            Phase::Progressing,
            0,
            Some(reasons::AUTO_PROMOTION_DISABLED)
        )
    );
    assert!(st.message.unwrap().contains("auto promotion is disabled"));
    // No deadline while waiting for a person.
    w.advance(5_000);
    w.pass(None);
    assert_eq!(phase(&w), Phase::Progressing);
    w.edit(|s| s.promotion.auto = true);
    w.settle(5);
    assert_eq!(
        phase(&w),
        Phase::Succeeded,
        "no steps: promoted straight to 100%"
    );
    assert_eq!(w.status.as_ref().unwrap().actual_weight, 100);
}

#[test]
fn pst_2_paused_at_step_until_resumed_or_duration() {
    let mut s = spec(10);
    s.promotion.success_limit = 1;
    s.promotion.steps = vec![
        Step {
            weight: 50,
            pause: Some(StepPause {
                duration_seconds: None,
            }),
        },
        Step {
            weight: 75,
            pause: Some(StepPause {
                duration_seconds: Some(120),
            }),
        },
    ];
    let mut w = World::new(s);
    w.settle(5);
    w.analyses(healthy(), 1);
    assert_eq!(
        (phase(&w), reason(&w)),
        (Phase::Paused, reasons::PAUSED_AT_STEP.to_string())
    );
    assert_eq!(w.status.as_ref().unwrap().actual_weight, 50);
    // Paused: analyses are not even due, time passes, nothing moves.
    w.analyses(healthy(), 3);
    w.advance(100_000);
    w.pass(None);
    assert_eq!(
        (phase(&w), w.status.as_ref().unwrap().current_step),
        (Phase::Paused, 1)
    );
    // Resume by annotation.
    w.annotate(annotations::RESUME, "true");
    w.pass(None);
    assert!(
        !w.annotations.contains_key(annotations::RESUME),
        "annotation consumed"
    );
    assert_eq!(phase(&w), Phase::Progressing);
    w.analyses(healthy(), 1);
    assert_eq!(
        (phase(&w), w.status.as_ref().unwrap().current_step),
        (Phase::Paused, 2)
    );
    // A timed pause ends by itself.
    w.advance(121);
    w.settle(5);
    assert_eq!(phase(&w), Phase::Progressing);
    w.analyses(healthy(), 1);
    assert_eq!(phase(&w), Phase::Succeeded);
}

#[test]
fn pst_2_spec_paused_freezes_everything() {
    let mut w = started(25);
    w.edit(|s| s.promotion.paused = true);
    let d = w.pass(None);
    assert_eq!(
        (phase(&w), reason(&w)),
        (Phase::Paused, reasons::PAUSED_BY_SPEC.to_string())
    );
    assert!(!d.actions.iter().any(|a| matches!(
        a,
        Action::Scale { .. } | Action::SetSelector { .. } | Action::SetRouteWeights { .. }
    )));
    w.edit(|s| s.promotion.paused = false);
    w.settle(5);
    assert_eq!(phase(&w), Phase::Progressing);
}

#[test]
fn pst_3_controller_restart_resumes_from_status() {
    // The decision keeps no memory but the status: a new controller reading the same status
    // makes the same decision.
    let mut w = started(25);
    w.analyses(healthy(), 2);
    let obs = w.observe(None);
    let a = veritas_controller::decide::decide("spark", &w.spec, w.status.as_ref(), &obs);
    let b = veritas_controller::decide::decide("spark", &w.spec, w.status.as_ref(), &obs);
    assert_eq!(a, b);
    assert_eq!(a.status.consecutive_successes, 2);
}

#[test]
fn pst_3_progress_deadline_fails_a_canary_whose_pods_never_become_ready() {
    let mut w = World::new(spec(50));
    w.pods_become_ready = false;
    w.settle(3);
    assert_eq!(reason(&w), reasons::WAITING_FOR_PODS);
    // Surge before shrink: stable keeps its pods while the canary's new one is not ready.
    assert_eq!(w.stable.as_ref().unwrap().replicas, 4);
    assert_eq!(w.canary.as_ref().unwrap().replicas, 2);
    w.advance(601);
    w.settle(5);
    assert_eq!(reason(&w), reasons::PROGRESS_DEADLINE_EXCEEDED);
    // Stable was never shrunk, so the rollback has its pods at once.
    assert_eq!(phase(&w), Phase::Failed);
    assert_eq!(w.stable.as_ref().unwrap().ready, 4);
}

#[test]
fn a_rollback_that_cannot_finish_is_rollback_failed_after_its_deadline_and_keeps_trying() {
    let mut w = World::new(spec(50));
    w.settle(3);
    // Stable shrank to 2 for the 50 % split; the pods it needs back never become ready.
    assert_eq!(w.stable.as_ref().unwrap().replicas, 2);
    w.pods_become_ready = false;
    w.annotate(annotations::ROLLBACK, annotations::TRUE);
    w.settle(3);
    assert_eq!(phase(&w), Phase::RollingBack);
    assert_eq!(reason(&w), reasons::ROLLBACK_REQUESTED);
    // Still short of the deadline: in progress.
    w.advance(590);
    w.settle(3);
    assert_eq!(reason(&w), reasons::ROLLBACK_REQUESTED);
    // Past it: E5002's reason, the phase still RollingBack (the controller keeps at it).
    w.advance(20);
    let d = w.pass(None);
    assert_eq!(phase(&w), Phase::RollingBack);
    assert_eq!(reason(&w), reasons::ROLLBACK_FAILED);
    assert!(d
        .actions
        .iter()
        .any(|a| matches!(a, Action::Event { reason, .. } if *reason == reasons::ROLLBACK_FAILED)));
    let msg = w.status.as_ref().unwrap().message.clone().unwrap();
    assert!(msg.contains("rollback not complete after"), "{msg}");
    // Stable's pods come up: rolled back, and said so.
    w.pods_ready();
    w.settle(5);
    assert_eq!(phase(&w), Phase::Failed);
    assert_eq!(reason(&w), reasons::ROLLED_BACK);
}

#[test]
fn a_step_of_weight_zero_names_the_step_not_traffic_weight() {
    let mut s = spec(25);
    s.promotion.steps = vec![Step {
        weight: 0,
        pause: None,
    }];
    let mut w = World::new(s);
    w.settle(5);
    w.analyses(healthy(), 3);
    let st = w.status.clone().unwrap();
    assert_eq!(
        (st.current_step, st.reason.as_deref()),
        (1, Some(reasons::ZERO_WEIGHT))
    );
    let msg = st.message.unwrap();
    assert!(msg.contains("spec.promotion.steps[0].weight is 0"), "{msg}");
    assert!(!msg.contains("trafficWeight"), "{msg}");
}

#[test]
fn pst_4_success_limit_not_met_keeps_the_step() {
    let mut w = started(25);
    w.analyses(healthy(), 2);
    let st = w.status.clone().unwrap();
    assert_eq!(
        (st.current_step, st.reason.as_deref()),
        (0, Some(reasons::SUCCESS_LIMIT_NOT_MET))
    );
    assert!(st.message.unwrap().contains("2/3"));
    // One failure resets the count.
    w.analyses(erroring(0.5), 1);
    w.analyses(healthy(), 2);
    assert_eq!(w.status.as_ref().unwrap().current_step, 0);
    w.analyses(healthy(), 1);
    assert_eq!(phase(&w), Phase::Succeeded);
}

#[test]
fn pst_5_manual_approval_waits_and_the_annotation_approves_one_step() {
    let mut s = spec(10);
    s.promotion.manual_approval = true;
    s.promotion.success_limit = 1;
    s.promotion.steps = vec![Step {
        weight: 50,
        pause: None,
    }];
    let mut w = World::new(s);
    w.settle(5);
    w.analyses(healthy(), 2);
    let st = w.status.clone().unwrap();
    assert_eq!((st.phase, st.current_step), (Phase::WaitingForApproval, 0));
    assert!(st.message.unwrap().contains("waiting for manual approval"));
    // Annotations are read by their value: `false` approves nothing and is cleared.
    w.annotate(annotations::APPROVE, "false");
    w.settle(5);
    assert_eq!(phase(&w), Phase::WaitingForApproval);
    assert!(!w.annotations.contains_key(annotations::APPROVE));
    assert!(w
        .events
        .iter()
        .any(|(r, m)| *r == reasons::ANNOTATION_IGNORED && m.contains("\"false\"")));
    w.annotate(annotations::APPROVE, "true");
    w.pass(None);
    w.settle(5);
    assert_eq!(w.status.as_ref().unwrap().current_step, 1);
    assert!(
        !w.annotations.contains_key(annotations::APPROVE),
        "consumed: it approves one step only"
    );
    w.analyses(healthy(), 2);
    assert_eq!(phase(&w), Phase::WaitingForApproval);
}

// ---------------- Promotion and rollback paths ----------------

#[test]
fn full_promotion_step_by_step_to_100_percent() {
    let mut s = spec(10);
    s.replicas = Some(10);
    s.promotion.success_limit = 2;
    s.promotion.steps = vec![
        Step {
            weight: 30,
            pause: None,
        },
        Step {
            weight: 60,
            pause: None,
        },
    ];
    let mut w = World::new(s);
    w.settle(5);
    let mut seen = vec![w.status.as_ref().unwrap().actual_weight];
    for _ in 0..3 {
        w.analyses(healthy(), 2);
        seen.push(w.status.as_ref().unwrap().actual_weight);
    }
    assert_eq!(seen, vec![10, 30, 60, 100]);
    assert_eq!(phase(&w), Phase::Succeeded);
    assert_eq!(
        (
            w.stable.as_ref().unwrap().replicas,
            w.canary.as_ref().unwrap().replicas
        ),
        (0, 10)
    );
    assert!(w.events.iter().any(|(r, _)| *r == reasons::PROMOTED));
}

#[test]
fn rollback_annotation_and_force() {
    let mut w = started(25);
    w.annotate(annotations::ROLLBACK, "false");
    w.settle(5);
    assert_eq!(
        phase(&w),
        Phase::Progressing,
        "rollback=false rolls nothing back"
    );
    assert!(!w.annotations.contains_key(annotations::ROLLBACK));
    w.annotate(annotations::ROLLBACK, "true");
    w.settle(5);
    rolled_back(&w);
    assert_eq!(reason(&w), reasons::ROLLBACK_REQUESTED);
    // Retry restarts from step 0.
    w.annotate(annotations::RETRY, "true");
    w.settle(5);
    assert_eq!(phase(&w), Phase::Progressing);
    assert_eq!(w.status.as_ref().unwrap().actual_weight, 25);
    // A succeeded canary needs force.
    w.spec.promotion.success_limit = 1;
    w.analyses(healthy(), 1);
    assert_eq!(phase(&w), Phase::Succeeded);
    w.annotate(annotations::ROLLBACK, "true");
    w.settle(3);
    assert_eq!(phase(&w), Phase::Succeeded);
    w.annotate(annotations::ROLLBACK, annotations::FORCE);
    w.settle(5);
    assert_eq!(phase(&w), Phase::Failed);
}

#[test]
fn forced_rollback_after_promotion_moves_traffic_only_to_ready_stable_pods() {
    let mut w = started(25);
    w.spec.promotion.success_limit = 1;
    w.analyses(healthy(), 1);
    assert_eq!(phase(&w), Phase::Succeeded);
    assert_eq!(
        w.stable.as_ref().unwrap().replicas,
        0,
        "promoted: stable at 0"
    );
    // Stable's pods take their time to start, as a real model load does.
    w.pods_become_ready = false;
    w.annotate(annotations::ROLLBACK, annotations::FORCE);
    for pass in 0..6 {
        w.pass(None);
        assert!(
            w.serving() > 0,
            "pass {pass}: the shared Service lost every endpoint"
        );
        assert_ne!(
            phase(&w),
            Phase::Failed,
            "pass {pass}: rolled back onto no ready pod"
        );
    }
    assert_eq!(w.stable.as_ref().unwrap().replicas, 4);
    assert_eq!(
        cond(&w, types::TRAFFIC_ROUTED).reason,
        reasons::WAITING_FOR_PODS
    );
    w.pods_ready();
    w.settle(5);
    rolled_back(&w);
    assert!(w.serving() > 0);
}

#[test]
fn events_only_on_transitions() {
    let mut w = started(25);
    let before = w.events.len();
    for _ in 0..10 {
        w.pass(None);
    }
    assert_eq!(w.events.len(), before);
}

#[test]
fn history_is_bounded() {
    let mut s = spec(25);
    s.promotion.auto = false;
    let mut w = World::new(s);
    w.settle(5);
    w.analyses(healthy(), 40);
    assert_eq!(
        w.status.as_ref().unwrap().analysis_history.len(),
        veritas_crds::canary::ANALYSIS_HISTORY_LIMIT
    );
}

#[test]
fn replica_split_rounds_the_canary_up() {
    assert_eq!(replica_split(4, 0), (4, 1));
    assert_eq!(replica_split(4, 1), (3, 1));
    assert_eq!(replica_split(4, 25), (3, 1));
    assert_eq!(replica_split(4, 50), (2, 2));
    assert_eq!(replica_split(4, 99), (1, 4));
    assert_eq!(replica_split(4, 100), (0, 4));
    assert_eq!(replica_split(10, 30), (7, 3));
}

#[test]
fn missing_deployment_is_reference_missing() {
    let mut w = World::new(spec(25));
    w.canary = None;
    w.pass(None);
    assert_eq!(reason(&w), reasons::REFERENCE_MISSING);
}

#[test]
fn a_hold_writes_status_once_not_every_pass() {
    for setup in [0, 1, 2] {
        let mut s = spec(if setup == 0 { 0 } else { 25 });
        if setup == 1 {
            s.promotion.auto = false;
            s.promotion.success_limit = 1;
        }
        if setup == 2 {
            s.promotion.success_limit = 1;
            s.promotion.steps = vec![Step {
                weight: 50,
                pause: Some(StepPause {
                    duration_seconds: Some(3600),
                }),
            }];
        }
        let mut w = World::new(s);
        w.settle(5);
        w.analyses(healthy(), 1);
        w.settle(5);
        let before = w.status.clone();
        w.advance(17);
        w.pass(None);
        assert_eq!(
            before, w.status,
            "setup {setup}: status changed during a hold"
        );
    }
}

#[test]
fn leaving_a_long_hold_does_not_trip_the_deadline() {
    let mut w = started(0);
    w.advance(100_000);
    w.pass(None);
    w.pods_become_ready = false;
    w.edit(|s| s.traffic_weight = 50);
    w.pass(None);
    assert_eq!(phase(&w), Phase::Progressing, "{:?}", w.status);
    w.advance(601);
    w.settle(3);
    assert_eq!(reason(&w), reasons::PROGRESS_DEADLINE_EXCEEDED);
}

// ---------------- Sizes: the user's Deployment, and the weight a split can serve ----------------

#[test]
fn unset_replicas_split_the_stable_deployments_own_size_and_never_resize_it_to_a_default() {
    let mut w = World::new(spec(10));
    assert_eq!(w.spec.replicas, None);
    // The user runs 20 stable pods.
    let stable = w.stable.as_mut().unwrap();
    (stable.replicas, stable.ready) = (20, 20);
    w.settle(3);
    let st = w.status.clone().unwrap();
    assert_eq!(st.replicas, Some(20));
    // 10 % of 20 is 2 canary pods, 18 stable: exact, so WeightRealised.
    assert_eq!(
        (
            w.stable.as_ref().unwrap().replicas,
            w.canary.as_ref().unwrap().replicas
        ),
        (18, 2)
    );
    assert_eq!(
        cond(&w, types::TRAFFIC_ROUTED).reason,
        reasons::WEIGHT_REALISED
    );
    assert_eq!(st.actual_weight, 10);
    // Rolled back, stable is back at the user's 20 (not a default of 4).
    w.annotate(annotations::ROLLBACK, annotations::TRUE);
    w.settle(5);
    assert_eq!(phase(&w), Phase::Failed);
    assert_eq!(w.stable.as_ref().unwrap().replicas, 20);
}

#[test]
fn a_weight_the_split_cannot_serve_exactly_is_reported_as_served_with_its_reason() {
    let mut s = spec(10);
    s.replicas = Some(4);
    let mut w = World::new(s);
    w.settle(3);
    let st = w.status.clone().unwrap();
    let c = cond(&w, types::TRAFFIC_ROUTED);
    assert!(c.is_true());
    assert_eq!(c.reason, reasons::WEIGHT_APPROXIMATED);
    assert!(
        c.message.contains("10% asked, 25% served") && c.message.contains("spec.replicas"),
        "{}",
        c.message
    );
    assert_eq!((st.desired_weight, st.actual_weight), (10, 25));
    // The weight is in place as closely as it can be: the analysis runs on it.
    w.advance(w.spec.analysis.window_seconds + 1);
    assert!(analysis_due(&w.spec, w.status.as_ref(), w.now));
}

#[test]
fn cnt_4_gateway_api_weights_are_relative_and_reported_as_the_canarys_share() {
    let mut s = spec(25);
    s.routing.gateway_api =
        Some(serde_json::from_value(serde_json::json!({"httpRoute": "veritas-spark"})).unwrap());
    let mut w = World::new(s);
    // The user's route splits 3:1 (relative weights): 25 % reaches the canary already.
    w.route = Some((3, 1));
    let d = w.pass(None);
    assert_eq!(w.status.as_ref().unwrap().actual_weight, 25);
    // Written as percentages; the share stays 25 %.
    assert_eq!(route_weights_set(&d), Some((75, 25)));
    w.pass(None);
    assert_eq!(w.status.as_ref().unwrap().actual_weight, 25);
    assert_eq!(
        cond(&w, types::TRAFFIC_ROUTED).reason,
        reasons::WEIGHT_REALISED
    );
    // 1:1 is half, whatever the numbers.
    w.route = Some((7, 7));
    w.pass(None);
    assert_eq!(w.status.as_ref().unwrap().actual_weight, 50);
}

// ---------------- E5001: Check for conflicting deployments ----------------

#[test]
fn e5001_a_later_canary_over_the_same_deployments_stands_aside_and_starts_once_alone() {
    use veritas_controller::decide::{decide, prior_claims, CanaryClaim};
    let at = |s: i64| Some(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
    let first = CanaryClaim::of("first", at(100), &spec(50));
    let mut other = spec(50);
    other.stable.deployment = "other-stable".into();
    other.canary.deployment = "other-canary".into();
    other.shared_service = "other".into();
    let unrelated = CanaryClaim::of("unrelated", at(50), &other);
    let hotfix = CanaryClaim::of("hotfix", at(200), &spec(100));
    let all = [first.clone(), unrelated.clone(), hotfix.clone()];
    // The older claim wins; a canary over other objects conflicts with nobody.
    let held = prior_claims(&hotfix, &all);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].0, "first");
    assert!(held[0]
        .1
        .contains(&"Deployment veritas-spark-canary".to_string()));
    assert!(held[0].1.contains(&"Service veritas-spark".to_string()));
    assert!(prior_claims(&first, &all).is_empty());
    assert!(prior_claims(&unrelated, &all).is_empty());
    // Created in the same second: the name decides, the same way on every replica.
    let twin = CanaryClaim::of("a-twin", at(100), &spec(50));
    assert_eq!(
        prior_claims(&first, &[twin.clone(), first.clone()])[0].0,
        "a-twin"
    );
    assert!(prior_claims(&twin, &[twin.clone(), first.clone()]).is_empty());
    // Not yet created (no timestamp) comes after every created one.
    let draft = CanaryClaim::of("0-draft", None, &spec(50));
    assert!(prior_claims(&first, &[draft.clone(), first.clone()]).is_empty());
    assert_eq!(
        prior_claims(&draft, &[draft.clone(), first.clone()]).len(),
        1
    );

    // The later canary, passed by passes: it never acts on the objects it shares.
    let mut w = World::new(spec(50));
    w.prior_claims = held.clone();
    for _ in 0..5 {
        let d = w.pass(None);
        assert!(
            d.actions.iter().all(|a| matches!(a, Action::Event { .. })),
            "a canary standing aside acted: {:?}",
            d.actions
        );
    }
    assert_eq!(phase(&w), Phase::Failed);
    assert_eq!(reason(&w), reasons::CONFLICTING_CANARY);
    let c = cond(&w, types::REFERENCES_VALID);
    assert_eq!(c.status, "False");
    assert!(
        c.message.contains("already driven by VeritasCanary first"),
        "{}",
        c.message
    );
    // One warning, not one per pass.
    let warned = w
        .events
        .iter()
        .filter(|(r, _)| *r == reasons::CONFLICTING_CANARY)
        .count();
    assert_eq!(warned, 1, "{:?}", w.events);
    // A replica restarting mid-conflict decides the same from the same reads.
    let again = decide(&w.name, &w.spec, w.status.as_ref(), &w.observe(None));
    assert_eq!(again.status.phase, Phase::Failed);

    // Remedy: the duplicate is deleted; the one left starts its own run and routes.
    w.prior_claims.clear();
    w.settle(5);
    assert_eq!(phase(&w), Phase::Progressing);
    assert_ne!(reason(&w), reasons::CONFLICTING_CANARY);
    assert_eq!(w.status.as_ref().unwrap().actual_weight, 50);
}
