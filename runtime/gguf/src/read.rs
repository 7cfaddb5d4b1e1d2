//! The reader: parses everything before the tensor data and checks it the way llama.cpp's
//! own loader does (and a little more), with checked arithmetic on every count, size and
//! offset the file supplies and a memory budget instead of trusting any length.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read};

use crate::value::{Value, ValueType};
use crate::GgmlType;

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The only container version this reader accepts (v1 and v2 files are refused as
/// unsupported versions; llama.cpp writes v3 since 2023).
pub const VERSION: u32 = 3;
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u32 = 32;
/// ggml's tensor rank limit (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// ggml's tensor name buffer (`GGML_MAX_NAME`), terminator included.
pub const MAX_TENSOR_NAME: usize = 63;

/// Bounds on what a header may claim. A length from the file never sizes an allocation
/// directly: vectors grow only as bytes actually arrive, and everything kept is charged to
/// `max_memory`, so the memory a hostile header costs is bounded whatever it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one string (key, value, tensor name).
    pub max_string: u64,
    /// Elements of one metadata array.
    pub max_array: u64,
    /// Tensors, and metadata pairs, in one file.
    pub max_count: u64,
    /// Bytes the parsed header may occupy in memory (values, strings, tensor infos).
    pub max_memory: u64,
}

impl Default for Limits {
    /// Far above real models (a 256k-token vocabulary with scores and types is about
    /// 40 MB parsed) and far below what would hurt a node.
    fn default() -> Self {
        Limits {
            max_string: 16 << 20,
            max_array: 1 << 26,
            max_count: 1 << 20,
            max_memory: 256 << 20,
        }
    }
}

/// Why a file is not a GGUF model this runtime can read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The first (up to) four bytes.
    #[error("not a GGUF file: {}", describe_start(.0))]
    NotGguf(Vec<u8>),
    #[error("GGUF version {0} is not supported (this runtime reads version {VERSION})")]
    UnsupportedVersion(u32),
    #[error("truncated header: the file ends at byte {at}, inside {what}")]
    TruncatedHeader { at: u64, what: &'static str },
    #[error("corrupt header at byte {at}: {problem}")]
    Corrupt { at: u64, problem: Problem },
    #[error("truncated file: {size} bytes, but the tensor data needs {needed} bytes")]
    TruncatedData { size: u64, needed: u64 },
    #[error("failed to read the GGUF header: {0}")]
    Io(io::Error),
}

/// What is wrong inside a header that was read to the point of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    #[error("{what} of {len} exceeds the limit {limit}")]
    TooLarge {
        what: &'static str,
        len: u64,
        limit: u64,
    },
    #[error("unknown metadata value type {0}")]
    UnknownValueType(u32),
    #[error("an array of arrays (not allowed in GGUF)")]
    NestedArray,
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("empty metadata key")]
    EmptyKey,
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    #[error("general.alignment must be a u32 power of two, found {0}")]
    BadAlignment(String),
    #[error("tensor name of {0} bytes (ggml allows {MAX_TENSOR_NAME})")]
    TensorNameTooLong(u64),
    #[error("duplicate tensor {0:?}")]
    DuplicateTensor(String),
    #[error("tensor {tensor:?} has {n_dims} dimensions (ggml allows {MAX_DIMS})")]
    TooManyDimensions { tensor: String, n_dims: u32 },
    #[error("tensor {tensor:?} of shape {ne:?} has more elements than ggml can count (2^63 - 1)")]
    TooManyElements { tensor: String, ne: Vec<u64> },
    #[error("tensor {tensor:?} has unknown ggml type {id}")]
    UnknownTensorType { tensor: String, id: u32 },
    #[error("tensor {tensor:?} of type {ty} has rows of {row} elements, not a multiple of its block size {}", ty.block_size())]
    PartialBlock {
        tensor: String,
        ty: GgmlType,
        row: u64,
    },
    #[error("tensor {tensor:?} takes more than 2^64 bytes")]
    TensorTooLarge { tensor: String },
    #[error("tensor {tensor:?} is at data offset {offset}, expected {expected} (tensors are contiguous and aligned)")]
    MisplacedTensor {
        tensor: String,
        offset: u64,
        expected: u64,
    },
    #[error("the data section ends past 2^64 bytes")]
    DataTooLarge,
}

