//! Checks a registry entry's file before llama.cpp opens it, so every refusal names its
//! cause: missing or unreadable file, wrong format, truncated file, sha256 mismatch, or not
//! enough memory. Each maps to `E2001 MODEL_LOAD_FAILED`, except an unsupported GGUF
//! version, which is `E2003 MODEL_VERSION_MISMATCH`.

use crate::gguf::{self, GgufError};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use veritas_vocab::manifest::ModelEntry;
use veritas_vocab::{ErrorBody, ErrorCode};

/// A model file that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedModel {
    pub entry: ModelEntry,
    pub path: PathBuf,
    pub size_bytes: u64,
    pub architecture: Option<String>,
    pub n_ctx_train: Option<u64>,
}

/// Verifies `entry`'s file under `model_dir`. `memory_budget` is the bytes the model may use;
/// `None` reads `MemAvailable` from `/proc/meminfo`.
pub fn verify_model(
    model_dir: &Path,
    entry: &ModelEntry,
    memory_budget: Option<u64>,
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
    let meta = std::fs::metadata(&path).map_err(open_err)?;
    if !meta.is_file() {
        return Err(load_failed(format!("{shown} is not a regular file")));
    }
    let size = meta.len();
    let header = gguf::read_header(BufReader::new(File::open(&path).map_err(open_err)?)).map_err(
        |e| match e {
            GgufError::UnsupportedVersion(_) => {
                ErrorBody::new(ErrorCode::ModelVersionMismatch, format!("{shown}: {e}"))
            }
            GgufError::NotGguf(_) | GgufError::TruncatedHeader | GgufError::Corrupt(_) => {
                load_failed(format!(
                    "{shown}: {e} (verify the model file is not corrupted)"
                ))
            }
            other => load_failed(format!("cannot read {shown}: {other}")),
        },
    )?;
    let needed = header.required_file_size();
    if size < needed {
        return Err(load_failed(format!(
            "{shown}: {} (verify the model file is not corrupted)",
            GgufError::TruncatedData { size, needed }
        )));
    }
    let actual = sha256_file(&path).map_err(open_err)?;
    if !actual.eq_ignore_ascii_case(&entry.sha256) {
        return Err(load_failed(format!(
            "{shown}: sha256 mismatch: manifest pins {}, file is {actual} (file corrupted or replaced; check: sha256sum {shown})",
            entry.sha256
        )));
    }
    // mmap'd weights plus the runtime's working set; the KV cache of a context is small
    // next to the weights for the models this check guards against.
    let need = size + size / 10;
    let available = match memory_budget {
        Some(b) => b,
        None => mem_available().unwrap_or(u64::MAX),
    };
    if need > available {
        return Err(load_failed(format!(
            "not enough memory: model {} needs about {need} bytes, {available} bytes available (check: free -h)",
            entry.name
        )));
    }
    Ok(VerifiedModel {
        entry: entry.clone(),
        path,
        size_bytes: size,
        architecture: header.get_str("general.architecture").map(str::to_owned),
        n_ctx_train: header
            .get_str("general.architecture")
            .and_then(|a| header.get_u64(&format!("{a}.context_length"))),
    })
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
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
