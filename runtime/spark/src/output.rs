//! How CLI results are printed: text for people, `--json` for scripts, and exit codes from
//! the guide's Health Status Matrix (0 healthy, 1 critical).

use crate::client::CliError;
use serde::Serialize;
use std::process::ExitCode;
use veritas_vocab::ipc::*;
use veritas_vocab::{ErrorBody, ErrorCode};

pub struct Printer {
    pub json: bool,
}

/// `--json` error shape: the design's error body plus the checks that were run.
#[derive(Serialize)]
struct JsonError<'a> {
    #[serde(flatten)]
    error: &'a ErrorBody,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    checks: &'a [Check],
}

impl Printer {
    pub fn result(&self, result: Result<Reply, CliError>, verbose: bool) -> ExitCode {
        match result {
            Ok(reply) => self.reply(reply, verbose),
            Err(e) => self.error(&e.error, &e.checks),
        }
    }

    fn error(&self, e: &ErrorBody, checks: &[Check]) -> ExitCode {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&JsonError { error: e, checks }).unwrap()
            );
        } else {
            eprintln!("{e}");
            if !checks.is_empty() {
                eprintln!("checks:");
                for c in checks {
                    eprintln!(
                        "  [{}] {:<20} {}",
                        if c.ok { "ok" } else { "FAIL" },
                        c.name,
                        c.detail
                    );
                }
            }
            if let Some(steps) = diagnostic_steps(e.code) {
                eprintln!(
                    "next steps (deployment-troubleshooting guide, {}):",
                    e.code.code()
                );
                for s in steps {
                    eprintln!("  {s}");
                }
            }
        }
        ExitCode::from(1)
    }

    fn json<T: Serialize>(&self, v: &T) {
        println!("{}", serde_json::to_string_pretty(v).unwrap());
    }

    fn reply(&self, reply: Reply, verbose: bool) -> ExitCode {
        match reply {
            Reply::Health(h) => self.health(&h, verbose),
            Reply::Probe(p) => {
                if self.json {
                    self.json(&p);
                } else if p.ok {
                    println!("{}", p.detail);
                }
                if p.ok {
                    ExitCode::SUCCESS
                } else {
                    if !self.json {
                        eprintln!(
                            "{}",
                            ErrorBody::new(
                                ErrorCode::HealthCheckFailed,
                                format!("not ready: {}", p.detail)
                            )
                        );
                    }
                    ExitCode::from(1)
                }
            }
            Reply::Models(m) => {
                if self.json {
                    self.json(&m);
                } else {
                    print!("{}", render_models(&m));
                }
                ExitCode::SUCCESS
            }
            Reply::ModelLoaded(info) => {
                if self.json {
                    self.json(&info);
                } else {
                    println!("loaded {}@{}", info.name, info.version);
                    if verbose {
                        print!("{}", render_model_info(&info));
                    }
                }
                ExitCode::SUCCESS
            }
            Reply::MetricsSummary(s) => {
                if self.json {
                    self.json(&s);
                } else {
                    print!("{}", render_summary(&s));
                }
                ExitCode::SUCCESS
            }
            Reply::Telemetry(t) => {
                if self.json {
                    self.json(&t);
                } else {
                    println!(
                        "metrics:   {}",
                        t.metrics_address
                            .as_deref()
                            .map(|a| format!("enabled on {a}/metrics"))
                            .unwrap_or("disabled".into())
                    );
                    println!(
                        "http:      {}",
                        t.http_address.as_deref().unwrap_or("disabled")
                    );
                    println!("socket:    {}", t.socket);
                    println!("logs:      {} to stderr", t.log_format);
                    println!("series:    {}", t.series);
                }
                ExitCode::SUCCESS
            }
            Reply::Selftest(r) => {
                if self.json {
                    self.json(&r);
                } else {
                    println!(
                        "sandbox self-test in worker pid {}",
                        r.pid.map(|p| p.to_string()).unwrap_or("-".into())
                    );
                    for p in &r.probes {
                        print_probe(p);
                    }
                }
                if r.all_ok {
                    ExitCode::SUCCESS
                } else {
                    if !self.json {
                        eprintln!(
                            "{}",
                            ErrorBody::new(
                                ErrorCode::SandboxInitFailed,
                                "confinement incomplete: a forbidden operation was allowed"
                            )
                        );
                    }
                    ExitCode::from(1)
                }
            }
            Reply::FaultInjected { kind } => {
                if self.json {
                    self.json(&serde_json::json!({ "injected": kind }));
                } else {
                    println!(
                        "injected {}",
                        serde_json::to_value(kind).unwrap().as_str().unwrap_or("?")
                    );
                }
                ExitCode::SUCCESS
            }
            Reply::Generated(g) => {
                if self.json {
                    self.json(&g);
                } else {
                    println!("{}", printable(&g.text));
                }
                ExitCode::SUCCESS
            }
        }
    }

    /// `sandbox check`: confine this very process as a worker would be, then probe it.
    pub fn sandbox_check(&self, mode: &str, layers: &str, model_dir: &std::path::Path) -> ExitCode {
        let fail =
            |detail: String| self.error(&ErrorBody::new(ErrorCode::SandboxInitFailed, detail), &[]);
        let mode = match mode.parse::<veritas_sandbox::SandboxMode>() {
            Ok(m) => m,
            Err(e) => return fail(format!("--mode: {e}")),
        };
        let mut cfg = veritas_sandbox::SandboxConfig::new(mode, model_dir, -1);
        cfg.layers = match layers.parse() {
            Ok(l) => l,
            Err(e) => return fail(format!("--layers: {e}")),
        };
        let report = match veritas_sandbox::confine(&cfg) {
            Ok(r) => r,
            Err(e) => return fail(e.to_string()),
        };
        let probes = veritas_sandbox::selftest(&cfg);
        let all_ok = probes.iter().all(|p| p.ok());
        if self.json {
            self.json(
                &serde_json::json!({ "sandbox": report, "probes": probes, "all_ok": all_ok }),
            );
        } else {
            print!(
                "{}",
                render_sandbox(&serde_json::to_value(&report).unwrap())
            );
            for p in &probes {
                print_probe(&serde_json::to_value(p).unwrap());
            }
        }
        if all_ok {
            ExitCode::SUCCESS
        } else {
            fail("confinement incomplete: a forbidden operation was allowed".into())
        }
    }

    fn health(&self, h: &HealthReport, verbose: bool) -> ExitCode {
        let healthy = h.status == HealthStatus::Healthy;
        if self.json {
            self.json(h);
        } else if verbose {
            print!("{}", render_health(h));
        } else if healthy {
            let m = h
                .model
                .as_ref()
                .map(|m| format!("{}@{}", m.name, m.version))
                .unwrap_or_default();
            println!("healthy: {m} ready (deployment {})", h.deployment);
        }
        if healthy {
            return ExitCode::SUCCESS;
        }
        if !self.json {
            let failing: Vec<_> = h
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            let status = serde_json::to_value(h.status).unwrap();
            eprintln!(
                "{}",
                ErrorBody::new(
                    ErrorCode::HealthCheckFailed,
                    format!(
                        "runtime is {}: {}",
                        status.as_str().unwrap_or("?"),
                        failing.join("; ")
                    )
                )
            );
        }
        ExitCode::from(1)
    }
}

