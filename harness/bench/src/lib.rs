//! `veritas-harness bench`: the performance regression benchmark as a product job.
//!
//! In one run, on one generated model (`--model`: the tiny fixture by default, or a
//! real-shaped one such as `smollm2-360m-q8_0`), with the same thread count, slots, context window and
//! greedy decoding everywhere, it measures
//! 1. the plain llama-cpp-2 decode loop (`veritas-bench-raw`, its own process): the limit;
//! 2. `veritas-spark serve` (sandbox at its default) through its Unix socket and through
//!    the OpenAI-compatible `POST /v1/completions`;
//! 3. llama.cpp's own `llama-server` through the same endpoint (built by
//!    `ci/bench/build-llama-server.sh`; reported as skipped, with the reason, when absent).
//!
//! Rounds are interleaved (every workload runs on every system in each round, the order
//! rotating), so a machine that gets busier mid-run slows all systems alike. Every loop is
//! bounded by a request count and every wait by a deadline; everything listens on loopback.
//!
//! Rooms: [`client`] (the connections), [`systems`] (processes, readiness, memory),
//! [`measure`] (workloads and rounds), [`report`] (figures, ratios, table, JSON), [`plot`].

pub mod client;
pub mod measure;
pub mod plot;
pub mod report;
pub mod systems;

use std::path::PathBuf;

pub use measure::{run, BenchConfig};
pub use report::BenchReport;
pub use systems::SystemId;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    #[error("failed to {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Start(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("request refused: {0}")]
    Refused(String),
    #[error("{system} failed during {workload}: {source}")]
    During {
        system: &'static str,
        workload: String,
        #[source]
        source: Box<BenchError>,
    },
    #[error("cannot write the plot: {0}")]
    Plot(String),
    #[error("cannot find a binary: {0}")]
    Binary(String),
}

impl BenchError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> BenchError {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The command line of `veritas-harness bench` (flattened into the harness's CLI).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// CPU threads per decode, for every system.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Parallel slots of both servers (`--parallel` / `--parallel`).
    #[arg(long, default_value_t = 2)]
    pub parallel: u32,
    /// Context window per slot, in tokens (the tiny model is trained on 256, smollm2-360m on
    /// 8192). It must hold the prompt and the longest generation: with --prompt-tokens 512,
    /// at least 512 + 128 + 16.
    #[arg(long, default_value_t = 256)]
    pub ctx_size: u32,
    /// The generated model every system runs: `tiny` (the 64-wide test fixture, F32), or
    /// SmolLM2-360M's shape with random weights, `smollm2-360m-q8_0` (436 MB) or
    /// `smollm2-360m-q4_0` (232 MB); also `-f32` / `-f16`. Written once into the run's
    /// temporary directory (a few seconds for the big ones in a release build).
    #[arg(long, default_value = "tiny", value_parser = parse_model)]
    pub model: String,
    /// Interleaved rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Requests per round for the generation figures (1, 16, 128 tokens) and for latency.
    #[arg(long, default_value_t = 20)]
    pub requests: u32,
    /// Requests per client per round for the concurrency figures (each a 16-token request of
    /// a few ms: fewer make the figure a measure of start-up skew between the clients).
    #[arg(long, default_value_t = 8)]
    pub client_requests: u32,
    /// Tokens each concurrent client's request generates.
    #[arg(long, default_value_t = 16)]
    pub client_tokens: u32,
    /// IPC health round trips per round (the daemon's p50 and p99, beside the same sizes
    /// over a bare socket pair).
    #[arg(long, default_value_t = 2000)]
    pub health_calls: u32,
    /// Concurrent client counts.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub clients: Vec<u32>,
    /// Generation lengths for the tokens/s figures.
    #[arg(long, value_delimiter = ',', default_value = "1,16,128")]
    pub lengths: Vec<u32>,
    /// The prompt every request sends.
    #[arg(long, default_value = "Hello")]
    pub prompt: String,
    /// Instead of --prompt: a plain-English prompt of exactly this many tokens (`<s>`
    /// included) in the model's vocabulary, e.g. 512 to measure prompt processing. With the
    /// tiny model's byte-level vocabulary it is a run of letters.
    #[arg(long, conflicts_with = "prompt")]
    pub prompt_tokens: Option<u32>,
    /// A fast smoke run (2 rounds, few requests): checks the job works, not the numbers.
    #[arg(long)]
    pub quick: bool,
    /// Systems to leave out (raw-loop, veritas-ipc, veritas-http, llama-server).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// llama-server binary (default: VERITAS_LLAMA_SERVER, else the newest build in the cache).
    #[arg(long, env = "VERITAS_LLAMA_SERVER")]
    pub llama_server: Option<PathBuf>,
    /// The cache of ci/bench/build-llama-server.sh.
    #[arg(
        long,
        env = "VERITAS_BENCH_CACHE",
        default_value = "/var/cache/veritas-bench"
    )]
    pub cache: PathBuf,
    /// Directory of veritas-spark and veritas-bench-raw (default: beside this executable).
    #[arg(long, env = "VERITAS_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Where report.json, table.txt, bench.svg and the systems' logs go.
    #[arg(long, default_value = "target/veritas-bench")]
    pub out: PathBuf,
    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `--model`: a name [`veritas_fixtures::ModelSpec::from_name`] knows.
fn parse_model(name: &str) -> Result<String, String> {
    veritas_fixtures::ModelSpec::from_name(name)
        .map(|_| name.to_string())
        .map_err(|e| e.to_string())
}

/// Finds `name` in `--bin-dir`, else beside the running executable (target/<profile>/, also
/// from target/<profile>/deps/ for test binaries).
pub fn find_bin(bin_dir: Option<&std::path::Path>, name: &str) -> Result<PathBuf, BenchError> {
    if let Some(d) = bin_dir {
        let p = d.join(name);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(BenchError::Binary(format!(
                "{} does not exist",
                p.display()
            )))
        };
    }
    let exe = std::env::current_exe().map_err(|e| BenchError::io("find this executable", e))?;
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(BenchError::Binary(format!(
        "{name} is not built beside {} (cargo build --workspace, or pass --bin-dir)",
        exe.display()
    )))
}

/// `veritas-harness bench`: runs, writes `report.json`, `table.txt` and `bench.svg` under
/// `--out`, prints the table (or the JSON with `--json`). Progress goes to stderr.
pub fn cli(args: &BenchArgs) -> Result<BenchReport, BenchError> {
    let cfg = BenchConfig::from_args(args)?;
    let report = run(&cfg, &mut |line| eprintln!("bench: {line}"))?;
    let write = |name: &str, text: &str| {
        let p = cfg.out.join(name);
        std::fs::write(&p, text).map_err(|e| BenchError::io(format!("write {}", p.display()), e))
    };
    let json = serde_json::to_string_pretty(&report).expect("the report serialises");
    write("report.json", &json)?;
    let table = report.table();
    write("table.txt", &table)?;
    let svg = cfg.out.join("bench.svg");
    plot::write_svg(&report, &svg)?;
    if args.json {
        println!("{json}");
    } else {
        print!("{table}");
        println!(
            "\nreport: {}  plot: {}",
            cfg.out.join("report.json").display(),
            svg.display()
        );
    }
    Ok(report)
}
