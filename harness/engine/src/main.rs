//! `veritas-harness`: run the troubleshooting guide's rows as scenario playbooks.

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use veritas_harness::cluster::ClusterEnv;
use veritas_harness::kind::KindCluster;
use veritas_harness::report::{RunReport, Verdict};
use veritas_harness::runner::{self, DriverKind, Event, RunConfig};
use veritas_scenario::{DriverClass, Scenario};

#[derive(Parser)]
#[command(
    name = "veritas-harness",
    version,
    about = "Reproduce the deployment troubleshooting guide's rows on real processes or a real cluster",
    long_about = "Reproduce the deployment troubleshooting guide's rows, one scenario per row.\n\n\
Each scenario sets up a healthy system, injects the guide's cause, checks that the documented \
symptom appears and persists without a remedy (the negative control), runs the guide's \
diagnostic commands and checks what they show, applies the guide's remedy as the on-call would, \
and checks recovery within a deadline. Faults are always reverted, also on Ctrl-C.\n\n\
Drivers: `process` (default; real local daemons, no cluster: the runtime's error-code rows), \
`kind` (creates its own offline kind cluster: the whole catalog), `existing` (the current \
kubeconfig context; only the run's own namespaces are touched unless --allow-cluster-wide).",
    after_help = "Examples:\n  veritas-harness list\n  veritas-harness explain E3001\n  veritas-harness run                      # every scenario the process driver can run\n  veritas-harness run E2001 E1001 --json\n  veritas-harness run --all --driver kind --parallel 4\n  veritas-harness validate\n  veritas-harness cleanup                  # revert what a killed run left behind\n\nExit status: 0 all run scenarios passed (skips allowed), 1 a scenario failed or errored, 2 usage or invalid scenario files."
)]
struct Cli {
    /// Scenario directory.
    #[arg(long, global = true, env = "VERITAS_SCENARIOS")]
    scenarios: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios and report verdicts.
    Run(RunArgs),
    /// List the catalog: ID, driver, guide section and cause.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one scenario as a runbook: the guide row, the fault, the diagnosis, the remedy.
    Explain { id: String },
    /// Check every scenario file (errors name file, line and field).
    Validate,
    /// Print the JSON Schema of scenario files (`scenarios/scenario.schema.json`).
    Schema {
        /// The schema of fragment files instead (`scenarios/fragment.schema.json`).
        #[arg(long)]
        fragment: bool,
    },
    /// Revert what killed runs left behind: replays each revert journal whose harness is dead
    /// (its `finally` steps with the variables it had captured, its namespace deleted, its
    /// daemons stopped). `run` does this first on its own.
    Cleanup {
        #[arg(long)]
        json: bool,
    },
    /// The coverage gate: every row of the troubleshooting guide (Cause/Resolution tables,
    /// error codes and the resolutions under them, Symptom to Action Map, Health Status
    /// Matrix, Prometheus queries) against the scenarios, with the verdicts and times of the
    /// given reports. Exit 1 when a row has no scenario and is not a listed gap, a scenario's
    /// row is gone from the guide, or a listed gap is covered now (the gaps file only shrinks).
    Coverage(CoverageArgs),
    /// Performance regression benchmark: the raw llama-cpp-2 loop, our daemon (IPC and
    /// HTTP) and llama.cpp's llama-server on one generated model, interleaved; table, JSON
    /// and SVG plot under --out.
    Bench(veritas_bench::BenchArgs),
}

