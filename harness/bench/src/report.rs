//! Figures per system, ratios against the raw loop and against llama-server, the table and
//! the JSON report (schema 1: the shape is a contract, fields are only ever added).

use crate::client::Sample;
use crate::measure::{BenchConfig, HealthSamples, Samples, Workload};
use crate::systems::{Shape, SystemId};
use serde::Serialize;
use std::path::PathBuf;

pub const SCHEMA: u32 = 1;

/// Tokens/s for one generation length.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub tokens: u32,
    pub tokens_per_second: f64,
    pub requests: usize,
}

/// One concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct Concurrency {
    pub clients: u32,
    pub tokens_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SystemResult {
    pub system: SystemId,
    /// `ran` or `skipped`.
    pub status: &'static str,
    pub skip_reason: Option<String>,
    pub ready_ms: Option<f64>,
    /// Resident memory with the model loaded, after the run (the daemon counts its worker).
    pub rss_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    pub generation: Vec<Generation>,
    /// Latency of a 1-token request (the 1-token generation requests).
    pub latency_1_token_p50_ms: Option<f64>,
    pub latency_1_token_p99_ms: Option<f64>,
    pub concurrency: Vec<Concurrency>,
    pub log: Option<PathBuf>,
}

/// `q` quantile (nearest rank) of request latencies, in ms.
pub fn quantile_ms(samples: &[Sample], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut us: Vec<u64> = samples.iter().map(|s| s.us).collect();
    us.sort_unstable();
    let rank = ((q * us.len() as f64).ceil() as usize).clamp(1, us.len());
    Some(us[rank - 1] as f64 / 1e3)
}

fn tokens_per_second(tokens: u64, us: u64) -> f64 {
    if us == 0 {
        0.0
    } else {
        tokens as f64 * 1e6 / us as f64
    }
}

impl SystemResult {
    pub fn skipped(system: SystemId, why: &str) -> SystemResult {
        SystemResult {
            system,
            status: "skipped",
            skip_reason: Some(why.to_string()),
            ready_ms: None,
            rss_bytes: None,
            peak_rss_bytes: None,
            generation: Vec::new(),
            latency_1_token_p50_ms: None,
            latency_1_token_p99_ms: None,
            concurrency: Vec::new(),
            log: None,
        }
    }

    pub fn measured(
        system: SystemId,
        ready_ms: f64,
        rss: u64,
        hwm: u64,
        log: PathBuf,
        s: Samples,
    ) -> SystemResult {
        let mut generation = Vec::new();
        let mut concurrency = Vec::new();
        let mut one = None;
        for (w, samples) in &s.requests {
            match *w {
                Workload::Generate(tokens) => {
                    let total: u64 = samples.iter().map(|s| s.generated as u64).sum();
                    let us: u64 = samples.iter().map(|s| s.us).sum();
                    generation.push(Generation {
                        tokens,
                        tokens_per_second: tokens_per_second(total, us),
                        requests: samples.len(),
                    });
                    if tokens == 1 {
                        one = Some(samples);
                    }
                }
                Workload::Clients(clients) => {
                    let walls = s.walls.get(w).map(Vec::as_slice).unwrap_or(&[]);
                    let wall: u64 = walls.iter().map(|w| w.0).sum();
                    let tokens: u64 = walls.iter().map(|w| w.1).sum();
                    concurrency.push(Concurrency {
                        clients,
                        tokens_per_second: tokens_per_second(tokens, wall),
                        p50_ms: quantile_ms(samples, 0.5).unwrap_or(0.0),
                        p99_ms: quantile_ms(samples, 0.99).unwrap_or(0.0),
                        requests: samples.len(),
                    });
                }
            }
        }
        SystemResult {
            system,
            status: "ran",
            skip_reason: None,
            ready_ms: Some(ready_ms),
            rss_bytes: Some(rss),
            peak_rss_bytes: Some(hwm),
            generation,
            latency_1_token_p50_ms: one.and_then(|s| quantile_ms(s, 0.5)),
            latency_1_token_p99_ms: one.and_then(|s| quantile_ms(s, 0.99)),
            concurrency,
            log: Some(log),
        }
    }
}

