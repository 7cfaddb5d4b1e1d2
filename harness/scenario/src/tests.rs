use super::*;

const GOOD: &str = r#"
apiVersion: harness.veritas.hearthlink.ai/v1alpha1
id: T-1
title: a test scenario
guide:
  section: "E2002: MODEL_NOT_FOUND"
  cause: Requested model not in registry
  remedy: add the model to the registry
setup:
  - model: {name: tiny}
  - startDaemon: {name: spark}
fault:
  - note: {text: nothing}
symptom:
  within: 5s
  holdFor: 1s
  checks:
    - spark:
        args: [models, load, ghost]
        expect: {exit: 1, code: E2002}
remedy:
  - model: {name: ghost}
recovery:
  within: 10s
  checks:
    - spark: {args: [models, load, ghost], expect: {exit: 0}}
"#;

fn problems(text: &str) -> Vec<Problem> {
    parse(text, Some("T-1")).expect_err("must be refused")
}

#[test]
fn a_valid_scenario_parses() {
    let s = parse(GOOD, Some("T-1")).unwrap();
    assert_eq!(s.id, "T-1");
    assert_eq!(s.symptom.hold_for, Some(Span::secs(1)));
    assert_eq!(s.setup.len(), 2);
}

#[test]
fn an_unknown_field_names_its_path_and_line() {
    let text = GOOD.replace(
        "expect: {exit: 1, code: E2002}",
        "expect: {exit: 1, kode: E2002}",
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].field.starts_with("symptom.checks[0].spark.expect"),
        "{p:?}"
    );
    assert!(p[0].message.contains("unknown field `kode`"), "{p:?}");
    assert_eq!(p[0].line, Some(20), "{p:?}");
}

#[test]
fn an_unknown_operation_is_refused_with_the_list_of_operations() {
    let text = GOOD.replace("- note: {text: nothing}", "- teleport: {text: nothing}");
    let p = problems(&text);
    assert!(p[0].field.starts_with("fault"), "{p:?}");
    assert!(p[0].message.contains("unknown variant `teleport`"), "{p:?}");
    assert!(p[0].message.contains("startDaemon"), "{p:?}");
}

#[test]
fn a_code_outside_the_guide_is_refused_at_its_line() {
    let text = GOOD.replace("code: E2002", "code: E9999");
    let p = problems(&text);
    assert_eq!(p[0].field, "symptom.checks[0].spark.expect.code");
    assert!(
        p[0].message.contains("not an error code of the guide"),
        "{p:?}"
    );
    assert_eq!(p[0].line, Some(20));
    // Names are accepted by ErrorCode::parse, but files spell the code.
    let p = problems(&GOOD.replace("code: E2002", "code: MODEL_NOT_FOUND"));
    assert!(p[0].message.contains("write the code `E2002`"), "{p:?}");
}

#[test]
fn the_negative_control_is_mandatory() {
    let p = problems(&GOOD.replace("  holdFor: 1s\n", ""));
    assert_eq!(p[0].field, "symptom.holdFor");
    assert!(p[0].message.contains("negative control"));
}

#[test]
fn operations_of_the_other_driver_and_unknown_daemons_are_refused() {
    let text = GOOD.replace(
        "  - note: {text: nothing}",
        "  - kubectl: {args: [get, pods]}\n  - spark: {daemon: other, args: [health]}",
    );
    let p = problems(&text);
    let fields: Vec<_> = p.iter().map(|p| p.field.as_str()).collect();
    assert!(fields.contains(&"fault[0].kubectl"), "{p:?}");
    assert!(fields.contains(&"fault[1].spark.daemon"), "{p:?}");
}

#[test]
fn a_top_level_field_is_located_at_its_own_line() {
    let text = GOOD.replace("  - model: {name: ghost}", "  - note: {text: x}");
    let p = problems(&text);
    assert_eq!(p[0].field, "remedy");
    assert_eq!(p[0].line, Some(21), "not the guide's `remedy:` line: {p:?}");
}

#[test]
fn the_id_must_match_the_file_name() {
    let p = parse(GOOD, Some("T-2")).unwrap_err();
    assert!(p[0].message.contains("T-2.yaml"), "{p:?}");
}

#[test]
fn load_reports_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("T-1.yaml");
    std::fs::write(&path, GOOD.replace("within: 5s", "within: 5 seconds")).unwrap();
    let err = load(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:", path.display())), "{err}");
    assert!(err.contains("symptom.within"), "{err}");
}

