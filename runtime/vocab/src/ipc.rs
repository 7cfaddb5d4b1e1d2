//! The IPC protocol: versioned, length-prefixed frames carrying JSON messages.
//!
//! ```text
//! +------+------+---------+------+----------------+-------------------+
//! | 'V'  | 'S'  | version | kind | length (u32 BE)| payload (length)  |
//! +------+------+---------+------+----------------+-------------------+
//! ```
//! The same framing carries operator requests on the runtime socket ([`Request`] /
//! [`Response`]) and the daemon ↔ inference worker channel ([`WorkerCommand`] /
//! [`WorkerEvent`]). A frame with a bad magic, unknown version or a length above the
//! receiver's maximum is answered with `E1003 IPC_PROTOCOL_ERROR` and the connection is
//! closed (its byte stream can no longer be trusted); a well-framed payload that is not a
//! valid message is answered with `E1003` and the connection stays open.

use crate::error::ErrorBody;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

pub const MAGIC: [u8; 2] = *b"VS";
/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u8 = 1;
/// Payload kind: UTF-8 JSON. The only kind defined so far.
pub const KIND_JSON: u8 = 0;
pub const HEADER_LEN: usize = 8;
/// Default largest payload accepted (1 MiB): prompts are text, nothing legitimate is larger.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame magic {0:02x?} (expected \"VS\"); is this a veritas-spark socket?")]
    BadMagic([u8; 2]),
    #[error("unsupported protocol version {got} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion { got: u8 },
    #[error("unsupported payload kind {0}")]
    UnsupportedKind(u8),
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    Oversize { len: u32, max: u32 },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl FrameError {
    /// Whether the byte stream is still aligned on a frame boundary after this error.
    pub fn stream_usable(&self) -> bool {
        matches!(self, FrameError::Malformed(_))
    }
}

/// A decoded header: the payload length to read next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub kind: u8,
    pub len: u32,
}

pub fn decode_header(bytes: &[u8; HEADER_LEN], max: u32) -> Result<Header, FrameError> {
    let magic = [bytes[0], bytes[1]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let version = bytes[2];
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion { got: version });
    }
    let kind = bytes[3];
    if kind != KIND_JSON {
        return Err(FrameError::UnsupportedKind(kind));
    }
    let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len > max {
        return Err(FrameError::Oversize { len, max });
    }
    Ok(Header { version, kind, len })
}

pub fn encode_header(len: u32) -> [u8; HEADER_LEN] {
    let l = len.to_be_bytes();
    [
        MAGIC[0],
        MAGIC[1],
        PROTOCOL_VERSION,
        KIND_JSON,
        l[0],
        l[1],
        l[2],
        l[3],
    ]
}

/// Serialises `msg` into one complete frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let payload = serde_json::to_vec(msg).expect("protocol messages always serialise");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&encode_header(payload.len() as u32));
    out.extend_from_slice(&payload);
    out
}

pub fn decode<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(payload).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Reads one frame's payload from a blocking stream. `Ok(None)` is a clean end of stream
/// on a frame boundary.
pub fn read_frame<R: Read>(r: &mut R, max: u32) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match r.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let h = decode_header(&header, max)?;
    let mut payload = vec![0u8; h.len as usize];
    r.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(Some(payload))
}

pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    w.write_all(&encode(msg))?;
    w.flush()
}

// ---------------------------------------------------------------------------------------
// Operator requests on the runtime socket.

/// One request; `id` is echoed in the response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    Health {
        verbose: bool,
    },
    Live,
    Ready,
    ModelsList,
    ModelsLoad {
        name: String,
        version: Option<String>,
    },
    MetricsSummary,
    TelemetryStatus,
    Generate(GenerateRequest),
    /// Run the sandbox self-test inside the inference worker.
    SandboxSelftest,
    /// Chaos: accepted only by a daemon started with fault injection enabled.
    Fault {
        kind: FaultKind,
    },
}

/// Faults the chaos harness can ask a daemon to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The worker makes a syscall outside its seccomp allow-list (E3002).
    SandboxViolation,
    /// The worker aborts (E4001 for whatever was in flight).
    WorkerAbort,
    /// The worker sends an event frame larger than the daemon reads: the daemon must stop
    /// and restart it (E4001 for whatever was in flight), never stay wedged behind it.
    UnreadableEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // one short-lived value per request; boxing buys nothing
