//! Continuous batching: one llama.cpp context holds a sequence for each request in flight,
//! and each step decodes the next token of every generating sequence together with the next
//! chunk of the prompts waiting, in one `llama_decode` (as llama-server does). On a
//! memory-bound model a step costs about as much for four sequences as for one, where four
//! contexts decoding apart would each read every weight.

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use veritas_vocab::ipc::Decoding;
use veritas_vocab::{ErrorBody, ErrorCode};

use crate::engine::{
    backend, find_stop, held_back, Budget, Engine, Generation, PieceDecoder, Prepared, Prompt,
};

/// Most tokens one step decodes (llama.cpp's default micro-batch): a prompt of up to this
/// many tokens is one step; a longer one is fed in chunks that share steps with the
/// sequences generating.
const MAX_STEP_TOKENS: u32 = 512;

/// Most sequences one context holds (llama.cpp's `LLAMA_MAX_SEQ`).
pub const MAX_SEQUENCES: u32 = 256;

/// Tokens one step of a batch decodes at most.
pub(crate) fn step_tokens(n_ctx: u32, parallel: u32) -> u32 {
    n_ctx
        .saturating_mul(parallel.max(1))
        .clamp(1, MAX_STEP_TOKENS)
}

/// What a step reports about one request.
#[derive(Debug)]
pub enum Event {
    /// More text of a request admitted with `stream` (whole UTF-8 characters, never a piece
    /// of a stop string).
    Piece(String),
    /// The request ended, with its generation or why it failed; its sequence is free again.
    Done(Result<Generation, ErrorBody>),
}

/// One request in a batch.
struct Sequence {
    id: u64,
    /// Order of admission: prompts are fed first come, first served.
    admitted: u64,
    started: Instant,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens decoded so far.
    fed: usize,
    max_tokens: u32,
    sampler: LlamaSampler,
    stops: Vec<String>,
    stream: bool,
    generated: u32,
    /// The token sampled last, decoded in the next step.
    pending: Option<LlamaToken>,
    /// Where this sequence's logits are in the step just decoded.
    logits: Option<i32>,
    /// The answer's bytes, piece by piece (a detokenized whole would drop a SentencePiece
    /// answer's leading space), and how many of them went out.
    text: Vec<u8>,
    streamed: usize,
    pieces: PieceDecoder,
}

impl Sequence {
    /// Takes the token sampled for this sequence; returns why the request ends, if it does.
    fn accept(
        &mut self,
        token: LlamaToken,
        engine: &Engine,
        on_event: &mut dyn FnMut(u64, Event),
    ) -> Option<&'static str> {
        let vocab = engine.model.vocab();
        if vocab.is_eog(token) {
            return Some("eos");
        }
        self.generated += 1;
        let searched_from = self.text.len();
        self.text.extend(vocab.token_to_piece(token, false, None));
        if let Some(at) = find_stop(&self.text, searched_from, &self.stops) {
            self.text.truncate(at);
            return Some("stop");
        }
        if self.stream {
            // A stop string may be starting at the end: held back until it cannot be.
            let ready = self.text.len() - held_back(&self.text, &self.stops);
            if ready > self.streamed {
                if let Some(piece) = self.pieces.push(&self.text[self.streamed..ready]) {
                    on_event(self.id, Event::Piece(piece));
                }
                self.streamed = ready;
            }
        }
        // The last token's logits would never be read: it is not decoded (for a 1-token
        // request, that would cost as much as the rest of the request).
        (self.generated == self.max_tokens).then_some("length")
    }
}

/// Requests decoded together in one context: admit them while there is room, step until
/// each reports [`Event::Done`].
pub struct Batch<'e> {
    engine: &'e Engine,
    ctx: LlamaContext<'e>,
    batch: LlamaBatch<'static>,
    step_tokens: usize,
    /// Index = llama.cpp sequence id.
    seqs: Vec<Option<Sequence>>,
    admissions: u64,
    /// Requests that ended at admission (nothing to generate), reported by the next step.
    finished: Vec<(u64, Generation)>,
}

