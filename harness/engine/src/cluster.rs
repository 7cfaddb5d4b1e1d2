//! The cluster drivers' operations (kind and existing): everything goes through a real API
//! server with the real `kubectl`, the client the guide's own commands use, scoped to the
//! scenario's namespace.

use crate::context::Context;
use crate::expect::{self, clip, CommandOutput};
use crate::process::{run_command_with_input, verdict};
use crate::scope::{self, Catalog, Target, Unplaced};
use crate::StepError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use veritas_scenario::*;

/// ServiceAccount the remedies run as (least privilege: what the guide's commands need).
pub const ONCALL_SA: &str = "veritas-oncall";

/// Group of the harness's scoped identity (see `fixtures/manifests/harness/scoped-rbac.yaml`).
pub const SCOPED_GROUP: &str = "veritas-harness:scoped";

/// The user the harness acts as in the run's namespace `ns` when it may not go beyond it.
pub fn scoped_user(ns: &str) -> String {
    format!("veritas-harness:{ns}")
}

/// Who a `kubectl` call runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The kubeconfig's own identity (cluster-admin on kind): engine reads, cluster-wide steps.
    Admin,
    /// Every right in the run's namespace (named here), reads everywhere, writes nowhere else:
    /// the API server enforces the blast radius.
    Scoped(String),
    /// The on-call ServiceAccount of the run's namespace (named here).
    Oncall(String),
}

/// A cluster the run talks to.
#[derive(Debug, Clone)]
pub struct ClusterEnv {
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    /// Repository `fixtures/manifests`, for `apply: {file: ...}`.
    pub manifests: PathBuf,
    /// Whether scenarios may touch shared cluster state (CoreDNS, the controller, nodes).
    pub allow_cluster_wide: bool,
    /// The server's resource types, discovered on first use (again when a type is missing: a
    /// CRD a scenario installed).
    catalog: Arc<tokio::sync::Mutex<Option<Arc<Catalog>>>>,
}

impl ClusterEnv {
    pub fn new(
        kubeconfig: PathBuf,
        kubectl: PathBuf,
        manifests: PathBuf,
        allow_cluster_wide: bool,
    ) -> ClusterEnv {
        ClusterEnv {
            kubeconfig,
            kubectl,
            manifests,
            allow_cluster_wide,
            catalog: Default::default(),
        }
    }

    pub fn base_args(&self) -> Vec<String> {
        vec![
            self.kubectl.display().to_string(),
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
        ]
    }

    /// What the cluster has: the Prometheus and the controller every cluster run installs, and
    /// the optional components found on it. A scenario needing one that is missing is reported
    /// skipped, never run to a failure.
    pub fn components(&self) -> Vec<Component> {
        let mut found = vec![Component::Prometheus, Component::Controller];
        let has = |args: &[&str]| {
            std::process::Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success() && !o.stdout.trim_ascii().is_empty())
        };
        if has(&[
            "get",
            "deployment",
            "-n",
            "monitoring",
            "-l",
            "app.kubernetes.io/name=kube-state-metrics",
            "-o",
            "name",
        ]) {
            found.push(Component::KubeStateMetrics);
        }
        found
    }

    /// A client of the same cluster, as the kubeconfig's identity.
    pub async fn client(&self) -> Result<kube::Client, StepError> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).map_err(|e| {
            StepError::new(format!("kubeconfig {}: {e}", self.kubeconfig.display()))
        })?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| StepError::new(format!("kubeconfig: {e}")))?;
        kube::Client::try_from(config).map_err(|e| StepError::new(format!("kube client: {e}")))
    }

    /// The server's resource types; `refresh` asks again (after a miss).
    pub async fn catalog(&self, refresh: bool) -> Result<Arc<Catalog>, StepError> {
        let mut cached = self.catalog.lock().await;
        if let (Some(c), false) = (cached.as_ref(), refresh) {
            return Ok(c.clone());
        }
        let client = self.client().await?;
        let c = Arc::new(Catalog::discover(&client).await.map_err(StepError::new)?);
        *cached = Some(c.clone());
        Ok(c)
    }

    /// `kubectl ARGS` as `caller` in `namespace` (unless the args name one).
    pub async fn kubectl(
        &self,
        namespace: Option<&str>,
        caller: &Caller,
        args: &[String],
        stdin: Option<&str>,
        deadline: Duration,
    ) -> Result<CommandOutput, StepError> {
        let mut argv = self.base_args();
        let names_ns = args.iter().any(|a| {
            a == "-n" || a == "-A" || a.starts_with("--namespace") || a == "--all-namespaces"
        });
        if let (Some(ns), false) = (namespace, names_ns) {
            argv.extend(["-n".into(), ns.to_string()]);
        }
        match caller {
            Caller::Admin => {}
            Caller::Scoped(ns) => argv.extend([
                format!("--as={}", scoped_user(ns)),
                format!("--as-group={SCOPED_GROUP}"),
                // Discovery (kubectl's own resource mapping) is granted to every authenticated
                // user; an impersonated one is only what it is told it is.
                "--as-group=system:authenticated".into(),
            ]),
            Caller::Oncall(ns) => argv.push(format!("--as=system:serviceaccount:{ns}:{ONCALL_SA}")),
        }
        argv.extend(args.iter().cloned());
        run_command_with_input(&argv, stdin, deadline).await
    }
}