/// The committed schemas are what the types generate (`veritas-harness schema` and
/// `veritas-harness schema --fragment` rewrite them).
#[test]
fn committed_schemas_match_the_types() {
    for (file, schema, flag) in [
        ("scenario.schema.json", json_schema(), ""),
        ("fragment.schema.json", fragment_json_schema(), " --fragment"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../scenarios")
            .join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        assert!(
            committed == generated,
            "{} drifted from the types: run `cargo run -p veritas-harness -- schema{flag} > scenarios/{file}`",
            path.display()
        );
    }
}

/// Every scenario in the repository is valid.
#[test]
fn every_catalog_file_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    match load_dir(&dir) {
        Ok(all) => assert!(!all.is_empty()),
        Err(errors) => panic!(
            "{}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

#[test]
fn a_wait_gates_setup_and_its_checks_are_validated_like_any_step() {
    let text = GOOD.replace(
        "  - startDaemon: {name: spark}\n",
        "  - startDaemon: {name: spark}\n  - wait:\n      within: 5s\n      checks:\n        - spark: {args: [health], expect: {code: E9999}}\n",
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        p[0].field, "setup[2].wait.checks[0].spark.expect.code",
        "{p:?}"
    );
    let ok = text.replace("E9999", "E5003");
    let s = parse(&ok, Some("T-1")).unwrap();
    assert!(matches!(&s.setup[2], Step::Wait(w) if w.checks.len() == 1));
}

#[test]
fn a_wait_is_refused_where_the_phase_already_polls_and_inside_another_wait() {
    let in_symptom = GOOD.replace(
        "    - spark:\n        args: [models, load, ghost]\n        expect: {exit: 1, code: E2002}\n",
        "    - wait: {within: 2s, checks: [{note: {text: x}}]}\n",
    );
    let p = problems(&in_symptom);
    assert!(
        p.iter()
            .any(|p| p.field == "symptom.checks[0].wait" && p.message.contains("already poll")),
        "{p:?}"
    );
    let nested = GOOD.replace(
        "  - startDaemon: {name: spark}\n",
        "  - startDaemon: {name: spark}\n  - wait: {within: 2s, checks: [{wait: {within: 1s, checks: [{note: {text: x}}]}}]}\n",
    );
    let p = problems(&nested);
    assert!(
        p.iter()
            .any(|p| p.field == "setup[2].wait.checks[0].wait" && p.message.contains("not waits")),
        "{p:?}"
    );
}

#[test]
fn a_capture_names_a_new_variable_and_other_namespaces_need_cluster_wide() {
    let cluster = |step: &str| {
        format!(
            "apiVersion: harness.veritas.hearthlink.ai/v1alpha1\nid: T-1\ntitle: t\nguide: {{section: s, cause: c, remedy: r}}\nrequires: {{driver: cluster}}\nsetup:\n  - {step}\nfault:\n  - note: {{text: x}}\nsymptom: {{within: 1s, holdFor: 1s, checks: [{{note: {{text: x}}}}]}}\nremedy:\n  - delete: {{kind: pod, name: x}}\nrecovery: {{within: 1s, checks: [{{note: {{text: x}}}}]}}\n"
        )
    };
    assert!(parse(
        &cluster("kubectl: {args: [get, pods], capture: podIp}"),
        Some("T-1")
    )
    .is_ok());
    let p = problems(&cluster("kubectl: {args: [get, pods], capture: namespace}"));
    assert_eq!(p[0].field, "setup[0].kubectl.capture", "{p:?}");
    let p = problems(&cluster("kubectl: {args: [get, pods, -n, kube-system]}"));
    assert!(p[0].message.contains("clusterWide"), "{p:?}");
}

#[test]
fn an_invariant_must_check_something() {
    let with = |inv: &str| GOOD.replace("remedy:\n", &format!("invariants:\n  - {inv}\nremedy:\n"));
    assert!(parse(
        &with("spark: {args: [health], expect: {exit: 0}}"),
        Some("T-1")
    )
    .is_ok());
    let p = problems(&with("note: {text: fine}"));
    assert_eq!(p[0].field, "invariants[0].note", "{p:?}");
    assert!(p[0].message.contains("an invariant is a check"), "{p:?}");
}

#[test]
fn exit_any_needs_a_reason_and_a_reason_needs_exit_any() {
    let any = GOOD.replace(
        "expect: {exit: 1, code: E2002}",
        "expect: {exit: any, code: E2002}",
    );
    let p = problems(&any);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "symptom.checks[0].spark.expect.reason", "{p:?}");
    let with_reason = GOOD.replace(
        "expect: {exit: 1, code: E2002}",
        "expect: {exit: any, reason: \"the CLI's status is not the symptom\", code: E2002}",
    );
    let s = parse(&with_reason, Some("T-1")).unwrap();
    assert_eq!(
        s.symptom.checks[0].expect().unwrap().exit,
        Some(ExitExpect::Any(AnyExit::Any))
    );
    let stray = GOOD.replace(
        "expect: {exit: 1, code: E2002}",
        "expect: {exit: 1, reason: why, code: E2002}",
    );
    assert_eq!(
        problems(&stray)[0].field,
        "symptom.checks[0].spark.expect.reason"
    );
}

#[test]
fn finally_may_check_its_reverts_and_catch_may_not() {
    let fin = format!(
        "{GOOD}finally:\n  - spark: {{args: [health], expect: {{exit: 0, output: [healthy]}}}}\n"
    );
    parse(&fin, Some("T-1")).unwrap();
    let catch = format!("{GOOD}catch:\n  - spark: {{args: [health], expect: {{exit: 0}}}}\n");
    let p = problems(&catch);
    assert_eq!(p[0].field, "catch[0].spark", "{p:?}");
}

#[test]
fn a_symptom_check_that_setup_already_checks_is_warned_about() {
    let good = parse(GOOD, Some("T-1")).unwrap();
    assert!(warnings(&good).is_empty());
    let text = GOOD.replace(
        "  - startDaemon: {name: spark}\n",
        "  - startDaemon: {name: spark}\n  - spark: {args: [models, load, ghost], expect: {exit: 1, code: E2002}}\n",
    );
    let s = parse(&text, Some("T-1")).unwrap();
    let w = warnings(&s);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].field, "symptom.checks[0].spark");
}
