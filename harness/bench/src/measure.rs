//! The run: one model, every system started once, workloads in interleaved rounds.

use crate::client::{Sample, Target};
use crate::report::{BenchReport, SystemResult};
use crate::systems::{self, Shape, SystemId};
use crate::{find_bin, BenchArgs, BenchError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use veritas_fixtures::ModelSpec;

/// Requests each system answers before anything is measured (first-touch page faults,
/// lazy allocations, connection setup).
const WARMUP_REQUESTS: u32 = 3;

/// A run's validated settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub shape: Shape,
    /// The model's name (`--model`): its registry name and its file `<name>.gguf`.
    pub model_name: String,
    /// The model generated for the run.
    pub model: ModelSpec,
    /// `--prompt-tokens`: the prompt was built to be this many tokens.
    pub prompt_tokens: Option<u32>,
    pub rounds: u32,
    pub requests: u32,
    pub client_requests: u32,
    pub client_tokens: u32,
    pub health_calls: u32,
    pub clients: Vec<u32>,
    pub lengths: Vec<u32>,
    pub prompt: String,
    pub systems: Vec<SystemId>,
    pub spark_bin: PathBuf,
    pub raw_bin: PathBuf,
    /// llama-server, or why it is not run.
    pub llama_server: Result<PathBuf, String>,
    pub out: PathBuf,
}

impl BenchConfig {
    pub fn from_args(a: &BenchArgs) -> Result<BenchConfig, BenchError> {
        let mut systems = Vec::new();
        for s in &a.skip {
            if !SystemId::ALL.iter().any(|id| id.name() == s) {
                return Err(BenchError::Start(format!(
                    "--skip {s}: not a system (raw-loop, veritas-ipc, veritas-http, llama-server)"
                )));
            }
        }
        for id in SystemId::ALL {
            if !a.skip.iter().any(|s| s == id.name()) {
                systems.push(id);
            }
        }
        let llama_server = if a.skip.iter().any(|s| s == SystemId::LlamaServer.name()) {
            Err("left out with --skip".to_string())
        } else {
            systems::find_llama_server(a.llama_server.as_deref(), &a.cache)
        };
        let needs_spark = systems
            .iter()
            .any(|s| matches!(s, SystemId::VeritasIpc | SystemId::VeritasHttp));
        let (rounds, requests, client_requests, health_calls) = if a.quick {
            (2, 3, 2, 200)
        } else {
            (
                a.rounds.max(1),
                a.requests.max(1),
                a.client_requests.max(1),
                a.health_calls,
            )
        };
        let longest = a
            .lengths
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(a.client_tokens);
        let model = ModelSpec::from_name(&a.model)
            .map_err(|e| BenchError::Start(format!("--model: {e}")))?;
        let prompt = match a.prompt_tokens {
            Some(n) => model.prompt(n),
            None => a.prompt.clone(),
        };
        // Room for the prompt: its token count when known, else 16 as before.
        let prompt_room = a.prompt_tokens.map_or(16, |n| n.max(2) + 8);
        if longest + prompt_room > a.ctx_size {
            return Err(BenchError::Start(format!(
                "--ctx-size {} leaves no room for the prompt and {longest} generated tokens (need at least {})",
                a.ctx_size,
                longest + prompt_room
            )));
        }
        Ok(BenchConfig {
            shape: Shape {
                threads: a.threads.max(1),
                parallel: a.parallel.max(1),
                ctx_size: a.ctx_size,
            },
            model_name: a.model.clone(),
            model,
            prompt_tokens: a.prompt_tokens,
            rounds,
            requests,
            client_requests,
            client_tokens: a.client_tokens.max(1),
            health_calls,
            clients: a.clients.iter().copied().filter(|&c| c > 0).collect(),
            lengths: a.lengths.iter().copied().filter(|&l| l > 0).collect(),
            prompt,
            spark_bin: if needs_spark {
                find_bin(a.bin_dir.as_deref(), "veritas-spark")?
            } else {
                PathBuf::new()
            },
            raw_bin: if systems.contains(&SystemId::RawLoop) {
                find_bin(a.bin_dir.as_deref(), "veritas-bench-raw")?
            } else {
                PathBuf::new()
            },
            systems,
            llama_server,
            out: a.out.clone(),
        })
    }
}