fn env(ctx: &Context) -> Result<std::sync::Arc<ClusterEnv>, StepError> {
    ctx.cluster.clone().ok_or_else(|| {
        StepError::new("this operation needs a cluster driver (--driver kind or existing)")
    })
}

fn must_succeed(what: &str, out: CommandOutput) -> Result<String, StepError> {
    if out.exit == Some(0) {
        Ok(clip(out.stdout.trim(), 300))
    } else {
        Err(StepError::observed(format!("{what} failed"), out.summary()))
    }
}

/// Namespace of a step: its own (cluster-wide, validated) or the scenario's.
fn ns<'a>(ctx: &'a Context, own: &'a Option<String>) -> Option<&'a str> {
    own.as_deref().or(ctx.namespace.as_deref())
}

/// `kubectl apply` of stdin, server-side, as the harness's field manager (conflicts forced:
/// the harness owns what it applies).
pub fn server_side_apply_args() -> Vec<String> {
    [
        "apply",
        "--server-side",
        "--field-manager=veritas-harness",
        "--force-conflicts",
        "-f",
        "-",
    ]
    .map(String::from)
    .to_vec()
}

fn run_namespace(ctx: &Context) -> Result<String, StepError> {
    ctx.namespace
        .clone()
        .ok_or_else(|| StepError::new("a cluster step needs the run's namespace"))
}

/// The server's type for a kind as a step spells it.
async fn resolve(env: &ClusterEnv, kind: &str) -> Result<scope::Resource, StepError> {
    if let Some(r) = env.catalog(false).await?.by_name(kind) {
        return Ok(r.clone());
    }
    env.catalog(true)
        .await?
        .by_name(kind)
        .cloned()
        .ok_or_else(|| StepError::new(format!("the API server serves no type `{kind}`")))
}

/// The objects a label selector names now (what a delete by selector reaches).
async fn selected(
    env: &ClusterEnv,
    r: &scope::Resource,
    namespace: Option<&str>,
    selector: &str,
    deadline: Duration,
) -> Result<Vec<Target>, StepError> {
    let args: Vec<String> = vec![
        "get".into(),
        r.qualified(),
        "-l".into(),
        selector.into(),
        "-o".into(),
        "jsonpath={.items[*].metadata.name}".into(),
    ];
    let out = env
        .kubectl(namespace, &Caller::Admin, &args, None, deadline)
        .await?;
    // Every name (must_succeed clips its output for messages).
    if out.exit != Some(0) {
        return Err(StepError::observed(
            format!("kubectl get {} -l {selector} failed", r.plural),
            out.summary(),
        ));
    }
    Ok(out
        .stdout
        .split_whitespace()
        .map(|n| Target::new(r, n, namespace))
        .collect())
}

