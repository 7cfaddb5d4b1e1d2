//! The raw llama-cpp-2 decode loop, written plainly (not through `veritas-engine`): what
//! the benchmark compares every server against.
//!
//! One process per run so its resident memory is its own. It loads the model, creates one
//! context, says `{"ready":…}` on stdout, then answers one JSON request per stdin line
//! (`{"prompt":"…","max_tokens":N}`) with `{"prompt_tokens":…,"generated":…,"us":…}`,
//! timing the work inside the process: tokenize, clear the KV cache, decode the prompt,
//! then sample greedily and decode one token at a time. Ends at end of input.

use anyhow::{Context, Result};
use clap::Parser;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// CPU threads for decoding (the same number every system gets).
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Context window in tokens.
    #[arg(long, default_value_t = 256)]
    ctx_size: u32,
}

#[derive(Deserialize)]
struct Request {
    prompt: String,
    max_tokens: u32,
}

#[derive(Serialize)]
struct Answer {
    prompt_tokens: usize,
    generated: usize,
    us: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let mut backend = LlamaBackend::init().context("llama.cpp backend init")?;
    // llama.cpp's per-token logging costs time the other systems do not pay.
    backend.void_logs();
    let model = LlamaModel::load_from_file(&backend, &args.model, &LlamaModelParams::default())
        .with_context(|| format!("loading {}", args.model.display()))?;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(args.ctx_size))
        .with_n_batch(args.ctx_size)
        .with_n_threads(args.threads)
        .with_n_threads_batch(args.threads);
    let mut ctx = model
        .new_context(&backend, params)
        .context("creating the context")?;
    let vocab = model.vocab();
    let mut batch = LlamaBatch::new(args.ctx_size as usize, 1);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(
        out,
        "{}",
        serde_json::json!({"ready": true, "load_us": started.elapsed().as_micros() as u64})
    )?;
    out.flush()?;

    for line in std::io::stdin().lock().lines() {
        let req: Request = serde_json::from_str(&line?).context("request line")?;
        let t0 = Instant::now();
        let tokens = vocab.tokenize(req.prompt.as_bytes(), true, false);
        anyhow::ensure!(!tokens.is_empty(), "the prompt produced no tokens");
        anyhow::ensure!(
            tokens.len() + req.max_tokens as usize <= args.ctx_size as usize,
            "prompt plus max_tokens exceed the context window"
        );
        ctx.clear_kv_cache();
        batch.clear();
        let last = tokens.len() - 1;
        for (i, t) in tokens.iter().enumerate() {
            batch.add(*t, i as i32, &[0], i == last)?;
        }
        ctx.decode(&mut batch).context("prompt decode")?;
        let mut sampler = LlamaSampler::greedy();
        let mut generated = 0usize;
        let mut pos = tokens.len() as i32;
        while generated < req.max_tokens as usize {
            let token = sampler.sample(&ctx, batch.n_tokens() - 1);
            sampler.accept(token);
            if vocab.is_eog(token) {
                break;
            }
            generated += 1;
            // The last token is not decoded: nothing would read its logits.
            if generated == req.max_tokens as usize {
                break;
            }
            batch.clear();
            batch.add(token, pos, &[0], true)?;
            pos += 1;
            ctx.decode(&mut batch).context("decode")?;
        }
        let answer = Answer {
            prompt_tokens: tokens.len(),
            generated,
            us: t0.elapsed().as_micros() as u64,
        };
        writeln!(out, "{}", serde_json::to_string(&answer)?)?;
        out.flush()?;
    }
    Ok(())
}