#[derive(clap::Args)]
struct CoverageArgs {
    /// The guide (default: ../shared/guide/deployment-troubleshooting.md beside the repository,
    /// else the copy committed in docs/guide/).
    #[arg(long)]
    guide: Option<PathBuf>,
    /// Rows known to have no scenario yet, one `section / cause` per line (default:
    /// scenarios/coverage-gaps.txt).
    #[arg(long)]
    gaps: Option<PathBuf>,
    /// JSON reports to read verdicts and times from: `report.json` of a run, or directories
    /// of them (nextest keeps one per scenario test in target/scenario-reports).
    #[arg(long)]
    reports: Vec<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scenario IDs (default: every scenario).
    ids: Vec<String>,
    /// Every scenario (the default when no ID is given).
    #[arg(long)]
    all: bool,
    #[arg(long, value_enum, default_value = "process", env = "VERITAS_DRIVER")]
    driver: DriverKind,
    /// Scenarios run at once (those with `requires.exclusive` run alone, after the rest).
    #[arg(long, default_value_t = 2)]
    parallel: usize,
    /// Keep work directories, namespaces and the kind cluster after the run.
    #[arg(long)]
    keep: bool,
    /// On a failure, wait for Enter before reverting (to look around).
    #[arg(long)]
    pause_on_failure: bool,
    /// Seed for every random choice (printed; pass it again to replay a run).
    #[arg(long)]
    seed: Option<u64>,
    /// Ablation: run without the remedy. Each scenario should then FAIL at recovery; one that
    /// passes shows its remedy is not what brings the system back.
    #[arg(long)]
    without_remedy: bool,
    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Where report.json, junit.xml and report.html go.
    #[arg(long, default_value = "target/veritas-harness")]
    report_dir: PathBuf,
    /// kind driver: cluster name (default: veritas-<pid>, unique per run).
    #[arg(long)]
    cluster_name: Option<String>,
    /// existing driver: allow scenarios that change cluster-wide state (CoreDNS, controller, nodes).
    #[arg(long)]
    allow_cluster_wide: bool,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("VERITAS_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let code = match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            2
        }
    };
    std::process::exit(code);
}

fn scenario_dir(cli: &Cli) -> PathBuf {
    cli.scenarios
        .clone()
        .unwrap_or_else(|| veritas_harness::repo_root().join("scenarios"))
}