/// The blast radius of a mutating step. Objects in the run's namespace are changed as the
/// step's identity (the harness's scoped one by default: the API server refuses anything
/// else). Objects outside it need a cluster-wide scenario; each is recorded as it was before
/// its first change, for the leak audit, and changed as the kubeconfig's identity.
async fn reach(
    ctx: &mut Context,
    env: &ClusterEnv,
    identity: Option<Identity>,
    targets: &[Target],
    deadline: Duration,
) -> Result<Caller, StepError> {
    let run_ns = run_namespace(ctx)?;
    let caller = ctx.caller(identity);
    let outside: Vec<&Target> = targets.iter().filter(|t| t.outside(&run_ns)).collect();
    if outside.is_empty() {
        return Ok(caller);
    }
    let names = outside
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if !ctx.cluster_wide {
        return Err(StepError::new(format!(
            "blast radius: {names} is outside the run's namespace {run_ns}; a scenario that changes shared objects declares `requires.clusterWide: true` (and runs only with --allow-cluster-wide)"
        )));
    }
    for t in outside {
        if !ctx.touched.contains_key(t) {
            let before = current(env, t, deadline).await?;
            ctx.touched.insert(t.clone(), before);
        }
    }
    // The on-call stays the on-call (its own rights decide); the harness acts as admin.
    Ok(match caller {
        Caller::Oncall(ns) => Caller::Oncall(ns),
        _ => Caller::Admin,
    })
}

/// An object as it is now (`None`: absent), comparable with its earlier self.
pub async fn current(
    env: &ClusterEnv,
    t: &Target,
    deadline: Duration,
) -> Result<Option<serde_json::Value>, StepError> {
    let args: Vec<String> = vec![
        "get".into(),
        t.resource.clone(),
        t.name.clone(),
        "-o".into(),
        "json".into(),
        "--ignore-not-found".into(),
    ];
    let out = env
        .kubectl(
            t.namespace.as_deref(),
            &Caller::Admin,
            &args,
            None,
            deadline,
        )
        .await?;
    if out.exit != Some(0) {
        return Err(StepError::observed(
            format!("kubectl get {t} failed"),
            out.summary(),
        ));
    }
    let text = out.stdout.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| StepError::new(format!("kubectl get {t} -o json: {e}")))?;
    Ok(Some(scope::comparable(&v)))
}

/// A refusal of the scoped identity names the rule it met, not only the API server's words.
fn explain_refusal(ctx: &Context, caller: &Caller, mut out: CommandOutput) -> CommandOutput {
    if matches!(caller, Caller::Scoped(_))
        && out.exit != Some(0)
        && out.stderr.contains("forbidden")
    {
        out.stderr.push_str(&format!(
            "\n(blast radius: {} may change only its own namespace {}; a scenario that changes shared objects declares `requires.clusterWide: true`)",
            ctx.id,
            ctx.namespace.as_deref().unwrap_or("?")
        ));
    }
    out
}

pub async fn kubectl(
    ctx: &mut Context,
    k: &KubectlStep,
    deadline: Duration,
) -> Result<String, StepError> {
    let env = env(ctx)?;
    let args = ctx.subst_all(&k.args);
    let caller = ctx.caller(k.identity);
    let out = env
        .kubectl(ctx.namespace.as_deref(), &caller, &args, None, deadline)
        .await?;
    let out = explain_refusal(ctx, &caller, out);
    let bad = expect::check(&ctx.subst_expect(&k.expect), &out, &ctx.redactions());
    let captured = out.stdout.trim().to_string();
    let r = verdict(bad, out.summary());
    if let (Ok(_), Some(name)) = (&r, &k.capture) {
        if captured.is_empty() {
            return Err(StepError::observed(
                format!("nothing to capture as ${{{name}}}: empty output"),
                out.summary(),
            ));
        }
        ctx.vars.insert(name.clone(), captured);
    }
    r
}

