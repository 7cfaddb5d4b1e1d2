//! The scenario file format of the Veritas harness.
//!
//! Scenarios are data: one YAML file per catalog ID under `scenarios/`, typed by [`Scenario`],
//! described by a JSON Schema generated from the same types ([`json_schema`]), and checked by
//! [`load`] with errors that name the file, the line and the field. The engine that runs them
//! lives in `veritas-harness`; a new guide row needs a new file here, not new Rust.

pub mod duration;
pub mod fragment;
pub mod model;
mod step_de;

pub use fragment::{fragment_json_schema, load_fragments, Fragment, Fragments, UseStep};

pub use step_de::OPERATIONS;

pub use duration::Span;
pub use model::*;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use veritas_vocab::ErrorCode;

/// One thing wrong with a scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field (`symptom.checks[0].spark.expect.code`).
    pub field: String,
    /// 1-based line in the file, where it could be located.
    pub line: Option<usize>,
    pub message: String,
}

/// Why a scenario file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| match p.line {
            Some(line) => format!("{}:{line}: {}: {}", path.display(), p.field, p.message),
            None => format!("{}: {}: {}", path.display(), p.field, p.message),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl LoadError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            LoadError::Invalid { problems, .. } => problems,
            LoadError::Read { .. } => &[],
        }
    }
}

/// Reads, parses and validates one scenario file, its `use` steps expanded from the
/// fragments of `<its directory>/fragments/`.
pub fn load(path: &Path) -> Result<Scenario, LoadError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fragments =
        load_fragments(&dir.join(FRAGMENTS_DIR)).map_err(|mut errors| errors.swap_remove(0))?;
    load_with(path, &fragments)
}

/// The subdirectory of a scenario directory that holds fragments.
pub const FRAGMENTS_DIR: &str = "fragments";

