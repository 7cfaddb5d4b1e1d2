//! The clients the benchmark drives each system with: one blocking connection per client
//! thread (keep-alive HTTP, a Unix socket, a pipe), each request timed where noted.

use crate::BenchError;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{ChildStdin, ChildStdout};
use std::time::{Duration, Instant};
use veritas_vocab::ipc::{self, GenerateRequest, Op, Outcome, Reply, Request, Response};

/// A socket that answers nothing for this long has hung: the run stops instead of waiting.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// One answered request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Request latency in microseconds.
    pub us: u64,
    pub generated: u32,
}

/// A connection to one system that can run a generation request.
pub trait Target: Send {
    fn generate(&mut self, prompt: &str, max_tokens: u32) -> Result<Sample, BenchError>;
}

/// The daemon's own protocol on its Unix socket. Answers are read through a buffer: a frame
/// that arrived whole costs one `recv`, as the socket floor's `read_exact` does, instead of
/// one for the header and one for the payload.
pub struct IpcTarget {
    stream: BufReader<UnixStream>,
    next_id: u64,
}

impl IpcTarget {
    pub fn connect(socket: &Path) -> Result<IpcTarget, BenchError> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| BenchError::io(format!("connect to {}", socket.display()), e))?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
        stream.set_write_timeout(Some(IO_TIMEOUT)).ok();
        Ok(IpcTarget {
            stream: BufReader::new(stream),
            next_id: 1,
        })
    }
}

impl IpcTarget {
    /// Sends one request and reads its answer: the answer, its payload size, and the time
    /// from sending to having read it (encoding and decoding are outside).
    fn exchange(&mut self, op: Op) -> Result<(Outcome, usize, Duration), BenchError> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = ipc::encode(&Request { id, op });
        let t0 = Instant::now();
        self.stream
            .get_mut()
            .write_all(&frame)
            .map_err(|e| BenchError::io("send an IPC request", e))?;
        let payload = ipc::read_frame(&mut self.stream, ipc::DEFAULT_MAX_FRAME)
            .map_err(|e| BenchError::Protocol(format!("IPC answer: {e}")))?
            .ok_or_else(|| BenchError::Protocol("the daemon closed the socket".into()))?;
        let took = t0.elapsed();
        let resp: Response =
            ipc::decode(&payload).map_err(|e| BenchError::Protocol(e.to_string()))?;
        Ok((resp.outcome, payload.len(), took))
    }

    /// One `health` round trip (not verbose: what a liveness probe sends); returns its
    /// duration in nanoseconds and the size of the answer's payload.
    pub fn health(&mut self) -> Result<(u64, usize), BenchError> {
        let (outcome, size, took) = self.exchange(Op::Health { verbose: false })?;
        match outcome {
            Outcome::Ok(Reply::Health(_)) => Ok((took.as_nanos() as u64, size)),
            other => Err(BenchError::Protocol(format!(
                "unexpected answer to health: {other:?}"
            ))),
        }
    }
}

/// The floor under an IPC round trip: the same request and answer sizes over a Unix socket
/// pair, answered by a thread that only reads a frame and writes the bytes back (no
/// parsing, no runtime). `calls` round trips; durations in nanoseconds.
pub fn socket_floor(request: usize, answer: usize, calls: u32) -> Result<Vec<u64>, BenchError> {
    let (mut a, mut b) =
        UnixStream::pair().map_err(|e| BenchError::io("create a socket pair", e))?;
    a.set_read_timeout(Some(IO_TIMEOUT)).ok();
    b.set_read_timeout(Some(IO_TIMEOUT)).ok();
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; request];
        let reply = vec![b'x'; answer];
        // Ends when the client side closes (read_exact fails at end of file).
        while b.read_exact(&mut buf).is_ok() {
            b.write_all(&reply)?;
        }
        Ok(())
    });
    let req = vec![b'r'; request];
    let mut got = vec![0u8; answer];
    let mut out = Vec::with_capacity(calls as usize);
    for _ in 0..calls {
        let t0 = Instant::now();
        a.write_all(&req)
            .map_err(|e| BenchError::io("write to the socket pair", e))?;
        a.read_exact(&mut got)
            .map_err(|e| BenchError::io("read from the socket pair", e))?;
        out.push(t0.elapsed().as_nanos() as u64);
    }
    drop(a);
    echo.join()
        .map_err(|_| BenchError::Protocol("the echo thread panicked".into()))?
        .map_err(|e| BenchError::io("echo", e))?;
    Ok(out)
}

impl Target for IpcTarget {
    fn generate(&mut self, prompt: &str, max_tokens: u32) -> Result<Sample, BenchError> {
        let (outcome, _, took) = self.exchange(Op::Generate(GenerateRequest {
            prompt: prompt.to_string(),
            max_tokens,
            model: None,
            ..Default::default()
        }))?;
        match outcome {
            Outcome::Ok(Reply::Generated(g)) => Ok(Sample {
                us: took.as_micros() as u64,
                generated: g.generated_tokens,
            }),
            Outcome::Error(e) => Err(BenchError::Refused(e.to_string())),
            Outcome::Ok(other) => Err(BenchError::Protocol(format!(
                "unexpected IPC reply {other:?}"
            ))),
        }
    }
}