/// One row of the table: a figure, its value per system, and whether more is better.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
    /// Per system, in [`SystemId::ALL`] order; `None` where not measured.
    pub values: Vec<Option<f64>>,
}

/// `ours / reference` for one figure.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub figure: String,
    pub system: SystemId,
    pub against: SystemId,
    /// ours ÷ theirs: above 1 is faster for throughputs, slower for latencies and memory.
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub schema: u32,
    pub model: ModelInfo,
    pub shape: Shape,
    pub rounds: u32,
    pub requests_per_round: u32,
    pub client_requests_per_round: u32,
    pub client_tokens: u32,
    pub prompt: String,
    /// `--prompt-tokens`: the prompt's length in tokens, when it was built to one (absent
    /// otherwise, as in reports before the option).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    pub cpus: usize,
    pub load_average: Option<String>,
    /// The daemon's sandbox layers as it reported them (`/health`).
    pub daemon_sandbox: serde_json::Value,
    pub systems: Vec<SystemResult>,
    pub figures: Vec<Figure>,
    pub ratios: Vec<Ratio>,
    /// IPC health round trips of the daemon and the bare-socket floor under them.
    pub ipc_health: Option<IpcHealth>,
    /// The targets, each with the measured value and whether it was met.
    pub targets: Vec<TargetCheck>,
    pub duration_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IpcHealth {
    pub calls: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The same request and answer sizes over a socket pair echoed by a thread.
    pub socket_floor_p50_us: f64,
    pub socket_floor_p99_us: f64,
    pub request_bytes: usize,
    pub answer_bytes: usize,
}

impl IpcHealth {
    fn from_samples(h: &HealthSamples) -> Option<IpcHealth> {
        if h.daemon_ns.is_empty() {
            return None;
        }
        let q = |v: &[u64], q: f64| {
            let mut v = v.to_vec();
            v.sort_unstable();
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64 / 1e3
        };
        let floor = |p: f64| {
            if h.floor_ns.is_empty() {
                0.0
            } else {
                q(&h.floor_ns, p)
            }
        };
        Some(IpcHealth {
            calls: h.daemon_ns.len(),
            p50_us: q(&h.daemon_ns, 0.5),
            p99_us: q(&h.daemon_ns, 0.99),
            socket_floor_p50_us: floor(0.5),
            socket_floor_p99_us: floor(0.99),
            request_bytes: h.request_bytes,
            answer_bytes: h.answer_bytes,
        })
    }
}

/// One of the targets: benchmarks report them, nothing fails on them.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub value: Option<f64>,
    /// `>= x` or `<= x`.
    pub goal: String,
    /// `None` when a side of the comparison did not run.
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    /// How the model was generated: the fixtures' spec and what it describes.
    pub generator: String,
    pub bytes: u64,
}

/// The report's `model.generator`: for the default tiny model the same text as before
/// `--model` existed, so reports stay comparable.
fn generator(cfg: &BenchConfig) -> String {
    if cfg.model == veritas_fixtures::ModelSpec::tiny() {
        "veritas-fixtures TinyModelSpec::default()".to_string()
    } else {
        format!(
            "veritas-fixtures ModelSpec::from_name({:?}): {}",
            cfg.model_name,
            cfg.model.describe()
        )
    }
}

impl BenchReport {
    pub fn new(
        cfg: &BenchConfig,
        model_bytes: u64,
        daemon_sandbox: serde_json::Value,
        systems: Vec<SystemResult>,
        health: &HealthSamples,
        duration_s: f64,
    ) -> BenchReport {
        let figures = figures(&systems);
        let ratios = ratios(&figures);
        let ipc_health = IpcHealth::from_samples(health);
        let targets = targets(&systems, &ratios, ipc_health.as_ref());
        BenchReport {
            schema: SCHEMA,
            model: ModelInfo {
                name: cfg.model_name.clone(),
                generator: generator(cfg),
                bytes: model_bytes,
            },
            shape: cfg.shape.clone(),
            rounds: cfg.rounds,
            requests_per_round: cfg.requests,
            client_requests_per_round: cfg.client_requests,
            client_tokens: cfg.client_tokens,
            prompt: cfg.prompt.clone(),
            prompt_tokens: cfg.prompt_tokens,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
            daemon_sandbox,
            systems,
            figures,
            ratios,
            ipc_health,
            targets,
            duration_s,
        }
    }

