//! Checks a registry entry's file before llama.cpp opens it, so every refusal names its
//! cause: missing or unreadable file, wrong format, truncated file, sha256 mismatch, or not
//! enough memory. Each maps to `E2001 MODEL_LOAD_FAILED`, except an unsupported GGUF
//! version, which is `E2003 MODEL_VERSION_MISMATCH`.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use veritas_gguf::Header;
use veritas_vocab::manifest::ModelEntry;
use veritas_vocab::{ErrorBody, ErrorCode};

/// A model file that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedModel {
    pub entry: ModelEntry,
    pub path: PathBuf,
    /// The open file every check read: load through it (not through `path`, which may
    /// name another file by then) so that what was verified is what is loaded.
    pub file: Arc<File>,
    pub size_bytes: u64,
    pub architecture: Option<String>,
    pub n_ctx_train: Option<u64>,
}

/// What the memory check compares: the bytes free for this model, and the contexts it will
/// get (their KV caches count next to the weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryCheck {
    /// Bytes free for the model; `None` reads `MemAvailable` from `/proc/meminfo`.
    pub available: Option<u64>,
    /// Tokens per context; 0 takes the model's training context.
    pub n_ctx: u32,
    /// Contexts the runtime creates (one per parallel slot).
    pub contexts: u32,
    /// The runtime's memory limit, when one set `available`: the error names it, since the
    /// machine's free memory (`free -h`) says nothing of it.
    pub limit: Option<u64>,
}

/// Bytes free for a new model: `MemAvailable`, and under a memory limit what the limit leaves
/// beside what the runtime already holds (the served model stays resident while the new one
/// loads).
pub fn available_memory(limit: Option<u64>, in_use: u64, mem_available: Option<u64>) -> u64 {
    let under_limit = limit.map(|l| l.saturating_sub(in_use));
    match (under_limit, mem_available) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => u64::MAX,
    }
}

/// Verifies `entry`'s file under `model_dir`. `memory_budget` is the bytes the model may use;
/// `None` reads `MemAvailable` from `/proc/meminfo`. Contexts are not counted; see
/// [`verify_model_with`].
pub fn verify_model(
    model_dir: &Path,
    entry: &ModelEntry,
    memory_budget: Option<u64>,
) -> Result<VerifiedModel, ErrorBody> {
    verify_model_with(
        model_dir,
        entry,
        MemoryCheck {
            available: memory_budget,
            n_ctx: 0,
            contexts: 0,
            limit: None,
        },
    )
}

