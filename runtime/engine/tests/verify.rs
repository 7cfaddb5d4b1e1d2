//! Verification names each cause before llama.cpp sees the file.

use veritas_engine::verify_model;
use veritas_fixtures::corrupt::{write_corrupt_gguf, Corruption};
use veritas_fixtures::{read_manifest, sha256_file, write_model_dir, TinyModelSpec};
use veritas_vocab::manifest::ModelEntry;
use veritas_vocab::ErrorCode;

fn entry_for(dir: &std::path::Path, file: &str) -> ModelEntry {
    ModelEntry {
        name: "m".into(),
        version: "1".into(),
        file: file.into(),
        sha256: sha256_file(&dir.join(file)).unwrap(),
        format: "gguf".into(),
    }
}

#[test]
fn healthy_model_passes_with_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    write_model_dir(dir.path(), "tiny", "1.0.0", &TinyModelSpec::default()).unwrap();
    let entry = read_manifest(dir.path()).unwrap().models.remove(0);
    let v = verify_model(dir.path(), &entry, None).unwrap();
    assert_eq!(v.architecture.as_deref(), Some("llama"));
    assert_eq!(v.n_ctx_train, Some(256));
    assert_eq!(v.size_bytes, std::fs::metadata(&v.path).unwrap().len());
}

#[test]
fn each_corruption_maps_to_its_code_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    for (c, code, needle) in [
        (
            Corruption::Empty,
            ErrorCode::ModelLoadFailed,
            "not a GGUF file",
        ),
        (
            Corruption::BadMagic,
            ErrorCode::ModelLoadFailed,
            "not a GGUF file",
        ),
        (
            Corruption::UnsupportedVersion,
            ErrorCode::ModelVersionMismatch,
            "version 99",
        ),
        (
            Corruption::Truncated,
            ErrorCode::ModelLoadFailed,
            "truncated",
        ),
    ] {
        let file = format!("{}.gguf", c.name());
        write_corrupt_gguf(&dir.path().join(&file), &TinyModelSpec::default(), c).unwrap();
        let err = verify_model(dir.path(), &entry_for(dir.path(), &file), None).unwrap_err();
        assert_eq!(err.code, code, "{c:?}: {err}");
        assert!(err.detail.contains(needle), "{c:?}: {err}");
    }
}

#[test]
fn sha_mismatch_missing_file_wrong_format_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    write_model_dir(dir.path(), "tiny", "1.0.0", &TinyModelSpec::default()).unwrap();
    let good = read_manifest(dir.path()).unwrap().models.remove(0);

    let mut wrong_sha = good.clone();
    wrong_sha.sha256 = "ab".repeat(32);
    assert!(verify_model(dir.path(), &wrong_sha, None)
        .unwrap_err()
        .detail
        .contains("sha256 mismatch"));

    let mut missing = good.clone();
    missing.file = "absent.gguf".into();
    assert!(verify_model(dir.path(), &missing, None)
        .unwrap_err()
        .detail
        .contains("does not exist"));

    let mut onnx = good.clone();
    onnx.format = "onnx".into();
    assert!(verify_model(dir.path(), &onnx, None)
        .unwrap_err()
        .detail
        .contains("only \"gguf\""));

    let err = verify_model(dir.path(), &good, Some(1000)).unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelLoadFailed);
    assert!(
        err.detail.contains("not enough memory") && err.detail.contains("1000 bytes available"),
        "{err}"
    );
}