    pub fn system(&self, id: SystemId) -> Option<&SystemResult> {
        self.systems.iter().find(|s| s.system == id)
    }

    /// The table: one row per figure, one column per system, then the ratios.
    pub fn table(&self) -> String {
        let ran: Vec<SystemId> = SystemId::ALL
            .iter()
            .copied()
            .filter(|id| self.system(*id).is_some_and(|s| s.status == "ran"))
            .collect();
        let ratio_cols: Vec<(SystemId, SystemId)> = [
            (SystemId::VeritasIpc, SystemId::RawLoop),
            (SystemId::VeritasHttp, SystemId::RawLoop),
            (SystemId::VeritasHttp, SystemId::LlamaServer),
        ]
        .into_iter()
        .filter(|(a, b)| ran.contains(a) && ran.contains(b))
        .collect();
        let w = self
            .figures
            .iter()
            .map(|f| f.name.len())
            .max()
            .unwrap_or(10)
            + 2;
        let mut out = String::new();
        out.push_str(&format!(
            "model {} ({} bytes), threads {}, slots {}, ctx {}, greedy, {} rounds interleaved, {} CPUs, load {}\n\n",
            self.model.name,
            self.model.bytes,
            self.shape.threads,
            self.shape.parallel,
            self.shape.ctx_size,
            self.rounds,
            self.cpus,
            self.load_average.as_deref().unwrap_or("?")
        ));
        out.push_str(&format!("{:<w$}", "figure"));
        for id in &ran {
            out.push_str(&format!("{:>14}", id.name()));
        }
        for (a, b) in &ratio_cols {
            out.push_str(&format!("{:>14}", format!("{}/{}", short(*a), short(*b))));
        }
        out.push('\n');
        for f in &self.figures {
            out.push_str(&format!("{:<w$}", f.name));
            for id in &ran {
                let idx = SystemId::ALL.iter().position(|x| x == id).unwrap();
                out.push_str(&format!("{:>14}", fmt_value(f.values[idx], f.unit)));
            }
            for (a, b) in &ratio_cols {
                let r = self
                    .ratios
                    .iter()
                    .find(|r| r.figure == f.name && r.system == *a && r.against == *b);
                out.push_str(&format!(
                    "{:>14}",
                    r.map(|r| format!("{:.2}x", r.ratio))
                        .unwrap_or_else(|| "-".into())
                ));
            }
            out.push('\n');
        }
        out.push_str(
            "\nratios are ours/theirs: above 1 is faster for tok/s, slower for latencies, larger for memory and time to ready\n",
        );
        if let Some(h) = &self.ipc_health {
            out.push_str(&format!(
                "\nIPC health round trip ({} calls, {} B request, {} B answer): p50 {:.1} µs, p99 {:.1} µs; \
                 bare socket pair, same sizes: p50 {:.1} µs, p99 {:.1} µs\n",
                h.calls,
                h.request_bytes,
                h.answer_bytes,
                h.p50_us,
                h.p99_us,
                h.socket_floor_p50_us,
                h.socket_floor_p99_us
            ));
        }
        if !self.targets.is_empty() {
            out.push_str("\ntargets\n");
            let tw = self
                .targets
                .iter()
                .map(|t| t.target.len())
                .max()
                .unwrap_or(10)
                + 2;
            for t in &self.targets {
                out.push_str(&format!(
                    "{:<tw$}{:>12}  goal {:<8} {}\n",
                    t.target,
                    t.value
                        .map(|v| format!("{v:.3}"))
                        .unwrap_or_else(|| "-".into()),
                    t.goal,
                    match t.met {
                        Some(true) => "met",
                        Some(false) => "MISSED",
                        None => "not measured",
                    }
                ));
            }
        }
        for s in &self.systems {
            if let Some(why) = &s.skip_reason {
                out.push_str(&format!("{} SKIPPED: {why}\n", s.system.name()));
            }
        }
        out
    }
}

