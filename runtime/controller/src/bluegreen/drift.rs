//! Drift between the blue and green environments (the guide's "State Not Syncing"): ConfigMap
//! data, the model each environment's pods report, env vars, volumes and mounts (PVC claims),
//! and Secrets compared by a keyed hash of each value. Pure: the reconcile and `veritas-spark
//! bluegreen diff` build an [`EnvSnapshot`] per environment and call [`diff`].
//!
//! Names that differ only by the environment (`veritas-config-blue` / `veritas-config-green`,
//! `models-blue` / `models-green`) are the same reference: they are compared as
//! `veritas-config-{env}`. A Secret's value never leaves [`secret_digest`]: only a 12-hex-digit
//! prefix of its HMAC-SHA256 is kept, enough to tell two values apart. The key is drawn at
//! random by each process and never written anywhere: an unsalted hash of a short token in a
//! status anyone with `get` on the CR can read would let them test guesses offline; a keyed
//! one compares within one observation and says nothing else. Secrets the reader may not get
//! are *unknown*, never "the same".

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{PodTemplateSpec, Volume};
use sha2::{Digest, Sha256};
use veritas_crds::{Drift, EnvironmentName, ModelIdentity};

/// One environment, as drift sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvSnapshot {
    /// The environment's ConfigMap data; `None` when it does not exist.
    pub config: Option<BTreeMap<String, String>>,
    /// Models its ready pods report (empty: unknown, not compared).
    pub models: Vec<ModelIdentity>,
    /// `container/VAR` → value or reference.
    pub env_vars: BTreeMap<String, String>,
    /// `container:mountPath` → volume source.
    pub mounts: BTreeMap<String, String>,
    /// Secret (normalised name) → key → digest prefix; a Secret that does not exist has no
    /// entry in the inner map and is listed in `missing_secrets`.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    pub missing_secrets: BTreeSet<String>,
    /// Referenced Secrets the reader was not allowed to get (403).
    pub unreadable_secrets: BTreeSet<String>,
}

/// Shown for a side that lacks the item.
pub const ABSENT: &str = "<absent>";

/// Shown for a side that could not be read.
pub const UNKNOWN: &str = "<unknown: not allowed to read Secrets>";

/// A difference that is not known to be one: a side could not be read.
pub fn is_unknown(d: &Drift) -> bool {
    d.blue == UNKNOWN || d.green == UNKNOWN
}

/// `veritas-config-blue` → `veritas-config-{env}` (segments split on `-`, `.`, `_`).
pub fn normalise(name: &str, env: EnvironmentName) -> String {
    let mut out = String::with_capacity(name.len());
    let mut seg = String::new();
    let flush = |seg: &mut String, out: &mut String| {
        if seg == env.as_str() {
            out.push_str("{env}");
        } else {
            out.push_str(seg);
        }
        seg.clear();
    };
    for c in name.chars() {
        if matches!(c, '-' | '.' | '_') {
            flush(&mut seg, &mut out);
            out.push(c);
        } else {
            seg.push(c);
        }
    }
    flush(&mut seg, &mut out);
    out
}

/// The keyed-hash prefix a Secret value is compared and shown by, under this process's key.
pub fn secret_digest(value: &[u8]) -> String {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    keyed_digest(KEY.get_or_init(rand::random), value)
}

/// [`secret_digest`] under a given key (tests pin it).
pub fn keyed_digest(key: &[u8; 32], value: &[u8]) -> String {
    format!("hmac:{}", &hex::encode(hmac_sha256(key, value))[..12])
}