/// The guide's diagnostic steps for the codes that have a section.
fn diagnostic_steps(code: ErrorCode) -> Option<&'static [&'static str]> {
    match code {
        ErrorCode::IpcConnectionFailed => Some(&[
            "1. restart the CORE Runtime if not running",
            "2. check directory permissions on the socket path",
            "3. verify no other process is holding the socket",
            "4. check SELinux/AppArmor policies",
        ]),
        ErrorCode::ModelLoadFailed => Some(&[
            "1. check the model file exists: ls -la /models/<model-name>",
            "2. verify file integrity: sha256sum /models/<model-name>.gguf",
            "3. check available memory: free -h",
            "4. view the detailed error: veritas-spark models load <model-name> --verbose",
        ]),
        _ => None,
    }
}

pub fn render_health(h: &HealthReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let status = serde_json::to_value(h.status).unwrap();
    let _ = writeln!(s, "status:       {}", status.as_str().unwrap_or("?"));
    let _ = writeln!(s, "version:      {}", h.version);
    let _ = writeln!(s, "deployment:   {}", h.deployment);
    let _ = writeln!(s, "uptime:       {}s", h.uptime_seconds);
    let _ = writeln!(s, "model state:  {}", h.model_state.as_str());
    match &h.model {
        Some(m) => {
            let _ = writeln!(s, "model:        {}@{}", m.name, m.version);
            s.push_str(&render_model_info(m));
        }
        None => {
            let _ = writeln!(s, "model:        none");
        }
    }
    if let Some(e) = &h.last_error {
        let _ = writeln!(s, "last error:   {e}");
    }
    let _ = writeln!(
        s,
        "worker:       {}, {} restarts",
        h.worker
            .pid
            .map(|p| format!("pid {p}"))
            .unwrap_or_else(|| "not running".into()),
        h.worker.restarts
    );
    let _ = writeln!(
        s,
        "queue:        {} in flight, capacity {} (parallel {})",
        h.queue.inflight, h.queue.capacity, h.queue.parallel
    );
    match &h.sandbox {
        Some(sb) => s.push_str(&render_sandbox(sb)),
        None => {
            let _ = writeln!(s, "sandbox:      not reported by the worker");
        }
    }
    let _ = writeln!(s, "checks:");
    for c in &h.checks {
        let _ = writeln!(
            s,
            "  [{}] {:<12} {}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    s
}

fn render_model_info(m: &ModelInfo) -> String {
    format!(
        "  file:       {}\n  format:     {}\n  size:       {} bytes\n  sha256:     {}\n  context:    {} tokens\n  vocabulary: {} tokens\n",
        m.file, m.format, m.size_bytes, m.sha256, m.n_ctx, m.n_vocab
    )
}

pub fn render_models(m: &ModelsReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "registry: {}", m.model_dir);
    let _ = writeln!(
        s,
        "{:<16} {:<10} {:<6} {:>12} {:<10} {:<14} FILE",
        "NAME", "VERSION", "FORMAT", "SIZE", "STATE", "SHA256"
    );
    for r in &m.models {
        let size = r
            .size_bytes
            .map(|b| b.to_string())
            .unwrap_or_else(|| "-".into());
        let sha: String = r.sha256.chars().take(12).collect();
        let _ = writeln!(
            s,
            "{:<16} {:<10} {:<6} {:>12} {:<10} {:<14} {}",
            r.name, r.version, r.format, size, r.state, sha, r.file
        );
    }
    s
}

fn render_summary(m: &MetricsSummary) -> String {
    let ms = |v: Option<f64>| {
        v.map(|x| format!("{x:.1} ms"))
            .unwrap_or_else(|| "-".into())
    };
    let errors = if m.errors_by_code.is_empty() {
        "none".to_string()
    } else {
        m.errors_by_code
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let r = &m.recent;
    // A daemon older than these fields sends none (window 0): say nothing rather than zeros.
    let mut load = String::new();
    if r.window_seconds > 0 {
        load = format!(
        "slots:        {} (--parallel), {} in flight, {} queued now\nlast {} s:    {} requests, {} waited for a free slot\n",
        m.slots, m.inflight, m.queued, r.window_seconds, r.requests, r.waited_for_slot
        );
    }
    if r.waited_for_slot > 0 {
        // The map's "High latency -> resource contention": say which resource, and the levers.
        load.push_str(&format!(
            "contention:   {} of {} recent requests found all inference slots busy and queued: \
             latency includes the wait (raise --parallel if memory allows, add replicas, or shed load)\n",
            r.waited_for_slot, r.requests
        ));
    }
    format!(
        "deployment:   {}\nrequests:     {} ok, {} error (error rate {:.2}%)\nlatency:      p50 {}, p99 {}\ntokens:       {} prompt, {} generated\n{load}memory:       {} of {} bytes\nerrors:       {}\n",
        m.deployment,
        m.requests_success,
        m.requests_error,
        m.error_rate * 100.0,
        ms(m.latency_p50_ms),
        ms(m.latency_p99_ms),
        m.prompt_tokens,
        m.generated_tokens,
        m.memory_used_bytes,
        m.memory_limit_bytes,
        errors
    )
}

/// Generated text with control characters escaped, so a model's output cannot drive the
/// operator's terminal.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let keep = !c.is_control() || c == '\n' || c == '\t';
            let escaped: Vec<char> = if keep {
                vec![c]
            } else {
                c.escape_default().collect()
            };
            escaped
        })
        .collect()
}