fn short(id: SystemId) -> &'static str {
    match id {
        SystemId::RawLoop => "raw",
        SystemId::VeritasIpc => "ipc",
        SystemId::VeritasHttp => "http",
        SystemId::LlamaServer => "llama",
    }
}

fn fmt_value(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "-".to_string(),
        Some(v) if unit == "MiB" || unit == "ms" && v >= 100.0 => format!("{v:.1}"),
        Some(v) if unit == "ms" => format!("{v:.3}"),
        Some(v) => format!("{v:.0}"),
    }
}

fn figures(systems: &[SystemResult]) -> Vec<Figure> {
    let get = |f: &dyn Fn(&SystemResult) -> Option<f64>| -> Vec<Option<f64>> {
        SystemId::ALL
            .iter()
            .map(|id| {
                systems
                    .iter()
                    .find(|s| s.system == *id && s.status == "ran")
                    .and_then(f)
            })
            .collect()
    };
    let mut lengths: Vec<u32> = systems
        .iter()
        .flat_map(|s| s.generation.iter().map(|g| g.tokens))
        .collect();
    lengths.sort_unstable();
    lengths.dedup();
    let mut clients: Vec<u32> = systems
        .iter()
        .flat_map(|s| s.concurrency.iter().map(|c| c.clients))
        .collect();
    clients.sort_unstable();
    clients.dedup();
    let mut out = Vec::new();
    for &n in &lengths {
        out.push(Figure {
            name: format!("tok/s, {n}-token requests"),
            unit: "tok/s",
            higher_is_better: true,
            values: get(&|s| {
                s.generation
                    .iter()
                    .find(|g| g.tokens == n)
                    .map(|g| g.tokens_per_second)
            }),
        });
    }
    out.push(Figure {
        name: "1-token latency p50 (ms)".into(),
        unit: "ms",
        higher_is_better: false,
        values: get(&|s| s.latency_1_token_p50_ms),
    });
    out.push(Figure {
        name: "1-token latency p99 (ms)".into(),
        unit: "ms",
        higher_is_better: false,
        values: get(&|s| s.latency_1_token_p99_ms),
    });
    for &c in &clients {
        out.push(Figure {
            name: format!("{c} clients tok/s"),
            unit: "tok/s",
            higher_is_better: true,
            values: get(&|s| {
                s.concurrency
                    .iter()
                    .find(|x| x.clients == c)
                    .map(|x| x.tokens_per_second)
            }),
        });
        out.push(Figure {
            name: format!("{c} clients p99 (ms)"),
            unit: "ms",
            higher_is_better: false,
            values: get(&|s| {
                s.concurrency
                    .iter()
                    .find(|x| x.clients == c)
                    .map(|x| x.p99_ms)
            }),
        });
    }
    out.push(Figure {
        name: "time to ready (ms)".into(),
        unit: "ms",
        higher_is_better: false,
        values: get(&|s| s.ready_ms),
    });
    out.push(Figure {
        name: "RSS, model loaded (MiB)".into(),
        unit: "MiB",
        higher_is_better: false,
        values: get(&|s| s.rss_bytes.map(|b| b as f64 / (1 << 20) as f64)),
    });
    out
}

