//! Daemon configuration: raw `serve` flags validated into one [`Config`], and the memory
//! limit probed from the cgroup when none is given.

use crate::cli::ServeArgs;
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Validated daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub model_dir: PathBuf,
    pub model: Option<String>,
    /// The served model's other names in the OpenAI API.
    pub served_model_names: Vec<String>,
    pub http_addr: Option<String>,
    pub metrics_addr: Option<String>,
    pub deployment: String,
    pub ctx_size: u32,
    pub threads: u32,
    pub parallel: u32,
    pub queue_size: u32,
    pub max_frame: u32,
    pub max_connections: u32,
    pub max_http_connections: u32,
    pub http_timeout: Duration,
    pub max_pipelined: u32,
    pub ipc_idle_timeout: Duration,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
    /// `--memory-limit`, when given; otherwise [`Config::memory_limit`] reads the cgroup.
    pub memory_limit_flag: Option<u64>,
    pub log_format: String,
    pub sandbox: String,
    pub sandbox_layers: String,
    pub worker_memory_limit: Option<u64>,
    pub fault_injection: bool,
    /// Chaos: how long each worker waits before loading its model.
    pub slow_load: Duration,
}

impl Config {
    pub fn from_args(socket: PathBuf, a: &ServeArgs) -> anyhow::Result<Config> {
        let off = |s: &str| (s != "off").then(|| s.to_string());
        if !(1..=veritas_engine::MAX_SEQUENCES).contains(&a.parallel) {
            bail!(
                "--parallel must be between 1 and {} (the sequences one llama.cpp context holds), not {}",
                veritas_engine::MAX_SEQUENCES,
                a.parallel
            );
        }
        if !(a.fault_slow_load >= 0.0 && a.fault_slow_load <= 3600.0) {
            bail!("--fault-slow-load must be between 0 and 3600 seconds");
        }
        if a.fault_slow_load > 0.0 && !a.enable_fault_injection {
            bail!("--fault-slow-load is a chaos setting: it needs --enable-fault-injection");
        }
        if a.max_connections == 0 || a.max_pipelined == 0 || a.max_http_connections == 0 {
            bail!(
                "--max-connections, --max-http-connections and --max-pipelined must be at least 1"
            );
        }
        if a.http_timeout.is_nan() || a.http_timeout <= 0.0 {
            bail!("--http-timeout must be positive");
        }
        // NaN is refused too: it is neither positive nor negative.
        if a.ipc_idle_timeout.is_nan() || a.ipc_idle_timeout <= 0.0 {
            bail!("--ipc-idle-timeout must be positive");
        }
        if !(a.request_timeout > 0.0 && a.drain_timeout >= 0.0) {
            bail!("--request-timeout must be positive and --drain-timeout not negative");
        }
        let socket_mode = u32::from_str_radix(&a.socket_mode, 8).with_context(|| {
            format!(
                "--socket-mode {:?} is not an octal mode like 660",
                a.socket_mode
            )
        })?;
        a.sandbox
            .parse::<veritas_sandbox::SandboxMode>()
            .map_err(|e| anyhow::anyhow!("--sandbox {:?}: {e}", a.sandbox))?;
        a.sandbox_layers
            .parse::<veritas_sandbox::LayerSet>()
            .map_err(|e| anyhow::anyhow!("--sandbox-layers {:?}: {e}", a.sandbox_layers))?;
        if !matches!(a.log_format.as_str(), "text" | "json") {
            bail!("--log-format must be text or json, not {:?}", a.log_format);
        }
        Ok(Config {
            socket,
            socket_mode,
            model_dir: a.model_dir.clone(),
            model: a.model.clone(),
            http_addr: off(&a.http_addr),
            metrics_addr: off(&a.metrics_addr),
            deployment: a.deployment.clone(),
            ctx_size: a.ctx_size,
            threads: a.threads.max(1),
            parallel: a.parallel,
            queue_size: a.queue_size,
            max_frame: a.max_frame,
            max_connections: a.max_connections,
            max_pipelined: a.max_pipelined,
            ipc_idle_timeout: Duration::from_secs_f64(a.ipc_idle_timeout),
            request_timeout: Duration::from_secs_f64(a.request_timeout),
            drain_timeout: Duration::from_secs_f64(a.drain_timeout),
            memory_limit_flag: a.memory_limit,
            log_format: a.log_format.clone(),
            sandbox: a.sandbox.clone(),
            sandbox_layers: a.sandbox_layers.clone(),
            worker_memory_limit: a.worker_memory_limit,
            fault_injection: a.enable_fault_injection,
            slow_load: Duration::from_secs_f64(a.fault_slow_load),
            served_model_names: a.served_model_name.clone(),
            max_http_connections: a.max_http_connections,
            http_timeout: Duration::from_secs_f64(a.http_timeout),
        })
    }

    pub fn capacity(&self) -> u32 {
        self.parallel + self.queue_size
    }

