//! Generation through llama.cpp on the generated SentencePiece models: a default length
//! fits the context window.

use veritas_engine::{find_stop, held_back, Budget, Engine, EngineOptions, Prompt};
use veritas_fixtures::TinyModelSpec;
use veritas_vocab::ipc::{ChatTurn, Decoding};

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
    let mut greedy = |prompt: &str, budget: Budget| {
        slot.generate(
            Prompt::Text(prompt),
            budget,
            &Decoding::default(),
            &|| false,
            None,
        )
    };
    let g = greedy("Hello", Budget::Fit(u32::MAX)).unwrap();
    if g.finish_reason == "length" {
        assert_eq!(g.prompt_tokens + g.generated_tokens, 64, "{g:?}");
    }
    assert!(g.generated_tokens > 1, "{g:?}");
    let e = greedy("Hello", Budget::AtMost(64)).unwrap_err();
    assert_eq!(e.code, veritas_vocab::ErrorCode::ContextOverflow, "{e}");
    let full = "ab".repeat(31);
    let e = greedy(&full, Budget::Fit(8)).unwrap_err();
    assert_eq!(e.code, veritas_vocab::ErrorCode::ContextOverflow, "{e}");
}

fn greedy(engine: &Engine, prompt: &str, n: u32) -> veritas_engine::Generation {
    engine.generate(prompt, n).unwrap()
}

fn run(
    engine: &Engine,
    prompt: Prompt<'_>,
    n: u32,
    decoding: &Decoding,
    stream: bool,
) -> (veritas_engine::Generation, Vec<String>) {
    let mut pieces = Vec::new();
    let mut piece = |p: &str| pieces.push(p.to_string());
    let on_piece = stream.then_some(&mut piece as &mut dyn FnMut(&str));
    let g = engine
        .slot()
        .unwrap()
        .generate(prompt, Budget::AtMost(n), decoding, &|| false, on_piece)
        .unwrap_or_else(|e| panic!("{e}"));
    (g, pieces)
}

/// Issue 21 §1: generation ends before the first stop string, which is never returned nor
/// streamed, even when it spans tokens; the streamed pieces are the answer.
#[test]
fn a_stop_string_ends_the_answer_before_it_streamed_or_not() {
    let (_dir, engine) = ascii_engine(3, 256);
    let whole = greedy(&engine, "Hello there", 32).text;
    assert!(whole.len() > 12, "{whole:?}");
    // A stop string from the middle of the greedy answer, spanning several tokens.
    let stop = whole[8..11].to_string();
    let at = whole.find(&stop).unwrap();
    let decoding = Decoding {
        stop: vec!["never in this text \u{1}".into(), stop.clone()],
        ..Default::default()
    };
    for stream in [false, true] {
        let (g, pieces) = run(&engine, Prompt::Text("Hello there"), 32, &decoding, stream);
        assert_eq!(g.text, whole[..at], "stream {stream}, stop {stop:?}");
        assert_eq!(g.finish_reason, "stop");
        assert!(g.generated_tokens < 32, "{g:?}");
        if stream {
            assert_eq!(pieces.concat(), g.text, "{pieces:?}");
        }
    }
    let absent = Decoding {
        stop: vec!["\u{1}".into()],
        ..Default::default()
    };
    let (g, pieces) = run(&engine, Prompt::Text("Hello there"), 32, &absent, true);
    assert_eq!(
        (g.text.as_str(), g.finish_reason),
        (whole.as_str(), "length")
    );
    assert_eq!(pieces.concat(), whole);
}

#[test]
fn stop_strings_are_found_across_pieces_and_held_back_while_they_may_start() {
    let stops = ["ab".to_string(), "xyz".to_string()];
    assert_eq!(find_stop(b"..a", 0, &stops), None);
    assert_eq!(find_stop(b"..ab", 3, &stops), Some(2));
    assert_eq!(
        find_stop(b"xyz..ab", 5, &stops),
        Some(5),
        "only new matches"
    );
    assert_eq!(find_stop(b"..xyzab", 0, &stops), Some(2), "the first one");
    assert_eq!(held_back(b"..a", &stops), 1);
    assert_eq!(held_back(b"..xy", &stops), 2);
    assert_eq!(held_back(b"..x", &stops), 1);
    assert_eq!(held_back(b"...", &stops), 0);
    assert_eq!(held_back(b"y", &stops), 0);
    assert_eq!(held_back(b"", &stops), 0);
}

/// Issue 21 §1: temperature 0 is greedy; a seed reproduces its draw; seeds differ.
#[test]
fn sampling_is_greedy_at_zero_and_reproducible_by_seed() {
    let (_dir, engine) = ascii_engine(5, 256);
    let prompt = Prompt::Text("Once upon a time");
    let whole = greedy(&engine, "Once upon a time", 16).text;
    let zero = Decoding {
        temperature: Some(0.0),
        seed: Some(9),
        ..Default::default()
    };
    assert_eq!(run(&engine, prompt, 16, &zero, false).0.text, whole);
    let seeded = |seed| Decoding {
        temperature: Some(1.5),
        top_k: Some(50),
        top_p: Some(0.95),
        seed: Some(seed),
        ..Default::default()
    };
    let texts: Vec<String> = (1..=6)
        .map(|seed| run(&engine, prompt, 16, &seeded(seed), false).0.text)
        .collect();
    assert_eq!(
        run(&engine, prompt, 16, &seeded(3), true).0.text,
        texts[2],
        "the same seed, streamed, draws the same text"
    );
    let distinct: std::collections::HashSet<_> = texts.iter().collect();
    assert!(distinct.len() > 1, "six seeds drew one text: {texts:?}");
    assert!(
        texts.iter().any(|t| *t != whole),
        "sampling never left greedy: {texts:?}"
    );
}

