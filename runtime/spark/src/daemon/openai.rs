//! The OpenAI-compatible API on the HTTP front: `/v1/completions`, `/v1/chat/completions`
//! (both with `stream: true` as server-sent events) and `/v1/models`, the API every LLM
//! client and llama.cpp's own `llama-server` speak, so both can be driven the same way.
//!
//! Sampling fields (`temperature`, `top_p`, `seed`, penalties, `logit_bias`, and llama.cpp's
//! `top_k`, `min_p`, `repeat_penalty`) drive llama.cpp's sampler chain; a request naming none
//! is decoded greedily (deterministic, what canary comparisons rely on). `stop` ends the
//! answer before the string. Chat requests are rendered with the model's own chat template.
//! What the runtime cannot honour (`n` > 1, `logprobs`, `echo`, `suffix`, `tools`, a
//! `response_format` other than text) is refused with 400 naming the field, never ignored.
//!
//! Errors are OpenAI's shape and statuses (400 `invalid_request_error`, with
//! `context_length_exceeded` or `model_not_found`, 429 and 503 with `Retry-After`), and
//! keep the runtime's guide code: `{"error":{"message":"E4003 CONTEXT_OVERFLOW: …","type":
//! "invalid_request_error","param":null,"code":"context_length_exceeded","veritas_code":
//! "E4003","severity":…,"detail":…}}`.

use super::http::read_body;
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
use veritas_vocab::ipc::{ChatTurn, Decoding, GenerateRequest, GenerateResponse};
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

/// How OpenAI would answer an error of ours: HTTP status, error type and code.
fn openai_kind(e: &ErrorBody, refused: bool) -> (StatusCode, &'static str, Option<&'static str>) {
    use ErrorCode::*;
    match e.code {
        ContextOverflow => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("context_length_exceeded"),
        ),
        TokenizerError | IpcProtocolError => {
            (StatusCode::BAD_REQUEST, "invalid_request_error", None)
        }
        // Refused before it ran (an option the runtime cannot honour): the client's request.
        InferenceFailed if refused => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("unsupported_parameter"),
        ),
        ModelNotFound | ModelVersionMismatch => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
        ),
        // Only a full queue clears by retrying (clients retry a 429 by themselves); a memory
        // ceiling or an answer too large does not.
        ResourceLimitExceeded if super::admission::is_queue_full(e) => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Some("rate_limit_exceeded"),
        ),
        HealthCheckFailed => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("service_unavailable"),
        ),
        IpcTimeout => (StatusCode::GATEWAY_TIMEOUT, "server_error", Some("timeout")),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
    }
}

/// Seconds a client should wait before retrying a request refused for capacity (the queue
/// is full) or readiness (no model served yet, draining).
const RETRY_AFTER_SECS: u64 = 1;

/// An error in the OpenAI shape, carrying our code; `param` names the request field at fault.
pub fn error_json(e: &ErrorBody, refused: bool, param: Option<&str>) -> Value {
    let (_, kind, code) = openai_kind(e, refused);
    json!({"error": {
        "message": e.to_string(),
        "type": kind,
        "param": param,
        "code": code,
        "veritas_code": e.code.code(),
        "severity": e.severity,
        "detail": e.detail,
    }})
}

fn error_response(rt: &Runtime, e: ErrorBody, counted: bool) -> Response {
    if !counted {
        rt.metrics.count_error(e.code);
    }
    respond(&e, false, None)
}

fn respond(e: &ErrorBody, refused: bool, param: Option<&str>) -> Response {
    let (status, _, _) = openai_kind(e, refused);
    let body = Json(error_json(e, refused, param));
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        let retry = [(
            axum::http::header::RETRY_AFTER,
            RETRY_AFTER_SECS.to_string(),
        )];
        return (status, retry, body).into_response();
    }
    (status, body).into_response()
}

/// A request refused before it ran, and the field at fault when there is one.
struct Refusal {
    error: ErrorBody,
    param: Option<&'static str>,
}

impl From<ErrorBody> for Refusal {
    fn from(error: ErrorBody) -> Self {
        Refusal { error, param: None }
    }
}

fn invalid(detail: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::IpcProtocolError, detail)
}

/// A well-formed request asking for what the inference cannot do: refused as an inference
/// request (E4001, HTTP 400) naming the field, not as a malformed IPC message.
fn unsupported(field: &'static str, what: &str) -> Refusal {
    Refusal {
        error: ErrorBody::new(
            ErrorCode::InferenceFailed,
            format!("{what}; remove `{field}` from the request and send it again"),
        ),
        param: Some(field),
    }
}

