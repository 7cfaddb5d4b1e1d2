//! Building GGUF files for the tests: valid ones with any tensor types, and raw ones with
//! whatever a hostile writer would put in a field.

#![allow(dead_code)] // each test binary uses part of this

use veritas_gguf::write::Encoder;
use veritas_gguf::{GgmlType, Value, ValueType, VERSION};

pub struct Tensor {
    pub name: String,
    pub ne: Vec<u64>,
    pub ty: GgmlType,
}

impl Tensor {
    pub fn new(name: &str, ne: &[u64], ty: GgmlType) -> Self {
        Tensor {
            name: name.into(),
            ne: ne.to_vec(),
            ty,
        }
    }

    pub fn n_bytes(&self) -> u64 {
        self.ty.bytes_for(self.ne.iter().product()).unwrap()
    }
}

/// A small model-like file: a few metadata pairs of every kind and the given tensors,
/// laid out as llama.cpp writes them, with deterministic non-zero data.
pub fn valid_file(tensors: &[Tensor], alignment: u32) -> Vec<u8> {
    let kvs = vec![
        (
            "general.architecture".to_string(),
            Value::String("llama".into()),
        ),
        ("general.alignment".into(), Value::U32(alignment)),
        ("llama.context_length".into(), Value::U32(256)),
        ("llama.block_count".into(), Value::U64(2)),
        ("llama.rope.freq_base".into(), Value::F32(10_000.0)),
        ("some.signed".into(), Value::I64(-3)),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(
                ValueType::String,
                ["<unk>", "<s>", "é", ""]
                    .iter()
                    .map(|s| Value::String(s.to_string()))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(ValueType::F32, vec![Value::F32(0.5); 4]),
        ),
    ];
    let mut e = Encoder::new(Vec::new());
    e.header(VERSION, tensors.len() as u64, kvs.len() as u64)
        .unwrap();
    for (k, v) in &kvs {
        e.kv(k, v).unwrap();
    }
    let align = u64::from(alignment);
    let mut offset = 0;
    for t in tensors {
        e.tensor_info(&t.name, &t.ne, t.ty, offset).unwrap();
        offset += t.n_bytes().next_multiple_of(align);
    }
    if !tensors.is_empty() {
        e.pad_to(align).unwrap();
    }
    for (i, t) in tensors.iter().enumerate() {
        let data: Vec<u8> = (0..t.n_bytes()).map(|b| (b as u8) ^ (i as u8)).collect();
        e.bytes(&data).unwrap();
        e.pad_to(align).unwrap();
    }
    e.into_inner()
}

/// The sample most tests mutate: three tensors, one of them a 2-bit K-quant.
pub fn sample() -> Vec<u8> {
    valid_file(
        &[
            Tensor::new("token_embd.weight", &[8, 4], GgmlType::F32),
            Tensor::new("blk.0.attn_q.weight", &[256, 2], GgmlType::Q2K),
            Tensor::new("output_norm.weight", &[8], GgmlType::F16),
        ],
        32,
    )
}

/// A file written field by field (no checks): `body` writes after the 24-byte preamble.
pub fn raw(n_tensors: u64, n_kv: u64, body: impl FnOnce(&mut Encoder<Vec<u8>>)) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    e.header(VERSION, n_tensors, n_kv).unwrap();
    body(&mut e);
    e.into_inner()
}

/// One tensor info with raw fields.
pub fn tensor_info(e: &mut Encoder<Vec<u8>>, name: &str, ne: &[u64], ty: u32, offset: u64) {
    e.string(name).unwrap();
    e.u32(ne.len() as u32).unwrap();
    for d in ne {
        e.u64(*d).unwrap();
    }
    e.u32(ty).unwrap();
    e.u64(offset).unwrap();
}
