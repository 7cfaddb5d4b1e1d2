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

/// Finding 2 of issue 9: verification and load use one file handle. A file replaced at the
/// path after verification is not what the handle reads.
#[test]
fn the_verified_handle_keeps_reading_the_verified_file_after_a_replacement() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    write_model_dir(dir.path(), "tiny", "1.0.0", &TinyModelSpec::default()).unwrap();
    let entry = read_manifest(dir.path()).unwrap().models.remove(0);
    let v = verify_model(dir.path(), &entry, None).unwrap();
    // Replace the file at the path by another valid model (rename over it).
    veritas_fixtures::write_gguf(&v.path, &TinyModelSpec::default().with_seed(9)).unwrap();
    assert_ne!(sha256_file(&v.path).unwrap(), entry.sha256);
    let mut through_handle = Vec::new();
    let mut f = std::fs::File::open(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&*v.file)
    ))
    .unwrap();
    f.read_to_end(&mut through_handle).unwrap();
    let sha = veritas_engine::verify::sha256_reader(&through_handle[..]).unwrap();
    assert_eq!(
        sha, entry.sha256,
        "the handle still reads the verified bytes"
    );
}

/// Finding 10 of issue 9: the default window is the training context capped at 4096.
#[test]
fn default_context_is_capped() {
    assert_eq!(veritas_engine::default_n_ctx(131_072), 4096);
    assert_eq!(veritas_engine::default_n_ctx(256), 256);
}

/// Finding 4 of issue 9: available memory is the smaller of MemAvailable and what the
/// limit leaves beside the runtime's own use.
#[test]
fn available_memory_uses_mem_available_and_the_limit() {
    use veritas_engine::verify::available_memory;
    assert_eq!(available_memory(Some(1000), 300, Some(5000)), 700);
    assert_eq!(available_memory(Some(1000), 300, Some(500)), 500);
    assert_eq!(available_memory(None, 300, Some(500)), 500);
    assert_eq!(available_memory(Some(100), 300, None), 0);
}

/// Writes `bytes` as `file` under `dir` and returns its manifest entry.
fn entry_with(dir: &std::path::Path, file: &str, bytes: &[u8]) -> ModelEntry {
    std::fs::write(dir.join(file), bytes).unwrap();
    entry_for(dir, file)
}

/// A model-shaped file whose one tensor is `ty`, `n` x `n`.
fn quantised_file(ty: veritas_gguf::GgmlType, n: u64) -> Vec<u8> {
    use veritas_gguf::{write::Encoder, Value, VERSION};
    let mut e = Encoder::new(Vec::new());
    e.header(VERSION, 1, 2).unwrap();
    e.kv("general.architecture", &Value::String("llama".into()))
        .unwrap();
    e.kv("llama.context_length", &Value::U32(4096)).unwrap();
    e.tensor_info("blk.0.ffn_up.weight", &[n, n], ty, 0)
        .unwrap();
    e.pad_to(32).unwrap();
    let mut bytes = e.into_inner();
    let data = ty.bytes_for(n * n).unwrap();
    bytes.resize(bytes.len() + data.next_multiple_of(32) as usize, 0x5a);
    bytes
}

/// Finding 5 of issue 9: low-bit quantisations are measured from ggml's block table. The
/// old verifier assumed half a byte per element and called these files truncated.
#[test]
fn low_bit_models_are_not_refused_as_truncated() {
    use veritas_gguf::GgmlType;
    let dir = tempfile::tempdir().unwrap();
    for ty in [
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Iq2Xxs,
        GgmlType::Iq1S,
        GgmlType::Iq1M,
        GgmlType::Tq1_0,
        GgmlType::Tq2_0,
    ] {
        let file = format!("{ty}.gguf");
        let entry = entry_with(dir.path(), &file, &quantised_file(ty, 1024));
        let v = verify_model(dir.path(), &entry, None).unwrap_or_else(|e| panic!("{ty}: {e}"));
        assert_eq!(v.n_ctx_train, Some(4096), "{ty}");
        // One byte short is still caught, with the exact size needed.
        let bytes = quantised_file(ty, 1024);
        let short = entry_with(dir.path(), &file, &bytes[..bytes.len() - 1]);
        let err = verify_model(dir.path(), &short, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::ModelLoadFailed);
        assert!(
            err.detail.contains(&format!("needs {} bytes", bytes.len())),
            "{ty}: {err}"
        );
    }
}

/// Finding 5 of issue 9: hostile headers are refused as corrupt files (E2001) without a
/// panic; only the container version is E2003.
#[test]
fn hostile_headers_map_to_e2001_and_versions_to_e2003() {
    use veritas_gguf::{write::Encoder, Value, VERSION};
    let dir = tempfile::tempdir().unwrap();
    let raw = |n_tensors: u64, n_kv: u64, body: &dyn Fn(&mut Encoder<Vec<u8>>)| {
        let mut e = Encoder::new(Vec::new());
        e.header(VERSION, n_tensors, n_kv).unwrap();
        body(&mut e);
        e.into_inner()
    };
    let tensor = |e: &mut Encoder<Vec<u8>>, ne: &[u64], offset: u64| {
        e.string("t").unwrap();
        e.u32(ne.len() as u32).unwrap();
        ne.iter().for_each(|d| e.u64(*d).unwrap());
        e.u32(0).unwrap();
        e.u64(offset).unwrap();
    };
    for (name, bytes, needle) in [
        (
            "overflowing-dims",
            raw(1, 0, &|e| tensor(e, &[1 << 32, 1 << 32], 0)),
            "more elements than ggml can count",
        ),
        (
            "offset-past-eof",
            raw(1, 0, &|e| tensor(e, &[8], u64::MAX)),
            "data offset 18446744073709551615",
        ),
        (
            "duplicate-key",
            raw(0, 2, &|e| {
                e.kv("a", &Value::U8(1)).unwrap();
                e.kv("a", &Value::U8(2)).unwrap();
            }),
            "duplicate metadata key",
        ),
        (
            "huge-count",
            raw(u64::MAX, 0, &|_| {}),
            "tensor count of 18446744073709551615",
        ),
        (
            "bad-alignment",
            raw(0, 1, &|e| {
                e.kv("general.alignment", &Value::U32(24)).unwrap()
            }),
            "general.alignment",
        ),
    ] {
        let file = format!("{name}.gguf");
        let err =
            verify_model(dir.path(), &entry_with(dir.path(), &file, &bytes), None).unwrap_err();
        assert_eq!(err.code, ErrorCode::ModelLoadFailed, "{name}: {err}");
        assert!(
            err.detail.contains(needle)
                && err
                    .detail
                    .contains("verify the model file is not corrupted"),
            "{name}: {err}"
        );
    }
    let mut v2 = raw(0, 0, &|_| {});
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    let err = verify_model(dir.path(), &entry_with(dir.path(), "v2.gguf", &v2), None).unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelVersionMismatch, "{err}");
    assert!(err.detail.contains("version 2"), "{err}");
}