pub enum Outcome {
    Ok(Reply),
    Error(ErrorBody),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Health(HealthReport),
    Probe(ProbeReport),
    Models(ModelsReport),
    ModelLoaded(ModelInfo),
    MetricsSummary(MetricsSummary),
    Telemetry(TelemetryStatus),
    Generated(GenerateResponse),
    /// Sandbox self-test probes, as the worker ran them.
    Selftest(SelftestReport),
    /// A fault was injected.
    FaultInjected {
        kind: FaultKind,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelftestReport {
    /// Worker pid the probes ran in.
    pub pid: Option<u32>,
    /// Layers as the worker applied them.
    pub sandbox: Option<serde_json::Value>,
    /// One entry per attempted operation.
    pub probes: Vec<serde_json::Value>,
    /// Every probe found what it expected.
    pub all_ok: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// The text to continue; empty when `messages` carries a conversation instead.
    #[serde(default)]
    pub prompt: String,
    /// Tokens to generate at most.
    pub max_tokens: u32,
    /// `name` or `name@version`; the loaded model when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// A conversation, rendered by the worker with the model's own chat template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<ChatTurn>,
    #[serde(default, skip_serializing_if = "Decoding::is_default")]
    pub decoding: Decoding,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatTurn {
    pub role: String,
    pub content: String,
}

/// Most stop strings a request may carry (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;

/// How the next token is chosen and where generation stops. The default is greedy
/// decoding with no stop string: deterministic, what the harness and canary comparisons
/// rely on. Any sampling field switches to sampling at OpenAI's default temperature (1)
/// unless `temperature` is given; `temperature: 0` is greedy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decoding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    /// Seed of the random draw; the same seed and request give the same text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u32>,
    /// llama.cpp's multiplicative repeat penalty (1 is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// Token id and the bias added to its logit (-100 bans it, 100 all but forces it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logit_bias: Vec<(u32, f32)>,
    /// Generation ends before the first of these strings; the string is not returned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

impl Decoding {
    pub fn is_default(&self) -> bool {
        self == &Decoding::default()
    }

    /// Whether a token is drawn at random (any sampling field set, temperature not 0).
    pub fn samples(&self) -> bool {
        match self.temperature {
            Some(t) => t > 0.0,
            None => {
                self.top_k.is_some()
                    || self.top_p.is_some()
                    || self.min_p.is_some()
                    || self.seed.is_some()
            }
        }
    }

    /// The first field out of range, as `(field, why)`: the values OpenAI accepts, and
    /// what llama.cpp's samplers need to stay finite.
    pub fn invalid_field(&self) -> Option<(&'static str, String)> {
        let range = |field: &'static str, v: Option<f32>, lo: f32, hi: f32| {
            v.filter(|v| !(v.is_finite() && (lo..=hi).contains(v)))
                .map(|v| (field, format!("{field} {v} is outside [{lo}, {hi}]")))
        };
        range("temperature", self.temperature, 0.0, 2.0)
            .or_else(|| range("top_p", self.top_p, 0.0, 1.0))
            .or_else(|| range("min_p", self.min_p, 0.0, 1.0))
            .or_else(|| range("frequency_penalty", self.frequency_penalty, -2.0, 2.0))
            .or_else(|| range("presence_penalty", self.presence_penalty, -2.0, 2.0))
            .or_else(|| range("repeat_penalty", self.repeat_penalty, 0.01, 10.0))
            .or_else(|| {
                self.top_k
                    .filter(|k| *k < 0)
                    .map(|k| ("top_k", format!("top_k {k} is negative")))
            })
            .or_else(|| {
                self.logit_bias
                    .iter()
                    .find(|(_, bias)| !(bias.is_finite() && (-100.0..=100.0).contains(bias)))
                    .map(|(token, bias)| {
                        (
                            "logit_bias",
                            format!("bias {bias} of token {token} is outside [-100, 100]"),
                        )
                    })
            })
            .or_else(|| {
                (self.stop.len() > MAX_STOP_STRINGS).then(|| {
                    (
                        "stop",
                        format!(
                            "{} stop strings, at most {MAX_STOP_STRINGS} are accepted",
                            self.stop.len()
                        ),
                    )
                })
            })
            .or_else(|| {
                self.stop
                    .iter()
                    .any(String::is_empty)
                    .then(|| ("stop", "a stop string is empty".to_string()))
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateResponse {
    pub model: String,
    pub version: String,
    pub text: String,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    /// `length` (max_tokens reached), `eos` (the model ended) or `stop` (a stop string).
    pub finish_reason: String,
    pub duration_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    Unloaded,
    Loading,
    Ready,
    Failed,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Unloaded => "unloaded",
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    pub format: String,
    pub size_bytes: u64,
    /// Context window the runtime serves with.
    pub n_ctx: u32,
    pub n_vocab: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub status: HealthStatus,
    pub version: String,
    pub deployment: String,
    pub uptime_seconds: u64,
    pub model_state: ModelState,
    pub model: Option<ModelInfo>,
    /// The last model error, when the state is `failed`.
    pub last_error: Option<ErrorBody>,
    pub checks: Vec<Check>,
    pub queue: QueueInfo,
    pub worker: WorkerInfo,
    /// Sandbox layers of the inference worker, as it reported them: in the verbose report
    /// only (`null` otherwise; the `sandbox` check names missing layers in both).
    pub sandbox: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub inflight: u32,
    pub capacity: u32,
    pub parallel: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub pid: Option<u32>,
    pub restarts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelsReport {
    pub model_dir: String,
    pub models: Vec<RegistryModel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryModel {
    pub name: String,
    pub version: String,
    pub file: String,
    pub format: String,
    pub sha256: String,
    pub size_bytes: Option<u64>,
    /// `ready`, `loading`, `failed` for the loaded model; `available` or `missing` otherwise.
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSummary {
    pub deployment: String,
    pub requests_success: u64,
    pub requests_error: u64,
    pub error_rate: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub inflight: u32,
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: u64,
    pub errors_by_code: Vec<(String, u64)>,
    /// Inference slots (`--parallel`).
    #[serde(default)]
    pub slots: u32,
    /// Requests waiting for a slot now.
    #[serde(default)]
    pub queued: u32,
    /// The last `window_seconds`: requests admitted, and those that found every slot busy.
    #[serde(default)]
    pub recent: RecentLoad,
}

/// Admissions over a recent window: requests waiting for a slot are what makes latency grow
/// under resource contention.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentLoad {
    pub window_seconds: u32,
    pub requests: u64,
    pub waited_for_slot: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryStatus {
    pub metrics_enabled: bool,
    pub metrics_address: Option<String>,
    pub http_address: Option<String>,
    pub socket: String,
    pub log_format: String,
    pub series: u32,
}

// ---------------------------------------------------------------------------------------
// Daemon ↔ inference worker.

/// Sent by the daemon to its worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerCommand {
    Generate {
        id: u64,
        prompt: String,
        max_tokens: u32,
        /// `max_tokens` is only a ceiling: lowered to what the context window leaves after
        /// the prompt's real token count (the chat API's default length).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fit_context: bool,
        /// Send each piece of text as it is decoded ([`WorkerEvent::Piece`]) before the
        /// final [`WorkerEvent::Generated`].
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stream: bool,
        /// A conversation for the model's chat template (then `prompt` is empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        messages: Vec<ChatTurn>,
        #[serde(default, skip_serializing_if = "Decoding::is_default")]
        decoding: Decoding,
    },
    /// Sandbox self-test: attempt forbidden operations and report.
    Selftest,
    Fault {
        kind: FaultKind,
    },
    Shutdown,
    /// The daemon gave up on request `id` (it timed out): stop decoding it and answer it
    /// with a failure, so its slot is free again. Unknown ids are ignored.
    Cancel {
        id: u64,
    },
}

/// Sent by the worker to the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerEvent {
    Ready {
        n_ctx: u32,
        n_vocab: u32,
        sandbox: Option<serde_json::Value>,
    },
    LoadFailed {
        error: ErrorBody,
    },
    /// Text decoded so far for a streamed request (whole characters).
    Piece {
        id: u64,
        text: String,
    },
    Generated {
        id: u64,
        text: String,
        prompt_tokens: u32,
        generated_tokens: u32,
        finish_reason: String,
    },
    Failed {
        id: u64,
        error: ErrorBody,
    },
    Selftest {
        probes: Vec<serde_json::Value>,
        all_ok: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use proptest::prelude::*;

    #[test]
    fn request_round_trips() {
        let req = Request {
            id: 7,
            op: Op::Generate(GenerateRequest {
                prompt: "hi".into(),
                max_tokens: 4,
                model: None,
                ..Default::default()
            }),
        };
        let frame = encode(&req);
        let payload = read_frame(&mut &frame[..], DEFAULT_MAX_FRAME)
            .unwrap()
            .unwrap();
        assert_eq!(decode::<Request>(&payload).unwrap(), req);
    }

    #[test]
    fn error_response_shape() {
        let resp = Response {
            id: 1,
            outcome: Outcome::Error(ErrorBody::new(ErrorCode::ModelNotFound, "no model x")),
        };
        let v = serde_json::to_value(&resp).unwrap();
        assert_eq!(v["outcome"]["error"]["code"], "E2002");
    }

    #[test]
    fn header_rejections_are_typed() {
        let mut h = encode_header(10);
        h[0] = b'X';
        assert!(matches!(
            decode_header(&h, 100),
            Err(FrameError::BadMagic(_))
        ));
        let mut h = encode_header(10);
        h[2] = 9;
        assert!(matches!(
            decode_header(&h, 100),
            Err(FrameError::UnsupportedVersion { got: 9 })
        ));
        let h = encode_header(101);
        assert!(matches!(
            decode_header(&h, 100),
            Err(FrameError::Oversize { len: 101, max: 100 })
        ));
    }

    #[test]
    fn truncated_and_empty_streams() {
        assert!(read_frame(&mut &b""[..], 100).unwrap().is_none());
        assert!(matches!(
            read_frame(&mut &b"VS\x01"[..], 100),
            Err(FrameError::Truncated)
        ));
        let mut f = encode_header(5).to_vec();
        f.extend_from_slice(b"ab");
        assert!(matches!(
            read_frame(&mut &f[..], 100),
            Err(FrameError::Truncated)
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = &bytes[..];
            while let Ok(Some(p)) = read_frame(&mut r, 32) {
                let _ = decode::<Request>(&p);
            }
        }

        #[test]
        fn any_prompt_round_trips(prompt in ".*", max_tokens in 0u32..1000) {
            let req = Request { id: 1, op: Op::Generate(GenerateRequest { prompt, max_tokens, model: Some("m@1".into()), ..Default::default() }) };
            let payload = read_frame(&mut &encode(&req)[..], u32::MAX).unwrap().unwrap();
            prop_assert_eq!(decode::<Request>(&payload).unwrap(), req);
        }
    }
}
