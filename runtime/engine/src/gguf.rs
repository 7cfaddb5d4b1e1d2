//! A reader for the GGUF container header: enough to name what is wrong with a file
//! (not GGUF, wrong version, truncated header, tensors past the end of the file) and to
//! read the few metadata values the runtime reports.

use std::collections::BTreeMap;
use std::io::{self, Read};

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const SUPPORTED_VERSION: u32 = 3;
const DEFAULT_ALIGNMENT: u64 = 32;
/// Caps that keep a hostile header from making us allocate gigabytes.
const MAX_STRING: u64 = 1 << 24;
const MAX_ARRAY: u64 = 1 << 26;
const MAX_COUNT: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file: magic is {0:02x?}, expected \"GGUF\"")]
    NotGguf([u8; 4]),
    #[error("GGUF version {0} is not supported (this runtime reads version {SUPPORTED_VERSION})")]
    UnsupportedVersion(u32),
    #[error("truncated header: the file ends inside the GGUF metadata")]
    TruncatedHeader,
    #[error("corrupt header: {0}")]
    Corrupt(String),
    #[error("truncated file: {size} bytes, but tensor data needs {needed} bytes")]
    TruncatedData { size: u64, needed: u64 },
    #[error(transparent)]
    Io(io::Error),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(usize),
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute file offset where tensor data begins.
    pub data_offset: u64,
}

impl Header {
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        match self.metadata.get(key) {
            Some(Value::UInt(v)) => Some(*v),
            Some(Value::Int(v)) if *v >= 0 => Some(*v as u64),
            _ => None,
        }
    }

    /// Bytes the file must have for every tensor's data to be present.
    pub fn required_file_size(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| self.data_offset + t.offset + tensor_bytes(t))
            .max()
            .unwrap_or(self.data_offset)
    }
}

/// Size in bytes of a tensor's data, for the types whose block layout is known; other
/// quantisations count one byte per element, which is a safe lower bound.
fn tensor_bytes(t: &TensorInfo) -> u64 {
    let elems: u64 = t.dims.iter().product();
    match t.ggml_type {
        0 => elems * 4,       // F32
        1 | 30 => elems * 2,  // F16, BF16
        2 => elems / 32 * 18, // Q4_0
        8 => elems / 32 * 34, // Q8_0
        _ => elems / 2,
    }
}

struct Cursor<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Cursor<R> {
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, GgufError> {
        let mut buf = vec![0u8; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => GgufError::TruncatedHeader,
                _ => GgufError::Io(e),
            })?;
        self.pos += n as u64;
        Ok(buf)
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(GgufError::Corrupt(format!("string of {len} bytes")));
        }
        let b = self.bytes(len as usize)?;
        String::from_utf8(b).map_err(|_| GgufError::Corrupt("string is not UTF-8".into()))
    }
    fn scalar(&mut self, ty: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::UInt(self.bytes(1)?[0] as u64),
            1 => Value::Int(self.bytes(1)?[0] as i8 as i64),
            2 => Value::UInt(u16::from_le_bytes(self.bytes(2)?.try_into().unwrap()) as u64),
            3 => Value::Int(i16::from_le_bytes(self.bytes(2)?.try_into().unwrap()) as i64),
            4 => Value::UInt(self.u32()? as u64),
            5 => Value::Int(self.u32()? as i32 as i64),
            6 => Value::Float(f32::from_le_bytes(self.bytes(4)?.try_into().unwrap()) as f64),
            7 => Value::Bool(self.bytes(1)?[0] != 0),
            8 => Value::Str(self.string()?),
            10 => Value::UInt(self.u64()?),
            11 => Value::Int(self.u64()? as i64),
            12 => Value::Float(f64::from_le_bytes(self.bytes(8)?.try_into().unwrap())),
            other => return Err(GgufError::Corrupt(format!("unknown value type {other}"))),
        })
    }
    fn value(&mut self, ty: u32) -> Result<Value, GgufError> {
        if ty != 9 {
            return self.scalar(ty);
        }
        let elem_ty = self.u32()?;
        let n = self.u64()?;
        if n > MAX_ARRAY || elem_ty == 9 {
            return Err(GgufError::Corrupt(format!(
                "array of {n} elements of type {elem_ty}"
            )));
        }
        for _ in 0..n {
            self.scalar(elem_ty)?;
        }
        Ok(Value::Array(n as usize))
    }
}

/// Reads the header of a GGUF stream (the stream is left after the tensor infos).
pub fn read_header<R: Read>(r: R) -> Result<Header, GgufError> {
    let mut c = Cursor { inner: r, pos: 0 };
    let magic: [u8; 4] = match c.bytes(4) {
        Ok(b) => b.try_into().unwrap(),
        Err(GgufError::TruncatedHeader) => return Err(GgufError::NotGguf([0; 4])),
        Err(e) => return Err(e),
    };
    if &magic != MAGIC {
        return Err(GgufError::NotGguf(magic));
    }
    let version = c.u32()?;
    if version != SUPPORTED_VERSION {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = c.u64()?;
    let n_kv = c.u64()?;
    if n_tensors > MAX_COUNT || n_kv > MAX_COUNT {
        return Err(GgufError::Corrupt(format!(
            "{n_tensors} tensors and {n_kv} metadata keys"
        )));
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string()?;
        let ty = c.u32()?;
        let v = c.value(ty)?;
        metadata.insert(key, v);
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = c.string()?;
        let n_dims = c.u32()?;
        if n_dims > 4 {
            return Err(GgufError::Corrupt(format!(
                "tensor {name} has {n_dims} dimensions"
            )));
        }
        let dims = (0..n_dims)
            .map(|_| c.u64())
            .collect::<Result<Vec<_>, _>>()?;
        let ggml_type = c.u32()?;
        let offset = c.u64()?;
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    let align = match metadata.get("general.alignment") {
        Some(Value::UInt(a)) if *a > 0 => *a,
        _ => DEFAULT_ALIGNMENT,
    };
    let data_offset = c.pos.div_ceil(align) * align;
    Ok(Header {
        version,
        metadata,
        tensors,
        data_offset,
    })
}
