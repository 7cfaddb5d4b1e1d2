//! The model registry manifest: `<model-dir>/manifest.json`.
//!
//! One file lists every model the runtime may load. Each entry names the GGUF file
//! (relative to the model directory) and pins its sha256, so a corrupted or swapped
//! file is refused at load with `E2001` instead of producing garbage.

use serde::{Deserialize, Serialize};

/// File name of the manifest inside a model directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Manifest schema version this runtime reads.
pub const MANIFEST_SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    pub models: Vec<ModelEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Registry name, e.g. `tiny-llama`.
    pub name: String,
    /// Semantic version of the model artefact, e.g. `1.0.0`.
    pub version: String,
    /// Path of the model file relative to the model directory.
    pub file: String,
    /// Lower-case hex sha256 of the model file.
    pub sha256: String,
    /// Model file format; this runtime understands `gguf`.
    pub format: String,
}

impl Manifest {
    pub fn find(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }
}
