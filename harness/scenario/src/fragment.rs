//! Fragments: shared steps, named and parameterised (Chainsaw's step templates).
//!
//! A fragment is a file `scenarios/fragments/<name>.yaml` holding a list of steps and the
//! parameters they take. A scenario (or another fragment) writes
//! `- use: {fragment: <name>, with: {param: value}}` where a step goes; at load time the step is
//! replaced by the fragment's steps, every `$(param)` in them substituted. The engine never sees
//! a `use`: the expanded scenario is validated exactly as if its author had written the steps out,
//! so every rule of a step (cluster-wide namespaces, `exit: any` needs a reason...) applies to
//! steps that came from a fragment.
//!
//! Parameters are written `$(name)`, a syntax of their own: `${name}` is the engine's run-time
//! variable (`${namespace}`, a capture) and passes through a fragment untouched. `$$(` writes a
//! literal `$(`. A string that is exactly one placeholder takes the value's type (a number stays
//! a number, a list a list); inside a longer string the value is spliced as text.
//!
//! The expansion works on the parsed YAML before the typed parse; a scenario without `use` is
//! parsed exactly as before, so its errors keep serde's own lines.

use crate::{locate, LoadError, Problem, Step, API_VERSION};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// How deep fragments may use fragments.
pub const MAX_DEPTH: usize = 8;

/// The name of the step that uses a fragment.
pub const USE: &str = "use";

/// One fragment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fragment {
    /// Always `harness.veritas.hearthlink.ai/v1alpha1`.
    pub api_version: String,
    /// Equals the file name (`canary-tracks` for `fragments/canary-tracks.yaml`).
    pub name: String,
    /// What the steps set up, and why they are shared.
    pub description: String,
    /// The parameters the steps take, each used as `$(name)` somewhere in them.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Steps of any kind a scenario phase allows (a `use` of another fragment included).
    #[schemars(with = "Vec<Step>")]
    pub steps: Vec<Value>,
}

/// One parameter of a fragment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Parameter {
    /// Letters, digits and `_`, starting with a letter; written `$(name)` in the steps.
    pub name: String,
    pub description: String,
    /// Used when the `use` does not pass the parameter; without one, it is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

/// `- use: {fragment: canary-tracks, with: {errorRateThreshold: 0.0}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UseStep {
    /// A file stem under `fragments/`.
    pub fragment: String,
    /// Parameter values by name.
    #[serde(default)]
    pub with: BTreeMap<String, Value>,
}

/// Every fragment of a scenario directory, by name.
#[derive(Debug, Clone, Default)]
pub struct Fragments {
    by_name: BTreeMap<String, Loaded>,
}

#[derive(Debug, Clone)]
struct Loaded {
    fragment: Fragment,
    path: PathBuf,
    text: String,
}

