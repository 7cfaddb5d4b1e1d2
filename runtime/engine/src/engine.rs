use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use veritas_vocab::ipc::{ChatTurn, Decoding};
use veritas_vocab::{ErrorBody, ErrorCode};

use crate::batch::{Batch, Event};

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
pub(crate) fn backend() -> Result<&'static LlamaBackend, ErrorBody> {
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
    /// CPU threads of each decode (one decode serves every request in flight).
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

/// A loaded model. Requests run in a [`Batch`]: one context holding a sequence per request.
pub struct Engine {
    pub(crate) model: LlamaModel,
    /// For a SentencePiece/Unigram vocabulary without all 256 byte tokens: the token texts
    /// a character may map to. llama.cpp throws (and the exception aborts the process) on a
    /// character that is neither a token nor covered by byte tokens; such prompts are
    /// refused before they reach it.
    narrow_vocab: Option<std::collections::HashSet<Vec<u8>>>,
    /// Longest token text in bytes: no token covers more of a prompt, so a prompt longer
    /// than `n_ctx` times this cannot fit and is refused before it is tokenized (llama.cpp
    /// takes minutes over a megabyte-long prompt, out of reach of cancellation).
    max_token_bytes: usize,
    pub(crate) n_ctx: u32,
    pub(crate) threads: i32,
    /// The GGUF's `tokenizer.chat_template`, or ChatML when it has none (said at load).
    chat_template: LlamaChatTemplate,
    chat_template_is_the_models: bool,
    // Creating contexts concurrently is unsound in llama.cpp (it may write model fields).
    pub(crate) context_creation: Mutex<()>,
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

    /// Address space a batch of `parallel` sequences needs, roughly: the f16 KV cache for
    /// each sequence's whole window, the logits of one step, and a fixed allowance for
    /// llama.cpp's compute buffers and threads.
    pub fn batch_memory_estimate(&self, parallel: u32) -> u64 {
        // llama.cpp pads the cache to a multiple of 256 cells.
        let cells = (u64::from(self.n_ctx) * u64::from(parallel.max(1))).next_multiple_of(256);
        let n_layer = self.model.n_layer() as u64;
        let n_embd = self.model.n_embd().max(0) as u64;
        let kv_fraction = (
            self.model.n_head_kv().max(1) as u64,
            self.model.n_head().max(1) as u64,
        );
        let kv = 2 * n_layer * cells * n_embd * kv_fraction.0 / kv_fraction.1 * 2;
        let step = u64::from(crate::batch::step_tokens(self.n_ctx, parallel));
        let logits = step * u64::from(self.n_vocab()) * 4;
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
    pub(crate) fn sampler(&self, d: &Decoding) -> LlamaSampler {
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

    /// Greedy decoding of at most `max_tokens` tokens after `prompt`, in a context created
    /// for the one call (the worker keeps one [`Batch`] for all its requests instead).
    pub fn generate(&self, prompt: &str, max_tokens: u32) -> Result<Generation, ErrorBody> {
        self.slot()?.generate(
            Prompt::Text(prompt),
            Budget::AtMost(max_tokens),
            &Decoding::default(),
            &|| false,
            None,
        )
    }

    /// A batch of one: requests served one after another in a context of `n_ctx` tokens,
    /// created once (its KV cache and compute buffers allocated once).
    pub fn slot(&self) -> Result<Slot<'_>, ErrorBody> {
        Ok(Slot {
            batch: self.batch(1)?,
        })
    }

    /// Checks a request and tokenizes its prompt: everything that can be refused is refused
    /// here, before it takes a sequence of a batch.
    pub(crate) fn prepare(
        &self,
        prompt: Prompt<'_>,
        budget: Budget,
        decoding: &Decoding,
    ) -> Result<Prepared, ErrorBody> {
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
        Ok(Prepared { tokens, max_tokens })
    }
}

/// A request refused nothing: its prompt's tokens and how many tokens it may generate.
pub(crate) struct Prepared {
    pub(crate) tokens: Vec<LlamaToken>,
    pub(crate) max_tokens: u32,
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

/// A batch of one sequence: requests run one after another to completion (tests, the
/// in-process benchmark peer).
pub struct Slot<'a> {
    batch: Batch<'a>,
}

impl Slot<'_> {
    /// One request, run to its end. With `on_piece`, each generated piece of text is handed
    /// over as it is decoded (whole UTF-8 characters only, and never a piece of a stop string:
    /// text that may be the start of one is held back until it cannot be).
    pub fn generate(
        &mut self,
        prompt: Prompt<'_>,
        budget: Budget,
        decoding: &Decoding,
        cancelled: &dyn Fn() -> bool,
        mut on_piece: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Generation, ErrorBody> {
        const ID: u64 = 0;
        self.batch
            .admit(ID, prompt, budget, decoding, on_piece.is_some())?;
        loop {
            let mut done = None;
            self.batch
                .step(&|_| cancelled(), &mut |_, event| match event {
                    Event::Piece(text) => {
                        if let Some(f) = on_piece.as_mut() {
                            f(&text)
                        }
                    }
                    Event::Done(result) => done = Some(result),
                });
            if let Some(result) = done {
                return result;
            }
        }
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