/// The targets, from the figures: generation is the longest requests' tok/s.
fn targets(
    systems: &[SystemResult],
    ratios: &[Ratio],
    health: Option<&IpcHealth>,
) -> Vec<TargetCheck> {
    let longest = systems
        .iter()
        .flat_map(|s| s.generation.iter().map(|g| g.tokens))
        .max();
    let ratio = |figure: &str, a: SystemId, b: SystemId| {
        ratios
            .iter()
            .find(|r| r.figure == figure && r.system == a && r.against == b)
            .map(|r| r.ratio)
    };
    let check = |target: String, value: Option<f64>, at_least: bool, bound: f64| TargetCheck {
        target,
        value,
        goal: format!("{}{bound}", if at_least { ">= " } else { "<= " }),
        met: value.map(|v| if at_least { v >= bound } else { v <= bound }),
    };
    let mut out = Vec::new();
    if let Some(n) = longest {
        let f = format!("tok/s, {n}-token requests");
        out.push(check(
            format!("{n}-token generation, veritas-ipc / raw loop"),
            ratio(&f, SystemId::VeritasIpc, SystemId::RawLoop),
            true,
            0.95,
        ));
        out.push(check(
            format!("{n}-token generation, veritas-http / llama-server"),
            ratio(&f, SystemId::VeritasHttp, SystemId::LlamaServer),
            true,
            1.0,
        ));
    }
    out.push(check(
        "1-token latency p50, veritas-http / llama-server".into(),
        ratio(
            "1-token latency p50 (ms)",
            SystemId::VeritasHttp,
            SystemId::LlamaServer,
        ),
        false,
        0.5,
    ));
    out.push(check(
        "IPC health round trip p50 (µs)".into(),
        health.map(|h| h.p50_us),
        false,
        30.0,
    ));
    for id in [
        SystemId::VeritasIpc,
        SystemId::VeritasHttp,
        SystemId::LlamaServer,
    ] {
        let tps = |c: u32| {
            systems
                .iter()
                .find(|s| s.system == id && s.status == "ran")?
                .concurrency
                .iter()
                .find(|x| x.clients == c)
                .map(|x| x.tokens_per_second)
        };
        if let (Some(four), Some(one)) = (tps(4), tps(1)) {
            if one > 0.0 {
                out.push(check(
                    format!("4 clients / 1 client tok/s, {}", id.name()),
                    Some(four / one),
                    true,
                    1.5,
                ));
            }
        }
    }
    out
}

fn ratios(figures: &[Figure]) -> Vec<Ratio> {
    let idx = |id: SystemId| SystemId::ALL.iter().position(|x| *x == id).unwrap();
    let mut out = Vec::new();
    for f in figures {
        for (ours, theirs) in [
            (SystemId::VeritasIpc, SystemId::RawLoop),
            (SystemId::VeritasHttp, SystemId::RawLoop),
            (SystemId::VeritasIpc, SystemId::LlamaServer),
            (SystemId::VeritasHttp, SystemId::LlamaServer),
        ] {
            if let (Some(a), Some(b)) = (f.values[idx(ours)], f.values[idx(theirs)]) {
                if b > 0.0 {
                    out.push(Ratio {
                        figure: f.name.clone(),
                        system: ours,
                        against: theirs,
                        ratio: a / b,
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(us: u64) -> Sample {
        Sample { us, generated: 1 }
    }

    #[test]
    fn the_generator_names_the_model() {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: crate::BenchArgs,
        }
        let cfg = |model: &str| {
            let cli = Cli::try_parse_from([
                "bench",
                "--skip",
                "raw-loop,veritas-ipc,veritas-http,llama-server",
                "--model",
                model,
            ])
            .unwrap();
            BenchConfig::from_args(&cli.bench).unwrap()
        };
        assert_eq!(
            generator(&cfg("tiny")),
            "veritas-fixtures TinyModelSpec::default()"
        );
        let g = generator(&cfg("smollm2-360m-q8_0"));
        assert!(
            g.starts_with("veritas-fixtures ModelSpec::from_name(\"smollm2-360m-q8_0\")")
                && g.contains("960 wide, 32 layers")
                && g.contains("q8_0 weights"),
            "{g}"
        );
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<Sample> = (1..=100).map(|i| s(i * 1000)).collect();
        assert_eq!(quantile_ms(&v, 0.5), Some(50.0));
        assert_eq!(quantile_ms(&v, 0.99), Some(99.0));
        assert_eq!(quantile_ms(&[s(7000)], 0.99), Some(7.0));
        assert_eq!(quantile_ms(&[], 0.5), None);
    }

    #[test]
    fn ratios_only_where_both_sides_ran() {
        let f = Figure {
            name: "x".into(),
            unit: "tok/s",
            higher_is_better: true,
            values: vec![Some(100.0), Some(95.0), Some(90.0), None],
        };
        let r = ratios(&[f]);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!((r[0].ratio - 0.95).abs() < 1e-9);
        assert_eq!(
            (r[1].system, r[1].against),
            (SystemId::VeritasHttp, SystemId::RawLoop)
        );
    }
}