/// Verifies `entry`'s file under `model_dir`, counting the KV caches of the contexts the
/// runtime will create in the memory the model needs.
pub fn verify_model_with(
    model_dir: &Path,
    entry: &ModelEntry,
    memory: MemoryCheck,
) -> Result<VerifiedModel, ErrorBody> {
    let load_failed = |detail: String| ErrorBody::new(ErrorCode::ModelLoadFailed, detail);
    if entry.format != "gguf" {
        return Err(load_failed(format!(
            "model {} has format {:?}; this runtime loads only \"gguf\" (check model format compatibility)",
            entry.name, entry.format
        )));
    }
    let path = model_dir.join(&entry.file);
    let shown = path.display();
    let open_err = |e: io::Error| {
        // Out of descriptors or memory is the process's state, not the model's: E3003,
        // which a restart retries, never E2001 blaming a good file.
        if matches!(
            e.raw_os_error(),
            Some(libc_errno::EMFILE | libc_errno::ENFILE | libc_errno::ENOMEM)
        ) {
            return ErrorBody::new(
                ErrorCode::ResourceLimitExceeded,
                format!("cannot open {shown}: {e} (the runtime is out of file descriptors or memory; check open connections and the open-files limit, ulimit -n)"),
            );
        }
        let why = match e.kind() {
            io::ErrorKind::NotFound => {
                format!("model file {shown} does not exist (check: ls -la {shown})")
            }
            io::ErrorKind::PermissionDenied => {
                format!("cannot read {shown}: permission denied (verify read permissions on the model directory)")
            }
            _ => format!("cannot read {shown}: {e}"),
        };
        load_failed(why)
    };
    // One open for every check and for the load: a path can be re-pointed between checks.
    let file = File::open(&path).map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    if !meta.is_file() {
        return Err(load_failed(format!("{shown} is not a regular file")));
    }
    let size = meta.len();
    let header = read_gguf(&file, size).map_err(|e| match e {
        veritas_gguf::Error::UnsupportedVersion(_) => {
            ErrorBody::new(ErrorCode::ModelVersionMismatch, format!("{shown}: {e}"))
        }
        veritas_gguf::Error::Io(_) => load_failed(format!("cannot read {shown}: {e}")),
        // Every other reader error is a damaged or hostile file.
        _ => load_failed(format!(
            "{shown}: {e} (verify the model file is not corrupted)"
        )),
    })?;
    let actual = sha256_reader({
        let mut f = &file;
        f.seek(SeekFrom::Start(0)).map_err(open_err)?;
        f
    })
    .map_err(open_err)?;
    if !actual.eq_ignore_ascii_case(&entry.sha256) {
        return Err(load_failed(format!(
            "{shown}: sha256 mismatch: manifest pins {}, file is {actual} (file corrupted or replaced; check: sha256sum {shown})",
            entry.sha256
        )));
    }
    // mmap'd weights plus the runtime's working set, plus the KV cache of every context:
    // for a long-context model the caches dwarf the weights.
    let weights = size.saturating_add(size / 10);
    let n_ctx = match memory.n_ctx {
        0 => u64::from(crate::default_n_ctx(
            n_ctx_train(&header).map_or(0, |n| n.min(u64::from(u32::MAX)) as u32),
        )),
        n => u64::from(n),
    };
    let kv = kv_cache_bytes(&header, n_ctx).saturating_mul(u64::from(memory.contexts));
    let need = weights.saturating_add(kv);
    let available = match memory.available {
        Some(b) => b,
        None => mem_available().unwrap_or(u64::MAX),
    };
    if need > available {
        let whose = match memory.limit {
            Some(limit) => format!(
                "under the runtime's memory limit of {limit} bytes (its cgroup's, or --memory-limit; check: veritas-spark health --verbose; raise the limit, or lower --ctx-size or --parallel)"
            ),
            None => "(check: free -h; lower --ctx-size or --parallel)".to_string(),
        };
        return Err(load_failed(format!(
            "not enough memory: model {} needs about {need} bytes (weights {weights}, KV cache {kv} for {} contexts of {n_ctx} tokens), {available} bytes available {whose}",
            entry.name, memory.contexts
        )));
    }
    Ok(VerifiedModel {
        entry: entry.clone(),
        path,
        file: Arc::new(file),
        size_bytes: size,
        architecture: header.get_str("general.architecture").map(str::to_owned),
        n_ctx_train: n_ctx_train(&header),
    })
}

/// The header of the open `file` of `size` bytes, checked against that size.
fn read_gguf(file: &File, size: u64) -> Result<Header, veritas_gguf::Error> {
    let header = veritas_gguf::read_header(BufReader::new(file))?;
    header.check_file_size(size)?;
    Ok(header)
}

fn n_ctx_train(header: &Header) -> Option<u64> {
    let arch = header.get_str("general.architecture")?;
    header.get_u64(&format!("{arch}.context_length"))
}

/// f16 keys and values of every layer for `n_ctx` tokens (llama.cpp's default cache type);
/// 0 when the header does not say the shape.
pub fn kv_cache_bytes(header: &Header, n_ctx: u64) -> u64 {
    let Some(arch) = header.get_str("general.architecture") else {
        return 0;
    };
    let key = |k: &str| header.get_u64(&format!("{arch}.{k}"));
    let (Some(n_layer), Some(n_embd)) = (key("block_count"), key("embedding_length")) else {
        return 0;
    };
    let n_head = key("attention.head_count").unwrap_or(1).max(1);
    let n_head_kv = key("attention.head_count_kv").unwrap_or(n_head);
    let n_embd_kv = n_embd.saturating_mul(n_head_kv) / n_head;
    2u64.saturating_mul(n_layer)
        .saturating_mul(n_ctx)
        .saturating_mul(n_embd_kv)
        .saturating_mul(2)
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    sha256_reader(File::open(path)?)
}

/// sha256 of everything `f` yields, as lowercase hex.
pub fn sha256_reader(mut f: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// `MemAvailable` in bytes.
pub fn mem_available() -> Option<u64> {
    meminfo_field("MemAvailable:")
}

pub fn mem_total() -> Option<u64> {
    meminfo_field("MemTotal:")
}

fn meminfo_field(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The errno values the verification tells apart (Linux numbering, the only platform served).
mod libc_errno {
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
}
