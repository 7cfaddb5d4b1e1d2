//! The model registry: `<model-dir>/manifest.json`, name and version lookups (E2002, E2003),
//! and the `models list` report.

use super::Runtime;
use veritas_vocab::ipc::{ModelsReport, RegistryModel};
use veritas_vocab::manifest::{Manifest, ModelEntry, MANIFEST_FILE, MANIFEST_SCHEMA};
use veritas_vocab::{ErrorBody, ErrorCode};

/// Largest `manifest.json` read (a registry of thousands of models is far below it).
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Splits `name@version`.
pub fn parse_model_ref(s: &str) -> (&str, Option<&str>) {
    match s.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    }
}

impl Runtime {
    /// Reads `manifest.json`. Only a regular file is read, opened without blocking: this runs
    /// on the daemon's async threads, and a FIFO (or a device) put there would otherwise stall
    /// every probe behind a read that never returns. The registry is small; a larger file
    /// is refused rather than read.
    pub fn manifest(&self) -> Result<Manifest, ErrorBody> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.cfg.model_dir.join(MANIFEST_FILE);
        let unreadable = |why: String| {
            ErrorBody::new(
                ErrorCode::ModelNotFound,
                format!("cannot read registry manifest {}: {why}", path.display()),
            )
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| match e.kind() {
                // The registry is there and this process may not read it: a load failure of
                // the guide's "read permissions on model directory", not a missing model.
                std::io::ErrorKind::PermissionDenied => ErrorBody::new(
                    ErrorCode::ModelLoadFailed,
                    format!(
                        "cannot read registry manifest {}: {e}; verify read permissions on the \
                         model directory {} for the runtime's user (uid {})",
                        path.display(),
                        self.cfg.model_dir.display(),
                        // SAFETY: geteuid(2) cannot fail.
                        unsafe { libc::geteuid() }
                    ),
                ),
                _ => unreadable(e.to_string()),
            })?;
        let meta = file.metadata().map_err(|e| unreadable(e.to_string()))?;
        if !meta.is_file() {
            return Err(unreadable(format!(
                "it is not a regular file ({:?})",
                meta.file_type()
            )));
        }
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(unreadable(format!(
                "{} bytes, above the {MAX_MANIFEST_BYTES}-byte limit of a registry",
                meta.len()
            )));
        }
        let mut text = String::new();
        file.take(MAX_MANIFEST_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| unreadable(e.to_string()))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
            ErrorBody::new(
                ErrorCode::ModelLoadFailed,
                format!("registry manifest {} is invalid: {e}", path.display()),
            )
        })?;
        if manifest.schema != MANIFEST_SCHEMA {
            return Err(ErrorBody::new(
                ErrorCode::ModelVersionMismatch,
                format!(
                    "registry manifest schema {} is not supported (expected {MANIFEST_SCHEMA})",
                    manifest.schema
                ),
            ));
        }
        Ok(manifest)
    }

    /// Looks `name[@version]` up in the registry: E2002 when absent, E2003 when the version
    /// asked for is not the one registered.
    pub fn resolve(&self, model_ref: &str) -> Result<ModelEntry, ErrorBody> {
        let (name, version) = parse_model_ref(model_ref);
        let manifest = self.manifest()?;
        let entry = manifest.find(name).ok_or_else(|| {
            let known: Vec<_> = manifest.models.iter().map(|m| m.name.as_str()).collect();
            ErrorBody::new(
                ErrorCode::ModelNotFound,
                format!(
                    "model {name:?} is not in the registry {} (known: {})",
                    self.cfg.model_dir.display(),
                    known.join(", ")
                ),
            )
        })?;
        if let Some(v) = version {
            if v != entry.version {
                return Err(ErrorBody::new(
                    ErrorCode::ModelVersionMismatch,
                    format!(
                        "model {name} version {v} requested, registry has version {}",
                        entry.version
                    ),
                ));
            }
        }
        Ok(entry.clone())
    }

    pub fn models(&self) -> Result<ModelsReport, ErrorBody> {
        let manifest = self.manifest()?;
        let slot = self.slot.lock().unwrap();
        let served = slot.life.model().cloned();
        let state = slot.life.model_state();
        drop(slot);
        let models = manifest
            .models
            .iter()
            .map(|m| {
                // stat(2) never waits on what the file is (a FIFO included).
                let size = std::fs::metadata(self.cfg.model_dir.join(&m.file))
                    .ok()
                    .map(|md| md.len());
                let loaded = served
                    .as_ref()
                    .is_some_and(|l| l.name == m.name && l.version == m.version);
                let state = if loaded {
                    state.as_str().to_string()
                } else if size.is_some() {
                    "available".to_string()
                } else {
                    "missing".to_string()
                };
                RegistryModel {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    file: m.file.clone(),
                    format: m.format.clone(),
                    sha256: m.sha256.clone(),
                    size_bytes: size,
                    state,
                }
            })
            .collect();
        Ok(ModelsReport {
            model_dir: self.cfg.model_dir.display().to_string(),
            models,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_references() {
        assert_eq!(parse_model_ref("tiny"), ("tiny", None));
        assert_eq!(parse_model_ref("tiny@1.0.0"), ("tiny", Some("1.0.0")));
    }
}