/// [`load`] with fragments already loaded.
pub fn load_with(path: &Path, fragments: &Fragments) -> Result<Scenario, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    parse_with(&text, Some(&stem), fragments).map_err(|problems| LoadError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

/// Parses and validates scenario text; `file_id` is the file stem the ID must equal. A `use`
/// step is refused (no fragments): see [`parse_with`].
pub fn parse(text: &str, file_id: Option<&str>) -> Result<Scenario, Vec<Problem>> {
    parse_with(text, file_id, &Fragments::default())
}

/// Parses scenario text, expands its `use` steps from `fragments`, and validates the result.
pub fn parse_with(
    text: &str,
    file_id: Option<&str>,
    fragments: &Fragments,
) -> Result<Scenario, Vec<Problem>> {
    // A scenario without `use` is parsed straight from the text (serde's errors keep their
    // lines); one with `use` is expanded first, and its errors located in the text.
    let doc: Option<serde_json::Value> = if text.contains("use:") {
        serde_yaml::from_str(text).ok()
    } else {
        None
    };
    let (scenario, origins) = match doc.filter(fragment::uses_fragments) {
        None => {
            let de = serde_yaml::Deserializer::from_str(text);
            let scenario: Scenario = serde_path_to_error::deserialize(de)
                .map_err(|e| vec![fragment::serde_problem(&e)])?;
            (scenario, Vec::new())
        }
        Some(doc) => {
            let expansion = fragment::expand(&doc, text, fragments);
            if !expansion.problems.is_empty() {
                return Err(expansion.problems);
            }
            let origins = expansion.origins;
            let scenario: Scenario =
                serde_path_to_error::deserialize(expansion.value).map_err(|e| {
                    let mut p = Problem {
                        field: e.path().to_string(),
                        line: None,
                        message: e.inner().to_string(),
                    };
                    place(&mut p, text, &origins);
                    vec![p]
                })?;
            (scenario, origins)
        }
    };
    let mut problems = validate(&scenario, file_id);
    for p in &mut problems {
        place(p, text, &origins);
    }
    if problems.is_empty() {
        Ok(scenario)
    } else {
        Err(problems)
    }
}

/// Sets a problem's line: a step that came from a fragment is reported at its `use`, with the
/// fragment named; any other field is located in the text.
fn place(p: &mut Problem, text: &str, origins: &[fragment::Origin]) {
    let origin = origins.iter().find(|o| {
        p.field
            .strip_prefix(&o.field)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    });
    match origin {
        Some(o) => {
            p.line = o.line;
            p.message = format!("{} ({})", p.message, o.from);
        }
        None => p.line = locate(text, &p.field),
    }
}

/// Best-effort line of a dotted field path: walks the keys of the path in order through the
/// text, so `symptom.checks[0].spark.expect.code` lands on the `code:` under that `symptom:`.
pub(crate) fn locate(text: &str, field: &str) -> Option<usize> {
    let keys: Vec<&str> = field
        .split('.')
        .map(|k| k.split('[').next().unwrap_or(k))
        .filter(|k| !k.is_empty())
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut found = None;
    for (depth, key) in keys.into_iter().enumerate() {
        let needle = format!("{key}:");
        if let Some(off) = lines[from..].iter().position(|l| {
            if depth == 0 {
                // A top-level field starts its line.
                return l.starts_with(&needle);
            }
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            t.starts_with(&needle)
                || t.starts_with(&format!("{{{needle}"))
                || l.contains(&format!(" {needle}"))
        }) {
            from += off;
            found = Some(from + 1);
        }
    }
    found
}

/// Every problem of a parsed scenario (empty: valid).
pub fn validate(s: &Scenario, file_id: Option<&str>) -> Vec<Problem> {
    let mut v = Validator::default();
    if s.api_version != API_VERSION {
        v.push(
            "apiVersion",
            format!("must be `{API_VERSION}`, found `{}`", s.api_version),
        );
    }
    if s.id.is_empty() || !s.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        v.push(
            "id",
            format!("`{}`: letters, digits and `-` only (e.g. CNT-1)", s.id),
        );
    }
    if let Some(stem) = file_id {
        if stem != s.id {
            v.push(
                "id",
                format!("`{}` differs from the file name `{stem}.yaml`", s.id),
            );
        }
    }
    for (field, text) in [
        ("title", &s.title),
        ("guide.section", &s.guide.section),
        ("guide.cause", &s.guide.cause),
        ("guide.remedy", &s.guide.remedy),
    ] {
        if text.trim().is_empty() {
            v.push(field, "must not be empty".into());
        }
    }
    if s.fault.is_empty() {
        v.push(
            "fault",
            "a scenario injects a fault: at least one step".into(),
        );
    }
    if !s.requires.exclusive.is_empty() && !s.requires.cluster_wide {
        v.push(
            "requires.exclusive",
            "breaking a resource every scenario shares is a cluster-wide change: set `requires.clusterWide: true`".into(),
        );
    }
    if s.remedy.is_empty() {
        v.push("remedy", "the guide's remedy: at least one step".into());
    } else if s.guide.recovery_by == RecoveryBy::Remedy
        && s.remedy.iter().all(|st| matches!(st, Step::Note(_)))
    {
        v.push(
            "remedy",
            "only notes, yet `guide.recoveryBy` is `remedy`: act, or say `runtime` or `client`"
                .into(),
        );
    }
    for (field, obs) in [("symptom", &s.symptom), ("recovery", &s.recovery)] {
        if obs.checks.is_empty() {
            v.push(&format!("{field}.checks"), "at least one check".into());
        }
        if obs.within.0.is_zero() {
            v.push(&format!("{field}.within"), "a deadline above zero".into());
        }
        if obs.poll.0.is_zero() {
            v.push(
                &format!("{field}.poll"),
                "a poll interval above zero".into(),
            );
        }
    }
    match s.symptom.hold_for {
        None => v.push(
            "symptom.holdFor",
            "required: the negative control (how long the symptom must persist without the remedy)"
                .into(),
        ),
        Some(h) if h.0.is_zero() => v.push("symptom.holdFor", "must be above zero".into()),
        Some(_) => {}
    }
    if s.recovery.hold_for.is_some() {
        v.push("recovery.holdFor", "only a symptom is held".into());
    }

    let daemons: BTreeSet<&str> = all_steps(s)
        .filter_map(|(_, st)| match st {
            Step::StartDaemon(d) => Some(d.name.as_str()),
            _ => None,
        })
        .collect();
    for (field, step) in all_steps(s) {
        v.step(s, &field, step, &daemons);
    }
    for (i, st) in s.invariants.iter().enumerate() {
        if st.expect().is_none()
            && !matches!(
                st,
                Step::Get(_) | Step::Promql(_) | Step::Http(_) | Step::Metric(_)
            )
        {
            v.push(
                &format!("invariants[{i}].{}", st.op_name()),
                "an invariant is a check: kubectl/spark/exec with `expect`, or get/promql/http/metric".into(),
            );
        }
    }
    // `finally` may check its reverts (a failed one is reported as a leak); `catch` only
    // collects evidence.
    for (i, st) in s.catch.iter().enumerate() {
        if st.expect().is_some_and(|e| e != &Expect::default()) {
            v.push(
                &format!("catch[{i}].{}", st.op_name()),
                "catch collects evidence: no expectations here".into(),
            );
        }
    }
    v.problems
}

