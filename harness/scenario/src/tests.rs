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
fn a_daemon_confined_by_apparmor_requires_the_component() {
    let confined = GOOD.replace(
        "  - startDaemon: {name: spark}",
        "  - startDaemon: {name: spark, apparmorProfile: veritas-harness-x}",
    );
    let p = problems(&confined);
    assert_eq!(p[0].field, "setup[1].startDaemon.apparmorProfile", "{p:?}");
    let declared = confined.replace("setup:\n", "requires:\n  components: [appArmor]\nsetup:\n");
    let s = parse(&declared, Some("T-1")).unwrap();
    assert_eq!(s.requires.components, [Component::AppArmor]);
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
        (
            "fragment.schema.json",
            fragment_json_schema(),
            " --fragment",
        ),
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

#[test]
fn diagnosis_and_remedy_run_as_the_on_call_unless_a_reason_says_admin() {
    let cluster = |remedy: &str, setup: &str, wide: bool| {
        format!(
            "apiVersion: harness.veritas.hearthlink.ai/v1alpha1\nid: T-1\ntitle: t\nguide: {{section: s, cause: c, remedy: r}}\nrequires: {{driver: cluster, clusterWide: {wide}}}\nsetup:\n  - {setup}\nfault:\n  - note: {{text: x}}\nsymptom: {{within: 1s, holdFor: 1s, checks: [{{note: {{text: x}}}}]}}\nremedy:\n  - {remedy}\nrecovery: {{within: 1s, checks: [{{note: {{text: x}}}}]}}\n"
        )
    };
    let note = "note: {text: s}";
    for ok in [
        "delete: {kind: pod, name: x}",
        "delete: {kind: pod, name: x, as: oncall}",
        "delete: {kind: pod, name: x, as: admin, because: the platform team's}",
    ] {
        let text = cluster(ok, note, false);
        assert!(
            parse(&text, Some("T-1")).is_ok(),
            "{ok}: {:?}",
            problems(&text)
        );
    }
    let p = problems(&cluster(
        "delete: {kind: pod, name: x, as: admin}",
        note,
        false,
    ));
    assert_eq!(p[0].field, "remedy[0].delete.as", "{p:?}");
    assert!(p[0].message.contains("`because`"), "{p:?}");
    // `because` explains an exception; outside diagnosis and remedy admin is the rule.
    let p = problems(&cluster(
        "delete: {kind: pod, name: x, as: oncall, because: x}",
        note,
        false,
    ));
    assert_eq!(p[0].field, "remedy[0].delete.because", "{p:?}");
    let p = problems(&cluster(
        "delete: {kind: pod, name: x}",
        "kubectl: {args: [get, pods], as: admin, because: x}",
        false,
    ));
    assert_eq!(p[0].field, "setup[0].kubectl.because", "{p:?}");
    // A host command on a cluster scenario reaches outside every namespace.
    let exec = "exec: {command: [docker, ps]}";
    let p = problems(&cluster("delete: {kind: pod, name: x}", exec, false));
    assert!(p[0].message.contains("clusterWide"), "{p:?}");
    assert!(parse(
        &cluster("delete: {kind: pod, name: x}", exec, true),
        Some("T-1")
    )
    .is_ok());
}

// --- fragments -------------------------------------------------------------------------------

/// A cluster scenario whose setup is `setup` (lines of steps, indented as items of `setup:`).
fn cluster_with_setup(setup: &str) -> String {
    format!(
        "apiVersion: harness.veritas.hearthlink.ai/v1alpha1\nid: T-1\ntitle: t\nguide: {{section: s, cause: c, remedy: r}}\nrequires: {{driver: cluster}}\nsetup:\n{setup}fault:\n  - note: {{text: x}}\nsymptom: {{within: 1s, holdFor: 1s, checks: [{{note: {{text: x}}}}]}}\nremedy:\n  - delete: {{kind: pod, name: x}}\nrecovery: {{within: 1s, checks: [{{note: {{text: x}}}}]}}\n"
    )
}

const DEPLOY: &str = r#"apiVersion: harness.veritas.hearthlink.ai/v1alpha1
name: deploy
description: a Deployment and its rollout
parameters:
  - name: name
    description: the Deployment
  - name: replicas
    description: how many pods
    default: 1
steps:
  - apply:
      manifest: |
        kind: Deployment
        metadata: {name: $(name), namespace: ${namespace}}
        spec: {replicas: $(replicas)}
  - patch: {kind: deployment, name: $(name), patch: {spec: {replicas: $(replicas)}}}
  - kubectl: {args: [exec, deploy/$(name), --, sh, -c, "echo $$(hostname) $(kubectl version)"]}
  - rollout: {deployment: $(name)}
"#;

fn fragments(texts: &[(&str, &str)]) -> Fragments {
    Fragments::from_texts(texts).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn fragment_errors(texts: &[(&str, &str)]) -> Vec<String> {
    Fragments::from_texts(texts)
        .expect_err("must be refused")
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn a_use_expands_into_the_fragments_steps_with_parameters_substituted() {
    let f = fragments(&[("deploy", DEPLOY)]);
    let text = cluster_with_setup(
        "  - note: {text: before}\n  - use: {fragment: deploy, with: {name: blue, replicas: 3}}\n  - use: {fragment: deploy, with: {name: green}}\n",
    );
    let s = parse_with(&text, Some("T-1"), &f).unwrap();
    assert_eq!(s.setup.len(), 9, "{:#?}", s.setup);
    assert!(matches!(&s.setup[0], Step::Note(n) if n.text == "before"));
    let Step::Apply(a) = &s.setup[1] else {
        panic!("{:?}", s.setup[1])
    };
    // Inside a string the value is spliced; `${namespace}` is the engine's and stays.
    assert_eq!(
        a.manifest.as_deref(),
        Some("kind: Deployment\nmetadata: {name: blue, namespace: ${namespace}}\nspec: {replicas: 3}\n")
    );
    // A value that is the whole string keeps its type (a number here).
    let Step::Patch(p) = &s.setup[2] else {
        panic!("{:?}", s.setup[2])
    };
    assert_eq!(p.name, "blue");
    assert_eq!(p.patch, serde_json::json!({"spec": {"replicas": 3}}));
    // `$$(` is a literal `$(`; a `$(` that is not a name is left alone.
    let Step::Kubectl(k) = &s.setup[3] else {
        panic!("{:?}", s.setup[3])
    };
    assert_eq!(k.args[1], "deploy/blue");
    assert_eq!(k.args[5], "echo $(hostname) $(kubectl version)");
    // The default applies when `with` leaves a parameter out.
    let Step::Patch(p) = &s.setup[6] else {
        panic!("{:?}", s.setup[6])
    };
    assert_eq!(p.name, "green");
    assert_eq!(p.patch, serde_json::json!({"spec": {"replicas": 1}}));
    assert!(matches!(&s.setup[8], Step::Rollout(r) if r.deployment == "green"));
}

#[test]
fn fragments_nest_and_expand_inside_a_waits_checks() {
    let checks = "apiVersion: harness.veritas.hearthlink.ai/v1alpha1\nname: checks\ndescription: two checks\nsteps:\n  - get: {kind: pod, name: a, field: /status/phase, equals: Running}\n  - get: {kind: pod, name: b, field: /status/phase, equals: Running}\n";
    let outer = "apiVersion: harness.veritas.hearthlink.ai/v1alpha1\nname: outer\ndescription: deploy, then wait\nparameters:\n  - {name: app, description: the Deployment}\nsteps:\n  - use: {fragment: deploy, with: {name: $(app)}}\n  - wait:\n      within: 5s\n      checks:\n        - use: {fragment: checks}\n";
    let f = fragments(&[("deploy", DEPLOY), ("checks", checks), ("outer", outer)]);
    let text = cluster_with_setup(
        "  - wait:\n      within: 5s\n      checks:\n        - use: {fragment: checks}\n        - get: {kind: pod, name: c, field: /status/phase, equals: Running}\n  - use: {fragment: outer, with: {app: red}}\n",
    );
    let s = parse_with(&text, Some("T-1"), &f).unwrap();
    assert_eq!(s.setup.len(), 6, "{:#?}", s.setup);
    let Step::Wait(w) = &s.setup[0] else {
        panic!("{:?}", s.setup[0])
    };
    let names: Vec<_> = w
        .checks
        .iter()
        .map(|c| match c {
            Step::Get(g) => g.name.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(matches!(&s.setup[4], Step::Rollout(r) if r.deployment == "red"));
    assert!(matches!(&s.setup[5], Step::Wait(w) if w.checks.len() == 2));
}

#[test]
fn an_unknown_fragment_is_refused_at_the_use() {
    let f = fragments(&[("deploy", DEPLOY)]);
    let text = cluster_with_setup("  - note: {text: x}\n  - use: {fragment: deplo}\n");
    let p = parse_with(&text, Some("T-1"), &f).unwrap_err();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "setup[1].use");
    assert_eq!(p[0].line, Some(8), "{p:?}");
    assert!(p[0].message.contains("no fragment `deplo`"), "{p:?}");
    assert!(p[0].message.contains("known: deploy"), "{p:?}");
    // Without fragments (plain `parse`), a `use` is refused the same way.
    let p = parse(&text, Some("T-1")).unwrap_err();
    assert!(p[0].message.contains("no fragment `deplo`"), "{p:?}");
}

#[test]
fn a_missing_required_parameter_is_refused_at_the_use() {
    let f = fragments(&[("deploy", DEPLOY)]);
    let text = cluster_with_setup("  - use: {fragment: deploy, with: {replicas: 2}}\n");
    let p = parse_with(&text, Some("T-1"), &f).unwrap_err();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "setup[0].use");
    assert_eq!(p[0].line, Some(7), "{p:?}");
    assert!(p[0].message.contains("requires parameter `name`"), "{p:?}");
}

#[test]
fn an_unknown_parameter_is_refused_at_the_use() {
    let f = fragments(&[("deploy", DEPLOY)]);
    let text = cluster_with_setup("  - use: {fragment: deploy, with: {name: a, replica: 2}}\n");
    let p = parse_with(&text, Some("T-1"), &f).unwrap_err();
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].message.contains("no parameter `replica`") && p[0].message.contains("name, replicas"),
        "{p:?}"
    );
    assert_eq!(p[0].line, Some(7), "{p:?}");
}

#[test]
fn a_parameter_the_steps_never_use_is_refused_in_the_fragment() {
    let text = DEPLOY.replace(
        "steps:\n",
        "  - name: unused\n    description: nothing\n    default: 0\nsteps:\n",
    );
    let e = fragment_errors(&[("deploy", &text)]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("fragments/deploy.yaml:10: parameters[2].name: `unused` is never used"),
        "{e:?}"
    );
}

#[test]
fn a_placeholder_that_is_no_parameter_is_refused_in_the_fragment() {
    let text = DEPLOY.replace("deployment: $(name)}", "deployment: $(nmae)}");
    let e = fragment_errors(&[("deploy", &text)]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("fragments/deploy.yaml:18: steps: `$(nmae)` is not a declared parameter"),
        "{e:?}"
    );
}

#[test]
fn fragments_that_use_each_other_in_a_cycle_are_refused() {
    let a = "apiVersion: harness.veritas.hearthlink.ai/v1alpha1\nname: a\ndescription: a\nsteps:\n  - note: {text: a}\n  - use: {fragment: b}\n";
    let b = "apiVersion: harness.veritas.hearthlink.ai/v1alpha1\nname: b\ndescription: b\nsteps:\n  - use: {fragment: a}\n";
    let e = fragment_errors(&[("a", a), ("b", b)]);
    assert!(
        e.iter().any(|e| e.starts_with(
            "fragments/a.yaml:6: steps: fragments use each other in a cycle: `a` -> `b` -> `a`"
        )),
        "{e:?}"
    );
    // A fragment using itself, and a use inside a fragment naming no fragment.
    let selfish = a.replace("fragment: b", "fragment: a");
    let e = fragment_errors(&[("a", &selfish)]);
    assert!(e[0].contains("cycle: `a` -> `a`"), "{e:?}");
    let e = fragment_errors(&[("a", a)]);
    assert!(
        e[0].starts_with("fragments/a.yaml:6: steps[1].use: no fragment `b`"),
        "{e:?}"
    );
}

#[test]
fn a_fragment_names_its_file_and_its_api_version() {
    let e = fragment_errors(&[("other", DEPLOY)]);
    assert!(
        e[0].contains("fragments/other.yaml:2: name: `deploy` differs from the file name"),
        "{e:?}"
    );
}

#[test]
fn expanded_steps_are_validated_like_written_ones_and_reported_at_the_use() {
    let wide = "apiVersion: harness.veritas.hearthlink.ai/v1alpha1\nname: wide\ndescription: reads kube-system\nsteps:\n  - kubectl: {args: [-n, kube-system, get, pods], expect: {exit: any}}\n";
    let f = fragments(&[("wide", wide)]);
    let text = cluster_with_setup("  - note: {text: x}\n  - use: {fragment: wide}\n");
    let p = parse_with(&text, Some("T-1"), &f).unwrap_err();
    let fields: Vec<_> = p.iter().map(|p| p.field.as_str()).collect();
    assert!(fields.contains(&"setup[1].kubectl.args"), "{p:?}");
    assert!(fields.contains(&"setup[1].kubectl.expect.reason"), "{p:?}");
    for p in &p {
        assert_eq!(p.line, Some(8), "{p:?}");
        assert!(
            p.message
                .contains("from fragment `wide` (fragments/wide.yaml)"),
            "{p:?}"
        );
    }
    // Allowed where the scenario is cluster-wide and says why the exit does not matter.
    let ok = text.replace(
        "requires: {driver: cluster}",
        "requires: {driver: cluster, clusterWide: true}",
    );
    let f = fragments(&[(
        "wide",
        &wide.replace("{exit: any}", "{exit: any, reason: a listing}"),
    )]);
    parse_with(&ok, Some("T-1"), &f).unwrap();
}

#[test]
fn load_dir_expands_from_its_fragments_directory_and_never_takes_a_fragment_for_a_scenario() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fragments")).unwrap();
    std::fs::write(dir.path().join("fragments/deploy.yaml"), DEPLOY).unwrap();
    std::fs::write(
        dir.path().join("T-1.yaml"),
        cluster_with_setup("  - use: {fragment: deploy, with: {name: a}}\n"),
    )
    .unwrap();
    let all = load_dir(dir.path()).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].setup.len(), 4);
    // `load` of one file reads the same fragments.
    assert_eq!(load(&dir.path().join("T-1.yaml")).unwrap(), all[0]);
    // A broken fragment fails the directory, naming the fragment's file.
    std::fs::write(
        dir.path().join("fragments/deploy.yaml"),
        DEPLOY.replace("$(replicas)", "2"),
    )
    .unwrap();
    let errors = load_dir(dir.path()).unwrap_err();
    let text = errors[0].to_string();
    assert!(text.contains("fragments/deploy.yaml:"), "{text}");
    assert!(load(&dir.path().join("T-1.yaml")).is_err());
}

/// Every fragment of the catalog is used by some scenario (an unused one is dead setup).
#[test]
fn every_catalog_fragment_is_used() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let f = load_fragments(&dir.join(FRAGMENTS_DIR)).unwrap_or_else(|e| panic!("{e:?}"));
    let mut text = String::new();
    for entry in std::fs::read_dir(&dir)
        .unwrap()
        .chain(std::fs::read_dir(dir.join(FRAGMENTS_DIR)).unwrap())
    {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            text += &std::fs::read_to_string(p).unwrap();
        }
    }
    for name in f.names() {
        assert!(
            text.contains(&format!("fragment: {name}}}"))
                || text.contains(&format!("fragment: {name},")),
            "fragment `{name}` is used nowhere"
        );
    }
}

/// One expanded catalog scenario, whole: what the engine runs for SNC-1.
#[test]
fn snapshot_of_an_expanded_scenario() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let s = load(&dir.join("SNC-1.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        insta::assert_snapshot!(
            "scenario_expanded_snc_1",
            // Through JSON: steps print as `- apply: ...`, as they are written, not as YAML tags.
            serde_yaml::to_string(&serde_json::to_value(&s).unwrap()).unwrap()
        )
    });
}
