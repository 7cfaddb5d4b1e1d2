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

#[test]
fn every_reason_is_distinct() {
    let mut all = veritas_crds::reasons::ALL.to_vec();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len());
}
