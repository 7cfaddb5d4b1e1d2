use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use veritas_vocab::ipc::{ChatTurn, Decoding};
use veritas_vocab::{ErrorBody, ErrorCode};

/// The token texts of a SentencePiece or Unigram vocabulary that lacks some of the 256
/// byte tokens, or `None` when every byte can fall back (or the tokenizer is byte-level).
fn narrow_vocabulary(model: &LlamaModel) -> Option<std::collections::HashSet<Vec<u8>>> {
    use llama_cpp_2::model::VocabType;
    let vocab = model.vocab();
    if !matches!(vocab.vocab_type(), VocabType::SPM | VocabType::UGM) {
        return None;
    }
    let texts: std::collections::HashSet<Vec<u8>> = vocab
        .tokens()
        .filter_map(|t| vocab.text(t).map(|s| s.to_bytes().to_vec()))
        .collect();
    let full = (0..=255u8).all(|b| texts.contains(format!("<0x{b:02X}>").as_bytes()));
    (!full).then_some(texts)
}

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

/// Context window served when none is configured: the training context, capped here. A
/// 128k-token model would otherwise get a KV cache of tens of GiB per context.
pub const DEFAULT_MAX_CTX: u32 = 4096;

/// The context window for a model trained on `n_ctx_train` tokens when none is configured.
pub fn default_n_ctx(n_ctx_train: u32) -> u32 {
    match n_ctx_train {
        0 => DEFAULT_MAX_CTX,
        n => n.min(DEFAULT_MAX_CTX),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Context window served; `0` takes the model's training context capped at
    /// [`DEFAULT_MAX_CTX`].
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
    /// For a SentencePiece/Unigram vocabulary without all 256 byte tokens: the token texts
    /// a character may map to. llama.cpp throws (and the exception aborts the process) on a
    /// character that is neither a token nor covered by byte tokens; such prompts are
    /// refused before they reach it.
    narrow_vocab: Option<std::collections::HashSet<Vec<u8>>>,
    /// Longest token text in bytes: no token covers more of a prompt, so a prompt longer
    /// than `n_ctx` times this cannot fit and is refused before it is tokenized (llama.cpp
    /// takes minutes over a megabyte-long prompt, out of reach of cancellation).
    max_token_bytes: usize,
    n_ctx: u32,
    threads: i32,
    /// The GGUF's `tokenizer.chat_template`, or ChatML when it has none (said at load).
    chat_template: LlamaChatTemplate,
    chat_template_is_the_models: bool,
    // Creating contexts concurrently is unsound in llama.cpp (it may write model fields).
    context_creation: Mutex<()>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    /// `length`, `eos` or `stop`.
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
            default_n_ctx(model.n_ctx_train())
        } else {
            opts.n_ctx
        };
        let narrow_vocab = narrow_vocabulary(&model);
        let max_token_bytes = {
            let vocab = model.vocab();
            vocab
                .tokens()
                .filter_map(|t| vocab.text(t).map(|s| s.to_bytes().len()))
                .max()
                .unwrap_or(1)
                .max(1)
        };
        if narrow_vocab.is_some() {
            tracing::warn!(
                model = %path.display(),
                "the vocabulary has no byte tokens: prompts with characters outside it are refused with E4002"
            );
        }
        let chatml = || LlamaChatTemplate::new("chatml").expect("no NUL in a literal");
        // llama.cpp renders the templates it recognises; one it does not would fail every
        // chat request, so it is tried once here and ChatML used instead (and said).
        let probe = LlamaChatMessage::new("user".into(), "hi".into()).expect("no NUL");
        let (chat_template, chat_template_is_the_models) = match model.chat_template(None) {
            Ok(t) if model.apply_chat_template(&t, &[probe], true).is_ok() => (t, true),
            Ok(_) => {
                tracing::warn!(
                    model = %path.display(),
                    "llama.cpp does not recognise the model's chat template: chat requests are rendered as ChatML"
                );
                (chatml(), false)
            }
            Err(_) => {
                tracing::info!(
                    model = %path.display(),
                    "the model has no chat template (tokenizer.chat_template): chat requests are rendered as ChatML"
                );
                (chatml(), false)
            }
        };
        Ok(Engine {
            model,
            narrow_vocab,
            max_token_bytes,
            n_ctx,
            threads: opts.threads.max(1),
            chat_template,
            chat_template_is_the_models,
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

    /// Whether the vocabulary lacks byte fallback (some characters cannot be tokenized).
    pub fn has_narrow_vocabulary(&self) -> bool {
        self.narrow_vocab.is_some()
    }

    /// E4002 naming the first character the vocabulary cannot represent, checked the way
    /// llama.cpp's SPM tokenizer falls back: the character's own token, else one token per
    /// byte (`<0xNN>` or the byte itself).
    fn check_representable(&self, prompt: &str) -> Result<(), ErrorBody> {
        let Some(known) = &self.narrow_vocab else {
            return Ok(());
        };
        let byte_ok =
            |b: u8| known.contains(format!("<0x{b:02X}>").as_bytes()) || known.contains(&[b][..]);
        // The tokenizer puts a space (U+2581) before the text itself: the vocabulary must
        // hold it whatever the prompt.
        let prefix = '\u{2581}';
        let mut buf = [0u8; 4];
        let bytes = prefix.encode_utf8(&mut buf).as_bytes();
        if !(known.contains(bytes) || bytes.iter().all(|&b| byte_ok(b))) {
            return Err(ErrorBody::new(
                ErrorCode::TokenizerError,
                "the model's vocabulary cannot represent the space (U+2581) its tokenizer puts before every prompt: it has no token for it and no byte tokens to fall back on",
            ));
        }
        for (offset, c) in prompt.char_indices() {
            // The tokenizer sees spaces as U+2581.
            let c = if c == ' ' { '\u{2581}' } else { c };
            let mut buf = [0u8; 4];
            let bytes = c.encode_utf8(&mut buf).as_bytes();
            if known.contains(bytes) || bytes.iter().all(|&b| byte_ok(b)) {
                continue;
            }
            return Err(ErrorBody::new(
                ErrorCode::TokenizerError,
                format!(
                    "the model's vocabulary cannot represent the character {c:?} (U+{:04X}) at byte {offset} of the prompt: it has no token for it and no byte tokens to fall back on",
                    c as u32
                ),
            ));
        }
        Ok(())
    }

    pub fn n_vocab(&self) -> u32 {
        self.model.n_vocab().max(0) as u32
    }

    /// Whether chat requests use the model's own template (false: ChatML, the model has none).
    pub fn has_chat_template(&self) -> bool {
        self.chat_template_is_the_models
    }

    /// A conversation as the prompt the model was trained on, through llama.cpp's template
    /// code, ending where the assistant's answer begins.
    pub fn render_chat(&self, turns: &[ChatTurn]) -> Result<String, ErrorBody> {
        let invalid = |e: &dyn std::fmt::Display| {
            ErrorBody::new(
                ErrorCode::TokenizerError,
                format!("cannot render the conversation: {e}"),
            )
        };
        let messages = turns
            .iter()
            .map(|t| LlamaChatMessage::new(t.role.clone(), t.content.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&e))?;
        self.model
            .apply_chat_template(&self.chat_template, &messages, true)
            .map_err(|e| invalid(&e))
    }

    /// Tokens of `text` as a prompt (with the beginning-of-sequence token); `special`
    /// parses control-token texts such as `<|im_start|>` as those tokens.
    pub fn count_tokens(&self, text: &str, special: bool) -> usize {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), true, special)
            .len()
    }

    /// The sampler chain a request asks for: biases and penalties first, then greedy, or
    /// the truncations (top-k, top-p, min-p), temperature and a seeded draw.
    fn sampler(&self, d: &Decoding) -> LlamaSampler {
        let n_vocab = self.model.n_vocab();
        let mut chain = Vec::new();
        if !d.logit_bias.is_empty() {
            let biases: Vec<LlamaLogitBias> = d
                .logit_bias
                .iter()
                .map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t as i32), b))
                .collect();
            chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
        }
        if d.repeat_penalty.is_some()
            || d.frequency_penalty.is_some()
            || d.presence_penalty.is_some()
        {
            chain.push(LlamaSampler::penalties(
                n_vocab,
                PENALTY_LAST_N,
                d.repeat_penalty.unwrap_or(1.0),
                d.frequency_penalty.unwrap_or(0.0),
                d.presence_penalty.unwrap_or(0.0),
            ));
        }
        if !d.samples() {
            chain.push(LlamaSampler::greedy());
            return LlamaSampler::chain_simple(chain);
        }
        if let Some(k) = d.top_k.filter(|k| *k > 0) {
            chain.push(LlamaSampler::top_k(k));
        }
        if let Some(p) = d.top_p.filter(|p| *p < 1.0) {
            chain.push(LlamaSampler::top_p(p, 1));
        }
        if let Some(p) = d.min_p.filter(|p| *p > 0.0) {
            chain.push(LlamaSampler::min_p(p, 1));
        }
        chain.push(LlamaSampler::temp(d.temperature.unwrap_or(1.0)));
        chain.push(LlamaSampler::dist(d.seed.unwrap_or_else(random_seed)));
        LlamaSampler::chain_simple(chain)
    }

    /// Greedy decoding of at most `max_tokens` tokens after `prompt`.
    pub fn generate(&self, prompt: &str, max_tokens: u32) -> Result<Generation, ErrorBody> {
        self.generate_until(prompt, max_tokens, &|| false)
    }

    /// Like [`Engine::generate`], checking `cancelled` before each decode step: a request
    /// its caller gave up on stops within one token (E1002) instead of running to the end.
    ///
    /// This creates a context for the one call; the worker keeps one [`Slot`] per parallel
    /// request instead.
    pub fn generate_until(
        &self,
        prompt: &str,
        max_tokens: u32,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Generation, ErrorBody> {
        self.slot()?
            .generate_until(prompt, Budget::AtMost(max_tokens), cancelled)
    }

    /// A context of `n_ctx` tokens to serve requests one after another: created once (its
    /// KV cache and compute buffers allocated once), cleared between requests.
    pub fn slot(&self) -> Result<Slot<'_>, ErrorBody> {
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(self.n_ctx))
            .with_n_batch(self.n_ctx)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let ctx = {
            let _guard = self
                .context_creation
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.model.new_context(backend()?, params).map_err(|e| {
                ErrorBody::new(
                    ErrorCode::InferenceFailed,
                    format!("cannot create a context of {} tokens: {e}", self.n_ctx),
                )
            })?
        };
        Ok(Slot { engine: self, ctx })
    }

    fn run(
        &self,
        ctx: &mut LlamaContext<'_>,
        prompt: Prompt<'_>,
        budget: Budget,
        decoding: &Decoding,
        cancelled: &dyn Fn() -> bool,
        mut on_piece: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Generation, ErrorBody> {
        let started = Instant::now();
        if let Some((field, why)) = decoding.invalid_field() {
            return Err(ErrorBody::new(
                ErrorCode::InferenceFailed,
                format!("invalid `{field}`: {why}"),
            ));
        }
        if let Some((token, _)) = decoding
            .logit_bias
            .iter()
            .find(|(t, _)| *t >= self.n_vocab())
        {
            return Err(ErrorBody::new(
                ErrorCode::TokenizerError,
                format!(
                    "logit_bias names token {token}, the model's vocabulary has {} tokens",
                    self.n_vocab()
                ),
            ));
        }
        // A templated prompt holds the template's control tokens (`<|im_start|>`...) as
        // text: parsed as those tokens. The users' own text is checked on its own, and a
        // completion prompt never has its text read as control tokens.
        let (rendered, special) = match prompt {
            Prompt::Text(text) => (std::borrow::Cow::Borrowed(text), false),
            Prompt::Chat(turns) => {
                // The whole rendered text, roles and the template's markers included: any
                // character the vocabulary cannot hold would make llama.cpp throw.
                let rendered = self.render_chat(turns)?;
                self.check_representable(&rendered)?;
                (std::borrow::Cow::Owned(rendered), true)
            }
        };
        let prompt: &str = &rendered;
        // The tokenizer sees each space as U+2581 (three bytes).
        let escaped = prompt.len() + 2 * prompt.bytes().filter(|&b| b == b' ').count() + 3;
        let most = (self.n_ctx as usize).saturating_mul(self.max_token_bytes);
        if escaped > most {
            return Err(ErrorBody::new(
                ErrorCode::ContextOverflow,
                format!(
                    "prompt of {} bytes cannot fit the context window of {} tokens (no token of this model covers more than {} bytes)",
                    prompt.len(),
                    self.n_ctx,
                    self.max_token_bytes
                ),
            ));
        }
        if !special {
            self.check_representable(prompt)?;
        }
        let vocab = self.model.vocab();
        let tokens = vocab.tokenize(prompt.as_bytes(), true, special);
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
        let max_tokens = match budget {
            Budget::AtMost(n) => n,
            Budget::Fit(n) => {
                let room = self.n_ctx - n_prompt;
                if room == 0 {
                    return Err(ErrorBody::new(
                        ErrorCode::ContextOverflow,
                        format!(
                            "prompt is {n_prompt} tokens and fills the context window of {} tokens, leaving no room for an answer; shorten the prompt",
                            self.n_ctx
                        ),
                    ));
                }
                n.min(room)
            }
        };
        // u64: a client's max_tokens may be anything up to u32::MAX.
        let needed = u64::from(n_prompt) + u64::from(max_tokens);
        if needed > u64::from(self.n_ctx) {
            return Err(ErrorBody::new(
                ErrorCode::ContextOverflow,
                format!(
                    "prompt of {n_prompt} tokens plus max_tokens {max_tokens} needs {needed} tokens, context window is {} tokens",
                    self.n_ctx
                ),
            ));
        }
        let inference_failed = |what: &str, e: &dyn std::fmt::Display| {
            ErrorBody::new(ErrorCode::InferenceFailed, format!("{what}: {e}"))
        };
        // Room for the prompt: llama.cpp allocates every entry (one allocation each for
        // their sequence ids), and generated tokens go in one at a time.
        let mut batch = LlamaBatch::new(tokens.len(), 1);
        let last = tokens.len() - 1;
        for (i, t) in tokens.iter().enumerate() {
            batch
                .add(*t, i as i32, &[0], i == last)
                .map_err(|e| inference_failed("batch", &e))?;
        }
        ctx.decode(&mut batch)
            .map_err(|e| inference_failed("prompt decode failed", &e))?;
        let mut sampler = self.sampler(decoding);
        // Bounded by the context window checked above, never by the client's number alone.
        let mut out = Vec::with_capacity(max_tokens.min(self.n_ctx) as usize);
        let mut finish_reason = "length";
        let mut pieces = PieceDecoder::default();
        // The answer's bytes, piece by piece (as streamed: a detokenized whole would drop
        // a SentencePiece answer's leading space), and how many of them went out.
        let mut text: Vec<u8> = Vec::new();
        let mut streamed = 0;
        for pos in (n_prompt as i32..).take(max_tokens as usize) {
            if cancelled() {
                return Err(ErrorBody::new(
                    ErrorCode::IpcTimeout,
                    format!(
                        "generation cancelled after {} of {max_tokens} tokens: the request timed out",
                        out.len()
                    ),
                ));
            }
            // `sample` also accepts the token into the chain (penalty history): no second
            // accept, which would count every token twice.
            let token = sampler.sample(ctx, batch.n_tokens() - 1);
            if vocab.is_eog(token) {
                finish_reason = "eos";
                break;
            }
            out.push(token);
            let searched_from = text.len();
            text.extend(vocab.token_to_piece(token, false, None));
            if let Some(at) = find_stop(&text, searched_from, &decoding.stop) {
                text.truncate(at);
                finish_reason = "stop";
                break;
            }
            if let Some(f) = on_piece.as_mut() {
                // A stop string may be starting at the end: held back until it cannot be.
                let ready = text.len() - held_back(&text, &decoding.stop);
                if ready > streamed {
                    if let Some(piece) = pieces.push(&text[streamed..ready]) {
                        f(&piece);
                    }
                    streamed = ready;
                }
            }
            // The last token's logits would never be read: decoding it would cost a whole
            // forward pass (for a 1-token request, as much as the rest of the request).
            if out.len() == max_tokens as usize {
                break;
            }
            batch.clear();
            batch
                .add(token, pos, &[0], true)
                .map_err(|e| inference_failed("batch", &e))?;
            ctx.decode(&mut batch)
                .map_err(|e| inference_failed("decode failed", &e))?;
        }
        if let Some(f) = on_piece.as_mut() {
            let rest = pieces
                .push(&text[streamed.min(text.len())..])
                .into_iter()
                .chain(pieces.finish());
            for piece in rest {
                f(&piece);
            }
        }
        Ok(Generation {
            text: String::from_utf8_lossy(&text).into_owned(),
            prompt_tokens: n_prompt,
            generated_tokens: out.len() as u32,
            finish_reason,
            duration_us: started.elapsed().as_micros() as u64,
        })
    }
}