/// What a valid scenario still gets wrong, as far as the file shows: a symptom check that is
/// also a check of the healthy system (an invariant, or a gate of setup) holds before the fault
/// and cannot tell the fault apart. The run's baseline finds the rest.
pub fn warnings(s: &Scenario) -> Vec<Problem> {
    let mut healthy: Vec<&Step> = s.invariants.iter().collect();
    for st in &s.setup {
        match st {
            Step::Wait(w) => healthy.extend(w.checks.iter()),
            other => healthy.push(other),
        }
    }
    s.symptom
        .checks
        .iter()
        .enumerate()
        .filter(|(_, c)| healthy.contains(c))
        .map(|(i, c)| Problem {
            field: format!("symptom.checks[{i}].{}", c.op_name()),
            line: None,
            message: "also checked on the healthy system (setup or invariants): it holds before the fault, so it does not show the fault".into(),
        })
        .collect()
}

/// Every step with its dotted field path, in file order (a wait's checks follow the wait).
pub fn all_steps(s: &Scenario) -> impl Iterator<Item = (String, &Step)> {
    fn push<'a>(out: &mut Vec<(String, &'a Step)>, field: String, step: &'a Step) {
        if let Step::Wait(w) = step {
            out.push((field.clone(), step));
            for (j, c) in w.checks.iter().enumerate() {
                push(out, format!("{field}.checks[{j}].{}", c.op_name()), c);
            }
        } else {
            out.push((field, step));
        }
    }
    let phases: [(&str, &Vec<Step>); 9] = [
        ("setup", &s.setup),
        ("invariants", &s.invariants),
        ("fault", &s.fault),
        ("symptom.checks", &s.symptom.checks),
        ("diagnosis", &s.diagnosis),
        ("remedy", &s.remedy),
        ("recovery.checks", &s.recovery.checks),
        ("catch", &s.catch),
        ("finally", &s.finally),
    ];
    let mut out = Vec::new();
    for (phase, steps) in phases {
        for (i, st) in steps.iter().enumerate() {
            push(&mut out, format!("{phase}[{i}].{}", st.op_name()), st);
        }
    }
    out.into_iter()
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn push(&mut self, field: &str, message: String) {
        self.problems.push(Problem {
            field: field.to_string(),
            line: None,
            message,
        });
    }

    fn code(&mut self, field: &str, code: &Option<String>) {
        if let Some(c) = code {
            match ErrorCode::parse(c) {
                Some(ec) if ec.code() == c => {}
                Some(ec) => self.push(field, format!("write the code `{}`, not `{c}`", ec.code())),
                None => self.push(
                    field,
                    format!("`{c}` is not an error code of the guide (E1001..E5003)"),
                ),
            }
        }
    }

    fn value(&mut self, field: &str, e: &ValueExpect) {
        let set = [e.equals, e.at_least, e.at_most]
            .iter()
            .filter(|x| x.is_some())
            .count();
        if e.absent && set > 0 {
            self.push(field, "`absent` excludes equals/atLeast/atMost".into());
        } else if !e.absent && set == 0 {
            self.push(
                field,
                "state what the value must be: equals, atLeast, atMost or absent".into(),
            );
        }
    }

    fn step(&mut self, s: &Scenario, field: &str, step: &Step, daemons: &BTreeSet<&str>) {
        let class = s.requires.driver;
        if let Some(needed) = step.driver() {
            if needed != class {
                self.push(
                    field,
                    format!(
                        "`{}` runs on the {} driver, this scenario requires `{}`",
                        step.op_name(),
                        match needed {
                            DriverClass::Process => "process",
                            DriverClass::Cluster => "kind/existing",
                        },
                        match class {
                            DriverClass::Process => "process",
                            DriverClass::Cluster => "cluster",
                        }
                    ),
                );
            }
        }
        if let Some((identity, because)) = step.identity() {
            let on_call_phase = field.starts_with("diagnosis") || field.starts_with("remedy");
            match (identity, because) {
                (Some(Identity::Admin), None) if on_call_phase => self.push(
                    &format!("{field}.as"),
                    "diagnosis and remedy run as the on-call: say in `because` why this step needs admin"
                        .into(),
                ),
                (Some(Identity::Admin), Some(_)) if on_call_phase => {}
                (_, Some(_)) => self.push(
                    &format!("{field}.because"),
                    "only with `as: admin` in diagnosis or remedy (why the on-call is not enough)"
                        .into(),
                ),
                _ => {}
            }
        }
        if matches!(step, Step::Exec(_))
            && class == DriverClass::Cluster
            && !s.requires.cluster_wide
        {
            self.push(
                field,
                "a host command is outside every namespace: a cluster scenario needs `requires.clusterWide: true` for it"
                    .into(),
            );
        }
        if let Some(e) = step.expect() {
            self.code(&format!("{field}.expect.code"), &e.code);
            let any = matches!(e.exit, Some(ExitExpect::Any(_)));
            match (&e.reason, any) {
                (None, true) => self.push(
                    &format!("{field}.expect.reason"),
                    "`exit: any` accepts a failing command: say why in `reason`".into(),
                ),
                (Some(_), false) => self.push(
                    &format!("{field}.expect.reason"),
                    "only with `exit: any` (an unset `exit` requires 0)".into(),
                ),
                _ => {}
            }
            for ptr in e.json.keys() {
                if !ptr.is_empty() && !ptr.starts_with('/') {
                    self.push(
                        &format!("{field}.expect.json"),
                        format!("`{ptr}`: a JSON pointer starts with `/`"),
                    );
                }
            }
        }
        match step {
            Step::Kubectl(k) => {
                let other_ns = k.args.iter().any(|a| {
                    a == "-n"
                        || a == "-A"
                        || a == "--all-namespaces"
                        || a.starts_with("--namespace")
                });
                if other_ns && !s.requires.cluster_wide {
                    self.push(
                        &format!("{field}.args"),
                        "`-n`/`-A` reaches beyond the scenario's namespace: set `requires.clusterWide: true`"
                            .into(),
                    );
                }
                if let Some(name) = &k.capture {
                    let valid = !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid || BUILTIN_VARS.contains(&name.as_str()) {
                        self.push(
                            &format!("{field}.capture"),
                            format!(
                                "`{name}`: letters, digits and `_`, not one of {}",
                                BUILTIN_VARS.join(", ")
                            ),
                        );
                    }
                }
            }
            Step::Wait(w) => {
                let phase = field.split(['[', '.']).next().unwrap_or("");
                if !["setup", "fault", "diagnosis", "remedy"].contains(&phase) {
                    self.push(
                        field,
                        "a wait gates setup, fault, diagnosis or remedy; symptom and recovery already poll".into(),
                    );
                }
                if field.matches("wait").count() > 1 {
                    self.push(field, "a wait's checks are checks, not waits".into());
                }
                if w.checks.is_empty() {
                    self.push(&format!("{field}.checks"), "at least one check".into());
                }
                if w.within.0.is_zero() || w.poll.0.is_zero() {
                    self.push(field, "within and poll above zero".into());
                }
            }
            Step::Spark(sp) => {
                match class {
                    DriverClass::Process => {
                        if sp.pod.is_some() {
                            self.push(&format!("{field}.pod"), "only on cluster scenarios".into());
                        }
                        self.daemon(field, &sp.daemon, daemons);
                    }
                    DriverClass::Cluster => {
                        if sp.pod.is_none() {
                            self.push(&format!("{field}.pod"), "cluster scenarios run veritas-spark in a pod: give its label selector".into());
                        }
                    }
                }
            }
            Step::Http(h) => {
                self.code(&format!("{field}.expect.code"), &h.expect.code);
                self.daemon(field, &h.daemon, daemons);
                if h.port != "http" && h.port != "metrics" {
                    self.push(
                        &format!("{field}.port"),
                        format!("`{}`: `http` or `metrics`", h.port),
                    );
                }
                if !h.path.starts_with('/') {
                    self.push(&format!("{field}.path"), "starts with `/`".into());
                }
            }
            Step::Metric(m) => {
                self.daemon(field, &m.daemon, daemons);
                self.value(&format!("{field}.expect"), &m.expect);
            }
            Step::FaultUnderLoad(f) => {
                self.code(&format!("{field}.code"), &Some(f.code.clone()));
                self.daemon(field, &f.daemon, daemons);
                if f.requests == 0 || f.requests > 64 {
                    self.push(&format!("{field}.requests"), "between 1 and 64".into());
                }
            }
            Step::IpcFrame(f) => self.daemon(field, &f.daemon, daemons),
            Step::Model(m) => {
                if let Some(c) = &m.corruption {
                    if veritas_fixtures::corrupt::Corruption::from_name(c).is_none() {
                        let names: Vec<_> = veritas_fixtures::corrupt::Corruption::ALL
                            .iter()
                            .map(|c| c.name())
                            .collect();
                        self.push(
                            &format!("{field}.corruption"),
                            format!("`{c}`: one of {}", names.join(", ")),
                        );
                    }
                }
            }
            Step::StartDaemon(d) => {
                if let Some(mode) = &d.sandbox {
                    if !["required", "best-effort", "off"].contains(&mode.as_str()) {
                        self.push(
                            &format!("{field}.sandbox"),
                            format!("`{mode}`: required, best-effort or off"),
                        );
                    }
                }
                if d.apparmor_profile.is_some()
                    && !s.requires.components.contains(&Component::AppArmor)
                {
                    self.push(
                        &format!("{field}.apparmorProfile"),
                        "needs `requires.components: [appArmor]`, so a host without it skips the scenario".into(),
                    );
                }
            }
            Step::Exec(e) if e.command.is_empty() => {
                self.push(
                    &format!("{field}.command"),
                    "an argv with at least the program".into(),
                );
            }
            Step::Apply(a) if a.file.is_some() == a.manifest.is_some() => {
                self.push(field, "exactly one of `file` or `manifest`".into());
            }
            Step::Delete(d) => {
                if d.name.is_some() == d.selector.is_some() {
                    self.push(field, "exactly one of `name` or `selector`".into());
                }
                self.namespace(s, field, &d.namespace);
            }
            Step::Patch(p) => self.namespace(s, field, &p.namespace),
            Step::Get(g) => {
                self.namespace(s, field, &g.namespace);
                if !g.field.starts_with('/') {
                    self.push(
                        &format!("{field}.field"),
                        "a JSON pointer such as `/status/phase`".into(),
                    );
                }
                match (&g.equals, &g.value) {
                    // A capture alone asserts the field is there (its value is what it keeps).
                    (None, None) if g.capture.is_some() => {}
                    (None, None) | (Some(_), Some(_)) => self.push(
                        field,
                        "exactly one of `equals` or `value` (or only `capture`)".into(),
                    ),
                    (None, Some(ve)) => self.value(&format!("{field}.value"), ve),
                    _ => {}
                }
            }
            Step::Promql(q) => self.value(&format!("{field}.expect"), &q.expect),
            Step::Traffic(t) => {
                if t.requests == 0 || t.requests > 10_000 {
                    self.push(
                        &format!("{field}.requests"),
                        "between 1 and 10000 (traffic is bounded)".into(),
                    );
                }
                if t.interval.0 < std::time::Duration::from_millis(10) {
                    self.push(
                        &format!("{field}.interval"),
                        "at least 10ms (traffic is paced)".into(),
                    );
                }
            }
            Step::Rollout(r) => self.namespace(s, field, &r.namespace),
            _ => {}
        }
    }

    /// A step naming a daemon must name one some `startDaemon` starts.
    fn daemon(&mut self, field: &str, name: &str, daemons: &BTreeSet<&str>) {
        if !daemons.contains(name) {
            self.push(
                &format!("{field}.daemon"),
                format!("no `startDaemon` names `{name}`"),
            );
        }
    }

    fn namespace(&mut self, s: &Scenario, field: &str, ns: &Option<String>) {
        if ns.is_some() && !s.requires.cluster_wide {
            self.push(
                &format!("{field}.namespace"),
                "touching another namespace is cluster-wide: set `requires.clusterWide: true`"
                    .into(),
            );
        }
    }
}

/// Variables the engine sets itself; a capture may not overwrite them.
pub const BUILTIN_VARS: &[&str] = &["work", "models", "seed", "namespace"];

/// The JSON Schema of scenario files (committed as `scenarios/scenario.schema.json`).
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Scenario);
    fragment::with_use_step(serde_json::to_value(schema).expect("a schema serializes"))
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Loads every `*.yaml` under `dir`, sorted by ID, their `use` steps expanded from the
/// fragments of `dir/fragments/` (which are not scenarios).
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, Vec<LoadError>> {
    let fragments = load_fragments(&dir.join(FRAGMENTS_DIR))?;
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect(),
        Err(source) => {
            return Err(vec![LoadError::Read {
                path: dir.to_owned(),
                source,
            }])
        }
    };
    files.sort();
    let (mut ok, mut errors) = (Vec::new(), Vec::new());
    for f in files {
        match load_with(&f, &fragments) {
            Ok(s) => ok.push(s),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        ok.sort_by(|a: &Scenario, b: &Scenario| a.id.cmp(&b.id));
        Ok(ok)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