pub async fn apply(
    ctx: &mut Context,
    a: &ApplyStep,
    deadline: Duration,
) -> Result<String, StepError> {
    let env = env(ctx)?;
    let text = match (&a.file, &a.manifest) {
        (Some(f), _) => {
            let path = env.manifests.join(f);
            std::fs::read_to_string(&path)
                .map_err(|e| StepError::new(format!("read {}: {e}", path.display())))?
        }
        (None, Some(m)) => m.clone(),
        (None, None) => return Err(StepError::new("apply needs `file` or `manifest`")),
    };
    let mut text = ctx.subst(&text);
    if let (Some(from), Some(ns)) = (&a.from_namespace, &ctx.namespace) {
        text = move_namespace(&text, from, ns);
    }
    let args = server_side_apply_args();
    let run_ns = run_namespace(ctx)?;
    let targets = match scope::manifest_targets(&*env.catalog(false).await?, &text, &run_ns) {
        // A type this run has not seen: a CRD installed since the last discovery.
        Err(Unplaced::UnknownType(_)) => {
            scope::manifest_targets(&*env.catalog(true).await?, &text, &run_ns)
        }
        other => other,
    }
    .map_err(|e| match e {
        Unplaced::UnknownType(t) => StepError::new(format!(
            "the API server serves no {t}: nothing to apply it to (is its CRD installed?)"
        )),
        Unplaced::Malformed(m) => StepError::new(format!("manifest: {m}")),
    })?;
    let caller = reach(ctx, &env, a.identity, &targets, deadline).await?;
    let out = env
        .kubectl(
            ctx.namespace.as_deref(),
            &caller,
            &args,
            Some(&text),
            deadline,
        )
        .await?;
    must_succeed("kubectl apply", explain_refusal(ctx, &caller, out))
}

pub async fn delete(
    ctx: &mut Context,
    d: &DeleteStep,
    deadline: Duration,
) -> Result<String, StepError> {
    let env = env(ctx)?;
    let mut args = vec!["delete".to_string(), d.kind.clone()];
    match (&d.name, &d.selector) {
        (Some(n), _) => args.push(ctx.subst(n)),
        (None, Some(sel)) => args.extend(["-l".into(), ctx.subst(sel)]),
        _ => return Err(StepError::new("delete needs `name` or `selector`")),
    }
    args.extend(["--ignore-not-found".into(), "--wait=false".into()]);
    let resource = resolve(&env, &d.kind).await?;
    let targets = match &d.name {
        Some(n) => vec![Target::new(&resource, &ctx.subst(n), ns(ctx, &d.namespace))],
        None => {
            let selector = ctx.subst(d.selector.as_deref().unwrap_or_default());
            selected(&env, &resource, ns(ctx, &d.namespace), &selector, deadline).await?
        }
    };
    let caller = reach(ctx, &env, d.identity, &targets, deadline).await?;
    let out = env
        .kubectl(ns(ctx, &d.namespace), &caller, &args, None, deadline)
        .await?;
    must_succeed("kubectl delete", explain_refusal(ctx, &caller, out))
}

pub async fn patch(
    ctx: &mut Context,
    p: &PatchStep,
    deadline: Duration,
) -> Result<String, StepError> {
    let env = env(ctx)?;
    // Substituted inside string values: a captured multi-line value stays one JSON string.
    let written = p.patch.to_string();
    let unset = ctx.unset_vars(&written);
    if !unset.is_empty() {
        // Never write a placeholder into a live object (a `finally` restoring what a capture
        // that never ran should have kept).
        return Err(StepError::new(format!(
            "not patched: ${{{}}} is not set (the step that captures it did not run)",
            unset.join("}, ${")
        )));
    }
    let body = ctx.subst_json(&p.patch).to_string();
    let name = ctx.subst(&p.name);
    let resource = resolve(&env, &p.kind).await?;
    let target = Target::new(&resource, &name, ns(ctx, &p.namespace));
    let caller = reach(ctx, &env, p.identity, &[target], deadline).await?;
    let args = vec![
        "patch".to_string(),
        p.kind.clone(),
        name,
        "--type=merge".into(),
        "-p".into(),
        body,
    ];
    let out = env
        .kubectl(ns(ctx, &p.namespace), &caller, &args, None, deadline)
        .await?;
    must_succeed("kubectl patch", explain_refusal(ctx, &caller, out))
}