/// HMAC-SHA256 (RFC 2104) with a key no longer than a block.
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let (mut inner_pad, mut outer_pad) = ([0x36u8; 64], [0x5cu8; 64]);
    for (i, k) in key.iter().enumerate() {
        inner_pad[i] ^= k;
        outer_pad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

fn volume_source(v: &Volume, env: EnvironmentName) -> String {
    if let Some(p) = &v.persistent_volume_claim {
        format!("pvc {}", normalise(&p.claim_name, env))
    } else if let Some(c) = &v.config_map {
        format!("configMap {}", normalise(&c.name, env))
    } else if let Some(s) = &v.secret {
        format!(
            "secret {}",
            normalise(s.secret_name.as_deref().unwrap_or(""), env)
        )
    } else if v.empty_dir.is_some() {
        "emptyDir".into()
    } else if let Some(h) = &v.host_path {
        format!("hostPath {}", h.path)
    } else {
        "other".into()
    }
}

/// Secrets a pod template references (by their real names).
pub fn referenced_secrets(t: &PodTemplateSpec) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(spec) = &t.spec else { return out };
    for v in spec.volumes.iter().flatten() {
        if let Some(n) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            out.insert(n);
        }
    }
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for e in c.env.iter().flatten() {
            if let Some(r) = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                out.insert(r.name.clone());
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.secret_ref {
                out.insert(r.name.clone());
            }
        }
    }
    out
}

/// The env vars and mounts of a pod template, references normalised.
pub fn template_parts(
    t: &PodTemplateSpec,
    env: EnvironmentName,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut vars = BTreeMap::new();
    let mut mounts = BTreeMap::new();
    let Some(spec) = &t.spec else {
        return (vars, mounts);
    };
    let volumes: BTreeMap<&str, &Volume> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    for c in spec.containers.iter() {
        for e in c.env.iter().flatten() {
            let v = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(f)) => {
                    if let Some(r) = &f.config_map_key_ref {
                        format!("configMap {}/{}", normalise(&r.name, env), r.key)
                    } else if let Some(r) = &f.secret_key_ref {
                        format!("secret {}/{}", normalise(&r.name, env), r.key)
                    } else if let Some(r) = &f.field_ref {
                        format!("field {}", r.field_path)
                    } else if let Some(r) = &f.resource_field_ref {
                        format!("resource {}", r.resource)
                    } else {
                        "valueFrom".into()
                    }
                }
                (None, None) => String::new(),
            };
            vars.insert(format!("{}/{}", c.name, e.name), v);
        }
        for (i, f) in c.env_from.iter().flatten().enumerate() {
            let v = if let Some(r) = &f.config_map_ref {
                format!("configMap {}", normalise(&r.name, env))
            } else if let Some(r) = &f.secret_ref {
                format!("secret {}", normalise(&r.name, env))
            } else {
                "other".into()
            };
            let prefix = f.prefix.clone().unwrap_or_default();
            vars.insert(format!("{}/envFrom[{i}]{prefix}", c.name), v);
        }
        for m in c.volume_mounts.iter().flatten() {
            let src = volumes
                .get(m.name.as_str())
                .map(|v| volume_source(v, env))
                .unwrap_or_else(|| format!("undefined volume {}", m.name));
            let mut desc = src;
            if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                desc.push_str(&format!(" subPath {sp}"));
            }
            if m.read_only == Some(true) {
                desc.push_str(" (ro)");
            }
            mounts.insert(format!("{}:{}", c.name, m.mount_path), desc);
        }
    }
    (vars, mounts)
}

