//! `veritas-spark`: the Hearthlink CORE Runtime daemon (`serve`) and its operator CLI.

mod cli;
mod client;
mod daemon;
mod output;
mod worker;

use clap::Parser;
use cli::{
    Cli, Command, DeploymentCommand, MetricsCommand, ModelsCommand, SandboxCommand,
    TelemetryCommand,
};
use std::process::ExitCode;
use std::time::Duration;
use veritas_vocab::ipc::Op;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => daemon_main(cli.global, *args),
        Command::Sandbox(SandboxCommand::Check {
            mode,
            layers,
            model_dir,
        }) => output::Printer {
            json: cli.global.json,
        }
        .sandbox_check(&mode, &layers, &model_dir),
        Command::ChaosExec {
            deny_userns,
            deny_seccomp,
            command,
        } => {
            use std::os::unix::process::CommandExt;
            if deny_userns {
                if let Err(e) = veritas_sandbox::fault::deny_user_namespaces() {
                    eprintln!("error: cannot install the user-namespace denial filter: {e}");
                    return ExitCode::from(2);
                }
            }
            // Last: once it is in place no other filter can be installed.
            if deny_seccomp {
                if let Err(e) = veritas_sandbox::fault::deny_seccomp_filters() {
                    eprintln!("error: cannot install the seccomp denial filter: {e}");
                    return ExitCode::from(2);
                }
            }
            let err = std::process::Command::new(&command[0])
                .args(&command[1..])
                .exec();
            eprintln!("error: cannot execute {:?}: {err}", command[0]);
            ExitCode::from(127)
        }
        Command::Canary(c) => {
            veritas_cluster::run(veritas_cluster::ClusterCommand::Canary(c), cli.global.json)
        }
        Command::Rollback(r) => veritas_cluster::run(
            veritas_cluster::ClusterCommand::Rollback(r),
            cli.global.json,
        ),
        Command::Bluegreen(b) => veritas_cluster::run(
            veritas_cluster::ClusterCommand::Bluegreen(b),
            cli.global.json,
        ),
        Command::Deployment(DeploymentCommand::Status(a)) => veritas_cluster::run(
            veritas_cluster::ClusterCommand::DeploymentStatus(a),
            cli.global.json,
        ),
        Command::Metrics(MetricsCommand::Canary(t)) => veritas_cluster::run(
            veritas_cluster::ClusterCommand::MetricsCanary(t),
            cli.global.json,
        ),
        Command::Metrics(MetricsCommand::Compare(t)) => veritas_cluster::run(
            veritas_cluster::ClusterCommand::MetricsCompare(t),
            cli.global.json,
        ),
        Command::Worker(args) => {
            init_logs("text", "warn");
            ExitCode::from(worker::run(args) as u8)
        }
        command => {
            let timeout = Duration::from_secs_f64(cli.global.timeout.max(0.001));
            let out = output::Printer {
                json: cli.global.json,
            };
            // `models load --verbose`: the loaded model's details and the whole cause chain.
            let mut load_verbose = false;
            let op = match command {
                Command::Health { verbose } => Op::Health { verbose },
                Command::Live => Op::Live,
                Command::Ready => Op::Ready,
                Command::Models(ModelsCommand::List) => Op::ModelsList,
                Command::Models(ModelsCommand::Load { name, verbose }) => {
                    load_verbose = verbose;
                    let (n, v) = daemon::parse_model_ref(&name);
                    Op::ModelsLoad {
                        name: n.to_string(),
                        version: v.map(str::to_string),
                    }
                }
                Command::Metrics(MetricsCommand::Summary) => Op::MetricsSummary,
                Command::Telemetry(TelemetryCommand::Status) => Op::TelemetryStatus,
                Command::Generate(g) => {
                    let prompt = if g.prompt == "-" {
                        let mut s = String::new();
                        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                        {
                            eprintln!("error: cannot read the prompt from standard input: {e}");
                            return ExitCode::from(2);
                        }
                        s
                    } else {
                        g.prompt
                    };
                    Op::Generate(veritas_vocab::ipc::GenerateRequest {
                        prompt,
                        max_tokens: g.max_tokens,
                        model: g.model,
                        messages: Vec::new(),
                        decoding: veritas_vocab::ipc::Decoding {
                            temperature: g.temperature,
                            top_k: g.top_k,
                            top_p: g.top_p,
                            seed: g.seed,
                            stop: g.stop,
                            ..Default::default()
                        },
                    })
                }
                Command::Sandbox(SandboxCommand::Selftest) => Op::SandboxSelftest,
                Command::Fault { kind } => {
                    match serde_json::from_value(serde_json::Value::String(kind.clone())) {
                        Ok(kind) => Op::Fault { kind },
                        Err(_) => {
                            eprintln!(
                                "error: unknown fault {kind:?} (sandbox-violation, worker-abort, unreadable-event)"
                            );
                            return ExitCode::from(2);
                        }
                    }
                }
                Command::Serve(_)
                | Command::Canary(_)
                | Command::Rollback(_)
                | Command::Bluegreen(_)
                | Command::Deployment(_)
                | Command::Metrics(MetricsCommand::Canary(_) | MetricsCommand::Compare(_))
                | Command::Worker(_)
                | Command::ChaosExec { .. }
                | Command::Sandbox(SandboxCommand::Check { .. }) => {
                    unreachable!("handled above")
                }
            };
            let verbose = matches!(op, Op::Health { verbose: true }) || load_verbose;
            let result = client::Client::connect(&cli.global.socket, timeout)
                .and_then(|mut c| c.call(op).map_err(client::CliError::from));
            out.result(result, verbose)
        }
    }
}

