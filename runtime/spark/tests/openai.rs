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
        assert_eq!((status, code.as_deref()), (404, Some("E2002")), "{message}");
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
        assert_eq!((status, code.as_deref()), (422, Some("E4003")), "{message}");

        let two = CreateCompletionRequestArgs::default()
            .model(MODEL)
            .prompt("Hello")
            .n(2u8)
            .build()
            .unwrap();
        let (status, code, _) = api_error(c.completions().create(two).await.unwrap_err());
        assert_eq!((status, code.as_deref()), (400, Some("E4001")));
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
/// from the prompt's bytes); `stop` is refused as an inference request naming the field,
/// not as a malformed IPC message.
#[test]
fn chat_without_max_tokens_fills_the_window_and_stop_is_a_request_refusal() {
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
        let usage: serde_json::Value = if stream {
            let last = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .rfind(|l| l.contains("\"usage\""))
                .unwrap_or_else(|| panic!("no usage chunk: {text}"));
            serde_json::from_str::<serde_json::Value>(last).unwrap()["usage"].clone()
        } else {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            v["usage"].clone()
        };
        let prompt = usage["prompt_tokens"].as_u64().unwrap();
        let completion = usage["completion_tokens"].as_u64().unwrap();
        assert!(prompt > 1, "{usage}");
        // The whole window, unless the model ended its answer first (then it said stop).
        if !text.contains("\"finish_reason\":\"stop\"") {
            assert_eq!(prompt + completion, 256, "{usage}");
        }
        assert!(completion > 1, "{usage}");
    }
    // A prompt that fills the window leaves no room for an answer: E4003 saying so.
    let long = "x ".repeat(200);
    let body = serde_json::json!({"messages": [{"role": "user", "content": long}]}).to_string();
    let (status, text) = d.http_post("/v1/chat/completions", &body);
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("E4003"), "{text}");

    let body = serde_json::json!({
        "messages": [{"role": "user", "content": "Hello"}],
        "stop": ["\n"],
    })
    .to_string();
    let (status, text) = d.http_post("/v1/chat/completions", &body);
    assert_eq!(status, 400, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "E4001", "{v}");
    assert!(
        v["error"]["detail"].as_str().unwrap().contains("`stop`"),
        "{v}"
    );
}