/// One kind of measurement in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// Sequential requests generating this many tokens.
    Generate(u32),
    /// This many clients at once, each with its own connection.
    Clients(u32),
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Workload::Generate(n) => write!(f, "{n}-token generation"),
            Workload::Clients(n) => write!(f, "{n} concurrent clients"),
        }
    }
}

/// Everything measured for one system.
#[derive(Debug, Default)]
pub struct Samples {
    pub requests: BTreeMap<Workload, Vec<Sample>>,
    /// Concurrency rounds: wall time in µs and tokens generated.
    pub walls: BTreeMap<Workload, Vec<(u64, u64)>>,
}

/// IPC health round trips and the bare-socket floor under them, in nanoseconds.
#[derive(Debug, Default)]
pub struct HealthSamples {
    pub daemon_ns: Vec<u64>,
    pub floor_ns: Vec<u64>,
    pub request_bytes: usize,
    pub answer_bytes: usize,
}

/// A running system and how to open connections to it.
enum Running {
    Raw(systems::Process, Box<dyn Target>),
    Daemon(systems::Daemon),
    Llama(systems::LlamaServer),
}

/// Runs the benchmark; `progress` gets one line per step.
pub fn run(cfg: &BenchConfig, progress: &mut dyn FnMut(&str)) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| BenchError::io(format!("create {}", cfg.out.display()), e))?;
    let work = tempfile::Builder::new()
        .prefix("veritas-bench-")
        .tempdir()
        .map_err(|e| BenchError::io("create a work directory", e))?;
    let models = work.path().join("models");
    progress(&format!(
        "writing {}: {}",
        cfg.model_name,
        cfg.model.describe()
    ));
    let t0 = Instant::now();
    veritas_fixtures::write_model_dir(&models, &cfg.model_name, "1.0.0", &cfg.model)
        .map_err(|e| BenchError::Start(format!("cannot generate the model: {e}")))?;
    let model_path = models.join(format!("{}.gguf", cfg.model_name));
    progress(&format!(
        "wrote {} in {:.1} s",
        model_path.display(),
        t0.elapsed().as_secs_f64()
    ));
    let model_bytes = std::fs::metadata(&model_path).map(|m| m.len()).unwrap_or(0);
    let logs = cfg.out.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| BenchError::io(format!("create {}", logs.display()), e))?;

    // Started one at a time, so each time to ready is measured on a machine doing nothing else.
    let mut skipped: BTreeMap<SystemId, String> = BTreeMap::new();
    let mut running: BTreeMap<SystemId, Running> = BTreeMap::new();
    let mut ready_ms = BTreeMap::new();
    let mut daemon_sandbox = serde_json::Value::Null;
    if cfg.systems.contains(&SystemId::RawLoop) {
        progress("starting the raw loop");
        let (p, t) = systems::start_raw(&cfg.raw_bin, &model_path, &cfg.shape, &logs)?;
        ready_ms.insert(SystemId::RawLoop, p.ready.as_secs_f64() * 1e3);
        running.insert(SystemId::RawLoop, Running::Raw(p, Box::new(t)));
    }
    let wants_daemon = cfg
        .systems
        .iter()
        .any(|s| matches!(s, SystemId::VeritasIpc | SystemId::VeritasHttp));
    if wants_daemon {
        progress("starting veritas-spark serve");
        let d = systems::start_daemon(&cfg.spark_bin, &models, &cfg.model_name, &cfg.shape, &logs)?;
        daemon_sandbox = d.sandbox();
        for id in [SystemId::VeritasIpc, SystemId::VeritasHttp] {
            if cfg.systems.contains(&id) {
                ready_ms.insert(id, d.process.ready.as_secs_f64() * 1e3);
            }
        }
        running.insert(SystemId::VeritasIpc, Running::Daemon(d));
    }
    if cfg.systems.contains(&SystemId::LlamaServer) {
        match &cfg.llama_server {
            Ok(bin) => {
                progress(&format!("starting {}", bin.display()));
                let l = systems::start_llama_server(bin, &model_path, &cfg.shape, &logs)?;
                ready_ms.insert(SystemId::LlamaServer, l.process.ready.as_secs_f64() * 1e3);
                running.insert(SystemId::LlamaServer, Running::Llama(l));
            }
            Err(why) => {
                progress(&format!("llama-server SKIPPED: {why}"));
                skipped.insert(SystemId::LlamaServer, why.clone());
            }
        }
    }
    let active: Vec<SystemId> = cfg
        .systems
        .iter()
        .copied()
        .filter(|s| !skipped.contains_key(s))
        .collect();

    // One persistent connection per system for the sequential workloads.
    let mut seq: BTreeMap<SystemId, Box<dyn Target>> = BTreeMap::new();
    for &id in &active {
        seq.insert(id, connect(&mut running, id, &cfg.model_name)?);
    }
    for (&id, t) in seq.iter_mut() {
        for _ in 0..WARMUP_REQUESTS {
            t.generate(&cfg.prompt, cfg.client_tokens)
                .map_err(|e| during(id, "warm-up", e))?;
        }
    }

    let mut workloads: Vec<Workload> = cfg.lengths.iter().map(|&l| Workload::Generate(l)).collect();
    workloads.extend(cfg.clients.iter().map(|&c| Workload::Clients(c)));
    let mut samples: BTreeMap<SystemId, Samples> = BTreeMap::new();
    let mut health = HealthSamples::default();
    let mut health_conn = match running.get(&SystemId::VeritasIpc) {
        Some(Running::Daemon(d))
            if active.contains(&SystemId::VeritasIpc) && cfg.health_calls > 0 =>
        {
            Some(crate::client::IpcTarget::connect(&d.socket)?)
        }
        _ => None,
    };
    if let Some(c) = health_conn.as_mut() {
        for _ in 0..WARMUP_REQUESTS * 10 {
            let (_, answer) = c
                .health()
                .map_err(|e| during(SystemId::VeritasIpc, "health warm-up", e))?;
            health.answer_bytes = answer + veritas_vocab::ipc::HEADER_LEN;
        }
        health.request_bytes = veritas_vocab::ipc::encode(&veritas_vocab::ipc::Request {
            id: 1,
            op: veritas_vocab::ipc::Op::Health { verbose: false },
        })
        .len();
    }
    for round in 0..cfg.rounds {
        progress(&format!("round {}/{}", round + 1, cfg.rounds));
        for &w in &workloads {
            // The order rotates each round: no system always goes first after a pause.
            let n = active.len();
            for k in 0..n {
                let id = active[(k + round as usize) % n];
                let s = samples.entry(id).or_default();
                match w {
                    Workload::Generate(tokens) => {
                        let t = seq.get_mut(&id).expect("connected above");
                        for _ in 0..cfg.requests {
                            let sample = t
                                .generate(&cfg.prompt, tokens)
                                .map_err(|e| during(id, &w.to_string(), e))?;
                            s.requests.entry(w).or_default().push(sample);
                        }
                    }
                    Workload::Clients(c) => {
                        if !id.concurrent() {
                            continue;
                        }
                        let mut targets = Vec::new();
                        for _ in 0..c {
                            targets.push(connect(&mut running, id, &cfg.model_name)?);
                        }
                        let (wall, got) =
                            clients(targets, &cfg.prompt, cfg.client_tokens, cfg.client_requests)
                                .map_err(|e| during(id, &w.to_string(), e))?;
                        let tokens: u64 = got.iter().map(|s| s.generated as u64).sum();
                        s.walls.entry(w).or_default().push((wall, tokens));
                        s.requests.entry(w).or_default().extend(got);
                    }
                }
            }
        }
        if let Some(c) = health_conn.as_mut() {
            for _ in 0..cfg.health_calls {
                let (ns, _) = c
                    .health()
                    .map_err(|e| during(SystemId::VeritasIpc, "health round trips", e))?;
                health.daemon_ns.push(ns);
            }
            // Right after, on the same machine state: what the socket alone costs.
            health.floor_ns.extend(crate::client::socket_floor(
                health.request_bytes,
                health.answer_bytes,
                cfg.health_calls,
            )?);
        }
    }
    drop(health_conn);

    let mut results = Vec::new();
    for id in cfg.systems.iter().copied() {
        if let Some(why) = skipped.get(&id) {
            results.push(SystemResult::skipped(id, why));
            continue;
        }
        let (rss, hwm, log) = match running.get(&process_key(id)) {
            Some(Running::Raw(p, _)) => {
                let (r, h) = p.memory();
                (r, h, p.log.clone())
            }
            Some(Running::Daemon(d)) => {
                let (r, h) = d.process.memory();
                (r, h, d.process.log.clone())
            }
            Some(Running::Llama(l)) => {
                let (r, h) = l.process.memory();
                (r, h, l.process.log.clone())
            }
            None => (0, 0, PathBuf::new()),
        };
        results.push(SystemResult::measured(
            id,
            ready_ms.get(&id).copied().unwrap_or(0.0),
            rss,
            hwm,
            log,
            samples.remove(&id).unwrap_or_default(),
        ));
    }
    drop(seq);
    drop(running);
    Ok(BenchReport::new(
        cfg,
        model_bytes,
        daemon_sandbox,
        results,
        &health,
        started.elapsed().as_secs_f64(),
    ))
}

