//! insta snapshots of what a diagnostic command shows, with everything that changes between
//! runs (paths, ports, pids, durations, hashes, names made per run) redacted.
//!
//! Snapshots live in the repository's `snapshots/scenarios/`. A new or changed snapshot fails
//! the step; `INSTA_UPDATE=always veritas-harness run ...` (or `cargo insta review`) records it.

use std::path::PathBuf;

/// Per-run values to redact, in addition to the generic patterns.
#[derive(Debug, Clone, Default)]
pub struct Redactions {
    /// Literal → placeholder (the run's work dir, namespace, ...).
    pub literals: Vec<(String, String)>,
}

fn snapshot_dir() -> PathBuf {
    std::env::var_os("VERITAS_SNAPSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("snapshots/scenarios"))
}

/// Applies the redactions to `text` (what the snapshot stores).
pub fn redact(text: &str, r: &Redactions) -> String {
    let mut t = text.to_string();
    // Longest first, so a path is replaced before its prefix.
    let mut lits = r.literals.clone();
    lits.sort_by_key(|(l, _)| std::cmp::Reverse(l.len()));
    for (lit, placeholder) in lits {
        if !lit.is_empty() {
            t = t.replace(&lit, &placeholder);
        }
    }
    t
}

/// Compares `text` with snapshot `name`; `Err` carries insta's diff.
pub fn check(name: &str, text: &str, r: &Redactions) -> Result<(), String> {
    let redacted = redact(text.trim(), r);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(snapshot_dir());
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    for (pattern, placeholder) in [
        (r"[0-9a-f]{64}", "[sha256]"),
        (r"127\.0\.0\.1:[0-9]+", "127.0.0.1:[port]"),
        (r"\b(pid|PID) [0-9]+", "$1 [pid]"),
        (r#""pid":\s*[0-9]+"#, r#""pid": [pid]"#),
        (r"[0-9]+(\.[0-9]+)?\s?(ns|µs|us|ms|s)\b", "[duration]"),
        (r"[0-9]+(\.[0-9]+)? (tok/s|tokens/s)", "[rate]"),
        (r"\b[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z", "[time]"),
        // Memory sizes and other machine-dependent large numbers.
        (r"\b[0-9]{6,}\b", "[n]"),
        (
            r"(veritas-spark-[a-z]+)-[a-z0-9]{8,10}-[a-z0-9]{5}",
            "$1-[pod]",
        ),
    ] {
        settings.add_filter(pattern, placeholder);
    }
    let snap_name = name.to_string();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_snapshot!(snap_name.clone(), redacted));
    }));
    result.map_err(|payload| {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "snapshot mismatch".into());
        format!(
            "snapshot `{name}` differs: {}",
            crate::expect::clip(&msg, 600)
        )
    })
}