/// The sandbox section: mode, then one line a layer.
fn render_sandbox(report: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "sandbox:      mode {}",
        report["mode"].as_str().unwrap_or("?")
    );
    for l in report["layers"].as_array().into_iter().flatten() {
        let why = l["reason"].as_str().or(l["detail"].as_str()).unwrap_or("");
        let _ = writeln!(
            s,
            "  {:<13} {:<12} {}",
            l["layer"].as_str().unwrap_or("?"),
            l["state"].as_str().unwrap_or("?"),
            why
        );
    }
    s
}

fn print_probe(p: &serde_json::Value) {
    if let Some(why) = p["not_applicable"].as_str() {
        println!(
            "  [--] {:<28} {:<8} {}",
            p["name"].as_str().unwrap_or("?"),
            "n/a",
            why
        );
        return;
    }
    let blocked = p["blocked"].as_bool().unwrap_or(false);
    println!(
        "  [{}] {:<28} {:<8} {}",
        if p["expect"] == "blocked" && !blocked {
            "FAIL"
        } else {
            "ok"
        },
        p["name"].as_str().unwrap_or("?"),
        if blocked { "blocked" } else { "ALLOWED" },
        p["how"].as_str().unwrap_or("")
    );
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\u{1b}[31mb\nc\u{7}"), "a\\u{1b}[31mb\nc\\u{7}");
    }
}