fn refused(rt: &Runtime, r: Refusal) -> Response {
    rt.metrics.count_error(r.error.code);
    respond(&r.error, true, r.param)
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
    top_logprobs: Option<u32>,
    echo: Option<bool>,
    suffix: Option<String>,
    best_of: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    /// llama.cpp's (and vLLM's) extensions to OpenAI's sampling fields.
    top_k: Option<i32>,
    min_p: Option<f32>,
    repeat_penalty: Option<f32>,
    /// OpenAI's seeds are 64-bit; llama.cpp's are 32: the low half is used.
    seed: Option<i64>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    /// Token id (as a string, OpenAI's JSON) to a bias in [-100, 100].
    logit_bias: Option<std::collections::BTreeMap<String, f32>>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    functions: Option<Value>,
    response_format: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// llama.cpp's 32-bit seed for a client's 64-bit one: the low half, except that the value
/// llama.cpp reads as "draw a random seed" (u32::MAX, what -1 becomes) stays a fixed seed.
fn seed_u32(seed: i64) -> u32 {
    match seed as u32 {
        u32::MAX => u32::MAX - 1,
        s => s,
    }
}

/// A field that is absent, null or empty asks for nothing.
fn asks(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

impl Common {
    /// The decoding the request asks for, or the field the runtime cannot honour.
    fn decoding(&self) -> Result<Decoding, Refusal> {
        if self.n.is_some_and(|n| n != 1) || self.best_of.is_some_and(|n| n != 1) {
            return Err(unsupported(
                "n",
                "only one choice per request is supported (n = 1)",
            ));
        }
        if matches!(&self.logprobs, Some(v) if !v.is_null() && v != &json!(false) && v != &json!(0))
            || self.top_logprobs.is_some_and(|n| n > 0)
        {
            return Err(unsupported("logprobs", "logprobs are not supported"));
        }
        if self.echo == Some(true) {
            return Err(unsupported("echo", "echo is not supported"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(unsupported("suffix", "suffix is not supported"));
        }
        if asks(&self.tools) || asks(&self.functions) {
            return Err(unsupported(
                "tools",
                "tool calls are not supported by this runtime",
            ));
        }
        if matches!(&self.tool_choice, Some(v) if !v.is_null() && v != &json!("none")) {
            return Err(unsupported(
                "tool_choice",
                "tool calls are not supported by this runtime",
            ));
        }
        if let Some(f) = self.response_format.as_ref().filter(|v| !v.is_null()) {
            if f.get("type").and_then(Value::as_str) != Some("text") {
                return Err(unsupported(
                    "response_format",
                    "only text answers are supported (response_format {\"type\": \"text\"})",
                ));
            }
        }
        let stop = match &self.stop {
            None | Some(Value::Null) => Vec::new(),
            // An empty string asks for no stop string (what clients send as "none").
            Some(Value::String(s)) if s.is_empty() => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Refusal {
                    error: invalid("stop must be a string or an array of strings"),
                    param: Some("stop"),
                })?,
            Some(_) => {
                return Err(Refusal {
                    error: invalid("stop must be a string or an array of strings"),
                    param: Some("stop"),
                })
            }
        };
        let logit_bias = match &self.logit_bias {
            None => Vec::new(),
            Some(map) => map
                .iter()
                .map(|(token, bias)| token.parse::<u32>().map(|t| (t, *bias)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| Refusal {
                    error: invalid("logit_bias keys must be token ids"),
                    param: Some("logit_bias"),
                })?,
        };
        let decoding = Decoding {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            seed: self.seed.map(seed_u32),
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            logit_bias,
            stop,
        };
        if let Some((field, why)) = decoding.invalid_field() {
            return Err(Refusal {
                error: ErrorBody::new(
                    ErrorCode::InferenceFailed,
                    format!("invalid `{field}`: {why}"),
                ),
                param: Some(field),
            });
        }
        Ok(decoding)
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

/// OpenAI's `finish_reason` for ours.
fn finish_reason(ours: &str) -> &'static str {
    match ours {
        "eos" | "stop" => "stop",
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
        Err((status, e)) => return unreadable(&rt, status, e),
    };
    let parsed = parse::<CompletionRequest>(&body).and_then(|r| {
        let decoding = r.common.decoding()?;
        let req = GenerateRequest {
            prompt: completion_prompt(&r.prompt)?,
            max_tokens: r.common.max_tokens.unwrap_or(DEFAULT_COMPLETION_TOKENS),
            model: r.common.model.clone(),
            messages: Vec::new(),
            decoding,
        };
        Ok((r.common, req))
    });
    match parsed {
        Ok((common, req)) => serve(rt, Api::Completions, &common, req, Length::AtMost).await,
        Err(e) => refused(&rt, e),
    }
}

pub async fn chat_completions(State(rt): State<Arc<Runtime>>, body: axum::body::Body) -> Response {
    let body = match read_body(&rt, body).await {
        Ok(b) => b,
        Err((status, e)) => return unreadable(&rt, status, e),
    };
    let parsed = parse::<ChatRequest>(&body).and_then(|r| {
        let decoding = r.common.decoding()?;
        if r.messages.is_empty() {
            return Err(Refusal {
                error: invalid("messages must not be empty"),
                param: Some("messages"),
            });
        }
        let messages = r
            .messages
            .iter()
            .map(|m| {
                Ok(ChatTurn {
                    role: m.role.clone(),
                    content: message_text(m)?,
                })
            })
            .collect::<Result<Vec<_>, ErrorBody>>()?;
        // No default length for chat: the rest of the context window, as OpenAI does. Only
        // the worker knows how many tokens the prompt really is, so it lowers the bound to
        // what the window leaves after the prompt.
        let (max_tokens, length) = match r.common.max_completion_tokens.or(r.common.max_tokens) {
            Some(max) => (max, Length::AtMost),
            None => (u32::MAX, Length::Fit),
        };
        let req = GenerateRequest {
            prompt: String::new(),
            max_tokens,
            model: r.common.model.clone(),
            messages,
            decoding,
        };
        Ok((r.common, req, length))
    });
    match parsed {
        Ok((common, req, length)) => serve(rt, Api::Chat, &common, req, length).await,
        Err(e) => refused(&rt, e),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| invalid(format!("invalid request body: {e}")).into())
}

/// A body above `--max-frame` (413) or too slow (408), as on `/v1/generate`.
fn unreadable(rt: &Runtime, status: StatusCode, e: ErrorBody) -> Response {
    rt.metrics.count_error(e.code);
    (status, Json(error_json(&e, true, None))).into_response()
}

/// Runs one request: a JSON answer, or an event stream when `stream` is set. A streamed
/// request that fails before its first piece (refused at admission, unknown model, prompt
/// too long) is answered with a plain error and its status, as a client expects; a failure
/// after that ends the stream with an error event.
async fn serve(
    rt: Arc<Runtime>,
    api: Api,
    common: &Common,
    req: GenerateRequest,
    length: Length,
) -> Response {
    // Answers name the model as the client did when it used one of its served names.
    let alias = common.model.clone().filter(|m| rt.is_served_alias(m));
    let alias_shown = alias.clone();
    let named = move |mut r: GenerateResponse| {
        if let Some(a) = &alias {
            r.model = a.clone();
        }
        r
    };
    if !common.stream {
        return match rt.generate_with(req, length, None).await {
            Ok(r) => Json(answer(api, &named(r))).into_response(),
            // `generate` has counted it.
            Err(e) => error_response(&rt, e, true),
        };
    }
    let include_usage = common
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
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
        model: alias_shown
            .clone()
            .or_else(|| rt.served_model().map(|m| m.name))
            .unwrap_or_default(),
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
            Early::Done(r) => Ok(named(r)),
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
                            break r.unwrap_or_else(|_| Err(ErrorBody::new(ErrorCode::InferenceFailed, "generation ended without an answer"))).map(&named);
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
                if !send(error_json(&e, false, None)).await {
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
            let mut data: Vec<Value> = report
                .models
                .iter()
                .map(|m| {
                    json!({
                        "id": m.name, "object": "model", "created": 0, "owned_by": "veritas-spark",
                        "version": m.version, "state": m.state,
                    })
                })
                .collect();
            // The served model's other names (`--served-model-name`), each saying what it is.
            if let Some(served) = rt.served_model() {
                data.extend(rt.cfg.served_model_names.iter().map(|alias| {
                    json!({
                        "id": alias, "object": "model", "created": 0, "owned_by": "veritas-spark",
                        "root": served.name, "version": served.version, "state": "loaded",
                    })
                }));
            }
            Json(json!({"object": "list", "data": data})).into_response()
        }
        Err(e) => error_response(&rt, e, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn decoding(v: Value) -> Result<Decoding, Refusal> {
        serde_json::from_value::<Common>(v).unwrap().decoding()
    }

    #[test]
    fn sampling_fields_become_the_decoding() {
        let d = decoding(json!({
            "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 4294967298i64,
            "frequency_penalty": 0.5, "presence_penalty": -0.5, "repeat_penalty": 1.1,
            "logit_bias": {"17": 100, "3": -100}, "stop": "\n", "n": 1,
        }))
        .unwrap_or_else(|r| panic!("{}", r.error));
        assert_eq!(d.temperature, Some(0.7));
        assert_eq!(
            (d.top_k, d.top_p, d.min_p),
            (Some(40), Some(0.9), Some(0.05))
        );
        // 64-bit seeds keep their low 32 bits.
        assert_eq!(d.seed, Some(2));
        assert_eq!(d.logit_bias, vec![(17, 100.0), (3, -100.0)]);
        assert_eq!(d.stop, vec!["\n".to_string()]);
        assert!(d.samples());
        let stops = decoding(json!({"stop": ["a", "bc"]})).ok().unwrap();
        assert_eq!(stops.stop, ["a", "bc"]);
        assert!(!stops.samples(), "stop strings alone keep greedy decoding");
        let plain = decoding(
            json!({"stop": [], "logprobs": false, "tools": [], "response_format": {"type": "text"}}),
        );
        assert!(plain.ok().unwrap().is_default());
        assert!(!decoding(json!({"temperature": 0})).ok().unwrap().samples());
        assert!(decoding(json!({"stop": ""})).ok().unwrap().stop.is_empty());
        // -1 is a seed like any other, not llama.cpp's "random".
        assert_eq!(
            decoding(json!({"seed": -1})).ok().unwrap().seed,
            Some(u32::MAX - 1)
        );
    }

    #[test]
    fn options_the_runtime_cannot_honour_are_refused_naming_the_field() {
        for (bad, field) in [
            (json!({"n": 2}), "n"),
            (json!({"logprobs": 3}), "logprobs"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"echo": true}), "echo"),
            (json!({"suffix": "x"}), "suffix"),
            (json!({"tools": [{"type": "function"}]}), "tools"),
            (json!({"tool_choice": "required"}), "tool_choice"),
            (
                json!({"response_format": {"type": "json_object"}}),
                "response_format",
            ),
            (json!({"temperature": 2.5}), "temperature"),
            (json!({"top_p": -0.1}), "top_p"),
            (json!({"top_k": -1}), "top_k"),
            (json!({"presence_penalty": 3}), "presence_penalty"),
            (json!({"logit_bias": {"5": 101}}), "logit_bias"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"stop": [""]}), "stop"),
        ] {
            let r = decoding(bad.clone())
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            // A request the inference cannot run, naming the field: not a malformed message.
            assert_eq!(r.error.code, ErrorCode::InferenceFailed, "{bad}");
            assert_eq!(r.param, Some(field), "{bad}");
            assert!(r.error.detail.contains(field), "{bad}: {}", r.error);
        }
        for (bad, field) in [
            (json!({"stop": [1]}), "stop"),
            (json!({"logit_bias": {"x": 1}}), "logit_bias"),
        ] {
            let r = decoding(bad.clone())
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(r.error.code, ErrorCode::IpcProtocolError, "{bad}");
            assert_eq!(r.param, Some(field), "{bad}");
        }
    }

    #[test]
    fn errors_have_openai_statuses_and_types_and_keep_our_code() {
        let status = |code, refused| openai_kind(&ErrorBody::new(code, "x"), refused).0.as_u16();
        let v = error_json(
            &ErrorBody::new(ErrorCode::ModelNotFound, "no model x"),
            false,
            None,
        );
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["veritas_code"], "E2002");
        assert_eq!(v["error"]["message"], "E2002 MODEL_NOT_FOUND: no model x");
        assert_eq!(status(ErrorCode::ModelNotFound, false), 404);
        let v = error_json(
            &ErrorBody::new(ErrorCode::ContextOverflow, "long"),
            false,
            Some("max_tokens"),
        );
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        assert_eq!(v["error"]["param"], "max_tokens");
        assert_eq!(status(ErrorCode::ContextOverflow, false), 400);
        assert_eq!(status(ErrorCode::IpcProtocolError, true), 400);
        // E4001 is the client's request when refused before it ran, a failure after.
        assert_eq!(status(ErrorCode::InferenceFailed, true), 400);
        assert_eq!(status(ErrorCode::InferenceFailed, false), 500);
        // 429 (which clients retry by themselves) only for a full queue.
        let queue_full = ErrorBody::new(
            ErrorCode::ResourceLimitExceeded,
            format!(
                "{}: 18 requests admitted",
                super::super::admission::QUEUE_FULL
            ),
        );
        assert_eq!(openai_kind(&queue_full, false).0.as_u16(), 429);
        assert_eq!(status(ErrorCode::ResourceLimitExceeded, false), 500);
        assert_eq!(status(ErrorCode::HealthCheckFailed, false), 503);
        let r = respond(&queue_full, false, None);
        assert_eq!(r.headers()[axum::http::header::RETRY_AFTER], "1");
        let r = respond(
            &ErrorBody::new(ErrorCode::ContextOverflow, "long"),
            false,
            None,
        );
        assert!(r.headers().get(axum::http::header::RETRY_AFTER).is_none());
    }

    #[test]
    fn finish_reasons_map_to_openai_names() {
        assert_eq!(finish_reason("eos"), "stop");
        assert_eq!(finish_reason("stop"), "stop");
        assert_eq!(finish_reason("length"), "length");
    }
}