impl Fragments {
    pub fn get(&self, name: &str) -> Option<&Fragment> {
        self.by_name.get(name).map(|l| &l.fragment)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Fragments from text, for tests: `(name, text)` pairs, checked as `load_fragments` does.
    pub fn from_texts(texts: &[(&str, &str)]) -> Result<Fragments, Vec<LoadError>> {
        let mut errors = Vec::new();
        let mut out = Fragments::default();
        for (name, text) in texts {
            let path = PathBuf::from(format!("fragments/{name}.yaml"));
            match parse_fragment(text, name) {
                Ok(fragment) => {
                    out.by_name.insert(
                        name.to_string(),
                        Loaded {
                            fragment,
                            path,
                            text: text.to_string(),
                        },
                    );
                }
                Err(problems) => errors.push(LoadError::Invalid { path, problems }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        out.check_uses()?;
        Ok(out)
    }

    /// Each `use` inside a fragment names a fragment and passes its parameters, and no fragment
    /// reaches itself.
    fn check_uses(&self) -> Result<(), Vec<LoadError>> {
        let mut errors = Vec::new();
        for (name, l) in &self.by_name {
            let mut problems = Vec::new();
            let mut uses = Vec::new();
            collect_uses(&l.fragment.steps, "steps", &mut uses);
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            for (field, u) in &uses {
                let line = nth_use_line(&l.text, u, &mut seen);
                match serde_json::from_value::<UseStep>(u.clone()) {
                    Ok(u) => {
                        for message in self.check_use(&u) {
                            problems.push(Problem {
                                field: field.clone(),
                                line,
                                message,
                            });
                        }
                    }
                    Err(e) => problems.push(Problem {
                        field: field.clone(),
                        line,
                        message: e.to_string(),
                    }),
                }
            }
            if let Some(cycle) = self.cycle_from(name) {
                problems.push(Problem {
                    field: "steps".into(),
                    line: nth_use_line(
                        &l.text,
                        &serde_json::json!({"fragment": cycle[1]}),
                        &mut BTreeMap::new(),
                    ),
                    message: format!(
                        "fragments use each other in a cycle: {}",
                        cycle
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(" -> ")
                    ),
                });
            }
            if !problems.is_empty() {
                errors.push(LoadError::Invalid {
                    path: l.path.clone(),
                    problems,
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// A chain `start -> ... -> start`, if `start` reaches itself.
    fn cycle_from(&self, start: &str) -> Option<Vec<String>> {
        fn walk(
            all: &Fragments,
            at: &str,
            start: &str,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> bool {
            let Some(l) = all.by_name.get(at) else {
                return false;
            };
            let mut uses = Vec::new();
            collect_uses(&l.fragment.steps, "steps", &mut uses);
            for (_, u) in uses {
                let Some(next) = u.get("fragment").and_then(Value::as_str) else {
                    continue;
                };
                path.push(next.to_string());
                if next == start {
                    return true;
                }
                if done.insert(next.to_string()) && walk(all, next, start, path, done) {
                    return true;
                }
                path.pop();
            }
            false
        }
        let mut path = vec![start.to_string()];
        walk(self, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
    }

    /// What is wrong with one `use` (empty: it can be expanded).
    fn check_use(&self, u: &UseStep) -> Vec<String> {
        let Some(l) = self.by_name.get(&u.fragment) else {
            let known: Vec<_> = self.names().collect();
            return vec![format!(
                "no fragment `{}` (fragments/{}.yaml); known: {}",
                u.fragment,
                u.fragment,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )];
        };
        let f = &l.fragment;
        let mut out = Vec::new();
        for p in &f.parameters {
            if p.default.is_none() && !u.with.contains_key(&p.name) {
                out.push(format!(
                    "fragment `{}` requires parameter `{}` ({}): pass it in `with`",
                    f.name, p.name, p.description
                ));
            }
        }
        for k in u.with.keys() {
            if !f.parameters.iter().any(|p| &p.name == k) {
                let declared: Vec<_> = f.parameters.iter().map(|p| p.name.as_str()).collect();
                out.push(format!(
                    "fragment `{}` has no parameter `{k}` (it has: {})",
                    f.name,
                    if declared.is_empty() {
                        "none".to_string()
                    } else {
                        declared.join(", ")
                    }
                ));
            }
        }
        out
    }
}

/// Reads every `*.yaml` of `dir` as a fragment (no directory: no fragments).
pub fn load_fragments(dir: &Path) -> Result<Fragments, Vec<LoadError>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Fragments::default()),
        Err(source) => {
            return Err(vec![LoadError::Read {
                path: dir.to_owned(),
                source,
            }])
        }
    };
    files.sort();
    let mut out = Fragments::default();
    let mut errors = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(source) => {
                errors.push(LoadError::Read { path, source });
                continue;
            }
        };
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        match parse_fragment(&text, &stem) {
            Ok(fragment) => {
                out.by_name.insert(
                    stem,
                    Loaded {
                        fragment,
                        path,
                        text,
                    },
                );
            }
            Err(problems) => errors.push(LoadError::Invalid { path, problems }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    out.check_uses()?;
    Ok(out)
}

/// Parses one fragment and checks it on its own: its name, its parameters, its placeholders.
pub fn parse_fragment(text: &str, stem: &str) -> Result<Fragment, Vec<Problem>> {
    let de = serde_yaml::Deserializer::from_str(text);
    let f: Fragment = serde_path_to_error::deserialize(de).map_err(|e| vec![serde_problem(&e)])?;
    let mut problems = Vec::new();
    let mut push = |field: &str, line: Option<usize>, message: String| {
        problems.push(Problem {
            field: field.to_string(),
            line: line.or_else(|| locate(text, field)),
            message,
        })
    };
    if f.api_version != API_VERSION {
        push(
            "apiVersion",
            None,
            format!("must be `{API_VERSION}`, found `{}`", f.api_version),
        );
    }
    if f.name != stem {
        push(
            "name",
            None,
            format!("`{}` differs from the file name `{stem}.yaml`", f.name),
        );
    }
    if f.description.trim().is_empty() {
        push("description", None, "must not be empty".into());
    }
    if f.steps.is_empty() {
        push("steps", None, "at least one step".into());
    }
    let used = placeholders_in(&f.steps);
    let mut declared = BTreeSet::new();
    for (i, p) in f.parameters.iter().enumerate() {
        let field = format!("parameters[{i}].name");
        let line = line_of(text, &format!("name: {}", p.name));
        if !is_ident(&p.name) {
            push(
                &field,
                line,
                format!("`{}`: a letter, then letters, digits and `_`", p.name),
            );
        }
        if !declared.insert(p.name.as_str()) {
            push(&field, line, format!("`{}` is declared twice", p.name));
        }
        if !used.contains(&p.name) {
            push(
                &field,
                line,
                format!(
                    "`{}` is never used: no `$({})` in the steps (remove it, or use it)",
                    p.name, p.name
                ),
            );
        }
    }
    for name in &used {
        if !declared.contains(name.as_str()) {
            push(
                "steps",
                line_of(text, &format!("$({name})")),
                format!(
                    "`$({name})` is not a declared parameter (declare it under `parameters`, or write `$$(` for a literal `$(`)"
                ),
            );
        }
    }
    if problems.is_empty() {
        Ok(f)
    } else {
        Err(problems)
    }
}

/// A serde error as a [`Problem`] (field path, line, message without serde_yaml's repeats).
pub(crate) fn serde_problem(e: &serde_path_to_error::Error<serde_yaml::Error>) -> Problem {
    let field = e.path().to_string();
    let line = e.inner().location().map(|l| l.line());
    // serde_yaml appends "at line L column C" itself; the line is reported separately.
    let message = e.inner().to_string();
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    // serde_yaml prefixes its own copy of the path; the field is reported separately.
    let message = match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.contains(' ') => rest.to_string(),
        _ => message,
    };
    Problem {
        field: if field == "." {
            "(document)".into()
        } else {
            field
        },
        line,
        message,
    }
}

fn is_ident(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// The line of a `use` of `u.fragment`: the n-th such `use` of the text for its n-th sighting.
fn nth_use_line(text: &str, u: &Value, seen: &mut BTreeMap<String, usize>) -> Option<usize> {
    let name = u.get("fragment").and_then(Value::as_str)?;
    let n = seen.entry(name.to_string()).or_default();
    let lines: Vec<&str> = text.lines().collect();
    let found = lines
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            t.starts_with("use:")
                && lines[*i..lines.len().min(i + 3)]
                    .iter()
                    .any(|l| l.contains(&format!("fragment: {name}")))
        })
        .nth(*n)
        .map(|(i, _)| i + 1);
    *n += 1;
    found
}

/// Splits a string into literal text and `$(name)` placeholders; `$$(` is a literal `$(`.
enum Piece<'a> {
    Text(&'a str),
    Param(&'a str),
}

fn pieces(s: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("$(") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            // `$$(`: everything up to the first `$`, then a literal `$(`.
            out.push(Piece::Text(&rest[..i - 1]));
            out.push(Piece::Text("$("));
            rest = &rest[i + 2..];
            continue;
        }
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) if is_ident(&after[..j]) => {
                out.push(Piece::Text(&rest[..i]));
                out.push(Piece::Param(&after[..j]));
                rest = &after[j + 1..];
            }
            _ => {
                // Not a placeholder (`$(kubectl get ...)`, a shell's): literal.
                out.push(Piece::Text(&rest[..i + 2]));
                rest = after;
            }
        }
    }
    out.push(Piece::Text(rest));
    out
}

/// Every placeholder name in the strings (keys included) of `steps`.
fn placeholders_in(steps: &[Value]) -> BTreeSet<String> {
    fn string(s: &str, out: &mut BTreeSet<String>) {
        for p in pieces(s) {
            if let Piece::Param(n) = p {
                out.insert(n.to_string());
            }
        }
    }
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::String(s) => string(s, out),
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Value::Object(m) => {
                for (k, v) in m {
                    string(k, out);
                    walk(v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    steps.iter().for_each(|v| walk(v, &mut out));
    out
}

/// `v` with every `$(name)` replaced by `params[name]` (every name is known: checked at load).
fn substitute(v: &Value, params: &BTreeMap<String, Value>) -> Value {
    let text = |s: &str| -> String {
        pieces(s)
            .into_iter()
            .map(|p| match p {
                Piece::Text(t) => t.to_string(),
                Piece::Param(n) => match &params[n] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            })
            .collect()
    };
    match v {
        Value::String(s) => {
            if let [Piece::Text(""), Piece::Param(n), Piece::Text("")] = pieces(s).as_slice() {
                return params[*n].clone();
            }
            Value::String(text(s))
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute(v, params)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (text(k), substitute(v, params)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every `use` in a list of steps (a wait's checks included), with its field.
fn collect_uses(steps: &[Value], field: &str, out: &mut Vec<(String, Value)>) {
    for (i, st) in steps.iter().enumerate() {
        if let Some(u) = as_use(st) {
            out.push((format!("{field}[{i}].{USE}"), u.clone()));
        } else if let Some(checks) = wait_checks(st) {
            collect_uses(checks, &format!("{field}[{i}].wait.checks"), out);
        }
    }
}

fn as_use(step: &Value) -> Option<&Value> {
    match step.as_object() {
        Some(m) if m.len() == 1 => m.get(USE),
        _ => None,
    }
}

fn wait_checks(step: &Value) -> Option<&Vec<Value>> {
    step.as_object()?
        .get("wait")?
        .as_object()?
        .get("checks")?
        .as_array()
}

/// Where an expanded step came from: the scenario's `use` and the fragment's file and line.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// Field of the expanded step (`setup[7]`).
    pub field: String,
    /// The scenario line of the `use` it came from.
    pub line: Option<usize>,
    /// `fragment `x` (fragments/x.yaml)`.
    pub from: String,
}

pub(crate) struct Expansion {
    pub value: Value,
    pub origins: Vec<Origin>,
    pub problems: Vec<Problem>,
}

/// The phases of a scenario that hold steps, as JSON pointers and dotted fields.
const PHASES: [(&str, &str); 9] = [
    ("/setup", "setup"),
    ("/invariants", "invariants"),
    ("/fault", "fault"),
    ("/symptom/checks", "symptom.checks"),
    ("/diagnosis", "diagnosis"),
    ("/remedy", "remedy"),
    ("/recovery/checks", "recovery.checks"),
    ("/catch", "catch"),
    ("/finally", "finally"),
];

/// Whether a parsed scenario uses any fragment.
pub(crate) fn uses_fragments(doc: &Value) -> bool {
    PHASES.iter().any(|(ptr, field)| {
        doc.pointer(ptr)
            .and_then(Value::as_array)
            .is_some_and(|steps| {
                let mut uses = Vec::new();
                collect_uses(steps, field, &mut uses);
                !uses.is_empty()
            })
    })
}

/// The scenario document with every `use` replaced by its fragment's steps.
pub(crate) fn expand(doc: &Value, text: &str, fragments: &Fragments) -> Expansion {
    let mut out = Expansion {
        value: doc.clone(),
        origins: Vec::new(),
        problems: Vec::new(),
    };
    let mut seen = BTreeMap::new();
    for (ptr, field) in PHASES {
        let Some(steps) = doc.pointer(ptr).and_then(Value::as_array) else {
            continue;
        };
        let expanded = expand_list(steps, field, text, fragments, &mut seen, &mut out);
        *out.value.pointer_mut(ptr).expect("read above") = Value::Array(expanded);
    }
    out
}

fn expand_list(
    steps: &[Value],
    field: &str,
    text: &str,
    fragments: &Fragments,
    seen: &mut BTreeMap<String, usize>,
    out: &mut Expansion,
) -> Vec<Value> {
    let mut result = Vec::new();
    for (i, st) in steps.iter().enumerate() {
        if let Some(u) = as_use(st) {
            let use_field = format!("{field}[{i}].{USE}");
            let line = nth_use_line(text, u, seen);
            let u = match serde_json::from_value::<UseStep>(u.clone()) {
                Ok(u) => u,
                Err(e) => {
                    out.problems.push(Problem {
                        field: use_field,
                        line,
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            let problems = fragments.check_use(&u);
            if !problems.is_empty() {
                out.problems
                    .extend(problems.into_iter().map(|message| Problem {
                        field: use_field.clone(),
                        line,
                        message,
                    }));
                continue;
            }
            let mut steps = Vec::new();
            if let Err(message) = inline(&u, fragments, 0, &mut steps) {
                out.problems.push(Problem {
                    field: use_field,
                    line,
                    message,
                });
                continue;
            }
            let from = format!(
                "from fragment `{}` ({})",
                u.fragment,
                fragments.by_name[&u.fragment].path.display()
            );
            for st in steps {
                out.origins.push(Origin {
                    field: format!("{field}[{}]", result.len()),
                    line,
                    from: from.clone(),
                });
                result.push(st);
            }
        } else if let Some(checks) = wait_checks(st) {
            let inner = format!("{field}[{i}].wait.checks");
            let checks = expand_list(checks, &inner, text, fragments, seen, out);
            let mut st = st.clone();
            st["wait"]["checks"] = Value::Array(checks);
            result.push(st);
        } else {
            result.push(st.clone());
        }
    }
    result
}

/// The steps of one (checked) `use`, nested uses inlined.
fn inline(
    u: &UseStep,
    fragments: &Fragments,
    depth: usize,
    out: &mut Vec<Value>,
) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        return Err(format!(
            "fragments nested deeper than {MAX_DEPTH} (at `{}`)",
            u.fragment
        ));
    }
    let f = &fragments.by_name[&u.fragment].fragment;
    let mut params = u.with.clone();
    for p in &f.parameters {
        if let Some(d) = &p.default {
            params.entry(p.name.clone()).or_insert_with(|| d.clone());
        }
    }
    for st in &f.steps {
        let st = substitute(st, &params);
        if let Some(inner) = as_use(&st) {
            let inner: UseStep =
                serde_json::from_value(inner.clone()).map_err(|e| e.to_string())?;
            let problems = fragments.check_use(&inner);
            if !problems.is_empty() {
                return Err(problems.join("; "));
            }
            inline(&inner, fragments, depth + 1, out)?;
        } else if let Some(checks) = wait_checks(&st) {
            let mut expanded = Vec::new();
            for c in checks {
                match as_use(c) {
                    Some(inner) => {
                        let inner: UseStep =
                            serde_json::from_value(inner.clone()).map_err(|e| e.to_string())?;
                        inline(&inner, fragments, depth + 1, &mut expanded)?;
                    }
                    None => expanded.push(c.clone()),
                }
            }
            let mut st = st.clone();
            st["wait"]["checks"] = Value::Array(expanded);
            out.push(st);
        } else {
            out.push(st);
        }
    }
    Ok(())
}

/// The JSON Schema of fragment files (committed as `scenarios/fragment.schema.json`).
pub fn fragment_json_schema() -> Value {
    let schema = schemars::schema_for!(Fragment);
    with_use_step(serde_json::to_value(schema).expect("a schema serializes"))
}

/// Adds the `use` step to a schema's `Step` (the step is expanded before the typed parse, so
/// [`Step`] itself has no such variant).
pub(crate) fn with_use_step(mut schema: Value) -> Value {
    let use_schema =
        serde_json::to_value(schemars::schema_for!(UseStep)).expect("a schema serializes");
    let mut def = use_schema.clone();
    if let Some(m) = def.as_object_mut() {
        m.remove("$schema");
        m.remove("$defs");
        m.remove("title");
    }
    let defs = schema["$defs"].as_object_mut().expect("schema has $defs");
    defs.insert("UseStep".into(), def);
    if let Some(more) = use_schema.get("$defs").and_then(Value::as_object) {
        for (k, v) in more {
            defs.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let one_of = defs
        .get_mut("Step")
        .and_then(|s| s.get_mut("oneOf"))
        .and_then(Value::as_array_mut)
        .expect("Step is a oneOf");
    one_of.push(serde_json::json!({
        "type": "object",
        "description": "Inserts a fragment's steps (`fragments/<fragment>.yaml`) here, its `$(parameters)` substituted from `with`.",
        "properties": {USE: {"$ref": "#/$defs/UseStep"}},
        "required": [USE],
        "additionalProperties": false,
    }));
    schema
}
