//! The committed CRD YAML is what the types generate (controller-rs' `git diff --exit-code`
//! check, as a test). Regenerate with `cargo run -p veritas-crds --bin crdgen`.

use std::path::PathBuf;

#[test]
fn committed_crds_match_the_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(veritas_crds::crdgen::DIR);
    for (name, want) in veritas_crds::crdgen::render().expect("render CRDs") {
        let path = dir.join(name);
        let have = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cargo run -p veritas-crds --bin crdgen`",
                path.display()
            )
        });
        assert!(
            have == want,
            "{} drifted from the Rust types; run `cargo run -p veritas-crds --bin crdgen` and commit",
            path.display()
        );
    }
}

#[test]
fn canary_crd_has_the_guides_fields_and_columns() {
    let (_, yaml) = veritas_crds::crdgen::render().unwrap().remove(0);
    for needle in [
        "trafficWeight",
        "promotion",
        "successLimit",
        "manualApproval",
        "errorRateThreshold",
        "latencyP99Threshold",
        "minRequests",
        "compareWithStable",
        "failureLimit",
        "progressDeadlineSeconds",
        "analysisHistory",
        "observedGeneration",
        "actualWeight",
        "gatewayAPI",
        "istio",
        "additionalPrinterColumns",
        "shortNames",
        "subresources",
    ] {
        assert!(yaml.contains(needle), "CRD lacks {needle}");
    }
}

/// `kubectl get veritascanary` shows what is happening: the current step's weight and the
/// run's failure count, read from status (the spec's `trafficWeight` is step 0 only).
#[test]
fn canary_columns_read_status() {
    let (_, yaml) = veritas_crds::crdgen::render().unwrap().remove(0);
    let crd: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    let columns = &crd["spec"]["versions"][0]["additionalPrinterColumns"];
    let path_of = |name: &str| {
        columns
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["jsonPath"].as_str())
            .unwrap_or_else(|| panic!("no column {name}"))
            .to_string()
    };
    assert_eq!(path_of("Weight"), ".status.desiredWeight");
    assert_eq!(path_of("Actual"), ".status.actualWeight");
    assert_eq!(path_of("Failures"), ".status.failedAnalyses");
}

#[test]
fn every_reason_is_distinct() {
    let mut all = veritas_crds::reasons::ALL.to_vec();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len());
}

#[test]
fn environment_crd_has_the_guides_fields_and_columns() {
    let (_, yaml) = veritas_crds::crdgen::render().unwrap().remove(1);
    for needle in [
        "activeEnvironment",
        "previousEnvironment",
        "switchProgress",
        "healthCheck",
        "timeoutSeconds",
        "minReadySeconds",
        "previewService",
        "serviceUpdateTimeoutSeconds",
        "readySince",
        "waitingFor",
        "lastSwitch",
        "drift",
        "- blue",
        "- green",
        "- Verifying",
        "- SwitchingSelector",
        "- RestoringSelector",
        "- SwitchFailed",
        "- RollbackFailed",
        "additionalPrinterColumns",
        "shortNames",
        "subresources",
    ] {
        assert!(yaml.contains(needle), "CRD lacks {needle}");
    }
}

#[test]
fn environment_defaults_name_the_guides_objects() {
    let spec: veritas_crds::VeritasEnvironmentSpec =
        serde_json::from_value(serde_json::json!({"activeEnvironment": "blue"})).unwrap();
    assert_eq!(spec.active_service, "veritas-spark");
    assert_eq!(spec.preview_service, "veritas-spark-preview");
    assert_eq!(spec.blue.config_map, "veritas-config-blue");
    assert_eq!(spec.green.config_map, "veritas-config-green");
    assert_eq!(spec.blue.deployment, "veritas-spark-blue");
    assert_eq!(spec.switch.health_check.timeout_seconds, 120);
    assert!(
        serde_json::from_value::<veritas_crds::VeritasEnvironmentSpec>(
            serde_json::json!({"activeEnvironment": "purple"})
        )
        .is_err()
    );
}

/// `Phase::ALL` lists every phase the CRD's schema allows (a new phase needs its gauge series).
#[test]
fn every_phase_is_listed() {
    let schema = serde_json::to_value(schemars::schema_for!(veritas_crds::Phase)).unwrap();
    let mut allowed: Vec<String> = schema["enum"]
        .as_array()
        .or_else(|| schema["oneOf"].as_array())
        .expect("an enum schema")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    allowed.sort();
    let mut listed: Vec<String> = veritas_crds::Phase::ALL
        .iter()
        .map(|p| p.as_str().to_string())
        .collect();
    listed.sort();
    assert_eq!(allowed, listed);
}