/// One tensor as described in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions, `ne[0]` (a row's length) first.
    pub ne: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset relative to the start of the data section.
    pub offset: u64,
    /// Bytes of data, from the type's block layout.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Elements (the reader checked that the product fits; saturating for hand-built infos).
    pub fn n_elements(&self) -> u64 {
        self.ne
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }
}

/// Everything in a GGUF file before its tensor data.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub version: u32,
    /// In file order; keys are unique.
    pub metadata: Vec<(String, Value)>,
    /// In file order; names are unique.
    pub tensors: Vec<TensorInfo>,
    /// `general.alignment`, or [`DEFAULT_ALIGNMENT`].
    pub alignment: u32,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
    /// Bytes of the data section: every tensor padded to the alignment.
    pub data_size: u64,
}

impl Header {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Bytes the file needs for all tensor data to be present (the reader checked that
    /// this sum fits in a `u64`; saturating for hand-built headers).
    pub fn required_file_size(&self) -> u64 {
        self.data_offset.saturating_add(self.data_size)
    }

    /// Refuses a file of `size` bytes that ends before its tensor data does.
    pub fn check_file_size(&self, size: u64) -> Result<(), Error> {
        let needed = self.required_file_size();
        if size < needed {
            return Err(Error::TruncatedData { size, needed });
        }
        Ok(())
    }
}

/// Reads the header of a GGUF stream positioned at its start, with the default [`Limits`].
/// The stream is left just after the tensor infos; the file's length is checked separately
/// with [`Header::check_file_size`] (or use [`read_file`]).
pub fn read_header(reader: impl Read) -> Result<Header, Error> {
    read_header_with(reader, &Limits::default())
}

/// [`read_header`] then [`Header::check_file_size`] on a whole file in memory.
pub fn read_file(bytes: &[u8]) -> Result<Header, Error> {
    let header = read_header(bytes)?;
    header.check_file_size(bytes.len() as u64)?;
    Ok(header)
}

/// [`read_header`] with explicit limits.
pub fn read_header_with(reader: impl Read, limits: &Limits) -> Result<Header, Error> {
    let mut d = Decoder {
        inner: reader,
        pos: 0,
        limits: *limits,
        memory: 0,
    };
    d.header()
}

fn describe_start(start: &[u8]) -> String {
    if start.is_empty() {
        "the file is empty".into()
    } else {
        format!("it starts with {start:02x?}, expected \"GGUF\"")
    }
}

/// A tensor name or metadata key shortened for an error message.
fn shown(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

struct Decoder<R> {
    inner: R,
    /// Bytes consumed so far (the offset of the next byte).
    pos: u64,
    limits: Limits,
    /// Bytes charged against `limits.max_memory`.
    memory: u64,
}

impl<R: Read> Decoder<R> {
    fn corrupt<T>(&self, at: u64, problem: Problem) -> Result<T, Error> {
        Err(Error::Corrupt { at, problem })
    }

    fn check(&self, at: u64, what: &'static str, len: u64, limit: u64) -> Result<(), Error> {
        if len > limit {
            return self.corrupt(at, Problem::TooLarge { what, len, limit });
        }
        Ok(())
    }

    /// Counts `bytes` of parsed header against the memory budget.
    fn charge(&mut self, at: u64, bytes: u64) -> Result<(), Error> {
        self.memory = self.memory.saturating_add(bytes);
        self.check(
            at,
            "parsed header size",
            self.memory,
            self.limits.max_memory,
        )
    }

    fn exact<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let mut b = [0u8; N];
        self.inner
            .read_exact(&mut b)
            .map_err(|e| self.io(e, what))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn io(&self, e: io::Error, what: &'static str) -> Error {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::TruncatedHeader { at: self.pos, what },
            _ => Error::Io(e),
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.exact(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.exact(what)?))
    }

    /// A length-prefixed UTF-8 string of at most `limit` bytes.
    fn string(&mut self, what: &'static str, limit: u64) -> Result<String, Error> {
        let at = self.pos;
        let len = self.u64(what)?;
        self.check(at, "string length", len, limit)?;
        self.charge(
            at,
            (std::mem::size_of::<String>() as u64).saturating_add(len),
        )?;
        // `take` + `read_to_end` grows the buffer only as bytes arrive: a claimed length
        // beyond the end of the file costs nothing.
        let mut buf = Vec::new();
        (&mut self.inner)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|e| self.io(e, what))?;
        // `buf.len() <= len`, so this cannot overflow.
        self.pos += buf.len() as u64;
        if buf.len() as u64 != len {
            return Err(Error::TruncatedHeader { at: self.pos, what });
        }
        String::from_utf8(buf).or_else(|_| self.corrupt(at, Problem::InvalidUtf8(what)))
    }

