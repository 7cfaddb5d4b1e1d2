//! Blast radius: which objects a mutating step reaches, resolved with the API server's own
//! discovery (a kind's scope is what the server says, never what a step's arguments look like),
//! and what each object outside the run's namespace looked like before the run touched it, so
//! that the leak audit can show what `finally` failed to put back.

use serde_json::Value;
use std::fmt;

/// One resource type the API server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub group: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
}

impl Resource {
    /// `plural.group` (`plural` in the core group): a name kubectl resolves without ambiguity.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Every resource type of the cluster, in discovery order (core group first, as kubectl
/// prefers it when two groups serve the same name).
#[derive(Debug, Clone, Default)]
pub struct Catalog(Vec<Resource>);

impl Catalog {
    pub fn new(resources: Vec<Resource>) -> Catalog {
        Catalog(resources)
    }

    /// Asks the API server: the core group, then every group's versions.
    pub async fn discover(client: &kube::Client) -> Result<Catalog, String> {
        let mut out = Vec::new();
        let core = client
            .list_core_api_resources("v1")
            .await
            .map_err(|e| format!("discovery of the core group: {e}"))?;
        push_list(&mut out, "", &core);
        let groups = client
            .list_api_groups()
            .await
            .map_err(|e| format!("discovery of the API groups: {e}"))?;
        for g in groups.groups {
            for v in &g.versions {
                match client.list_api_group_resources(&v.group_version).await {
                    Ok(list) => push_list(&mut out, &g.name, &list),
                    // An aggregated API that is down (metrics-server) serves nothing to write to.
                    Err(e) => tracing::debug!("discovery of {}: {e}", v.group_version),
                }
            }
        }
        Ok(Catalog(out))
    }

    /// A type as kubectl accepts it: `Deployment`, `deployment`, `deployments`, `deploy`,
    /// `deployments.apps`, `deployment.apps`.
    pub fn by_name(&self, text: &str) -> Option<&Resource> {
        let text = text.to_ascii_lowercase();
        let (name, group) = match text.split_once('.') {
            Some((n, g)) => (n.to_string(), Some(g.to_string())),
            None => (text, None),
        };
        self.0.iter().find(|r| {
            group.as_deref().is_none_or(|g| g == r.group)
                && (r.plural == name
                    || r.singular == name
                    || r.kind.to_ascii_lowercase() == name
                    || r.short_names.contains(&name))
        })
    }

    /// The type of a manifest document (`apiVersion` and `kind`).
    pub fn by_api_version(&self, api_version: &str, kind: &str) -> Option<&Resource> {
        let group = api_version
            .split_once('/')
            .map_or("", |(group, _version)| group);
        self.0.iter().find(|r| r.group == group && r.kind == kind)
    }
}

fn push_list(
    out: &mut Vec<Resource>,
    group: &str,
    list: &k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList,
) {
    for r in &list.resources {
        // Subresources (`deployments/scale`) are reached through their parent.
        if r.name.contains('/') {
            continue;
        }
        let known = out
            .iter()
            .any(|o: &Resource| o.group == group && o.plural == r.name);
        if known {
            continue;
        }
        out.push(Resource {
            group: group.to_string(),
            kind: r.kind.clone(),
            plural: r.name.clone(),
            singular: if r.singular_name.is_empty() {
                r.kind.to_ascii_lowercase()
            } else {
                r.singular_name.clone()
            },
            short_names: r.short_names.clone().unwrap_or_default(),
            namespaced: r.namespaced,
        });
    }
}

/// One object a step changes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// `plural.group`, for `kubectl get`.
    pub resource: String,
    pub kind: String,
    pub name: String,
    /// `None` for a cluster-scoped object.
    pub namespace: Option<String>,
}

impl Target {
    pub fn new(r: &Resource, name: &str, namespace: Option<&str>) -> Target {
        Target {
            resource: r.qualified(),
            kind: r.kind.clone(),
            name: name.to_string(),
            namespace: r
                .namespaced
                .then(|| namespace.unwrap_or("default").to_string()),
        }
    }

    /// Outside the run's own namespace: shared with every other user of the cluster.
    pub fn outside(&self, run_namespace: &str) -> bool {
        self.namespace.as_deref() != Some(run_namespace)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {} (cluster-scoped)", self.kind, self.name),
        }
    }
}

/// Why a manifest's objects cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unplaced {
    /// The server serves no such type (yet: a CRD applied in the same step).
    UnknownType(String),
    Malformed(String),
}

/// The objects of a (multi-document) manifest, placed where `kubectl apply -n <run ns>` puts
/// them.
pub fn manifest_targets(
    catalog: &Catalog,
    text: &str,
    run_namespace: &str,
) -> Result<Vec<Target>, Unplaced> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).map_err(|e| Unplaced::Malformed(e.to_string()))?;
        if v.is_null() {
            continue;
        }
        let field = |p: &str| v.pointer(p).and_then(|x| x.as_str()).unwrap_or_default();
        let (api_version, kind, name) = (
            field("/apiVersion"),
            field("/kind"),
            field("/metadata/name"),
        );
        if kind.is_empty() || name.is_empty() {
            return Err(Unplaced::Malformed(
                "a document without `kind` or `metadata.name`".into(),
            ));
        }
        let r = catalog
            .by_api_version(api_version, kind)
            .ok_or_else(|| Unplaced::UnknownType(format!("{api_version} {kind}")))?;
        let ns = v
            .pointer("/metadata/namespace")
            .and_then(|x| x.as_str())
            .unwrap_or(run_namespace);
        out.push(Target::new(r, name, Some(ns)));
    }
    Ok(out)
}

