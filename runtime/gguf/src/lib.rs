//! The GGUF v3 container, read strictly: the one reader the runtime's model verification
//! and the fixtures generator's tests share.
//!
//! Layout of a GGUF file (all integers little-endian):
//!
//! ```text
//! magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//! kv_count     x (string key, u32 value_type, value)
//! tensor_count x (string name, u32 n_dims, n_dims x u64 ne, u32 ggml_type, u64 offset)
//! zero padding up to a multiple of `general.alignment` (default 32)
//! tensor data: each tensor at `data_offset + offset`, every offset a multiple of the alignment
//! ```
//!
//! A string is a `u64` byte length followed by UTF-8 bytes (no terminator). An array value is
//! a `u32` element type, a `u64` element count, then the elements. `ne[0]` is the
//! fastest-varying dimension (a row).
//!
//! The reader ([`read_header`]) applies llama.cpp's own loader rules (unique non-empty keys,
//! unique tensor names of at most 63 bytes, at most 4 dimensions, element counts that fit
//! an `i64`, known tensor types, rows a whole number of blocks, tensors contiguous and
//! aligned, `general.alignment` a `u32` power of two) plus its own: version 3 only, UTF-8
//! strings, and [`Limits`] on counts, lengths and the memory the parsed header may take.
//! Every size and offset the file supplies goes through checked arithmetic, so no input can
//! make it overflow, over-allocate or panic (a fuzz target under `fuzz/` exercises that).
//! Tensor byte sizes come from ggml's type table ([`GgmlType`]); [`quant`] writes (and reads
//! back) F16, Q8_0 and Q4_0 data.

pub mod quant;
mod read;
mod types;
mod value;
pub mod write;

pub use read::{
    read_file, read_header, read_header_with, Error, Header, Limits, Problem, TensorInfo,
    DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS, MAX_TENSOR_NAME, VERSION,
};
pub use types::GgmlType;
pub use value::{Value, ValueType};