    /// The memory limit in force now, in bytes (0: unknown): `--memory-limit`, else the
    /// cgroup's, else the machine's. Read at each use, never cached: a service manager
    /// (`systemctl set-property ... MemoryMax=`) or an in-place pod resize changes it live,
    /// and a model load must be judged against the limit of that moment.
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit_flag
            .or_else(cgroup_memory_limit)
            .or_else(veritas_engine::verify::mem_total)
            .unwrap_or(0)
    }
}

/// The tightest memory limit on this process's own cgroup and its ancestors (cgroup v2
/// `memory.max`, v1 `memory.limit_in_bytes`), when one is set. The own cgroup, not the
/// mount's root: in a container the two are the same (cgroup namespace or a bind mount of
/// its directory), but a service started by systemd with `MemoryMax=` sits in
/// `/system.slice/<unit>`, and the root has no limit at all.
fn cgroup_memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut files = cgroup_limit_files(&own, Path::new("/sys/fs/cgroup"));
    if files.is_empty() {
        // No readable /proc/self/cgroup: the mount's roots, as in a container.
        files = vec![
            PathBuf::from("/sys/fs/cgroup/memory.max"),
            PathBuf::from("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        ];
    }
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|s| s.trim().parse::<u64>().ok())
        // v1 writes "no limit" as a page-rounded i64::MAX; v2 writes "max", which does not parse.
        .filter(|&v| v < (1 << 60))
        .min()
}

/// The limit files to read, from `/proc/self/cgroup`'s text: each directory from the
/// process's cgroup up to the root, v2 (`0::/path`) and v1 memory (`N:memory:/path`) alike.
fn cgroup_limit_files(proc_self_cgroup: &str, mount: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (base, file) = match controllers {
            "" => (mount.to_path_buf(), "memory.max"),
            c if c.split(',').any(|c| c == "memory") => {
                (mount.join("memory"), "memory.limit_in_bytes")
            }
            _ => continue,
        };
        // A cgroup outside this namespace's root reads as `/..`: nothing under the mount.
        if path.split('/').any(|part| part == "..") {
            continue;
        }
        let mut dir = base.join(path.trim_start_matches('/'));
        loop {
            files.push(dir.join(file));
            if dir == base || !dir.pop() {
                break;
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> anyhow::Result<Config> {
        let mut argv = vec!["veritas-spark", "serve"];
        argv.extend_from_slice(extra);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        match cli.command {
            crate::cli::Command::Serve(a) => Config::from_args(cli.global.socket, &a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_memory_limit_is_read_from_the_own_cgroup_up_to_the_root() {
        let mount = Path::new("/sys/fs/cgroup");
        // cgroup v2, a systemd service.
        assert_eq!(
            cgroup_limit_files("0::/system.slice/veritas-spark.service\n", mount),
            vec![
                PathBuf::from("/sys/fs/cgroup/system.slice/veritas-spark.service/memory.max"),
                PathBuf::from("/sys/fs/cgroup/system.slice/memory.max"),
                PathBuf::from("/sys/fs/cgroup/memory.max"),
            ]
        );
        // cgroup v1 (hybrid): only the memory hierarchy counts.
        let v1 = "9:pids:/x\n4:memory:/process_api/abc\n0::/\n";
        assert_eq!(
            cgroup_limit_files(v1, mount),
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes"),
                PathBuf::from("/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes"),
                PathBuf::from("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
                PathBuf::from("/sys/fs/cgroup/memory.max"),
            ]
        );
        // In a container's cgroup namespace the own cgroup is the root.
        assert_eq!(
            cgroup_limit_files("0::/\n", mount),
            vec![PathBuf::from("/sys/fs/cgroup/memory.max")]
        );
        assert!(cgroup_limit_files("garbage", mount).is_empty());
        assert!(cgroup_limit_files("0::/../../other.slice\n", mount).is_empty());
    }

    #[test]
    fn defaults_follow_the_guide() {
        let c = args(&[]).unwrap();
        assert_eq!(
            c.socket,
            PathBuf::from("/var/run/veritas/veritas-spark.sock")
        );
        assert_eq!(c.http_addr.as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(c.metrics_addr.as_deref(), Some("0.0.0.0:9090"));
        assert_eq!(c.deployment, "stable");
        assert_eq!(c.socket_mode, 0o660);
        assert_eq!(c.capacity(), 18);
    }

    #[test]
    fn invalid_settings_are_refused_with_the_flag_named() {
        for (flags, needle) in [
            (&["--parallel", "0"][..], "--parallel"),
            (&["--parallel", "257"][..], "between 1 and 256"),
            (&["--socket-mode", "rw"][..], "--socket-mode"),
            (&["--log-format", "xml"][..], "--log-format"),
            (&["--request-timeout", "0"][..], "--request-timeout"),
        ] {
            let err = args(flags).unwrap_err().to_string();
            assert!(err.contains(needle), "{flags:?}: {err}");
        }
        assert_eq!(args(&["--http-addr", "off"]).unwrap().http_addr, None);
    }
}