impl Engine {
    /// A context for up to `parallel` requests at once, each with a window of `n_ctx`
    /// tokens (clamped to 1..=[`MAX_SEQUENCES`]).
    pub fn batch(&self, parallel: u32) -> Result<Batch<'_>, ErrorBody> {
        let parallel = parallel.clamp(1, MAX_SEQUENCES);
        let cells = self.n_ctx.checked_mul(parallel).ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::ResourceLimitExceeded,
                format!(
                    "{parallel} sequences of {} tokens are more KV cache cells than a context holds",
                    self.n_ctx
                ),
            )
        })?;
        let step = step_tokens(self.n_ctx, parallel);
        // One KV buffer for every sequence: any mix of sequences decodes in one micro-batch
        // (separate buffers split a step into one micro-batch per run of sequence ids).
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(cells))
            .with_n_batch(step)
            .with_n_ubatch(step)
            .with_n_seq_max(parallel)
            .with_kv_unified(true)
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
                    format!(
                        "cannot create a context for {parallel} sequences of {} tokens: {e}",
                        self.n_ctx
                    ),
                )
            })?
        };
        Ok(Batch {
            engine: self,
            ctx,
            batch: LlamaBatch::new(step as usize, 1),
            step_tokens: step as usize,
            seqs: (0..parallel).map(|_| None).collect(),
            admissions: 0,
            finished: Vec::new(),
        })
    }
}

