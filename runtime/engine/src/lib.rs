//! Model verification and inference on llama.cpp.
//!
//! The runtime names a model's failure causes itself before llama.cpp sees the file
//! ([`verify`]): llama.cpp reports most bad files only as a null pointer, and some abort
//! the process. [`Engine`] is the model the inference worker serves; [`Batch`] decodes its
//! requests together, one llama.cpp context for all of them.

pub mod verify;

mod batch;
mod engine;

pub use batch::{Batch, Event, MAX_SEQUENCES};
pub use engine::{
    default_n_ctx, find_stop, held_back, Budget, Engine, EngineOptions, Generation, PieceDecoder,
    Prompt, Slot, DEFAULT_MAX_CTX,
};
pub use verify::{verify_model, verify_model_with, MemoryCheck, VerifiedModel};
