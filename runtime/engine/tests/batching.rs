//! Continuous batching: requests decoded together in one context each get the answer they
//! get alone, whenever they join, however long their prompts, and whichever of them is
//! cancelled.

use std::collections::HashMap;

use veritas_engine::{Batch, Budget, Engine, EngineOptions, Event, Generation, Prompt};
use veritas_fixtures::TinyModelSpec;
use veritas_vocab::ipc::Decoding;
use veritas_vocab::ErrorCode;

fn engine(n_ctx: u32) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    veritas_fixtures::write_gguf(&path, &TinyModelSpec::default().with_seed(3)).unwrap();
    let engine = Engine::load(&path, EngineOptions { n_ctx, threads: 1 }).unwrap();
    (dir, engine)
}

/// What one request gets alone.
fn alone(engine: &Engine, prompt: &str, n: u32) -> Generation {
    engine
        .slot()
        .unwrap()
        .generate(
            Prompt::Text(prompt),
            Budget::AtMost(n),
            &Decoding::default(),
            &|| false,
            None,
        )
        .unwrap()
}

/// Steps `batch` until every request admitted has ended; the outcomes and streamed text by id.
type Outcomes = HashMap<u64, (Result<Generation, veritas_vocab::ErrorBody>, String)>;

fn run_to_end(batch: &mut Batch<'_>, cancelled: &dyn Fn(u64, u32) -> bool) -> Outcomes {
    let mut out: Outcomes = HashMap::new();
    let mut pieces: HashMap<u64, String> = HashMap::new();
    let mut steps = 0u32;
    while !batch.is_idle() {
        steps += 1;
        assert!(steps < 10_000, "the batch never drains");
        batch.step(&|id| cancelled(id, steps), &mut |id, event| match event {
            Event::Piece(p) => pieces.entry(id).or_default().push_str(&p),
            Event::Done(r) => {
                let streamed = pieces.remove(&id).unwrap_or_default();
                assert!(out.insert(id, (r, streamed)).is_none(), "{id} ended twice");
            }
        });
    }
    out
}

fn text(o: &Outcomes, id: u64) -> &Generation {
    o[&id].0.as_ref().unwrap_or_else(|e| panic!("{id}: {e}"))
}

const PROMPTS: [&str; 4] = [
    "Hello",
    "The quick brown fox",
    "a",
    "Once upon a time, far away",
];

#[test]
fn requests_decoded_together_get_what_they_get_alone() {
    let (_dir, engine) = engine(0);
    let solo: Vec<Generation> = PROMPTS.iter().map(|p| alone(&engine, p, 24)).collect();
    // Four different answers: a request given another's answer would be caught.
    let distinct: std::collections::HashSet<&str> = solo.iter().map(|g| g.text.as_str()).collect();
    assert_eq!(distinct.len(), PROMPTS.len(), "{solo:?}");
    let mut batch = engine.batch(4).unwrap();
    for (id, p) in PROMPTS.iter().enumerate() {
        batch
            .admit(
                id as u64,
                Prompt::Text(p),
                Budget::AtMost(24),
                &Decoding::default(),
                id % 2 == 0,
            )
            .unwrap();
    }
    assert!(!batch.has_room());
    let out = run_to_end(&mut batch, &|_, _| false);
    for (id, s) in solo.iter().enumerate() {
        let g = text(&out, id as u64);
        assert_eq!(
            (&g.text, g.generated_tokens, g.finish_reason),
            (&s.text, s.generated_tokens, s.finish_reason),
            "request {id}"
        );
        assert_eq!(g.prompt_tokens, s.prompt_tokens);
        if id % 2 == 0 {
            assert_eq!(out[&(id as u64)].1, s.text, "streamed text of {id}");
        } else {
            assert!(out[&(id as u64)].1.is_empty(), "{id} was not streamed");
        }
    }
    // Every sequence is free again, and a second round gets the same answers.
    assert!(batch.has_room());
    for (id, p) in PROMPTS.iter().enumerate() {
        batch
            .admit(
                10 + id as u64,
                Prompt::Text(p),
                Budget::AtMost(24),
                &Decoding::default(),
                false,
            )
            .unwrap();
    }
    let again = run_to_end(&mut batch, &|_, _| false);
    for (id, s) in solo.iter().enumerate() {
        assert_eq!(
            text(&again, 10 + id as u64).text,
            s.text,
            "second round {id}"
        );
    }
}