fn model_str(m: &[ModelIdentity]) -> String {
    m.iter()
        .map(|m| {
            format!(
                "{}@{} (sha256:{})",
                m.name,
                m.version,
                m.sha256.get(..12).unwrap_or(&m.sha256)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn short(v: &str) -> String {
    const MAX: usize = 80;
    if v.chars().count() > MAX {
        format!("{}…", v.chars().take(MAX).collect::<String>())
    } else {
        v.to_string()
    }
}

fn map_diff(
    out: &mut Vec<Drift>,
    kind: &str,
    prefix: &str,
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            out.push(Drift {
                kind: kind.into(),
                key: format!("{prefix}{k}"),
                blue: x.map(|v| short(v)).unwrap_or_else(|| ABSENT.into()),
                green: y.map(|v| short(v)).unwrap_or_else(|| ABSENT.into()),
            });
        }
    }
}

/// Every difference between blue and green, in a stable order.
pub fn diff(blue: &EnvSnapshot, green: &EnvSnapshot) -> Vec<Drift> {
    let mut out = Vec::new();
    match (&blue.config, &green.config) {
        (Some(a), Some(b)) => map_diff(&mut out, "ConfigMap", "data.", a, b),
        (None, None) => {}
        (a, b) => out.push(Drift {
            kind: "ConfigMap".into(),
            key: "ConfigMap".into(),
            blue: if a.is_some() { "present" } else { ABSENT }.into(),
            green: if b.is_some() { "present" } else { ABSENT }.into(),
        }),
    }
    if !blue.models.is_empty() && !green.models.is_empty() && blue.models != green.models {
        out.push(Drift {
            kind: "Model".into(),
            key: "loaded model".into(),
            blue: model_str(&blue.models),
            green: model_str(&green.models),
        });
    }
    map_diff(&mut out, "EnvVar", "", &blue.env_vars, &green.env_vars);
    map_diff(&mut out, "Volume", "", &blue.mounts, &green.mounts);
    let names: BTreeSet<&String> = blue
        .secrets
        .keys()
        .chain(green.secrets.keys())
        .chain(blue.missing_secrets.iter())
        .chain(green.missing_secrets.iter())
        .chain(blue.unreadable_secrets.iter())
        .chain(green.unreadable_secrets.iter())
        .collect();
    /// What one environment shows of a referenced Secret.
    enum Side<'a> {
        Unknown,
        Absent,
        Keys(Option<&'a BTreeMap<String, String>>),
    }
    fn side<'a>(s: &'a EnvSnapshot, n: &str) -> Side<'a> {
        if s.unreadable_secrets.contains(n) {
            Side::Unknown
        } else if s.missing_secrets.contains(n) {
            Side::Absent
        } else {
            Side::Keys(s.secrets.get(n))
        }
    }
    let shown = |s: &Side| match s {
        Side::Unknown => UNKNOWN,
        Side::Absent => ABSENT,
        Side::Keys(_) => "present",
    };
    let empty = BTreeMap::new();
    for n in names {
        match (side(blue, n), side(green, n)) {
            (Side::Keys(a), Side::Keys(b)) => map_diff(
                &mut out,
                "Secret",
                &format!("secret {n}: "),
                a.unwrap_or(&empty),
                b.unwrap_or(&empty),
            ),
            (a, b) => out.push(Drift {
                kind: "Secret".into(),
                key: format!("secret {n}"),
                blue: shown(&a).into(),
                green: shown(&b).into(),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keyed_hash_is_hmac_sha256() {
        // RFC 4231 test case 2 (a key shorter than a block is zero-padded either way).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex::encode(hmac_sha256(&key, b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Not the unkeyed sha256 a reader could test guesses against.
        let plain = hex::encode(Sha256::digest(b"s3cr3t"));
        assert!(!plain.starts_with(&keyed_digest(&[7; 32], b"s3cr3t")[5..]));
        assert_ne!(
            keyed_digest(&[1; 32], b"s3cr3t"),
            keyed_digest(&[2; 32], b"s3cr3t")
        );
        assert_eq!(secret_digest(b"s3cr3t"), secret_digest(b"s3cr3t"));
    }

    #[test]
    fn an_unreadable_secret_is_unknown_never_the_same() {
        let mut blue = EnvSnapshot::default();
        let mut green = EnvSnapshot::default();
        blue.unreadable_secrets.insert("api-{env}".into());
        green.unreadable_secrets.insert("api-{env}".into());
        let d = diff(&blue, &green);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(is_unknown(&d[0]));
        assert_eq!(
            (d[0].blue.as_str(), d[0].green.as_str()),
            (UNKNOWN, UNKNOWN)
        );
        // One side readable: still unknown, the readable side shown as what it is.
        blue.unreadable_secrets.clear();
        blue.missing_secrets.insert("api-{env}".into());
        let d = diff(&blue, &green);
        assert_eq!((d[0].blue.as_str(), d[0].green.as_str()), (ABSENT, UNKNOWN));
    }
}