/// Issue 21 §1 and §3.7: a logit bias of 100 forces its token, -100 bans it; the answer's
/// text is its pieces (a SentencePiece answer that begins with a space keeps it).
#[test]
fn logit_bias_forces_or_bans_a_token_and_the_leading_space_is_kept() {
    let (_dir, engine) = ascii_engine(2, 256);
    // Token 3 is `▁`, the SentencePiece space.
    let spaces = Decoding {
        logit_bias: vec![(3, 100.0)],
        ..Default::default()
    };
    for stream in [false, true] {
        let (g, pieces) = run(&engine, Prompt::Text("Hi"), 5, &spaces, stream);
        assert_eq!(g.text, "     ", "stream {stream}: {g:?}");
        if stream {
            assert_eq!(pieces.concat(), g.text);
        }
    }
    // Banned: every byte of the greedy answer of a byte-token model (byte b is token 3 + b).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bytes.gguf");
    veritas_fixtures::write_gguf(&path, &TinyModelSpec::default()).unwrap();
    let bytes = Engine::load(
        &path,
        EngineOptions {
            n_ctx: 256,
            threads: 1,
        },
    )
    .unwrap();
    let (g, _) = run(
        &bytes,
        Prompt::Text("Hello"),
        8,
        &Decoding::default(),
        false,
    );
    // ASCII only: other bytes may be halves of characters, rendered as U+FFFD.
    let seen: std::collections::BTreeSet<u8> = g.text.bytes().filter(u8::is_ascii).collect();
    assert!(!seen.is_empty(), "{g:?}");
    let banned = Decoding {
        logit_bias: seen.iter().map(|b| (3 + u32::from(*b), -100.0)).collect(),
        ..Default::default()
    };
    let (other, _) = run(&bytes, Prompt::Text("Hello"), 8, &banned, false);
    assert!(
        !other.text.is_empty() && other.text.bytes().all(|b| !seen.contains(&b)),
        "banned bytes {seen:?} drawn: {:?}",
        other.text
    );
    let outside = Decoding {
        logit_bias: vec![(engine.n_vocab(), 1.0)],
        ..Default::default()
    };
    let e = engine
        .slot()
        .unwrap()
        .generate(
            Prompt::Text("Hi"),
            Budget::AtMost(1),
            &outside,
            &|| false,
            None,
        )
        .unwrap_err();
    assert_eq!(e.code, veritas_vocab::ErrorCode::TokenizerError, "{e}");
}

/// Issue 21 §1: a chat is rendered with the GGUF's own template, its markers parsed as the
/// control tokens they are; a model without a template gets ChatML.
#[test]
fn chats_use_the_models_template_with_its_control_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.gguf");
    veritas_fixtures::write_gguf_with_chat_template(&path, &TinyModelSpec::default(), "chat")
        .unwrap();
    let engine = Engine::load(
        &path,
        EngineOptions {
            n_ctx: 256,
            threads: 1,
        },
    )
    .unwrap();
    assert!(engine.has_chat_template());
    let turns = [
        ChatTurn {
            role: "user".into(),
            content: "Hi there".into(),
        },
        ChatTurn {
            role: "assistant".into(),
            content: "Hello".into(),
        },
        ChatTurn {
            role: "user".into(),
            content: "And?".into(),
        },
    ];
    let rendered = engine.render_chat(&turns).unwrap();
    assert_eq!(
        rendered,
        "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>user\nAnd?<end_of_turn>\n<start_of_turn>model\n"
    );
    let special = engine.count_tokens(&rendered, true);
    assert!(special < engine.count_tokens(&rendered, false));
    let (g, _) = run(
        &engine,
        Prompt::Chat(&turns),
        4,
        &Decoding::default(),
        false,
    );
    assert_eq!(g.prompt_tokens as usize, special, "{g:?}");

    let (_dir, plain) = ascii_engine(0, 256);
    assert!(!plain.has_chat_template());
    assert_eq!(
        plain.render_chat(&turns[..1]).unwrap(),
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    );
}

/// Issue 21 §3.9: the space the SentencePiece tokenizer puts before every prompt is checked
/// like the prompt's own characters: a vocabulary without it and without byte tokens gets
/// E4002 for an all-ASCII prompt (llama.cpp threw, and the exception aborted the worker).
#[test]
fn the_tokenizers_own_space_prefix_is_checked_before_llama_cpp_sees_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nospace.gguf");
    veritas_fixtures::write_gguf_without_space_token(&path, &TinyModelSpec::default(), "nospace")
        .unwrap();
    let engine = Engine::load(
        &path,
        EngineOptions {
            n_ctx: 64,
            threads: 1,
        },
    )
    .unwrap();
    assert!(engine.has_narrow_vocabulary());
    for prompt in ["Hello", "x", "a-b"] {
        let e = engine.generate(prompt, 2).unwrap_err();
        assert_eq!(
            e.code,
            veritas_vocab::ErrorCode::TokenizerError,
            "{prompt}: {e}"
        );
        assert!(e.detail.contains("U+2581"), "{e}");
    }
    // A vocabulary that has it still serves such prompts.
    let (_dir, ascii) = ascii_engine(0, 64);
    assert!(ascii.generate("Hello", 2).is_ok());
}
