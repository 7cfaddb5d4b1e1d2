//! Pinned operator output (`snapshots/` at the workspace root), with run-specific values
//! (paths, pids, uptime, memory) redacted.

mod common;
use common::*;

fn settings(reg: &Registry) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../../snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s.add_filter(&regex_escape(reg.path().to_str().unwrap()), "[MODEL_DIR]");
    s.add_filter(r"pid \d+", "pid [PID]");
    s.add_filter(r"uptime:( +)\d+s", "uptime:$1[UPTIME]");
    s.add_filter(r"\d+ of \d+ bytes", "[USED] of [LIMIT] bytes");
    // What the kernel offers differs between machines; the layer list and states do not.
    s.add_filter(r"uid \d+ and gid \d+", "uid [UID] and gid [GID]");
    s.add_filter(r"ABI \d+", "ABI [N]");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn health_verbose_and_models_list() {
    let reg = Registry::new();
    reg.add_healthy("tiny-b", "2.1.0", 3);
    reg.add_entry("ghost", "ghost.gguf", Some(&"0".repeat(64)));
    let d = Daemon::start(&reg, DaemonOptions::default());
    let health = d.cli(&["health", "--verbose"]);
    assert!(health.status.success(), "{}", stderr(&health));
    let models = d.cli(&["models", "list"]);
    assert!(models.status.success(), "{}", stderr(&models));
    settings(&reg).bind(|| {
        insta::assert_snapshot!("health_verbose", stdout(&health));
        insta::assert_snapshot!("models_list", stdout(&models));
    });
}