impl Batch<'_> {
    /// Requests in flight.
    pub fn active(&self) -> usize {
        self.seqs.iter().filter(|s| s.is_some()).count() + self.finished.len()
    }

    /// Whether another request can be admitted now.
    pub fn has_room(&self) -> bool {
        self.seqs.iter().any(Option::is_none)
    }

    /// Whether a step has nothing to do.
    pub fn is_idle(&self) -> bool {
        self.active() == 0
    }

    /// Takes a request into a free sequence. A request refused (its prompt, its decoding
    /// options, no free sequence) is refused here and takes nothing; one admitted always ends
    /// with [`Event::Done`] from a later [`Batch::step`].
    pub fn admit(
        &mut self,
        id: u64,
        prompt: Prompt<'_>,
        budget: Budget,
        decoding: &Decoding,
        stream: bool,
    ) -> Result<(), ErrorBody> {
        let started = Instant::now();
        let Some(free) = self.seqs.iter().position(Option::is_none) else {
            return Err(ErrorBody::new(
                ErrorCode::ResourceLimitExceeded,
                format!("all {} sequences of the batch are in use", self.seqs.len()),
            ));
        };
        let Prepared { tokens, max_tokens } = self.engine.prepare(prompt, budget, decoding)?;
        if max_tokens == 0 {
            self.finished.push((
                id,
                Generation {
                    text: String::new(),
                    prompt_tokens: tokens.len() as u32,
                    generated_tokens: 0,
                    finish_reason: "length",
                    duration_us: started.elapsed().as_micros() as u64,
                },
            ));
            return Ok(());
        }
        self.admissions += 1;
        self.seqs[free] = Some(Sequence {
            id,
            admitted: self.admissions,
            started,
            prompt: tokens,
            fed: 0,
            max_tokens,
            sampler: self.engine.sampler(decoding),
            stops: decoding.stop.clone(),
            stream,
            generated: 0,
            pending: None,
            logits: None,
            // Bounded by the context window, never by the client's number alone.
            text: Vec::with_capacity(max_tokens.min(self.engine.n_ctx) as usize),
            streamed: 0,
            pieces: PieceDecoder::default(),
        });
        Ok(())
    }

    /// One decode for every request in flight: the next token of each sequence generating
    /// and as much of the waiting prompts as the step holds. Requests `cancelled` says were
    /// given up on end first (E1002), within one token.
    pub fn step(&mut self, cancelled: &dyn Fn(u64) -> bool, on_event: &mut dyn FnMut(u64, Event)) {
        for (id, g) in self.finished.drain(..) {
            on_event(id, Event::Done(Ok(g)));
        }
        for i in 0..self.seqs.len() {
            let Some(s) = &self.seqs[i] else { continue };
            if cancelled(s.id) {
                let error = ErrorBody::new(
                    ErrorCode::IpcTimeout,
                    format!(
                        "generation cancelled after {} of {} tokens: the request timed out",
                        s.generated, s.max_tokens
                    ),
                );
                self.end(i, Err(error), on_event);
            }
        }
        let in_step = self.compose();
        if in_step.is_empty() {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            // Their cache entries are in an unknown state: every request in the step fails
            // (and its sequence is emptied); the others are untouched.
            for i in in_step {
                let error =
                    ErrorBody::new(ErrorCode::InferenceFailed, format!("decode failed: {e}"));
                self.end(i, Err(error), on_event);
            }
            return;
        }
        for i in 0..self.seqs.len() {
            let Some(s) = self.seqs[i].as_mut() else {
                continue;
            };
            let Some(at) = s.logits.take() else { continue };
            // `sample` also accepts the token into the chain (penalty history).
            let token = s.sampler.sample(&self.ctx, at);
            match s.accept(token, self.engine, on_event) {
                Some(reason) => self.end(i, Ok(reason), on_event),
                None => s.pending = Some(token),
            }
        }
    }

    /// Fills the step's batch; returns the sequences in it. A step holds `step_tokens` tokens,
    /// never fewer than the sequences (see [`step_tokens`]), so every pending token fits; what
    /// does not fit waits for the next step.
    fn compose(&mut self) -> Vec<usize> {
        self.batch.clear();
        let mut in_step = Vec::new();
        for (i, slot) in self.seqs.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            let Some(token) = s.pending else { continue };
            let pos = (s.prompt.len() + s.generated as usize - 1) as i32;
            let at = self.batch.n_tokens();
            if self.batch.add(token, pos, &[i as i32], true).is_ok() {
                s.pending = None;
                s.logits = Some(at);
                in_step.push(i);
            }
        }
        let mut waiting: Vec<usize> = (0..self.seqs.len())
            .filter(|&i| {
                self.seqs[i]
                    .as_ref()
                    .is_some_and(|s| s.fed < s.prompt.len())
            })
            .collect();
        waiting.sort_by_key(|&i| self.seqs[i].as_ref().map(|s| s.admitted));
        for i in waiting {
            let Some(s) = self.seqs[i].as_mut() else {
                continue;
            };
            let start = s.fed;
            let last = s.prompt.len() - 1;
            while s.fed < s.prompt.len()
                && (self.batch.n_tokens() as usize) < self.step_tokens
                && self
                    .batch
                    .add(s.prompt[s.fed], s.fed as i32, &[i as i32], s.fed == last)
                    .is_ok()
            {
                s.fed += 1;
            }
            if s.fed == start {
                break;
            }
            if s.fed == s.prompt.len() {
                s.logits = Some(self.batch.n_tokens() - 1);
            }
            in_step.push(i);
        }
        in_step
    }

    /// Ends the request in sequence `i`: its cache entries are dropped and its sequence freed.
    fn end(
        &mut self,
        i: usize,
        outcome: Result<&'static str, ErrorBody>,
        on_event: &mut dyn FnMut(u64, Event),
    ) {
        let Some(mut s) = self.seqs[i].take() else {
            return;
        };
        // Only fails for ids beyond i32, which a batch never has.
        let _ = self.ctx.clear_kv_cache_seq(Some(i as u32), None, None);
        let result = outcome.map(|finish_reason| {
            if s.stream {
                let rest = s.text.get(s.streamed..).unwrap_or_default().to_vec();
                for piece in s.pieces.push(&rest).into_iter().chain(s.pieces.finish()) {
                    on_event(s.id, Event::Piece(piece));
                }
            }
            Generation {
                text: String::from_utf8_lossy(&s.text).into_owned(),
                prompt_tokens: s.prompt.len() as u32,
                generated_tokens: s.generated,
                finish_reason,
                duration_us: s.started.elapsed().as_micros() as u64,
            }
        });
        on_event(s.id, Event::Done(result));
    }
}
