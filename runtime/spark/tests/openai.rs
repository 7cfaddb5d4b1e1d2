//! The OpenAI-compatible endpoints, driven by a client nobody here wrote (`async-openai`)
//! against a real daemon on a generated model, on loopback.

mod common;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::CompletionFinishReason;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs, FinishReason,
};
use async_openai::types::completions::CreateCompletionRequestArgs;
use async_openai::Client;
use common::*;
use futures_util::StreamExt;

fn client(d: &Daemon) -> Client<OpenAIConfig> {
    // The workspace's reqwest has rustls without a built-in crypto provider (the controller
    // brings its own, on ring); async-openai builds reqwest's default client, which then needs
    // a process-wide provider even for http://.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("http://127.0.0.1:{}/v1", d.http))
            .with_api_key("unused"),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The same prompt through our own endpoint: what the OpenAI endpoints must return.
fn native_generate(d: &Daemon, prompt: &str, max_tokens: u32) -> serde_json::Value {
    let body = serde_json::json!({"prompt": prompt, "max_tokens": max_tokens}).to_string();
    let (status, text) = d.http_post("/v1/generate", &body);
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn chat_request(content: &str, max_tokens: u32) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(MODEL)
        .max_completion_tokens(max_tokens)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content(content)
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

/// The error a refused request carries: HTTP status and our code.
fn api_error(e: OpenAIError) -> (u16, Option<String>, String) {
    match e {
        OpenAIError::ApiError(r) => (
            r.status_code.as_u16(),
            r.api_error.code.clone(),
            r.api_error.message.clone(),
        ),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn completions_match_the_native_endpoint_streamed_or_not() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    let native = native_generate(&d, "Hello", 12);
    let expected = native["text"].as_str().unwrap().to_string();
    assert_eq!(native["generated_tokens"], 12);
    let c = client(&d);
    runtime().block_on(async {
        let req = CreateCompletionRequestArgs::default()
            .model(MODEL)
            .prompt("Hello")
            .max_tokens(12u32)
            .temperature(0.0)
            .build()
            .unwrap();
        let r = c.completions().create(req.clone()).await.unwrap();
        assert_eq!(r.model, MODEL);
        assert_eq!(r.object, "text_completion");
        assert_eq!(r.choices.len(), 1);
        assert_eq!(r.choices[0].text, expected);
        assert_eq!(
            r.choices[0].finish_reason,
            Some(CompletionFinishReason::Length)
        );
        let usage = r.usage.expect("usage");
        assert_eq!(usage.completion_tokens, 12);
        assert_eq!(
            usage.prompt_tokens,
            native["prompt_tokens"].as_u64().unwrap() as u32
        );

        let mut stream = c.completions().create_stream(req).await.unwrap();
        let (mut text, mut chunks, mut finish) = (String::new(), 0, None);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            chunks += 1;
            for choice in chunk.choices {
                text.push_str(&choice.text);
                finish = finish.or(choice.finish_reason);
            }
        }
        assert_eq!(text, expected, "streamed pieces concatenate to the answer");
        // One event per decoded piece plus the closing one: the answer really streamed.
        assert!(chunks > 2, "only {chunks} chunks");
        assert_eq!(finish, Some(CompletionFinishReason::Length));
    });
}

#[test]
fn chat_completions_stream_the_same_answer_and_models_lists_the_registry() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    let c = client(&d);
    runtime().block_on(async {
        let models = c.models().list().await.unwrap();
        assert_eq!(
            models
                .data
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>(),
            [MODEL]
        );

        let r = c.chat().create(chat_request("Hi there", 10)).await.unwrap();
        assert_eq!(r.object, "chat.completion");
        let whole = r.choices[0].message.content.clone().expect("content");
        assert!(!whole.is_empty());
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Length));
        assert_eq!(r.usage.expect("usage").completion_tokens, 10);

        let mut stream = c
            .chat()
            .create_stream(chat_request("Hi there", 10))
            .await
            .unwrap();
        let (mut text, mut role, mut finish) = (String::new(), None, None);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert_eq!(chunk.object, "chat.completion.chunk");
            for choice in chunk.choices {
                role = role.or(choice.delta.role);
                text.push_str(choice.delta.content.as_deref().unwrap_or(""));
                finish = finish.or(choice.finish_reason);
            }
        }
        assert_eq!(text, whole);
        assert!(role.is_some(), "the first chunk names the assistant role");
        assert_eq!(finish, Some(FinishReason::Length));
    });
    // The chat goes through the runtime's template: the same text as the rendered prompt.
    let rendered = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n";
    let native = native_generate(&d, rendered, 10);
    let c = client(&d);
    let again = runtime()
        .block_on(c.chat().create(chat_request("Hi there", 10)))
        .unwrap();
    assert_eq!(
        again.choices[0].message.content.as_deref(),
        native["text"].as_str()
    );
}