#[test]
fn a_request_joins_and_leaves_while_others_generate() {
    let (_dir, engine) = engine(0);
    let long = alone(&engine, PROMPTS[1], 40);
    assert_eq!(long.generated_tokens, 40, "{long:?}");
    let short = alone(&engine, PROMPTS[3], 3);
    let mut batch = engine.batch(2).unwrap();
    let d = Decoding::default();
    batch
        .admit(1, Prompt::Text(PROMPTS[1]), Budget::AtMost(40), &d, false)
        .unwrap();
    let mut out: Outcomes = HashMap::new();
    fn record(out: &mut Outcomes) -> impl FnMut(u64, Event) + '_ {
        |id, event| {
            if let Event::Done(r) = event {
                out.insert(id, (r, String::new()));
            }
        }
    }
    for _ in 0..5 {
        batch.step(&|_| false, &mut record(&mut out));
    }
    // The second request comes while the first is 4 tokens in, and ends long before it.
    batch
        .admit(2, Prompt::Text(PROMPTS[3]), Budget::AtMost(3), &d, false)
        .unwrap();
    let e = batch
        .admit(3, Prompt::Text("no room"), Budget::AtMost(3), &d, false)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ResourceLimitExceeded, "{e}");
    while !batch.is_idle() {
        batch.step(&|_| false, &mut record(&mut out));
        if out.contains_key(&2) {
            break;
        }
    }
    assert!(
        !out.contains_key(&1),
        "the short request ends first, the long one keeps going"
    );
    while !batch.is_idle() {
        batch.step(&|_| false, &mut record(&mut out));
    }
    assert_eq!(text(&out, 1).text, long.text);
    assert_eq!(text(&out, 2).text, short.text);
}

#[test]
fn a_prompt_longer_than_a_step_is_fed_in_chunks_beside_a_generating_request() {
    // 2048-token windows: a step holds 512 tokens, so this prompt takes three steps.
    let (_dir, engine) = engine(2048);
    let prompt = "lorem ipsum dolor sit amet ".repeat(45); // ~1200 tokens, one per byte
    let solo_long = alone(&engine, &prompt, 8);
    assert!(solo_long.prompt_tokens > 1024, "{solo_long:?}");
    let solo_short = alone(&engine, PROMPTS[0], 30);
    let mut batch = engine.batch(2).unwrap();
    let d = Decoding::default();
    batch
        .admit(1, Prompt::Text(PROMPTS[0]), Budget::AtMost(30), &d, true)
        .unwrap();
    batch
        .admit(2, Prompt::Text(&prompt), Budget::AtMost(8), &d, false)
        .unwrap();
    // The short request gets a token every step, also while the long prompt is fed (steps 1
    // to 3): it ends at the step of its last token. (Pieces are not counted: a token that is
    // part of a UTF-8 character streams nothing.)
    let mut done_at: HashMap<u64, u32> = HashMap::new();
    let mut out: Outcomes = HashMap::new();
    let mut step = 0;
    while !batch.is_idle() {
        step += 1;
        batch.step(&|_| false, &mut |id, event| {
            if let Event::Done(r) = event {
                done_at.insert(id, step);
                out.insert(id, (r, String::new()));
            }
        });
    }
    assert_eq!(done_at[&1], solo_short.generated_tokens, "{done_at:?}");
    // The long prompt fills what each 512-token step leaves (the short prompt, then the short
    // request's one token a step); the step that ends it samples its first token, then one
    // a step.
    let after_first = solo_long.prompt_tokens - (512 - solo_short.prompt_tokens);
    let prompt_steps = 1 + after_first.div_ceil(511);
    assert!(prompt_steps >= 3, "{solo_long:?}");
    assert_eq!(
        done_at[&2],
        prompt_steps + solo_long.generated_tokens - 1,
        "{done_at:?}"
    );
    assert_eq!(text(&out, 1).text, solo_short.text);
    assert_eq!(text(&out, 2).text, solo_long.text);
    assert_eq!(text(&out, 2).prompt_tokens, solo_long.prompt_tokens);
}

#[test]
fn a_cancelled_request_ends_within_a_token_and_the_others_go_on() {
    let (_dir, engine) = engine(0);
    let solo = alone(&engine, PROMPTS[2], 32);
    assert_eq!(alone(&engine, PROMPTS[1], 32).generated_tokens, 32);
    let mut batch = engine.batch(3).unwrap();
    let d = Decoding::default();
    for (id, p) in [(1, PROMPTS[1]), (2, PROMPTS[2]), (3, PROMPTS[3])] {
        batch
            .admit(id, Prompt::Text(p), Budget::AtMost(32), &d, false)
            .unwrap();
    }
    // 1 is given up on at the fourth step, 3 before its first.
    let out = run_to_end(&mut batch, &|id, step| (id == 1 && step >= 4) || id == 3);
    let e = out[&1].0.as_ref().unwrap_err();
    assert_eq!(e.code, ErrorCode::IpcTimeout, "{e}");
    assert!(e.detail.contains("cancelled after 3 of 32 tokens"), "{e}");
    let e = out[&3].0.as_ref().unwrap_err();
    assert!(e.detail.contains("cancelled after 0 of 32"), "{e}");
    assert_eq!(text(&out, 2).text, solo.text);
}

#[test]
fn a_refused_request_takes_no_sequence() {
    let (_dir, engine) = engine(64);
    let mut batch = engine.batch(1).unwrap();
    let d = Decoding::default();
    let e = batch
        .admit(
            1,
            Prompt::Text(&"x".repeat(80)),
            Budget::AtMost(4),
            &d,
            false,
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ContextOverflow, "{e}");
    assert!(batch.has_room() && batch.is_idle());
    // Nothing to generate: answered by the next step without a decode.
    batch
        .admit(2, Prompt::Text("hi"), Budget::AtMost(0), &d, false)
        .unwrap();
    let out = run_to_end(&mut batch, &|_, _| false);
    let g = text(&out, 2);
    assert_eq!((g.generated_tokens, g.finish_reason), (0, "length"));
}