pub async fn get(ctx: &mut Context, g: &GetStep, deadline: Duration) -> Result<String, StepError> {
    let env = env(ctx)?;
    let args = vec![
        "get".to_string(),
        g.kind.clone(),
        ctx.subst(&g.name),
        "-o".into(),
        "json".into(),
    ];
    let out = env
        .kubectl(ns(ctx, &g.namespace), &Caller::Admin, &args, None, deadline)
        .await?;
    if out.exit != Some(0) {
        return Err(StepError::observed(
            format!("{} {} not readable", g.kind, g.name),
            out.summary(),
        ));
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| StepError::new(format!("kubectl get -o json: {e}")))?;
    let got = v.pointer(&g.field).cloned();
    let observed = format!(
        "{} {}{} = {}",
        g.kind,
        g.name,
        g.field,
        got.as_ref().map_or("absent".into(), |v| v.to_string())
    );
    let bad = match (&g.equals, &g.value) {
        (Some(want), _) => match &got {
            Some(v) if v == want => vec![],
            _ => vec![format!("expected {want}")],
        },
        (None, Some(ve)) => expect::check_value(ve, got.as_ref().and_then(json_number)),
        (None, None) => vec![],
    };
    let r = verdict(bad, observed);
    if let (Ok(_), Some(name)) = (&r, &g.capture) {
        let text = match &got {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => {
                return Err(StepError::new(format!(
                    "cannot capture ${{{name}}}: {} is absent",
                    g.field
                )))
            }
        };
        ctx.vars.insert(name.clone(), text);
    }
    r
}