/// Annotations that change without anyone changing the object's configuration.
const VOLATILE_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    // A restart is an action, not configuration: `rollout restart` in a remedy is no leak.
    "kubectl.kubernetes.io/restartedAt",
];

/// What of an object its owner configured: spec, data, labels, annotations; no status, no
/// server bookkeeping.
pub fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
        if let Some(m) = o.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.retain(|k, _| k == "labels" || k == "annotations");
        }
    }
    for p in [
        "/metadata/annotations",
        "/spec/template/metadata/annotations",
    ] {
        let empty = match v.pointer_mut(p).and_then(|a| a.as_object_mut()) {
            Some(a) => {
                a.retain(|k, _| !VOLATILE_ANNOTATIONS.contains(&k.as_str()));
                a.is_empty()
            }
            None => false,
        };
        if empty {
            let (parent, key) = p.rsplit_once('/').expect("a pointer");
            if let Some(o) = v.pointer_mut(parent).and_then(|o| o.as_object_mut()) {
                o.remove(key);
            }
        }
    }
    v
}

/// JSON pointers where `before` and `after` differ (at most `limit`).
pub fn differences(before: &Value, after: &Value, limit: usize) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>, limit: usize) {
        if out.len() >= limit || a == b {
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                    match (x.get(k), y.get(k)) {
                        (Some(a), Some(b)) => walk(&p, a, b, out, limit),
                        (None, Some(_)) => out.push(format!("{p} added")),
                        (Some(_), None) => out.push(format!("{p} removed")),
                        (None, None) => {}
                    }
                    if out.len() >= limit {
                        return;
                    }
                }
            }
            _ => out.push(format!(
                "{} changed",
                if path.is_empty() { "/" } else { path }
            )),
        }
    }
    let mut out = Vec::new();
    walk("", before, after, &mut out, limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> Catalog {
        let r = |group: &str, kind: &str, plural: &str, short: &[&str], namespaced| Resource {
            group: group.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_ascii_lowercase(),
            short_names: short.iter().map(|s| s.to_string()).collect(),
            namespaced,
        };
        Catalog::new(vec![
            r("", "ConfigMap", "configmaps", &["cm"], true),
            r("", "Node", "nodes", &["no"], false),
            r("", "Event", "events", &["ev"], true),
            r("apps", "Deployment", "deployments", &["deploy"], true),
            r(
                "rbac.authorization.k8s.io",
                "ClusterRole",
                "clusterroles",
                &[],
                false,
            ),
            r("events.k8s.io", "Event", "events", &["ev"], true),
        ])
    }

    #[test]
    fn kubectl_spellings_resolve_to_the_server_s_types() {
        let c = catalog();
        for text in [
            "Deployment",
            "deployment",
            "deployments",
            "deploy",
            "deployments.apps",
        ] {
            assert_eq!(
                c.by_name(text).map(|r| r.qualified()).as_deref(),
                Some("deployments.apps"),
                "{text}"
            );
        }
        assert!(!c.by_name("node").unwrap().namespaced);
        assert_eq!(c.by_name("cm").unwrap().kind, "ConfigMap");
        assert_eq!(
            c.by_name("clusterrole").unwrap().qualified(),
            "clusterroles.rbac.authorization.k8s.io"
        );
        // Two groups serve `events`: the first discovered (core) wins, as with kubectl.
        assert_eq!(c.by_name("events").unwrap().group, "");
        assert_eq!(
            c.by_name("events.events.k8s.io").unwrap().group,
            "events.k8s.io"
        );
        assert!(c.by_name("deployments.batch").is_none());
        assert!(c.by_name("frobnicator").is_none());
    }

    #[test]
    fn a_manifest_is_placed_by_scope_not_by_text() {
        let c = catalog();
        let m = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: kube-system}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: c, namespace: mine}\n---\n";
        let t = manifest_targets(&c, m, "mine").unwrap();
        assert_eq!(t.len(), 3);
        assert!(!t[0].outside("mine"), "{}", t[0]);
        assert!(t[1].outside("mine"), "{}", t[1]);
        // A cluster-scoped object is outside whatever namespace its text names.
        assert!(t[2].outside("mine"), "{}", t[2]);
        assert_eq!(t[2].to_string(), "ClusterRole c (cluster-scoped)");
        assert_eq!(
            manifest_targets(
                &c,
                "apiVersion: x/v1\nkind: Widget\nmetadata: {name: w}\n",
                "mine"
            ),
            Err(Unplaced::UnknownType("x/v1 Widget".into()))
        );
        assert!(matches!(
            manifest_targets(&c, "apiVersion: v1\nkind: ConfigMap\n", "mine"),
            Err(Unplaced::Malformed(_))
        ));
    }

    #[test]
    fn comparison_ignores_bookkeeping_and_restarts_but_not_configuration() {
        let before = json!({
            "metadata": {"name": "coredns", "resourceVersion": "1", "annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": {"k8s-app": "kube-dns"}}}},
            "status": {"readyReplicas": 2}
        });
        let restarted = json!({
            "metadata": {"name": "coredns", "resourceVersion": "9", "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": {"k8s-app": "kube-dns"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}},
            "status": {"readyReplicas": 1}
        });
        assert_eq!(comparable(&before), comparable(&restarted));
        let mut scaled = restarted.clone();
        scaled["spec"]["replicas"] = json!(1);
        scaled["metadata"]["labels"] = json!({"touched": "yes"});
        let diff = differences(&comparable(&before), &comparable(&scaled), 5);
        assert_eq!(
            diff,
            vec!["/metadata/labels added", "/spec/replicas changed"]
        );
    }
}
