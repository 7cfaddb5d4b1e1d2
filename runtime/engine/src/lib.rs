//! Model verification and inference on llama.cpp.
//!
//! The runtime names a model's failure causes itself before llama.cpp sees the file
//! ([`verify`]): llama.cpp reports most bad files only as a null pointer, and some abort
//! the process. [`Engine`] is the decode loop the inference worker runs; the benchmark
//! calls it directly as the in-process peer of the daemon.

pub mod verify;

mod engine;

pub use engine::{
    default_n_ctx, find_stop, held_back, Budget, Engine, EngineOptions, Generation, PieceDecoder,
    Prompt, Slot, DEFAULT_MAX_CTX,
};
pub use verify::{verify_model, verify_model_with, MemoryCheck, VerifiedModel};
