//! An encoder for the primitives of the format (the fixtures generator writes its models
//! with it, and the tests here build valid and hostile files with it). Every method writes
//! little-endian bytes and counts them, so callers can pad to the alignment.

use std::io::{self, Write};

use crate::value::Value;
use crate::GgmlType;

pub struct Encoder<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> Encoder<W> {
    pub fn new(out: W) -> Self {
        Self { out, written: 0 }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    pub fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    pub fn u32(&mut self, v: u32) -> io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }

    pub fn u64(&mut self, v: u64) -> io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }

    pub fn string(&mut self, s: &str) -> io::Result<()> {
        self.u64(s.len() as u64)?;
        self.bytes(s.as_bytes())
    }

    pub fn f32s(&mut self, values: &[f32]) -> io::Result<()> {
        // Chunked so a large tensor does not need a second full-size buffer.
        let mut buf = Vec::with_capacity(4 * 1024);
        for chunk in values.chunks(1024) {
            buf.clear();
            for v in chunk {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            self.bytes(&buf)?;
        }
        Ok(())
    }

    /// Zero bytes up to the next multiple of `alignment`.
    pub fn pad_to(&mut self, alignment: u64) -> io::Result<()> {
        let rem = self.written % alignment;
        if rem != 0 {
            let zeros = vec![0u8; (alignment - rem) as usize];
            self.bytes(&zeros)?;
        }
        Ok(())
    }

    /// The file header: magic, `version`, and the two counts.
    pub fn header(&mut self, version: u32, n_tensors: u64, n_kv: u64) -> io::Result<()> {
        self.bytes(&crate::MAGIC)?;
        self.u32(version)?;
        self.u64(n_tensors)?;
        self.u64(n_kv)
    }

    /// A value without its type tag (the tag is written by [`Encoder::kv`] or the array header).
    fn value_body(&mut self, v: &Value) -> io::Result<()> {
        match v {
            Value::U8(x) => self.bytes(&x.to_le_bytes()),
            Value::I8(x) => self.bytes(&x.to_le_bytes()),
            Value::U16(x) => self.bytes(&x.to_le_bytes()),
            Value::I16(x) => self.bytes(&x.to_le_bytes()),
            Value::U32(x) => self.bytes(&x.to_le_bytes()),
            Value::I32(x) => self.bytes(&x.to_le_bytes()),
            Value::F32(x) => self.bytes(&x.to_le_bytes()),
            Value::Bool(x) => self.bytes(&[u8::from(*x)]),
            Value::String(s) => self.string(s),
            Value::U64(x) => self.bytes(&x.to_le_bytes()),
            Value::I64(x) => self.bytes(&x.to_le_bytes()),
            Value::F64(x) => self.bytes(&x.to_le_bytes()),
            Value::Array(elem, items) => {
                self.u32(*elem as u32)?;
                self.u64(items.len() as u64)?;
                for item in items {
                    if item.value_type() != *elem {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!(
                                "array of {elem:?} holds an element of type {:?}",
                                item.value_type()
                            ),
                        ));
                    }
                    self.value_body(item)?;
                }
                Ok(())
            }
        }
    }

    /// One metadata pair.
    pub fn kv(&mut self, key: &str, v: &Value) -> io::Result<()> {
        self.string(key)?;
        self.u32(v.value_type() as u32)?;
        self.value_body(v)
    }

    /// One tensor info (`offset` relative to the data section).
    pub fn tensor_info(
        &mut self,
        name: &str,
        ne: &[u64],
        ggml_type: GgmlType,
        offset: u64,
    ) -> io::Result<()> {
        self.string(name)?;
        self.u32(ne.len() as u32)?;
        for d in ne {
            self.u64(*d)?;
        }
        self.u32(ggml_type.id())?;
        self.u64(offset)
    }
}