fn load_all(dir: &std::path::Path) -> Result<Vec<Scenario>> {
    veritas_scenario::load_dir(dir).map_err(|errors| {
        anyhow::anyhow!(
            "invalid scenario files:\n{}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn coverage(dir: &std::path::Path, args: &CoverageArgs) -> Result<i32> {
    use veritas_harness::coverage;
    let guide = args.guide.clone().unwrap_or_else(coverage::default_guide);
    let text = std::fs::read_to_string(&guide)
        .with_context(|| format!("read the guide {} (--guide PATH)", guide.display()))?;
    let gaps_path = args
        .gaps
        .clone()
        .unwrap_or_else(|| dir.join("coverage-gaps.txt"));
    let gaps = match std::fs::read_to_string(&gaps_path) {
        Ok(t) => coverage::parse_gaps(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", gaps_path.display())),
    };
    let mut reports = Vec::new();
    for p in &args.reports {
        let files: Vec<PathBuf> = if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("read {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                // The remedied runs: an ablation's verdict is not the row's.
                .filter(|f| {
                    f.extension().is_some_and(|e| e == "json")
                        && !f.to_string_lossy().contains(".without-remedy.")
                })
                .collect();
            v.sort();
            v
        } else {
            vec![p.clone()]
        };
        for f in files {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("read {}", f.display()))?;
            reports.push(
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a JSON report", f.display()))?,
            );
        }
    }
    let scenarios = load_all(dir)?;
    let rows = coverage::parse_guide(&text);
    if rows.is_empty() {
        anyhow::bail!(
            "{} has no rows the gate knows (is it the troubleshooting guide?)",
            guide.display()
        );
    }
    let c = coverage::check(&rows, &scenarios, &gaps, &coverage::outcomes(&reports));
    let json = serde_json::to_string_pretty(&c)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &json).with_context(|| format!("write {}", out.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", coverage::table(&c));
    }
    Ok(if c.passed() { 0 } else { 1 })
}

fn real_main(cli: Cli) -> Result<i32> {
    let dir = scenario_dir(&cli);
    match &cli.command {
        Cmd::Bench(args) => {
            veritas_bench::cli(args).context("benchmark run")?;
            Ok(0)
        }
        Cmd::Schema { fragment } => {
            let schema = if *fragment {
                veritas_scenario::fragment_json_schema()
            } else {
                veritas_scenario::json_schema()
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(0)
        }
        Cmd::Coverage(args) => coverage(&dir, args),
        Cmd::Validate => match veritas_scenario::load_dir(&dir) {
            Ok(all) => {
                for s in &all {
                    for w in veritas_scenario::warnings(s) {
                        eprintln!("warning: {}.yaml: {}: {}", s.id, w.field, w.message);
                    }
                }
                println!("{} scenario files valid in {}", all.len(), dir.display());
                Ok(0)
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("{} invalid scenario file(s)", errors.len());
                Ok(2)
            }
        },
        Cmd::List { json } => {
            let all = load_all(&dir)?;
            if *json {
                let rows: Vec<_> = all
                    .iter()
                    .map(|s| serde_json::json!({"id": s.id, "title": s.title, "driver": s.requires.driver, "section": s.guide.section, "cause": s.guide.cause}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let w = all.iter().map(|s| s.id.len()).max().unwrap_or(2);
                for s in &all {
                    let driver = match s.requires.driver {
                        DriverClass::Process => "process",
                        DriverClass::Cluster => "cluster",
                    };
                    println!(
                        "{:<w$}  {:<8} {} / {}",
                        s.id, driver, s.guide.section, s.guide.cause
                    );
                }
            }
            Ok(0)
        }
        Cmd::Explain { id } => {
            let all = load_all(&dir)?;
            let s = all
                .iter()
                .find(|s| &s.id == id)
                .with_context(|| format!("no scenario {id} (see `veritas-harness list`)"))?;
            print!("{}", explain(s));
            Ok(0)
        }
        Cmd::Cleanup { json } => {
            let spark_bin =
                veritas_harness::spark_bin().unwrap_or_else(|_| PathBuf::from("veritas-spark"));
            let rt = tokio::runtime::Runtime::new()?;
            let done = rt.block_on(veritas_harness::journal::recover_stale(
                &veritas_harness::journal::dir(),
                &spark_bin,
            ));
            if *json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                print_recovered(&done);
                if done.is_empty() {
                    println!(
                        "nothing to clean up: no revert journal of a dead run in {}",
                        veritas_harness::journal::dir().display()
                    );
                }
            }
            Ok(if done.iter().all(|r| r.failures.is_empty()) {
                0
            } else {
                1
            })
        }
        Cmd::Run(args) => {
            let all = load_all(&dir)?;
            let selected: Vec<Scenario> = if args.ids.is_empty() || args.all {
                all
            } else {
                let mut v = Vec::new();
                for id in &args.ids {
                    let s = all.iter().find(|s| &s.id == id).with_context(|| {
                        format!("no scenario {id} (see `veritas-harness list`)")
                    })?;
                    v.push(s.clone());
                }
                v
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(run(args, selected))
        }
    }
}

fn print_recovered(done: &[veritas_harness::journal::Recovered]) {
    for r in done {
        eprintln!(
            "veritas-harness: reverted what a dead run (pid {}) of {} left behind ({})",
            r.pid,
            r.scenario,
            r.file.display()
        );
        for a in &r.actions {
            eprintln!("  done: {a}");
        }
        for f in &r.failures {
            eprintln!("  FAILED: {f} (the journal is kept: `veritas-harness cleanup` retries)");
        }
    }
}

fn explain(s: &Scenario) -> String {
    use veritas_harness::describe;
    let mut t = format!(
        "{}: {}\n\nGuide: {}\n  cause:  {}\n  remedy: {}\n",
        s.id, s.title, s.guide.section, s.guide.cause, s.guide.remedy
    );
    t.push_str(&format!("  recovered by: {:?}\n", s.guide.recovery_by).to_lowercase());
    if let Some(n) = &s.guide.note {
        t.push_str(&format!("  note:   {n}\n"));
    }
    let phases: [(&str, &Vec<veritas_scenario::Step>); 4] = [
        ("Setup", &s.setup),
        ("Fault", &s.fault),
        ("Diagnosis", &s.diagnosis),
        ("Remedy", &s.remedy),
    ];
    for (i, (name, steps)) in phases.into_iter().enumerate() {
        t.push_str(&format!("\n{name}:\n"));
        for st in steps {
            t.push_str(&format!("  - {}\n", describe(st)));
        }
        if i == 1 {
            t.push_str(&format!(
                "\nSymptom (within {}, then held {} without remedy):\n",
                s.symptom.within,
                s.symptom
                    .hold_for
                    .map(|h| h.to_string())
                    .unwrap_or_default()
            ));
            for st in &s.symptom.checks {
                t.push_str(&format!("  - {}\n", describe(st)));
            }
        }
    }
    t.push_str(&format!("\nRecovery (within {}):\n", s.recovery.within));
    for st in &s.recovery.checks {
        t.push_str(&format!("  - {}\n", describe(st)));
    }
    t
}

/// Live progress for people: one spinner per running scenario on a terminal, plain lines otherwise.
fn progress_sink(quiet: bool) -> Arc<dyn Fn(Event) + Send + Sync> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let multi = MultiProgress::new();
    let bars: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    Arc::new(move |ev: Event| {
        if quiet {
            return;
        }
        match ev {
            Event::Started { id } if tty => {
                let pb = multi.add(ProgressBar::new_spinner());
                pb.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:<14} {elapsed:>4} {msg}")
                        .expect("template"),
                );
                pb.set_prefix(id.clone());
                pb.enable_steady_tick(Duration::from_millis(120));
                bars.lock().expect("bars").insert(id, pb);
            }
            Event::Phase { id, phase } if tty => {
                if let Some(pb) = bars.lock().expect("bars").get(&id) {
                    pb.set_message(phase.to_string());
                }
            }
            Event::Step {
                id,
                phase,
                description,
                ok,
                elapsed,
            } => {
                if tty {
                    if let Some(pb) = bars.lock().expect("bars").get(&id) {
                        pb.set_message(format!("{phase}: {description}"));
                    }
                } else {
                    eprintln!(
                        "[{id}] {phase:<16} {} {description} ({:.2}s)",
                        if ok { "ok  " } else { "FAIL" },
                        elapsed.as_secs_f64()
                    );
                }
            }
            Event::Finished {
                id,
                verdict,
                elapsed,
            } => {
                let line = format!("{} {id} ({:.1}s)", verdict.as_str(), elapsed.as_secs_f64());
                match bars.lock().expect("bars").remove(&id) {
                    Some(pb) => pb.finish_with_message(line),
                    None => eprintln!("{line}"),
                }
            }
            _ => {}
        }
    })
}

async fn run(args: &RunArgs, selected: Vec<Scenario>) -> Result<i32> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let repo = veritas_harness::repo_root();
    // Only process scenarios need a local veritas-spark; cluster ones run it in pods.
    let needs_local = selected
        .iter()
        .any(|s| s.requires.driver == DriverClass::Process);
    let spark_bin = match veritas_harness::spark_bin() {
        Ok(p) => p,
        Err(e) if needs_local => bail!(e),
        Err(_) => PathBuf::from("veritas-spark"),
    };
    eprintln!("veritas-harness: {} scenario(s), driver {:?}, parallel {}, seed {seed} (replay with --seed {seed})", selected.len(), args.driver, args.parallel);

    // A run killed earlier (SIGKILL, a lost machine) left faults in place: revert them first.
    print_recovered(
        &veritas_harness::journal::recover_stale(&veritas_harness::journal::dir(), &spark_bin)
            .await,
    );

    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        eprintln!("veritas-harness: interrupted; reverting faults (finally) before exiting");
        let _ = tx.send(true);
    });

    let needs_cluster = selected
        .iter()
        .any(|s| s.requires.driver == DriverClass::Cluster);
    let mut kind_cluster = None;
    let mut components = Vec::new();
    let cluster = match args.driver {
        DriverKind::Process => None,
        DriverKind::Kind if needs_cluster => {
            let name = args
                .cluster_name
                .clone()
                .unwrap_or_else(|| format!("veritas-{}", std::process::id()));
            let repo2 = repo.clone();
            let bins = spark_bin.parent().map(Path::to_path_buf);
            let c = tokio::task::spawn_blocking(move || {
                KindCluster::up(&repo2, &name, bins.as_deref(), &|m| {
                    eprintln!("veritas-harness: {m}")
                })
            })
            .await??;
            let env = ClusterEnv::new(
                c.kubeconfig.clone(),
                c.kubectl.clone(),
                repo.join("fixtures/manifests"),
                true,
            );
            components = env.components();
            kind_cluster = Some(c);
            Some(Arc::new(env))
        }
        DriverKind::Kind => None,
        DriverKind::Existing => {
            let kubeconfig = std::env::var_os("KUBECONFIG")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")))
                .context("no KUBECONFIG and no HOME")?;
            if !kubeconfig.exists() {
                bail!("no kubeconfig at {} (set KUBECONFIG)", kubeconfig.display());
            }
            eprintln!(
                "veritas-harness: existing cluster from {}: scenarios create and delete their own namespaces (veritas-<id>-<seed>){}",
                kubeconfig.display(),
                if args.allow_cluster_wide { "; --allow-cluster-wide: scenarios may also change CoreDNS, the controller and node resources" } else { "; cluster-wide scenarios are skipped" }
            );
            let env = ClusterEnv::new(
                kubeconfig,
                PathBuf::from("kubectl"),
                repo.join("fixtures/manifests"),
                args.allow_cluster_wide,
            );
            components = env.components();
            Some(Arc::new(env))
        }
    };

    components.extend(veritas_harness::process::host_components());
    let cfg = RunConfig {
        driver: args.driver,
        spark_bin,
        cluster,
        components,
        seed,
        keep: args.keep,
        pause_on_failure: args.pause_on_failure,
        without_remedy: args.without_remedy,
        journal_dir: veritas_harness::journal::dir(),
        interrupted: rx,
        events: progress_sink(false),
    };
    let t0 = Instant::now();
    let reports = run_all(&cfg, selected, args.parallel.max(1)).await;
    let report = RunReport::new(
        &format!("{:?}", args.driver).to_lowercase(),
        seed,
        args.parallel,
        t0.elapsed(),
        reports,
    );

    std::fs::create_dir_all(&args.report_dir)
        .with_context(|| format!("create {}", args.report_dir.display()))?;
    std::fs::write(
        args.report_dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(args.report_dir.join("junit.xml"), report.junit())?;
    std::fs::write(
        args.report_dir.join("report.html"),
        veritas_harness::html::render(&report),
    )?;
    if let Some(c) = kind_cluster {
        if !report.success() {
            let dir = args.report_dir.join("kind-logs");
            match c.export_logs(&dir) {
                Ok(()) => eprintln!("veritas-harness: kind logs exported to {}", dir.display()),
                Err(e) => eprintln!("veritas-harness: kind export logs: {e}"),
            }
        }
        if args.keep {
            eprintln!(
                "veritas-harness: cluster {} kept (--keep); kubeconfig {}",
                c.name,
                c.kubeconfig.display()
            );
        } else if let Err(e) = c.release() {
            eprintln!("veritas-harness: deleting the cluster: {e}");
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for s in report
            .scenarios
            .iter()
            .filter(|s| matches!(s.verdict, Verdict::Failed | Verdict::Error))
        {
            eprintln!("\n{}", s.failure_text());
        }
        println!("\n{}", report.table());
        eprintln!(
            "reports: {dir}/report.html, {dir}/report.json, {dir}/junit.xml",
            dir = args.report_dir.display()
        );
    }
    Ok(if report.success() { 0 } else { 1 })
}

/// Runs scenarios `parallel` at a time; cluster-wide ones afterwards, one at a time.
async fn run_all(
    cfg: &RunConfig,
    scenarios: Vec<Scenario>,
    parallel: usize,
) -> Vec<veritas_harness::report::ScenarioReport> {
    // Scenarios that break what every other one depends on run alone, after the rest.
    let (serial, shared): (Vec<_>, Vec<_>) = scenarios
        .into_iter()
        .partition(|s| !s.requires.exclusive.is_empty());
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut handles = Vec::new();
    for (i, s) in shared.into_iter().enumerate() {
        let mut cfg = cfg.clone();
        cfg.seed = cfg.seed.wrapping_add(i as u64);
        let (s2, seed) = (s.clone(), cfg.seed);
        // Slots are taken here, in the catalog's order: tasks that raced for them started
        // in whatever order the scheduler polled them.
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        handles.push((
            s2,
            seed,
            tokio::spawn(async move {
                let _permit = permit;
                run_unless_interrupted(&s, &cfg).await
            }),
        ));
    }
    let mut reports = Vec::new();
    for (s, seed, h) in handles {
        // A scenario whose task died still gets a verdict: never dropped from the report.
        reports.push(h.await.unwrap_or_else(|e| {
            let mut r = veritas_harness::report::ScenarioReport::new(&s, seed);
            r.reason = Some(format!(
                "the harness task died ({e}); run `veritas-harness cleanup` to revert its faults"
            ));
            r
        }));
    }
    for (i, s) in serial.into_iter().enumerate() {
        let mut cfg = cfg.clone();
        cfg.seed = cfg.seed.wrapping_add(10_000 + i as u64);
        reports.push(run_unless_interrupted(&s, &cfg).await);
    }
    reports
}

/// After Ctrl-C no queued scenario starts: it is reported as not run.
async fn run_unless_interrupted(
    s: &Scenario,
    cfg: &RunConfig,
) -> veritas_harness::report::ScenarioReport {
    if *cfg.interrupted.borrow() {
        let mut r = veritas_harness::report::ScenarioReport::new(s, cfg.seed);
        r.reason = Some("not started: the run was interrupted".into());
        return r;
    }
    runner::run(s, cfg).await
}