/// `POST /v1/completions` on a keep-alive HTTP/1.1 connection: the API both servers speak.
pub struct HttpTarget {
    addr: String,
    model: String,
    /// Extra JSON fields for this peer (llama-server: `cache_prompt: false`).
    extra: serde_json::Map<String, serde_json::Value>,
    conn: Option<BufReader<TcpStream>>,
}

impl HttpTarget {
    pub fn new(
        addr: &str,
        model: &str,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> HttpTarget {
        HttpTarget {
            addr: addr.to_string(),
            model: model.to_string(),
            extra,
            conn: None,
        }
    }

    fn connection(&mut self) -> Result<&mut BufReader<TcpStream>, BenchError> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.addr)
                .map_err(|e| BenchError::io(format!("connect to {}", self.addr), e))?;
            // Requests are small: Nagle would add its delay to every one of them.
            s.set_nodelay(true).ok();
            s.set_read_timeout(Some(IO_TIMEOUT)).ok();
            s.set_write_timeout(Some(IO_TIMEOUT)).ok();
            self.conn = Some(BufReader::new(s));
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }
}

impl Target for HttpTarget {
    fn generate(&mut self, prompt: &str, max_tokens: u32) -> Result<Sample, BenchError> {
        let mut body = serde_json::json!({
            "model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
        });
        for (k, v) in &self.extra {
            body[k] = v.clone();
        }
        let body = body.to_string();
        let request = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // A kept-alive connection the server closed while it sat idle (llama-server's
        // keep-alive timeout is 5 s; another system's workload can take longer) answers
        // nothing: reconnect and send again, once. Connecting is never inside the timing.
        let mut attempt = 0;
        let (t0, status, text, close) = loop {
            attempt += 1;
            let reused = self.conn.is_some();
            let conn = self.connection()?;
            let t0 = Instant::now();
            let sent = conn.get_mut().write_all(request.as_bytes());
            let answer = match sent {
                Ok(()) => read_http_response(conn),
                Err(e) => Err(BenchError::io("send an HTTP request", e)),
            };
            match answer {
                Ok((status, text, close)) => break (t0, status, text, close),
                Err(_) if reused && attempt == 1 => self.conn = None,
                Err(e) => return Err(e),
            }
        };
        let us = t0.elapsed().as_micros() as u64;
        if close {
            self.conn = None;
        }
        if status != 200 {
            return Err(BenchError::Refused(format!("HTTP {status}: {text}")));
        }
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| BenchError::Protocol(format!("completion answer: {e}: {text}")))?;
        let generated = v["usage"]["completion_tokens"].as_u64().ok_or_else(|| {
            BenchError::Protocol(format!("completion answer without usage: {text}"))
        })? as u32;
        Ok(Sample { us, generated })
    }
}

/// Reads one response: status, body, and whether the server closes the connection.
fn read_http_response(r: &mut BufReader<TcpStream>) -> Result<(u16, String, bool), BenchError> {
    let io = |e| BenchError::io("read an HTTP response", e);
    let mut line = String::new();
    r.read_line(&mut line).map_err(io)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BenchError::Protocol(format!("bad HTTP status line {line:?}")))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(io)? == 0 {
            return Err(BenchError::Protocol(
                "connection closed in the headers".into(),
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => length = v.parse::<usize>().ok(),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).map_err(io)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| BenchError::Protocol(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                line.clear();
                r.read_line(&mut line).map_err(io)?;
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).map_err(io)?;
            line.clear();
            r.read_line(&mut line).map_err(io)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body).map_err(io)?;
    } else {
        r.read_to_end(&mut body).map_err(io)?;
        close = true;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned(), close))
}

/// A blocking `GET` on a fresh connection: probes.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), BenchError> {
    let s =
        TcpStream::connect(addr).map_err(|e| BenchError::io(format!("connect to {addr}"), e))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut r = BufReader::new(s);
    write!(
        r.get_mut(),
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| BenchError::io("send a probe", e))?;
    let (status, body, _) = read_http_response(&mut r)?;
    Ok((status, body))
}

/// The raw loop's process: one JSON line per request; the latency is the one the process
/// measured around its decode loop (the physical limit has no transport).
pub struct RawTarget {
    pub stdin: ChildStdin,
    pub stdout: BufReader<ChildStdout>,
}

impl Target for RawTarget {
    fn generate(&mut self, prompt: &str, max_tokens: u32) -> Result<Sample, BenchError> {
        let line = serde_json::json!({"prompt": prompt, "max_tokens": max_tokens}).to_string();
        writeln!(self.stdin, "{line}").map_err(|e| BenchError::io("write to the raw loop", e))?;
        self.stdin
            .flush()
            .map_err(|e| BenchError::io("write to the raw loop", e))?;
        let mut answer = String::new();
        if self
            .stdout
            .read_line(&mut answer)
            .map_err(|e| BenchError::io("read from the raw loop", e))?
            == 0
        {
            return Err(BenchError::Protocol(
                "the raw loop exited (see its log)".into(),
            ));
        }
        let v: serde_json::Value = serde_json::from_str(&answer)
            .map_err(|e| BenchError::Protocol(format!("raw loop answer {answer:?}: {e}")))?;
        match (v["us"].as_u64(), v["generated"].as_u64()) {
            (Some(us), Some(g)) => Ok(Sample {
                us,
                generated: g as u32,
            }),
            _ => Err(BenchError::Protocol(format!("raw loop answer {answer:?}"))),
        }
    }
}