/// How many tokens a request may generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// At most this many: a prompt plus this above the context window is E4003.
    AtMost(u32),
    /// At most this many and at most what the context window leaves after the prompt's real
    /// token count (a default length: the caller cannot know how the prompt tokenizes).
    Fit(u32),
}

/// One reusable context: what a worker thread holds for the requests it serves.
pub struct Slot<'a> {
    engine: &'a Engine,
    ctx: LlamaContext<'a>,
}

impl Slot<'_> {
    /// Greedy decoding of a text prompt in this slot's context.
    pub fn generate_until(
        &mut self,
        prompt: &str,
        budget: Budget,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Generation, ErrorBody> {
        self.generate(
            Prompt::Text(prompt),
            budget,
            &Decoding::default(),
            cancelled,
            None,
        )
    }

    /// One request in this slot's context, emptied of the previous request first. With
    /// `on_piece`, each generated piece of text is handed over as it is decoded (whole UTF-8
    /// characters only, and never a piece of a stop string: text that may be the start of
    /// one is held back until it cannot be).
    pub fn generate(
        &mut self,
        prompt: Prompt<'_>,
        budget: Budget,
        decoding: &Decoding,
        cancelled: &dyn Fn() -> bool,
        on_piece: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Generation, ErrorBody> {
        self.ctx.clear_kv_cache();
        self.engine
            .run(&mut self.ctx, prompt, budget, decoding, cancelled, on_piece)
    }
}

/// What a request asks the model to continue.
#[derive(Debug, Clone, Copy)]
pub enum Prompt<'a> {
    /// A completion prompt, tokenized as plain text.
    Text(&'a str),
    /// A conversation, rendered with the model's chat template.
    Chat(&'a [ChatTurn]),
}

/// Tokens the repetition penalties look back over (llama.cpp's default).
const PENALTY_LAST_N: i32 = 64;

/// A seed for a request that names none: different for each request.
fn random_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

/// Where the first stop string begins in `text`, looking only at matches that end after
/// `new_from` (the bytes before it were searched when they came).
pub fn find_stop(text: &[u8], new_from: usize, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter_map(|stop| {
            let stop = stop.as_bytes();
            let from = new_from.saturating_sub(stop.len().saturating_sub(1));
            text.get(from..)?
                .windows(stop.len().max(1))
                .position(|w| w == stop)
                .map(|i| from + i)
        })
        .min()
}

/// How many bytes at the end of `text` are the beginning of a stop string (held back from a
/// stream: the next token may complete the stop string, which is never sent).
pub fn held_back(text: &[u8], stops: &[String]) -> usize {
    stops
        .iter()
        .map(|stop| {
            let stop = stop.as_bytes();
            (1..stop.len().min(text.len() + 1))
                .rev()
                .find(|&k| text.ends_with(&stop[..k]))
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// Turns token bytes into text as they come: byte-level vocabularies split multi-byte
/// characters across tokens, and a client must never see half a character.
#[derive(Debug, Default)]
pub struct PieceDecoder {
    pending: Vec<u8>,
}

impl PieceDecoder {
    /// Adds a token's bytes; returns the text that is now complete, if any. Only an
    /// incomplete character at the very end is held back; an invalid sequence can never
    /// become valid, so it is handed over at once as U+FFFD (as `from_utf8_lossy` renders
    /// the whole answer) together with the valid text after it.
    pub fn push(&mut self, bytes: &[u8]) -> Option<String> {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        let mut rest = &self.pending[..];
        let held = loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    text.push_str(s);
                    break 0;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // Valid by construction: `valid_up_to` says so.
                    text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        // An incomplete character at the end: wait for its next bytes.
                        None => break after.len(),
                    }
                }
            }
        };
        let keep = self.pending.len() - held;
        self.pending.drain(..keep);
        (!text.is_empty()).then_some(text)
    }

    /// What is left at the end (an incomplete character, replaced).
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::PieceDecoder;

    #[test]
    fn pieces_never_split_a_character() {
        let mut d = PieceDecoder::default();
        let euro = "€".as_bytes(); // three bytes
        assert_eq!(d.push(b"a"), Some("a".to_string()));
        assert_eq!(d.push(&euro[..1]), None);
        assert_eq!(d.push(&euro[1..2]), None);
        assert_eq!(d.push(&euro[2..]), Some("€".to_string()));
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn invalid_bytes_are_replaced_not_held() {
        let mut d = PieceDecoder::default();
        assert_eq!(d.push(&[0xff, b'x']), Some("\u{fffd}x".to_string()));
        assert_eq!(
            d.push(&[b'a', 0xc3, 0x28, b'b']),
            Some("a\u{fffd}(b".to_string())
        );
        assert_eq!(d.push(&[0xe2, 0x82]), None);
        assert_eq!(d.finish(), Some("\u{fffd}".to_string()));
    }

    #[test]
    fn streamed_pieces_render_as_the_whole_answer_does() {
        // However the bytes are split into tokens, the pieces concatenate to the lossy
        // rendering of all the bytes (what the non-streamed answer carries).
        let bytes: &[u8] = &[
            b'h', 0xe2, 0x82, 0xac, 0xff, 0xe2, 0x82, b'x', 0xf0, 0x9f, 0x98, 0x80, 0xf0,
        ];
        let whole = String::from_utf8_lossy(bytes).into_owned();
        for size in 1..=bytes.len() {
            let mut d = PieceDecoder::default();
            let mut text = String::new();
            for chunk in bytes.chunks(size) {
                text.extend(d.push(chunk));
            }
            text.extend(d.finish());
            assert_eq!(text, whole, "chunks of {size}");
        }
    }
}