fn init_logs(format: &str, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VERITAS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn daemon_main(global: cli::GlobalArgs, args: cli::ServeArgs) -> ExitCode {
    let cfg = match daemon::Config::from_args(global.socket, &args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid configuration: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logs(&cfg.log_format, "info");
    // One thread: the daemon only moves bytes and small JSON between its sockets and the
    // worker process, where inference runs (model verification goes to the blocking pool).
    // A multi-thread runtime woke a second thread for every request it spawned (an eventfd
    // write and an epoll round per request) and competed with the worker's slots for the
    // cores.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(serve(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(cfg: daemon::Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use tokio::signal::unix::{signal, SignalKind};
    let listener = daemon::ipc_server::bind(&cfg.socket, cfg.socket_mode)?;
    let http = match &cfg.http_addr {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot bind HTTP address {a}"))?,
        ),
        None => None,
    };
    let metrics = match &cfg.metrics_addr {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot bind metrics address {a}"))?,
        ),
        None => None,
    };
    let socket = cfg.socket.clone();
    let rt = daemon::Runtime::start(cfg);
    tracing::info!(
        socket = %socket.display(),
        http = ?http.as_ref().and_then(|l| l.local_addr().ok()),
        metrics = ?metrics.as_ref().and_then(|l| l.local_addr().ok()),
        deployment = %rt.cfg.deployment,
        "veritas-spark serving"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(daemon::ipc_server::serve(
        rt.clone(),
        listener,
        stop_rx.clone(),
    )));
    let limits = daemon::http::Limits {
        max_connections: rt.cfg.max_http_connections as usize,
        header_timeout: rt.cfg.http_timeout,
    };
    for (l, router) in [
        (http, daemon::http::api_router(rt.clone())),
        (metrics, daemon::http::metrics_router(rt.clone())),
    ] {
        if let Some(l) = l {
            tasks.push(tokio::spawn(daemon::http::serve(
                l,
                router,
                stop_rx.clone(),
                limits,
            )));
        }
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    let _ = stop_tx.send(true);
    rt.drain().await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    if let Err(e) = std::fs::remove_file(&socket) {
        tracing::warn!(socket = %socket.display(), error = %e, "could not remove the socket file");
    }
    tracing::info!("stopped");
    Ok(())
}