#[test]
fn refusals_carry_our_codes_streamed_or_not() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    let c = client(&d);
    runtime().block_on(async {
        let unknown = CreateCompletionRequestArgs::default()
            .model("no-such-model")
            .prompt("Hello")
            .max_tokens(4u32)
            .build()
            .unwrap();
        let (status, code, message) = api_error(c.completions().create(unknown).await.unwrap_err());
        assert_eq!(
            (status, code.as_deref()),
            (404, Some("model_not_found")),
            "{message}"
        );
        assert!(message.starts_with("E2002 MODEL_NOT_FOUND: "), "{message}");

        // Refused before the first token: a plain error with its status, not a stream.
        let too_long = chat_request("Hello", 1_000_000);
        let err = match c.chat().create_stream(too_long).await {
            Err(e) => e,
            Ok(mut s) => s
                .next()
                .await
                .expect("an error event")
                .expect_err("refused"),
        };
        let (status, code, message) = api_error(err);
        assert_eq!(
            (status, code.as_deref()),
            (400, Some("context_length_exceeded")),
            "{message}"
        );
        assert!(message.starts_with("E4003 CONTEXT_OVERFLOW: "), "{message}");

        let two = CreateCompletionRequestArgs::default()
            .model(MODEL)
            .prompt("Hello")
            .n(2u8)
            .build()
            .unwrap();
        let (status, code, message) = api_error(c.completions().create(two).await.unwrap_err());
        assert_eq!(
            (status, code.as_deref()),
            (400, Some("unsupported_parameter"))
        );
        assert!(message.starts_with("E4001 INFERENCE_FAILED: "), "{message}");
    });
    // Counted like every other refusal.
    let metrics = d.scrape();
    for code in [
        veritas_vocab::ErrorCode::ModelNotFound,
        veritas_vocab::ErrorCode::ContextOverflow,
        veritas_vocab::ErrorCode::InferenceFailed,
    ] {
        let code = code.code();
        assert!(
            metric_value(
                &metrics,
                veritas_vocab::metrics::ERRORS_TOTAL,
                &[(veritas_vocab::metrics::LABEL_CODE, code)]
            )
            .is_some_and(|v| v >= 1.0),
            "{code} not counted"
        );
    }
}

/// Issue 21 §3.3: a chat request without `max_tokens` gets what the context window leaves
/// after its prompt's real token count (it was refused with E4003, the default estimated
/// from the prompt's bytes).
#[test]
fn chat_without_max_tokens_fills_the_window() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: vec!["--ctx-size".into(), "256".into()],
            ..Default::default()
        },
    );
    for stream in [false, true] {
        let body = serde_json::json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hello"}],
            "stream": stream,
            "stream_options": stream.then(|| serde_json::json!({"include_usage": true})),
        })
        .to_string();
        let (status, text) = d.http_post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{text}");
        let usage = usage_of(&text, stream);
        let prompt = usage["prompt_tokens"].as_u64().unwrap();
        let completion = usage["completion_tokens"].as_u64().unwrap();
        assert!(prompt > 1, "{usage}");
        // The whole window, unless the model ended its answer first (then it said stop).
        if !text.contains("\"finish_reason\":\"stop\"") {
            assert_eq!(prompt + completion, 256, "{usage}");
        }
        assert!(completion > 1, "{usage}");
    }
    // A prompt that fills the window leaves no room for an answer: OpenAI's 400, our E4003.
    let long = "x ".repeat(200);
    let body = serde_json::json!({"messages": [{"role": "user", "content": long}]}).to_string();
    let (status, text) = d.http_post("/v1/chat/completions", &body);
    assert_eq!(status, 400, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    assert_eq!(v["error"]["veritas_code"], "E4003", "{v}");
}

/// The usage of a JSON answer, or of the usage chunk of a stream.
fn usage_of(text: &str, stream: bool) -> serde_json::Value {
    if stream {
        let last = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .rfind(|l| l.contains("\"usage\""))
            .unwrap_or_else(|| panic!("no usage chunk: {text}"));
        serde_json::from_str::<serde_json::Value>(last).unwrap()["usage"].clone()
    } else {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        v["usage"].clone()
    }
}