fn json_number(v: &serde_json::Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Path of the cluster's Prometheus HTTP API through the API server's service proxy.
pub const PROMETHEUS_PROXY: &str =
    "/api/v1/namespaces/monitoring/services/prometheus-operated:9090/proxy";

/// An instant query through the API server's proxy: every series, labels as text.
pub async fn promql_series_text(
    env: &ClusterEnv,
    query: &str,
    deadline: Duration,
) -> Result<Vec<(String, f64)>, StepError> {
    let url = format!("{PROMETHEUS_PROXY}/api/v1/query?query={}", urlencode(query));
    let out = env
        .kubectl(
            None,
            &Caller::Admin,
            &["get".into(), "--raw".into(), url],
            None,
            deadline,
        )
        .await?;
    if out.exit != Some(0) {
        return Err(StepError::observed(
            "Prometheus query failed",
            out.summary(),
        ));
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| StepError::new(format!("Prometheus answer: {e}")))?;
    Ok(promql_series(&v))
}

pub async fn promql(
    ctx: &mut Context,
    q: &PromqlStep,
    deadline: Duration,
) -> Result<String, StepError> {
    let env = env(ctx)?;
    let query = ctx.subst(&q.query);
    let series = promql_series_text(&env, &query, deadline).await?;
    let (bad, observed) = check_series(&query, &q.expect, &series);
    let r = verdict(bad, observed);
    if let (Ok(_), Some(name)) = (&r, &q.capture) {
        match series.as_slice() {
            [(_, value)] => {
                ctx.vars.insert(name.clone(), value.to_string());
            }
            other => {
                return Err(StepError::new(format!(
                    "cannot capture ${{{name}}}: the query returned {} series, not one",
                    other.len()
                )))
            }
        }
    }
    r
}

/// Every series of an instant-query answer: its labels as text, its value. NaN (`0/0`) is
/// no data, as Prometheus's own graphs show it.
fn promql_series(v: &serde_json::Value) -> Vec<(String, f64)> {
    let Some(result) = v.pointer("/data/result").and_then(|r| r.as_array()) else {
        // A scalar answer (`vector(0)` is a vector; `scalar(...)` is not).
        return v
            .pointer("/data/result/1")
            .and_then(json_number)
            .filter(|x| !x.is_nan())
            .map(|x| vec![(String::new(), x)])
            .unwrap_or_default();
    };
    result
        .iter()
        .filter_map(|s| {
            let value = s.pointer("/value/1").and_then(json_number)?;
            let labels = s
                .get("metric")
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            (!value.is_nan()).then_some((labels, value))
        })
        .collect()
}

/// Every series must meet the expectation (an empty answer is checked as absent).
fn check_series(
    query: &str,
    e: &veritas_scenario::ValueExpect,
    series: &[(String, f64)],
) -> (Vec<String>, String) {
    if series.is_empty() {
        return (expect::check_value(e, None), format!("{query} = no data"));
    }
    let mut bad = Vec::new();
    for (labels, value) in series {
        for b in expect::check_value(e, Some(*value)) {
            bad.push(format!("{{{labels}}}: {b}"));
        }
    }
    let observed = format!(
        "{query} = {}",
        series
            .iter()
            .map(|(l, v)| if l.is_empty() {
                v.to_string()
            } else {
                format!("{{{l}}} {v}")
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    (bad, observed)
}

/// Rewrites every `namespace: <from>` value (metadata, RoleBinding subjects) to `to`; other
/// namespaces (e.g. `veritas-system`) are left alone.
pub fn move_namespace(text: &str, from: &str, to: &str) -> String {
    text.lines()
        .map(|l| match l.split_once("namespace:") {
            Some((head, value)) if value.trim() == from => format!("{head}namespace: {to}"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Bounded in-cluster traffic through the one traffic helper the controller's tests use too
/// (`veritas_cluster::traffic`): a busybox Pod sends exactly `requests` generations, paced,
/// and reports its counts.
pub async fn traffic(
    ctx: &mut Context,
    t: &TrafficStep,
    _deadline: Duration,
) -> Result<String, StepError> {
    use veritas_cluster::traffic::{run, TrafficSpec};
    let env = env(ctx)?;
    let ns = ctx
        .namespace
        .clone()
        .ok_or_else(|| StepError::new("traffic needs the scenario namespace"))?;
    let client = env.client().await?;
    let mut spec = TrafficSpec::new(
        &format!("traffic-{}-{:04x}", t.service, rand::random::<u16>()),
        t.requests,
    );
    spec.service = t.service.clone();
    spec.port = t.port;
    spec.interval_ms = t.interval.as_duration().as_millis() as u32;
    if let Some(body) = &t.body {
        spec.body = ctx.subst(body);
    }
    let r = run(&client, &ns, &spec)
        .await
        .map_err(|e| StepError::new(format!("traffic: {e}")))?;
    let observed = format!(
        "{} requests to {}: ok={} fail={}",
        t.requests, t.service, r.ok, r.failed
    );
    let mut bad = Vec::new();
    if let Some(min) = t.min_ok {
        if r.ok < min {
            bad.push(format!("{} succeeded (expected at least {min})", r.ok));
        }
    }
    if let Some(max) = t.max_failed {
        if r.failed > max {
            bad.push(format!("{} failed (expected at most {max})", r.failed));
        }
    }
    verdict(bad, observed)
}

pub async fn rollout(
    ctx: &mut Context,
    r: &RolloutStep,
    deadline: Duration,
) -> Result<String, StepError> {
    let env = env(ctx)?;
    let args = vec![
        "rollout".to_string(),
        "status".into(),
        format!("deployment/{}", r.deployment),
        format!("--timeout={}s", deadline.as_secs().max(1)),
    ];
    let out = env
        .kubectl(
            ns(ctx, &r.namespace),
            &Caller::Admin,
            &args,
            None,
            deadline + Duration::from_secs(5),
        )
        .await?;
    must_succeed("rollout", out)
}

/// Runs `veritas-spark ARGS` inside a pod matching `selector` (`kubectl exec`), picked as
/// the on-call would: see [`exec_target`].
pub async fn spark_in_pod(
    ctx: &Context,
    selector: &str,
    args: &[String],
    deadline: Duration,
) -> Result<CommandOutput, StepError> {
    let env = env(ctx)?;
    let ns = ctx.namespace.as_deref();
    let pods = env
        .kubectl(
            ns,
            &Caller::Admin,
            &[
                "get".into(),
                "pods".into(),
                "-l".into(),
                ctx.subst(selector),
                "-o".into(),
                "json".into(),
            ],
            None,
            deadline,
        )
        .await?;
    let Some(pod) = exec_target(&pods.stdout) else {
        return Err(StepError::observed(
            format!("no running pod matches {selector}"),
            pods.summary(),
        ));
    };
    let mut argv = vec!["exec".to_string(), pod, "--".into(), "veritas-spark".into()];
    argv.extend(ctx.subst_all(args));
    env.kubectl(
        ns,
        &ctx.caller(Some(Identity::Oncall)),
        &argv,
        None,
        deadline,
    )
    .await
}

/// The pod of a `kubectl get pods -o json` list to exec into: a Running pod that is not
/// being deleted, a ready one first. A Pending pod cannot be exec'd into, and a pod a
/// scale-down is terminating loses its container mid-command ("container not found").
fn exec_target(pod_list: &str) -> Option<String> {
    let list: serde_json::Value = serde_json::from_str(pod_list).ok()?;
    let candidates: Vec<&serde_json::Value> = list["items"]
        .as_array()?
        .iter()
        .filter(|pod| {
            pod["status"]["phase"] == "Running" && pod["metadata"]["deletionTimestamp"].is_null()
        })
        .collect();
    let ready = |pod: &&serde_json::Value| {
        pod["status"]["conditions"]
            .as_array()
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    };
    candidates
        .iter()
        .copied()
        .find(ready)
        .or(candidates.first().copied())
        .and_then(|pod| pod["metadata"]["name"].as_str())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::exec_target;

    fn pod(name: &str, phase: &str, ready: bool, deleting: bool) -> serde_json::Value {
        let mut pod = serde_json::json!({
            "metadata": {"name": name},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}
            ]}
        });
        if deleting {
            pod["metadata"]["deletionTimestamp"] = "2026-12-05T16:39:40Z".into();
        }
        pod
    }

    fn pick(pods: Vec<serde_json::Value>) -> Option<String> {
        exec_target(&serde_json::json!({"items": pods}).to_string())
    }

    #[test]
    fn exec_skips_pods_being_deleted_and_pending_ones() {
        // SNS-4 in CI: the scale-down's victim was still Running and listed first.
        assert_eq!(
            pick(vec![
                pod("terminating", "Running", true, true),
                pod("pending", "Pending", false, false),
                pod("serving", "Running", true, false),
            ]),
            Some("serving".into())
        );
    }

    #[test]
    fn exec_prefers_a_ready_pod_and_falls_back_to_a_running_one() {
        assert_eq!(
            pick(vec![
                pod("starting", "Running", false, false),
                pod("ready", "Running", true, false),
            ]),
            Some("ready".into())
        );
        // A crash-looping track has no ready pod; its diagnosis still execs into one.
        assert_eq!(
            pick(vec![pod("unready", "Running", false, false)]),
            Some("unready".into())
        );
        assert_eq!(pick(vec![pod("gone", "Running", true, true)]), None);
        assert_eq!(exec_target("not json"), None);
    }

    #[test]
    fn every_promql_series_is_compared() {
        let answer = serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"track": "stable"}, "value": [1.0, "12"]},
            {"metric": {"track": "canary"}, "value": [1.0, "0"]},
            {"metric": {"track": "nan"}, "value": [1.0, "NaN"]}
        ]}});
        let series = super::promql_series(&answer);
        assert_eq!(series.len(), 2, "NaN is no data: {series:?}");
        let at_least_one = veritas_scenario::ValueExpect {
            at_least: Some(1.0),
            ..Default::default()
        };
        let (bad, observed) = super::check_series("q", &at_least_one, &series);
        assert_eq!(bad.len(), 1, "the second series fails: {bad:?}");
        assert!(bad[0].starts_with("{track=canary}"), "{bad:?}");
        assert!(observed.contains("{track=stable} 12"), "{observed}");
        let absent = veritas_scenario::ValueExpect {
            absent: true,
            ..Default::default()
        };
        assert!(super::check_series("q", &absent, &[]).0.is_empty());
        assert_eq!(super::check_series("q", &absent, &series).0.len(), 2);
    }

    #[test]
    fn namespaces_move_exactly() {
        let m = "metadata:\n  namespace: veritas\nsubjects:\n  - {kind: ServiceAccount, name: a}\n    namespace: veritas\n  namespace: veritas-system\n";
        let out = super::move_namespace(m, "veritas", "veritas-cnt-1-00ab");
        assert_eq!(
            out.matches("namespace: veritas-cnt-1-00ab").count(),
            2,
            "{out}"
        );
        assert!(out.contains("namespace: veritas-system"), "{out}");
    }

    #[test]
    fn urlencode_escapes_promql() {
        assert_eq!(
            super::urlencode(r#"sum(rate(x{a="b"}[1m]))"#),
            "sum%28rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29%29"
        );
    }
}