/// The IPC and HTTP fronts share one daemon process.
fn process_key(id: SystemId) -> SystemId {
    match id {
        SystemId::VeritasHttp => SystemId::VeritasIpc,
        other => other,
    }
}

fn connect(
    running: &mut BTreeMap<SystemId, Running>,
    id: SystemId,
    model: &str,
) -> Result<Box<dyn Target>, BenchError> {
    let r = running
        .get_mut(&process_key(id))
        .ok_or_else(|| BenchError::Start(format!("{} is not running", id.name())))?;
    match (id, r) {
        // The raw loop has one connection, its pipe; it is handed out once (sequential use).
        (SystemId::RawLoop, Running::Raw(_, t)) => {
            let t = std::mem::replace(t, Box::new(Gone));
            Ok(t)
        }
        (SystemId::VeritasIpc, Running::Daemon(d)) => d.ipc(),
        (SystemId::VeritasHttp, Running::Daemon(d)) => Ok(d.http()),
        (SystemId::LlamaServer, Running::Llama(l)) => Ok(l.http(model)),
        _ => Err(BenchError::Start(format!(
            "no connection for {}",
            id.name()
        ))),
    }
}

/// The raw loop's pipe once it has been handed out.
struct Gone;

impl Target for Gone {
    fn generate(&mut self, _: &str, _: u32) -> Result<Sample, BenchError> {
        Err(BenchError::Protocol(
            "the raw loop serves one client at a time".into(),
        ))
    }
}

/// `targets.len()` clients at once, each sending `requests` requests one after another;
/// returns the wall time in µs and every request's sample.
fn clients(
    targets: Vec<Box<dyn Target>>,
    prompt: &str,
    tokens: u32,
    requests: u32,
) -> Result<(u64, Vec<Sample>), BenchError> {
    let barrier = std::sync::Barrier::new(targets.len() + 1);
    let (wall, results) = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .into_iter()
            .map(|mut t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    (0..requests)
                        .map(|_| t.generate(prompt, tokens))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect();
        (t0.elapsed().as_micros() as u64, results)
    });
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok((wall, all))
}

fn during(id: SystemId, workload: &str, e: BenchError) -> BenchError {
    BenchError::During {
        system: id.name(),
        workload: workload.to_string(),
        source: Box::new(e),
    }
}