/// The text of a JSON answer or of a stream's chunks, completions or chat.
fn text_of(body: &str, stream: bool) -> String {
    let pick = |v: &serde_json::Value| {
        let c = &v["choices"][0];
        c["text"]
            .as_str()
            .or(c["message"]["content"].as_str())
            .or(c["delta"]["content"].as_str())
            .unwrap_or("")
            .to_string()
    };
    if !stream {
        return pick(&serde_json::from_str(body).unwrap());
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .map(|l| pick(&serde_json::from_str(l).unwrap()))
        .collect()
}

/// Issue 21 §1: `stop` ends the answer before the string (never sent, streamed or not) with
/// finish_reason `stop`; `seed` and `temperature` drive llama.cpp's sampler, reproducibly.
#[test]
fn stop_and_sampling_fields_shape_the_answer() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    let post = |body: serde_json::Value| {
        let (status, text) = d.http_post("/v1/completions", &body.to_string());
        assert_eq!(status, 200, "{text}");
        text
    };
    let greedy = text_of(
        &post(serde_json::json!({"prompt": "Hello", "max_tokens": 24})),
        false,
    );
    // Two ASCII characters past the start (the tiny model's bytes are not all UTF-8).
    let chars: Vec<char> = greedy.chars().collect();
    let stop: String = (2..chars.len() - 1)
        .map(|i| [chars[i], chars[i + 1]])
        .find(|p| p.iter().all(char::is_ascii_graphic))
        .unwrap_or_else(|| panic!("no ASCII pair in {greedy:?}"))
        .iter()
        .collect();
    let expected = &greedy[..greedy.find(&stop).unwrap()];
    for stream in [false, true] {
        let body = post(serde_json::json!({
            "prompt": "Hello", "max_tokens": 24, "stop": stop, "stream": stream,
        }));
        assert_eq!(
            text_of(&body, stream),
            expected,
            "stream {stream}, stop {stop:?}"
        );
        assert!(body.contains("\"finish_reason\":\"stop\""), "{body}");
    }
    let sampled = |seed: u64, stream: bool| {
        let body = post(serde_json::json!({
            "prompt": "Hello", "max_tokens": 16, "temperature": 1.5, "seed": seed, "stream": stream,
        }));
        text_of(&body, stream)
    };
    let texts: Vec<String> = (1..=5).map(|seed| sampled(seed, false)).collect();
    assert_eq!(
        sampled(2, true),
        texts[1],
        "the same seed draws the same text, streamed"
    );
    assert!(
        texts.iter().any(|t| *t != texts[0]),
        "five seeds drew one text: {texts:?}"
    );
    let zero = post(serde_json::json!({"prompt": "Hello", "max_tokens": 24, "temperature": 0}));
    assert_eq!(text_of(&zero, false), greedy, "temperature 0 is greedy");
    // Out of range: OpenAI's 400, naming the field.
    let (status, text) = d.http_post(
        "/v1/completions",
        &serde_json::json!({"prompt": "Hello", "temperature": 7}).to_string(),
    );
    assert_eq!(status, 400, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["param"], "temperature", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
}

/// Issue 21 §1: `--served-model-name` gives the served model the names clients use (as
/// vLLM and llama-server users expect); other names are still 404 `model_not_found`.
#[test]
fn served_model_names_are_accepted_listed_and_echoed() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: vec!["--served-model-name".into(), "gpt-tiny,tiny-chat".into()],
            ..Default::default()
        },
    );
    let c = client(&d);
    runtime().block_on(async {
        let ids: Vec<String> = c
            .models()
            .list()
            .await
            .unwrap()
            .data
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, [MODEL, "gpt-tiny", "tiny-chat"]);
        for name in ["gpt-tiny", "tiny-chat", MODEL] {
            let req = CreateChatCompletionRequestArgs::default()
                .model(name)
                .max_completion_tokens(3u32)
                .messages([ChatCompletionRequestUserMessageArgs::default()
                    .content("Hi")
                    .build()
                    .unwrap()
                    .into()])
                .build()
                .unwrap();
            let r = c.chat().create(req.clone()).await.unwrap();
            assert_eq!(r.model, name);
            let mut stream = c.chat().create_stream(req).await.unwrap();
            while let Some(chunk) = stream.next().await {
                assert_eq!(chunk.unwrap().model, name);
            }
        }
        let other = chat_request("Hi", 3);
        let mut other = other;
        other.model = "gpt-4o".into();
        let (status, code, _) = api_error(c.chat().create(other).await.unwrap_err());
        assert_eq!((status, code.as_deref()), (404, Some("model_not_found")));
    });
}

/// Issue 21 §1: a full queue is OpenAI's 429 with `Retry-After`, our E3003 kept in the body.
#[test]
fn a_full_queue_is_429_with_retry_after() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: [
                "--parallel",
                "1",
                "--queue-size",
                "0",
                "--ctx-size",
                "32768",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        },
    );
    // Seconds of decoding hold the only slot.
    let port = d.http;
    let long = std::thread::spawn(move || {
        http(
            port,
            "POST",
            "/v1/completions",
            Some(r#"{"prompt": "long", "max_tokens": 30000}"#),
        )
    });
    wait_for(
        "one request in flight",
        std::time::Duration::from_secs(20),
        || {
            metric_value(&d.scrape(), veritas_vocab::metrics::INFLIGHT_REQUESTS, &[])
                .filter(|v| *v >= 1.0)
        },
    );
    let (status, headers, body) = http_with_headers(
        d.http,
        "POST",
        "/v1/completions",
        Some(r#"{"prompt": "Hi", "max_tokens": 2}"#),
    );
    assert_eq!(status, 429, "{body}");
    assert!(
        headers.to_ascii_lowercase().contains("\r\nretry-after: 1"),
        "{headers}"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["veritas_code"], "E3003", "{v}");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
    drop(d);
    let _ = long.join();
}
