//! The OpenAI-compatible API on the HTTP front: `/v1/completions`, `/v1/chat/completions`
//! (both with `stream: true` as server-sent events) and `/v1/models`, the API every LLM
//! client and llama.cpp's own `llama-server` speak, so both can be driven the same way.
//!
//! Decoding is greedy whatever the sampling fields say (`temperature`, `top_p`, `seed` are
//! accepted and have no effect); options that would change the shape of the answer and
//! that the runtime cannot honour (`n` > 1, `stop`, `logprobs`, `echo`, `suffix`) are
//! refused as requests the inference cannot run (`E4001`, HTTP 400, naming the field); a
//! malformed body (or a token prompt) is `E1003`. Errors keep the runtime's codes and HTTP statuses, in
//! the OpenAI error shape: `{"error":{"message":"E2002 MODEL_NOT_FOUND: …","type":
//! "MODEL_NOT_FOUND","code":"E2002","param":null,"severity":…,"detail":…}}`.

use super::http::{read_body, status_for};
use super::{Length, Runtime};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use veritas_vocab::ipc::{GenerateRequest, GenerateResponse};
use veritas_vocab::{ErrorBody, ErrorCode};

/// `max_tokens` when a completion request names none (OpenAI's documented default).
const DEFAULT_COMPLETION_TOKENS: u32 = 16;

/// Response ids: unique per daemon, which is all clients use them for.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An error in the OpenAI shape, carrying our code.
pub fn error_json(e: &ErrorBody) -> Value {
    json!({"error": {
        "message": e.to_string(),
        "type": e.code.name(),
        "param": null,
        "code": e.code.code(),
        "severity": e.severity,
        "detail": e.detail,
    }})
}

fn error_response(rt: &Runtime, e: ErrorBody, counted: bool) -> Response {
    if !counted {
        rt.metrics.count_error(e.code);
    }
    (status_for(e.code), Json(error_json(&e))).into_response()
}

fn invalid(detail: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::IpcProtocolError, detail)
}

/// A well-formed request asking for what the inference cannot do: refused as an inference
/// request (E4001, HTTP 400), not as a malformed IPC message.
fn unsupported(field: &str, what: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::InferenceFailed,
        format!("{what}; remove `{field}` from the request and send it again"),
    )
}

/// A request refused before it ran: a malformed body keeps its own code and status, an
/// unsupported option is the client's request, never a server failure (400, not 500).
fn refused(rt: &Runtime, e: ErrorBody) -> Response {
    rt.metrics.count_error(e.code);
    let status = match e.code {
        ErrorCode::InferenceFailed => StatusCode::BAD_REQUEST,
        other => status_for(other),
    };
    (status, Json(error_json(&e))).into_response()
}

