//! A whole (small) benchmark run on real processes: the raw loop, the daemon over IPC and
//! HTTP, and llama-server absent, which must be reported as skipped with the reason. No
//! speed is asserted here (the machine may be busy): figures exist, are positive, and land
//! in the table, the JSON and the plot.

use veritas_bench::{BenchArgs, BenchConfig, SystemId};

fn args(out: &std::path::Path, cache: &std::path::Path) -> BenchArgs {
    BenchArgs {
        threads: 1,
        parallel: 2,
        ctx_size: 256,
        model: "tiny".into(),
        rounds: 2,
        requests: 2,
        client_requests: 1,
        client_tokens: 4,
        health_calls: 50,
        clients: vec![1, 3],
        lengths: vec![1, 8],
        prompt: "Hello".into(),
        prompt_tokens: None,
        quick: false,
        skip: Vec::new(),
        llama_server: None,
        cache: cache.to_path_buf(),
        bin_dir: None,
        out: out.to_path_buf(),
        json: false,
    }
}

#[test]
fn a_small_run_measures_every_system_and_names_what_it_skipped() {
    let out = tempfile::tempdir().unwrap();
    let empty_cache = tempfile::tempdir().unwrap();
    let cfg = BenchConfig::from_args(&args(out.path(), empty_cache.path())).unwrap();
    let mut lines = Vec::new();
    let report = veritas_bench::run(&cfg, &mut |l| lines.push(l.to_string())).unwrap();

    let skipped = report.system(SystemId::LlamaServer).unwrap();
    assert_eq!(skipped.status, "skipped");
    let why = skipped.skip_reason.as_deref().unwrap();
    assert!(why.contains("build-llama-server.sh"), "{why}");
    assert!(
        lines.iter().any(|l| l.contains("llama-server SKIPPED")),
        "{lines:?}"
    );

    for id in [
        SystemId::RawLoop,
        SystemId::VeritasIpc,
        SystemId::VeritasHttp,
    ] {
        let s = report.system(id).unwrap();
        assert_eq!(s.status, "ran", "{id:?}");
        assert_eq!(s.generation.len(), 2, "{id:?}");
        for g in &s.generation {
            assert!(g.tokens_per_second > 0.0, "{id:?} {g:?}");
            // rounds x requests, every one answered.
            assert_eq!(g.requests, 4, "{id:?} {g:?}");
        }
        let p50 = s.latency_1_token_p50_ms.unwrap();
        assert!(p50 > 0.0 && p50 <= s.latency_1_token_p99_ms.unwrap());
        assert!(s.ready_ms.unwrap() > 0.0);
        // The model (a few MB) is resident in every system.
        assert!(s.rss_bytes.unwrap() > 4 << 20, "{id:?} {:?}", s.rss_bytes);
        if id == SystemId::RawLoop {
            assert!(s.concurrency.is_empty());
        } else {
            let c: Vec<u32> = s.concurrency.iter().map(|c| c.clients).collect();
            assert_eq!(c, [1, 3], "{id:?}");
            // 3 clients x 1 request x 2 rounds.
            assert_eq!(s.concurrency[1].requests, 6);
        }
    }
    assert!(report
        .ratios
        .iter()
        .any(|r| r.system == SystemId::VeritasIpc && r.against == SystemId::RawLoop));
    assert!(
        !report
            .ratios
            .iter()
            .any(|r| r.against == SystemId::LlamaServer),
        "no ratio against a system that did not run"
    );

    // The daemon's health round trips and the socket floor under them were measured.
    let h = report.ipc_health.as_ref().expect("health round trips");
    assert_eq!(h.calls, 100, "2 rounds x 50 calls");
    assert!(h.p50_us > 0.0 && h.p50_us <= h.p99_us, "{h:?}");
    assert!(h.socket_floor_p50_us > 0.0, "{h:?}");
    let target = |name: &str| {
        report
            .targets
            .iter()
            .find(|t| t.target.contains(name))
            .unwrap_or_else(|| panic!("no target {name}: {:?}", report.targets))
    };
    assert!(target("veritas-ipc / raw loop").met.is_some());
    assert!(target("IPC health").met.is_some());
    // llama-server did not run: its comparisons are not measured, never "met".
    assert_eq!(target("veritas-http / llama-server").met, None);

    let table = report.table();
    for name in [
        "raw-loop",
        "veritas-ipc",
        "veritas-http",
        "ipc/raw",
        "llama-server SKIPPED",
        "IPC health round trip",
        "not measured",
    ] {
        assert!(table.contains(name), "{name} missing from\n{table}");
    }
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["systems"][3]["system"], "llama-server");

    let svg = out.path().join("bench.svg");
    veritas_bench::plot::write_svg(&report, &svg).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.contains("veritas-ipc"),
        "{}",
        &text[..200.min(text.len())]
    );
}

/// `veritas-harness bench`'s options as the harness parses them.
#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

/// The options with every system left out (nothing to find or start) and `extra` appended.
fn parse(extra: &[&str]) -> Result<BenchArgs, clap::Error> {
    use clap::Parser;
    let mut argv = vec![
        "bench",
        "--skip",
        "raw-loop,veritas-ipc,veritas-http,llama-server",
    ];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).map(|c| c.bench)
}

#[test]
fn the_model_and_the_prompt_length_can_be_chosen_and_default_to_before() {
    use veritas_fixtures::{GgmlType, ModelSpec};
    let cfg = BenchConfig::from_args(&parse(&[]).unwrap()).unwrap();
    assert_eq!(cfg.model, ModelSpec::tiny());
    assert_eq!(cfg.model_name, "tiny");
    assert_eq!((cfg.prompt.as_str(), cfg.prompt_tokens), ("Hello", None));

    let a = parse(&["--model", "smollm2-360m-q4_0", "--prompt-tokens", "512"]).unwrap();
    let err = BenchConfig::from_args(&a).unwrap_err().to_string();
    assert!(
        err.contains("--ctx-size 256") && err.contains("648"),
        "{err}"
    );
    let a = parse(&[
        "--model",
        "smollm2-360m-q4_0",
        "--prompt-tokens",
        "512",
        "--ctx-size",
        "1024",
    ])
    .unwrap();
    let cfg = BenchConfig::from_args(&a).unwrap();
    assert_eq!(cfg.model, ModelSpec::smollm2_360m_shape(GgmlType::Q4_0));
    assert_eq!(cfg.prompt_tokens, Some(512));
    assert_eq!(
        cfg.prompt.split(' ').count(),
        511,
        "one token per word after <s>"
    );
    let cfg = BenchConfig::from_args(&parse(&["--model", "smollm2-360m-q8_0"]).unwrap()).unwrap();
    assert_eq!(cfg.model.weight_type, GgmlType::Q8_0);

    assert!(parse(&["--model", "smollm2-1.7b"]).is_err());
    assert!(parse(&["--prompt", "Hi", "--prompt-tokens", "8"]).is_err());
}
