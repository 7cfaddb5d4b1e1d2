//! Generation through llama.cpp on the generated SentencePiece models: a default length
//! fits the context window.

use veritas_engine::{Budget, Engine, EngineOptions};
use veritas_fixtures::TinyModelSpec;

fn ascii_engine(seed: u64, n_ctx: u32) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ascii.gguf");
    veritas_fixtures::write_gguf_without_byte_tokens(
        &path,
        &TinyModelSpec::default().with_seed(seed),
        "ascii",
    )
    .unwrap();
    let engine = Engine::load(&path, EngineOptions { n_ctx, threads: 1 }).unwrap();
    (dir, engine)
}

/// Issue 21 §3.3: a budget to fit is lowered to what the window leaves after the prompt's
/// real token count; a prompt that fills the window is E4003.
#[test]
fn a_budget_to_fit_is_what_the_window_leaves_after_the_prompt() {
    let (_dir, engine) = ascii_engine(0, 64);
    let mut slot = engine.slot().unwrap();
    let g = slot
        .generate_until("Hello", Budget::Fit(u32::MAX), &|| false)
        .unwrap();
    if g.finish_reason == "length" {
        assert_eq!(g.prompt_tokens + g.generated_tokens, 64, "{g:?}");
    }
    assert!(g.generated_tokens > 1, "{g:?}");
    let e = slot
        .generate_until("Hello", Budget::AtMost(64), &|| false)
        .unwrap_err();
    assert_eq!(e.code, veritas_vocab::ErrorCode::ContextOverflow, "{e}");
    let full = "ab".repeat(31);
    let e = slot
        .generate_until(&full, Budget::Fit(8), &|| false)
        .unwrap_err();
    assert_eq!(e.code, veritas_vocab::ErrorCode::ContextOverflow, "{e}");
}