/// What both endpoints accept besides their prompt or messages. Unknown fields are
/// ignored: clients send many optional ones.
#[derive(Debug, Deserialize)]
struct Common {
    model: Option<String>,
    max_tokens: Option<u32>,
    /// The chat API's newer name for `max_tokens`.
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
    stop: Option<Value>,
    logprobs: Option<Value>,
    echo: Option<bool>,
    suffix: Option<String>,
    best_of: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

impl Common {
    /// Refuses the options the runtime cannot honour instead of silently ignoring them.
    fn check(&self) -> Result<(), ErrorBody> {
        if self.n.is_some_and(|n| n != 1) || self.best_of.is_some_and(|n| n != 1) {
            return Err(unsupported(
                "n",
                "only one choice per request is supported (n = 1)",
            ));
        }
        let stop_set = match &self.stop {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        };
        if stop_set {
            return Err(unsupported(
                "stop",
                "stop sequences are not supported (generation ends at max_tokens or the model's end of sequence)",
            ));
        }
        if matches!(&self.logprobs, Some(v) if !v.is_null() && v != &json!(false) && v != &json!(0))
        {
            return Err(unsupported("logprobs", "logprobs are not supported"));
        }
        if self.echo == Some(true) {
            return Err(unsupported("echo", "echo is not supported"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(unsupported("suffix", "suffix is not supported"));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    prompt: Value,
    #[serde(flatten)]
    common: Common,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

/// A completion prompt: a string, or an array holding exactly one string.
fn completion_prompt(v: &Value) -> Result<String, ErrorBody> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => match items.as_slice() {
            [Value::String(s)] => Ok(s.clone()),
            [] => Err(invalid("prompt is an empty array")),
            [_] => Err(invalid(
                "token prompts are not supported; send the prompt as text",
            )),
            _ => Err(invalid("only one prompt per request is supported")),
        },
        _ => Err(invalid("prompt must be a string")),
    }
}

/// A message's text: a string, or text parts (other part kinds are refused).
fn message_text(m: &ChatMessage) -> Result<String, ErrorBody> {
    match &m.content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    _ => {
                        return Err(invalid(format!(
                            "message content parts other than text are not supported ({} message)",
                            m.role
                        )))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid("message content must be a string or text parts")),
    }
}

/// Renders a conversation as one prompt (ChatML markers) ending where the assistant's
/// answer begins. The generated models carry no chat template of their own, and the same
/// rendering on every request keeps the output deterministic.
pub fn render_chat(messages: &[(String, String)]) -> String {
    let mut prompt = String::new();
    for (role, content) in messages {
        prompt.push_str("<|im_start|>");
        prompt.push_str(role);
        prompt.push('\n');
        prompt.push_str(content);
        prompt.push_str("<|im_end|>\n");
    }
    prompt.push_str("<|im_start|>assistant\n");
    prompt
}

/// OpenAI's `finish_reason` for ours.
fn finish_reason(ours: &str) -> &'static str {
    match ours {
        "eos" => "stop",
        _ => "length",
    }
}

fn usage(r: &GenerateResponse) -> Value {
    json!({
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.generated_tokens,
        "total_tokens": r.prompt_tokens + r.generated_tokens,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Completions,
    Chat,
}

pub async fn completions(State(rt): State<Arc<Runtime>>, body: axum::body::Body) -> Response {
    let body = match read_body(&rt, body).await {
        Ok(b) => b,
        Err(e) => return too_large(&rt, e),
    };
    let parsed = parse::<CompletionRequest>(&body).and_then(|r| {
        r.common.check()?;
        let prompt = completion_prompt(&r.prompt)?;
        let max = r.common.max_tokens.unwrap_or(DEFAULT_COMPLETION_TOKENS);
        Ok((r.common, prompt, max))
    });
    match parsed {
        Ok((common, prompt, max)) => {
            serve(rt, Api::Completions, common, prompt, max, Length::AtMost).await
        }
        Err(e) => refused(&rt, e),
    }
}

pub async fn chat_completions(State(rt): State<Arc<Runtime>>, body: axum::body::Body) -> Response {
    let body = match read_body(&rt, body).await {
        Ok(b) => b,
        Err(e) => return too_large(&rt, e),
    };
    let parsed = parse::<ChatRequest>(&body).and_then(|r| {
        r.common.check()?;
        if r.messages.is_empty() {
            return Err(invalid("messages must not be empty"));
        }
        let messages = r
            .messages
            .iter()
            .map(|m| Ok((m.role.clone(), message_text(m)?)))
            .collect::<Result<Vec<_>, ErrorBody>>()?;
        // No default length for chat: the rest of the context window, as OpenAI does. Only
        // the worker knows how many tokens the prompt really is, so it lowers the bound to
        // what the window leaves after the prompt.
        let (max, length) = match r.common.max_completion_tokens.or(r.common.max_tokens) {
            Some(max) => (max, Length::AtMost),
            None => (u32::MAX, Length::Fit),
        };
        Ok((r.common, render_chat(&messages), max, length))
    });
    match parsed {
        Ok((common, prompt, max, length)) => {
            serve(rt, Api::Chat, common, prompt, max, length).await
        }
        Err(e) => refused(&rt, e),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ErrorBody> {
    serde_json::from_slice(body).map_err(|e| invalid(format!("invalid request body: {e}")))
}

/// A body above `--max-frame`: 413, as on `/v1/generate`.
fn too_large(rt: &Runtime, e: ErrorBody) -> Response {
    rt.metrics.count_error(e.code);
    (StatusCode::PAYLOAD_TOO_LARGE, Json(error_json(&e))).into_response()
}

/// Runs one request: a JSON answer, or an event stream when `stream` is set. A streamed
/// request that fails before its first piece (refused at admission, unknown model, prompt
/// too long) is answered with a plain error and its status, as a client expects; a failure
/// after that ends the stream with an error event.
async fn serve(
    rt: Arc<Runtime>,
    api: Api,
    common: Common,
    prompt: String,
    max: u32,
    length: Length,
) -> Response {
    let req = GenerateRequest {
        prompt,
        max_tokens: max,
        model: common.model.clone(),
    };
    if !common.stream {
        return match rt.generate_with(req, length, None).await {
            Ok(r) => Json(answer(api, &r)).into_response(),
            // `generate` has counted it.
            Err(e) => error_response(&rt, e, true),
        };
    }
    let include_usage = common.stream_options.is_some_and(|o| o.include_usage);
    let (pieces_tx, mut pieces_rx) = mpsc::unbounded_channel::<String>();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let (events_tx, events_rx) = mpsc::channel::<Event>(64);
    let runner = rt.clone();
    let gone = events_tx.clone();
    tokio::spawn(async move {
        // A client that hangs up drops the event receiver: the generation future is dropped
        // with it, which cancels the request inside the worker within one token.
        tokio::select! {
            r = runner.generate_with(req, length, Some(pieces_tx)) => { let _ = done_tx.send(r); }
            _ = gone.closed() => {}
        }
    });
    // Wait for the first piece or the end, whichever comes first. A request refused before
    // it reaches the worker drops its piece sender before its answer is sent: a closed
    // piece channel means "the answer is coming", never "stream nothing".
    let first = tokio::select! {
        biased;
        p = pieces_rx.recv() => match p {
            Some(piece) => Ok(piece),
            None => Err((&mut done_rx).await),
        },
        r = &mut done_rx => Err(r),
    };
    let early = match first {
        Ok(piece) => Early::Piece(piece),
        Err(Ok(Ok(r))) => Early::Done(r),
        Err(Ok(Err(e))) => return error_response(&rt, e, true),
        Err(Err(_)) => {
            let e = ErrorBody::new(
                ErrorCode::InferenceFailed,
                "generation ended without an answer",
            );
            return error_response(&rt, e, false);
        }
    };
    let id = next_id(match api {
        Api::Completions => "cmpl",
        Api::Chat => "chatcmpl",
    });
    let stream = Stream {
        api,
        id,
        created: unix_now(),
        // Chunks name the model as the final answer will; until then the one served.
        model: rt.served_model().map(|m| m.name).unwrap_or_default(),
    };
    tokio::spawn(async move {
        let send = |v: Value| {
            let tx = events_tx.clone();
            async move { tx.send(Event::default().data(v.to_string())).await.is_ok() }
        };
        if api == Api::Chat && !send(stream.role_chunk()).await {
            return;
        }
        let result = match early {
            Early::Done(r) => Ok(r),
            Early::Piece(p) => {
                if !send(stream.piece(&p)).await {
                    return;
                }
                loop {
                    tokio::select! {
                        biased;
                        Some(p) = pieces_rx.recv() => if !send(stream.piece(&p)).await { return },
                        r = &mut done_rx => {
                            // Pieces sent before the answer are already queued: drain them.
                            while let Ok(p) = pieces_rx.try_recv() {
                                if !send(stream.piece(&p)).await { return }
                            }
                            break r.unwrap_or_else(|_| Err(ErrorBody::new(ErrorCode::InferenceFailed, "generation ended without an answer")));
                        }
                    }
                }
            }
        };
        match result {
            Ok(r) => {
                if !send(stream.last(&r)).await {
                    return;
                }
                if include_usage && !send(stream.usage(&r)).await {
                    return;
                }
            }
            Err(e) => {
                if !send(error_json(&e)).await {
                    return;
                }
            }
        }
        let _ = events_tx.send(Event::default().data("[DONE]")).await;
    });
    let events = futures_util::stream::unfold(events_rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(events).into_response()
}

enum Early {
    Piece(String),
    Done(GenerateResponse),
}

/// One streamed answer's envelope.
struct Stream {
    api: Api,
    id: String,
    created: u64,
    model: String,
}

impl Stream {
    fn chunk(&self, choice: Value, usage: Option<Value>) -> Value {
        let (object, choices) = match self.api {
            Api::Completions => ("text_completion", json!([choice])),
            Api::Chat => ("chat.completion.chunk", json!([choice])),
        };
        let mut v = json!({
            "id": self.id, "object": object, "created": self.created,
            "model": self.model, "choices": choices,
        });
        if let Some(u) = usage {
            v["choices"] = json!([]);
            v["usage"] = u;
        }
        v
    }

    fn role_chunk(&self) -> Value {
        self.chunk(
            json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}),
            None,
        )
    }

    fn piece(&self, text: &str) -> Value {
        match self.api {
            Api::Completions => self.chunk(
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": null}),
                None,
            ),
            Api::Chat => self.chunk(
                json!({"index": 0, "delta": {"content": text}, "finish_reason": null}),
                None,
            ),
        }
    }

    fn last(&self, r: &GenerateResponse) -> Value {
        let reason = finish_reason(&r.finish_reason);
        let mut v = match self.api {
            Api::Completions => self.chunk(
                json!({"index": 0, "text": "", "logprobs": null, "finish_reason": reason}),
                None,
            ),
            Api::Chat => self.chunk(
                json!({"index": 0, "delta": {}, "finish_reason": reason}),
                None,
            ),
        };
        v["model"] = json!(r.model);
        v
    }

    fn usage(&self, r: &GenerateResponse) -> Value {
        let mut v = self.chunk(Value::Null, Some(usage(r)));
        v["model"] = json!(r.model);
        v
    }
}

/// The whole answer of a request that did not ask for a stream.
fn answer(api: Api, r: &GenerateResponse) -> Value {
    let reason = finish_reason(&r.finish_reason);
    match api {
        Api::Completions => json!({
            "id": next_id("cmpl"), "object": "text_completion", "created": unix_now(),
            "model": r.model,
            "choices": [{"index": 0, "text": r.text, "logprobs": null, "finish_reason": reason}],
            "usage": usage(r),
        }),
        Api::Chat => json!({
            "id": next_id("chatcmpl"), "object": "chat.completion", "created": unix_now(),
            "model": r.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text},
                         "logprobs": null, "finish_reason": reason}],
            "usage": usage(r),
        }),
    }
}

/// `GET /v1/models`: the registry's models; `owned_by` is the runtime, and each entry says
/// whether it is the one being served.
pub async fn models(State(rt): State<Arc<Runtime>>) -> Response {
    match rt.models() {
        Ok(report) => {
            let data: Vec<Value> = report
                .models
                .iter()
                .map(|m| {
                    json!({
                        "id": m.name, "object": "model", "created": 0, "owned_by": "veritas-spark",
                        "version": m.version, "state": m.state,
                    })
                })
                .collect();
            Json(json!({"object": "list", "data": data})).into_response()
        }
        Err(e) => error_response(&rt, e, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_rendering_ends_at_the_assistant_turn() {
        let p = render_chat(&[
            ("system".into(), "be brief".into()),
            ("user".into(), "hi".into()),
        ]);
        assert_eq!(
            p,
            "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn prompts_are_one_text() {
        assert_eq!(completion_prompt(&json!("a")).unwrap(), "a");
        assert_eq!(completion_prompt(&json!(["a"])).unwrap(), "a");
        for bad in [json!([]), json!([1, 2]), json!(["a", "b"]), json!(3)] {
            assert_eq!(
                completion_prompt(&bad).unwrap_err().code,
                ErrorCode::IpcProtocolError,
                "{bad}"
            );
        }
    }

    #[test]
    fn options_the_runtime_cannot_honour_are_refused() {
        let parse = |v: Value| serde_json::from_value::<Common>(v).unwrap().check();
        assert!(parse(json!({"temperature": 0.7, "top_p": 0.9, "n": 1})).is_ok());
        assert!(parse(json!({"stop": [], "logprobs": false})).is_ok());
        for bad in [
            json!({"n": 2}),
            json!({"stop": "\n"}),
            json!({"stop": ["x"]}),
            json!({"logprobs": 3}),
            json!({"echo": true}),
            json!({"suffix": "x"}),
        ] {
            let e = parse(bad.clone()).unwrap_err();
            // A request the inference cannot run, naming the field: not a malformed message.
            assert_eq!(e.code, ErrorCode::InferenceFailed, "{bad}");
            let field = bad.as_object().unwrap().keys().next().unwrap().clone();
            assert!(e.detail.contains(&format!("`{field}`")), "{e}");
        }
    }

    #[test]
    fn errors_keep_our_code_in_the_openai_shape() {
        let v = error_json(&ErrorBody::new(ErrorCode::ModelNotFound, "no model x"));
        assert_eq!(v["error"]["code"], "E2002");
        assert_eq!(v["error"]["type"], "MODEL_NOT_FOUND");
        assert_eq!(v["error"]["message"], "E2002 MODEL_NOT_FOUND: no model x");
    }

    #[test]
    fn finish_reasons_map_to_openai_names() {
        assert_eq!(finish_reason("eos"), "stop");
        assert_eq!(finish_reason("length"), "length");
    }
}
