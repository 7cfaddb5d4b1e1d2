use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use veritas_vocab::{ErrorBody, ErrorCode};

/// llama.cpp's backend may be initialised once per process.
fn backend() -> Result<&'static LlamaBackend, ErrorBody> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            ErrorBody::new(
                ErrorCode::ModelLoadFailed,
                format!("llama.cpp backend init failed: {e}"),
            )
        })
}

#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Context window served; `0` takes the model's training context.
    pub n_ctx: u32,
    /// CPU threads per request.
    pub threads: i32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            n_ctx: 0,
            threads: 1,
        }
    }
}

/// A loaded model; `generate` may be called from several threads at once, each call with a
/// context of its own.
pub struct Engine {
    model: LlamaModel,
    n_ctx: u32,
    threads: i32,
    // Creating contexts concurrently is unsound in llama.cpp (it may write model fields).
    context_creation: Mutex<()>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    /// `length` or `eos`.
    pub finish_reason: &'static str,
    pub duration_us: u64,
}

impl Engine {
    pub fn load(path: &Path, opts: EngineOptions) -> Result<Engine, ErrorBody> {
        let backend = backend()?;
        let params = LlamaModelParams::default();
        let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| {
            ErrorBody::new(
                ErrorCode::ModelLoadFailed,
                format!(
                    "llama.cpp could not load {}: {e} (check model format compatibility)",
                    path.display()
                ),
            )
        })?;
        let n_ctx = if opts.n_ctx == 0 {
            model.n_ctx_train()
        } else {
            opts.n_ctx
        };
        Ok(Engine {
            model,
            n_ctx,
            threads: opts.threads.max(1),
            context_creation: Mutex::new(()),
        })
    }

    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    /// Address space one request's context needs, roughly: the f16 KV cache for the whole
    /// window, logits, and a fixed allowance for llama.cpp's compute buffers and threads.
    pub fn request_memory_estimate(&self) -> u64 {
        let n_ctx = self.n_ctx as u64;
        let n_layer = self.model.n_layer() as u64;
        let n_embd = self.model.n_embd().max(0) as u64;
        let kv_fraction = (
            self.model.n_head_kv().max(1) as u64,
            self.model.n_head().max(1) as u64,
        );
        let kv = 2 * n_layer * n_ctx * n_embd * kv_fraction.0 / kv_fraction.1 * 2;
        let logits = n_ctx * self.n_vocab() as u64 * 4;
        kv + logits + (16 << 20)
    }

    pub fn n_vocab(&self) -> u32 {
        self.model.n_vocab().max(0) as u32
    }

    /// Greedy decoding of at most `max_tokens` tokens after `prompt`.
    pub fn generate(&self, prompt: &str, max_tokens: u32) -> Result<Generation, ErrorBody> {
        let started = Instant::now();
        let vocab = self.model.vocab();
        let tokens = vocab.tokenize(prompt.as_bytes(), true, false);
        let specials = u32::from(vocab.should_add_bos());
        if tokens.len() as u32 <= specials {
            return Err(ErrorBody::new(
                ErrorCode::TokenizerError,
                format!("prompt of {} bytes produced no tokens", prompt.len()),
            ));
        }
        let unk = tokens
            .iter()
            .filter(|t| vocab.text(**t).is_some_and(|s| s.to_bytes() == b"<unk>"))
            .count();
        if unk > 0 {
            return Err(ErrorBody::new(
                ErrorCode::TokenizerError,
                format!("the model's vocabulary cannot represent the prompt: {unk} of {} tokens are <unk>", tokens.len()),
            ));
        }
        let n_prompt = tokens.len() as u32;
        if n_prompt > self.n_ctx {
            return Err(ErrorBody::new(
                ErrorCode::ContextOverflow,
                format!(
                    "prompt is {n_prompt} tokens, context window is {} tokens",
                    self.n_ctx
                ),
            ));
        }
        if n_prompt + max_tokens > self.n_ctx {
            return Err(ErrorBody::new(
                ErrorCode::ContextOverflow,
                format!(
                    "prompt of {n_prompt} tokens plus max_tokens {max_tokens} needs {} tokens, context window is {} tokens",
                    n_prompt + max_tokens,
                    self.n_ctx
                ),
            ));
        }
        let inference_failed = |what: &str, e: &dyn std::fmt::Display| {
            ErrorBody::new(ErrorCode::InferenceFailed, format!("{what}: {e}"))
        };
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(self.n_ctx))
            .with_n_batch(self.n_ctx)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let mut ctx = {
            let _guard = self
                .context_creation
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.model
                .new_context(backend()?, params)
                .map_err(|e| inference_failed("cannot create a context", &e))?
        };
        let mut batch = LlamaBatch::new(self.n_ctx as usize, 1);
        let last = tokens.len() - 1;
        for (i, t) in tokens.iter().enumerate() {
            batch
                .add(*t, i as i32, &[0], i == last)
                .map_err(|e| inference_failed("batch", &e))?;
        }
        ctx.decode(&mut batch)
            .map_err(|e| inference_failed("prompt decode failed", &e))?;
        let mut sampler = LlamaSampler::greedy();
        let mut out = Vec::with_capacity(max_tokens as usize);
        let mut finish_reason = "length";
        for pos in (n_prompt as i32..).take(max_tokens as usize) {
            let token = sampler.sample(&ctx, batch.n_tokens() - 1);
            sampler.accept(token);
            if vocab.is_eog(token) {
                finish_reason = "eos";
                break;
            }
            out.push(token);
            batch.clear();
            batch
                .add(token, pos, &[0], true)
                .map_err(|e| inference_failed("batch", &e))?;
            ctx.decode(&mut batch)
                .map_err(|e| inference_failed("decode failed", &e))?;
        }
        let bytes = vocab.detokenize(&out, false, false);
        Ok(Generation {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            prompt_tokens: n_prompt,
            generated_tokens: out.len() as u32,
            finish_reason,
            duration_us: started.elapsed().as_micros() as u64,
        })
    }
}