    fn value_type(&mut self) -> Result<ValueType, Error> {
        let at = self.pos;
        let raw = self.u32("a metadata value type")?;
        match ValueType::from_u32(raw) {
            Some(t) => Ok(t),
            None => self.corrupt(at, Problem::UnknownValueType(raw)),
        }
    }

    fn value(&mut self, ty: ValueType) -> Result<Value, Error> {
        const WHAT: &str = "a metadata value";
        let at = self.pos;
        self.charge(at, std::mem::size_of::<Value>() as u64)?;
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.exact(WHAT)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.exact(WHAT)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.exact(WHAT)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.exact(WHAT)?)),
            ValueType::U32 => Value::U32(self.u32(WHAT)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.exact(WHAT)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.exact(WHAT)?)),
            ValueType::Bool => Value::Bool(self.exact::<1>(WHAT)?[0] != 0),
            ValueType::String => {
                Value::String(self.string("a string value", self.limits.max_string)?)
            }
            ValueType::U64 => Value::U64(self.u64(WHAT)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.exact(WHAT)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.exact(WHAT)?)),
            ValueType::Array => {
                let elem = self.value_type()?;
                if elem == ValueType::Array {
                    // llama.cpp refuses nested arrays too.
                    return self.corrupt(at, Problem::NestedArray);
                }
                let n = self.u64("an array length")?;
                self.check(at, "array length", n, self.limits.max_array)?;
                // Capacity from the claim only up to a small bound; the rest grows as
                // elements are actually read (and charged).
                let mut items = Vec::with_capacity(n.min(1024) as usize);
                for _ in 0..n {
                    items.push(self.value(elem)?);
                }
                Value::Array(elem, items)
            }
        })
    }

    fn header(&mut self) -> Result<Header, Error> {
        let mut magic = Vec::with_capacity(4);
        (&mut self.inner)
            .take(4)
            .read_to_end(&mut magic)
            .map_err(Error::Io)?;
        self.pos = magic.len() as u64;
        if magic != MAGIC {
            return Err(Error::NotGguf(magic));
        }
        let version = self.u32("the version")?;
        if version != VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let at = self.pos;
        let n_tensors = self.u64("the tensor count")?;
        self.check(at, "tensor count", n_tensors, self.limits.max_count)?;
        let at = self.pos;
        let n_kv = self.u64("the metadata count")?;
        self.check(at, "metadata count", n_kv, self.limits.max_count)?;

        let metadata = self.metadata(n_kv)?;
        let alignment = alignment(&metadata).map_err(|problem| Error::Corrupt { at, problem })?;
        let tensors = self.tensor_infos(n_tensors)?;
        let header_end = self.pos;
        self.layout(version, metadata, tensors, alignment, header_end)
    }

    fn metadata(&mut self, n_kv: u64) -> Result<Vec<(String, Value)>, Error> {
        let mut metadata = Vec::with_capacity(n_kv.min(256) as usize);
        let mut seen = HashSet::new();
        for _ in 0..n_kv {
            let at = self.pos;
            let key = self.string("a metadata key", self.limits.max_string)?;
            if key.is_empty() {
                return self.corrupt(at, Problem::EmptyKey);
            }
            if seen.contains(&key) {
                return self.corrupt(at, Problem::DuplicateKey(shown(&key)));
            }
            seen.insert(key.clone());
            self.charge(at, key.len() as u64)?;
            let ty = self.value_type()?;
            let value = self.value(ty)?;
            metadata.push((key, value));
        }
        Ok(metadata)
    }

    fn tensor_infos(&mut self, n_tensors: u64) -> Result<Vec<(u64, TensorInfo)>, Error> {
        let mut tensors = Vec::with_capacity(n_tensors.min(1024) as usize);
        let mut seen = HashSet::new();
        for _ in 0..n_tensors {
            let at = self.pos;
            let name = self.string("a tensor name", self.limits.max_string)?;
            if name.len() > MAX_TENSOR_NAME {
                return self.corrupt(at, Problem::TensorNameTooLong(name.len() as u64));
            }
            if !seen.insert(name.clone()) {
                return self.corrupt(at, Problem::DuplicateTensor(name));
            }
            let n_dims = self.u32("a tensor's dimension count")?;
            if n_dims > MAX_DIMS {
                return self.corrupt(
                    at,
                    Problem::TooManyDimensions {
                        tensor: name,
                        n_dims,
                    },
                );
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(self.u64("a tensor dimension")?);
            }
            // ggml holds the element count in an i64.
            let n_elements = ne
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64 && ne.iter().all(|&d| d <= i64::MAX as u64));
            let Some(n_elements) = n_elements else {
                return self.corrupt(at, Problem::TooManyElements { tensor: name, ne });
            };
            let id = self.u32("a tensor type")?;
            let Some(ty) = GgmlType::from_id(id) else {
                return self.corrupt(at, Problem::UnknownTensorType { tensor: name, id });
            };
            let row = ne.first().copied().unwrap_or(1);
            if row % u64::from(ty.block_size()) != 0 {
                return self.corrupt(
                    at,
                    Problem::PartialBlock {
                        tensor: name,
                        ty,
                        row,
                    },
                );
            }
            let Some(n_bytes) = ty.bytes_for(n_elements) else {
                return self.corrupt(at, Problem::TensorTooLarge { tensor: name });
            };
            let offset = self.u64("a tensor offset")?;
            self.charge(
                at,
                (std::mem::size_of::<TensorInfo>() + name.len() + 8 * ne.len()) as u64,
            )?;
            tensors.push((
                at,
                TensorInfo {
                    name,
                    ne,
                    ggml_type: ty,
                    offset,
                    n_bytes,
                },
            ));
        }
        Ok(tensors)
    }

    /// Places the data section and checks that the tensors tile it as llama.cpp requires:
    /// in file order, each at the end of the previous one padded to the alignment.
    fn layout(
        &self,
        version: u32,
        metadata: Vec<(String, Value)>,
        tensors: Vec<(u64, TensorInfo)>,
        alignment: u32,
        header_end: u64,
    ) -> Result<Header, Error> {
        let align = u64::from(alignment);
        let pad = |n: u64| n.checked_next_multiple_of(align);
        // llama.cpp seeks to the aligned data section only when there are tensors.
        let data_offset = if tensors.is_empty() {
            Some(header_end)
        } else {
            pad(header_end)
        };
        let Some(data_offset) = data_offset else {
            return self.corrupt(header_end, Problem::DataTooLarge);
        };
        let mut data_size = 0u64;
        for (at, t) in &tensors {
            if t.offset != data_size {
                return self.corrupt(
                    *at,
                    Problem::MisplacedTensor {
                        tensor: t.name.clone(),
                        offset: t.offset,
                        expected: data_size,
                    },
                );
            }
            data_size = match pad(t.n_bytes).and_then(|n| data_size.checked_add(n)) {
                Some(n) => n,
                None => return self.corrupt(*at, Problem::DataTooLarge),
            };
        }
        if data_offset.checked_add(data_size).is_none() {
            return self.corrupt(header_end, Problem::DataTooLarge);
        }
        Ok(Header {
            version,
            metadata,
            tensors: tensors.into_iter().map(|(_, t)| t).collect(),
            alignment,
            data_offset,
            data_size,
        })
    }
}

/// `general.alignment`: a `u32` power of two, as llama.cpp requires.
fn alignment(metadata: &[(String, Value)]) -> Result<u32, Problem> {
    match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((_, Value::U32(a))) if a.is_power_of_two() => Ok(*a),
        Some((_, other)) => Err(Problem::BadAlignment(Shown(other).to_string())),
    }
}

/// A value in an error message: scalars as they are, strings and arrays summarised.
struct Shown<'a>(&'a Value);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::String(s) => write!(f, "the string {:?}", shown(s)),
            Value::Array(t, items) => write!(f, "an array of {} {t:?}", items.len()),
            v => write!(f, "{v:?}"),
        }
    }
}
