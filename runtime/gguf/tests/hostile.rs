//! Hostile and damaged input: every refusal is a typed error naming the cause, never a
//! panic, an overflow or an allocation sized by the file (issue 9, finding 5).

mod common;

use std::io::{self, Read};

use common::{raw, sample, tensor_info, valid_file, Tensor};
use veritas_gguf::{
    read_file, read_header, read_header_with, Error, GgmlType, Limits, Problem, Value, ValueType,
};

fn problem(r: Result<veritas_gguf::Header, Error>) -> Problem {
    match r {
        Err(Error::Corrupt { problem, .. }) => problem,
        other => panic!("expected a corrupt header, got {other:?}"),
    }
}

#[test]
fn valid_file_reads_back_with_every_value_type() {
    let values = vec![
        ("u8", Value::U8(200)),
        ("i8", Value::I8(-5)),
        ("u16", Value::U16(65_000)),
        ("i16", Value::I16(-30_000)),
        ("u32", Value::U32(4_000_000_000)),
        ("i32", Value::I32(-2_000_000_000)),
        ("f32", Value::F32(1.5e-5)),
        ("bool", Value::Bool(true)),
        ("string", Value::String("héllo 👋".into())),
        ("u64", Value::U64(u64::MAX)),
        ("i64", Value::I64(i64::MIN)),
        ("f64", Value::F64(-2.25)),
        (
            "arr",
            Value::Array(
                ValueType::String,
                vec![Value::String("a".into()), Value::String("".into())],
            ),
        ),
        ("empty", Value::Array(ValueType::F32, vec![])),
        ("general.alignment", Value::U32(64)),
    ];
    let bytes = raw(1, values.len() as u64, |e| {
        for (k, v) in &values {
            e.kv(k, v).unwrap();
        }
        e.tensor_info("t", &[3, 2], GgmlType::F32, 0).unwrap();
    });
    let header_len = bytes.len() as u64;
    let h = read_header(&bytes[..]).unwrap();
    assert_eq!(
        h.metadata,
        values
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(h.tensors.len(), 1);
    assert_eq!(
        (h.tensors[0].ne.clone(), h.tensors[0].n_bytes),
        (vec![3, 2], 24)
    );
    assert_eq!(h.alignment, 64);
    assert_eq!(h.data_offset, header_len.next_multiple_of(64));
    assert_eq!(h.required_file_size(), h.data_offset + 64);
    assert_eq!(h.get_u64("u8"), Some(200));
    assert_eq!(h.get_u64("i8"), None, "negative is not a count");
    assert_eq!(h.get_str("string"), Some("héllo 👋"));
}

#[test]
fn every_ggml_type_is_accepted_with_its_block_size() {
    // One tensor of every type, two blocks per row and three rows: the low-bit types the
    // old verifier refused (Q2_K, Q3_K, IQ*, TQ*) included.
    let tensors: Vec<Tensor> = GgmlType::all()
        .map(|ty| {
            let row = u64::from(ty.block_size()) * 2;
            Tensor::new(&format!("t.{ty}"), &[row, 3], ty)
        })
        .collect();
    let bytes = valid_file(&tensors, 32);
    let h = read_file(&bytes).unwrap();
    assert_eq!(h.tensors.len(), GgmlType::all().count());
    for (t, want) in h.tensors.iter().zip(&tensors) {
        assert_eq!(t.ggml_type, want.ty);
        assert_eq!(t.n_bytes, 6 * u64::from(want.ty.type_size()), "{}", t.name);
    }
    assert_eq!(h.required_file_size(), bytes.len() as u64);
}

#[test]
fn a_low_bit_model_is_not_refused_as_truncated() {
    // 4096 x 4096 Q2_K is 5.25 MiB; "at least half a byte per element" claimed 8 MiB.
    let t = Tensor::new("w", &[4096, 4096], GgmlType::Q2K);
    assert_eq!(t.n_bytes(), 5_505_024);
    let bytes = valid_file(&[t], 32);
    let h = read_file(&bytes).unwrap();
    assert_eq!(h.tensors[0].n_bytes, 5_505_024);
}

#[test]
fn truncation_at_every_offset_is_named() {
    let bytes = sample();
    let h = read_file(&bytes).unwrap();
    let header_end = {
        // The data section starts at the first alignment boundary after the tensor infos.
        let mut end = h.data_offset;
        while end > 0 && read_header(&bytes[..end as usize - 1]).is_ok() {
            end -= 1;
        }
        end
    };
    assert!(header_end > 24 && header_end <= h.data_offset);
    for cut in 0..bytes.len() {
        let r = read_file(&bytes[..cut]);
        let cut = cut as u64;
        match r {
            Err(Error::NotGguf(start)) => assert!(cut < 4 && start.len() as u64 == cut),
            Err(Error::TruncatedHeader { at, what }) => {
                assert!((4..header_end).contains(&cut), "{cut}");
                assert!(at <= cut, "{at} {cut} {what}");
            }
            Err(Error::TruncatedData { size, needed }) => {
                assert!(cut >= header_end, "{cut}");
                assert_eq!((size, needed), (cut, bytes.len() as u64));
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn wrong_magic_and_versions() {
    for start in [&b""[..], b"G", b"GGU", b"GGUX\x03\0\0\0", b"\0\0\0\0"] {
        assert!(
            matches!(read_header(start), Err(Error::NotGguf(ref s)) if s[..] == start[..start.len().min(4)]),
            "{start:?}"
        );
    }
    for v in [0, 1, 2, 4, 99, u32::MAX] {
        let mut b = sample();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        let e = read_header(&b[..]).unwrap_err();
        assert!(matches!(e, Error::UnsupportedVersion(x) if x == v), "{e}");
        assert!(e.to_string().contains(&format!("version {v}")), "{e}");
    }
    assert_eq!(
        read_header(&b"\0"[..]).unwrap_err().to_string(),
        "not a GGUF file: it starts with [00], expected \"GGUF\""
    );
    assert_eq!(
        read_header(&b""[..]).unwrap_err().to_string(),
        "not a GGUF file: the file is empty"
    );
}

#[test]
fn huge_counts_fail_before_allocating() {
    for (n_tensors, n_kv) in [(u64::MAX, 0), (0, u64::MAX), (1 << 21, 0), (0, 1 << 40)] {
        let b = raw(n_tensors, n_kv, |_| {});
        assert!(
            matches!(problem(read_header(&b[..])), Problem::TooLarge { .. }),
            "{n_tensors} {n_kv}"
        );
    }
    // Counts within the limit that the file does not back: the file ends.
    let b = raw(1 << 20, 1 << 20, |_| {});
    assert!(matches!(
        read_header(&b[..]),
        Err(Error::TruncatedHeader { at: 24, .. })
    ));
    // String and array lengths.
    let string_len = |len: u64| {
        raw(0, 1, |e| {
            e.u64(len).unwrap();
            e.bytes(b"abc").unwrap();
        })
    };
    for len in [u64::MAX, 1 << 60, (16 << 20) + 1] {
        assert!(matches!(
            problem(read_header(&string_len(len)[..])),
            Problem::TooLarge {
                what: "string length",
                ..
            }
        ));
    }
    assert!(matches!(
        read_header(&string_len(1 << 20)[..]),
        Err(Error::TruncatedHeader {
            what: "a metadata key",
            ..
        })
    ));
    let array_len = |len: u64| {
        raw(0, 1, |e| {
            e.string("k").unwrap();
            e.u32(ValueType::Array as u32).unwrap();
            e.u32(ValueType::U64 as u32).unwrap();
            e.u64(len).unwrap();
            e.u64(7).unwrap();
        })
    };
    for len in [u64::MAX, (1 << 26) + 1] {
        assert!(matches!(
            problem(read_header(&array_len(len)[..])),
            Problem::TooLarge {
                what: "array length",
                ..
            }
        ));
    }
    assert!(matches!(
        read_header(&array_len(1 << 26)[..]),
        Err(Error::TruncatedHeader { .. })
    ));
}

#[test]
fn the_parsed_header_is_held_to_a_memory_budget() {
    // 100k one-byte elements cost more than their bytes once parsed: the budget counts that.
    let b = raw(0, 1, |e| {
        e.kv(
            "k",
            &Value::Array(ValueType::U8, vec![Value::U8(1); 100_000]),
        )
        .unwrap();
    });
    assert!(read_header(&b[..]).is_ok());
    let small = Limits {
        max_memory: 1 << 20,
        ..Limits::default()
    };
    assert!(matches!(
        problem(read_header_with(&b[..], &small)),
        Problem::TooLarge {
            what: "parsed header size",
            ..
        }
    ));
}

#[test]
fn overflowing_dimensions_are_refused() {
    let one = |ne: &[u64], ty: u32| raw(1, 0, |e| tensor_info(e, "t", ne, ty, 0));
    for ne in [
        &[1u64 << 32, 1 << 32][..],
        &[u64::MAX],
        &[1 << 63],
        &[2, 2, 2, 1 << 62],
        &[0, u64::MAX], // ggml holds each dimension in an i64
    ] {
        assert!(
            matches!(
                problem(read_header(&one(ne, 0)[..])),
                Problem::TooManyElements { .. }
            ),
            "{ne:?}"
        );
    }
    // Elements fit an i64, bytes do not fit a u64.
    assert!(matches!(
        problem(read_header(&one(&[1 << 62], 0)[..])),
        Problem::TensorTooLarge { .. }
    ));
    // Each tensor fits, the padded size does not.
    assert!(matches!(
        problem(read_header(&one(&[(1 << 61) - 1], 28)[..])),
        Problem::DataTooLarge
    ));
    // Each tensor fits, their sum does not.
    let two = raw(2, 0, |e| {
        tensor_info(e, "a", &[1 << 61], 0, 0);
        tensor_info(e, "b", &[1 << 61], 0, 1 << 63);
    });
    assert!(matches!(
        problem(read_header(&two[..])),
        Problem::DataTooLarge
    ));
    // A zero dimension is an empty tensor, not an error.
    let h = read_header(&one(&[0, 5], 0)[..]).unwrap();
    assert_eq!(h.tensors[0].n_bytes, 0);
    // Five dimensions.
    assert!(matches!(
        problem(read_header(&one(&[1, 1, 1, 1, 1], 0)[..])),
        Problem::TooManyDimensions { n_dims: 5, .. }
    ));
    let b = raw(1, 0, |e| {
        e.string("t").unwrap();
        e.u32(u32::MAX).unwrap();
    });
    assert!(matches!(
        problem(read_header(&b[..])),
        Problem::TooManyDimensions { .. }
    ));
}

#[test]
fn offsets_must_tile_the_data_section_and_lie_in_the_file() {
    let with_offsets = |a: u64, b: u64| {
        raw(2, 0, |e| {
            tensor_info(e, "a", &[8], 0, a);
            tensor_info(e, "b", &[8], 0, b);
        })
    };
    assert!(read_header(&with_offsets(0, 32)[..]).is_ok());
    for (a, b, misplaced) in [
        (1 << 40, 32, "a"), // past the end of any file
        (u64::MAX, 32, "a"),
        (0, 16, "b"), // overlaps a's padding
        (0, 64, "b"), // a gap
        (0, 33, "b"), // unaligned
        (0, u64::MAX, "b"),
    ] {
        match problem(read_header(&with_offsets(a, b)[..])) {
            Problem::MisplacedTensor { tensor, .. } => assert_eq!(tensor, misplaced),
            p => panic!("{a} {b}: {p:?}"),
        }
    }
    // A layout that is consistent but ends past the end of the file.
    let mut bytes = sample();
    let h = read_file(&bytes).unwrap();
    bytes.truncate(bytes.len() - 1);
    let e = read_file(&bytes).unwrap_err();
    assert!(
        matches!(e, Error::TruncatedData { size, needed } if size + 1 == needed && needed == h.required_file_size()),
        "{e}"
    );
    assert!(e.to_string().starts_with("truncated file"), "{e}");
}

#[test]
fn duplicate_and_empty_keys_and_tensor_names() {
    let b = raw(0, 2, |e| {
        e.kv("general.name", &Value::String("a".into())).unwrap();
        e.kv("general.name", &Value::String("b".into())).unwrap();
    });
    assert_eq!(
        problem(read_header(&b[..])),
        Problem::DuplicateKey("general.name".into())
    );
    let b = raw(0, 1, |e| e.kv("", &Value::U8(0)).unwrap());
    assert_eq!(problem(read_header(&b[..])), Problem::EmptyKey);
    let b = raw(2, 0, |e| {
        tensor_info(e, "w", &[8], 0, 0);
        tensor_info(e, "w", &[8], 0, 32);
    });
    assert_eq!(
        problem(read_header(&b[..])),
        Problem::DuplicateTensor("w".into())
    );
    // ggml keeps names in 64 bytes with the terminator.
    let b = raw(1, 0, |e| tensor_info(e, &"n".repeat(63), &[8], 0, 0));
    assert!(read_header(&b[..]).is_ok());
    let b = raw(1, 0, |e| tensor_info(e, &"n".repeat(64), &[8], 0, 0));
    assert_eq!(problem(read_header(&b[..])), Problem::TensorNameTooLong(64));
    // A long duplicate key is shortened in the message, not echoed whole.
    let long = "k".repeat(10_000);
    let b = raw(0, 2, |e| {
        e.kv(&long, &Value::U8(0)).unwrap();
        e.kv(&long, &Value::U8(0)).unwrap();
    });
    let msg = read_header(&b[..]).unwrap_err().to_string();
    assert!(
        msg.contains("duplicate metadata key") && msg.len() < 200,
        "{msg}"
    );
}

#[test]
fn bad_alignment_is_refused() {
    for bad in [
        Value::U32(0),
        Value::U32(24),
        Value::U32(u32::MAX),
        Value::U64(32),
        Value::I32(32),
        Value::String("32".into()),
    ] {
        let b = raw(0, 1, |e| e.kv("general.alignment", &bad).unwrap());
        assert!(
            matches!(problem(read_header(&b[..])), Problem::BadAlignment(_)),
            "{bad:?}"
        );
    }
    // A large power of two is valid and moves the data section.
    let t = [Tensor::new("w", &[8], GgmlType::F32)];
    let h = read_file(&valid_file(&t, 1 << 12)).unwrap();
    assert_eq!((h.alignment, h.data_offset % 4096), (4096, 0));
}

#[test]
fn unknown_types_are_refused() {
    for ty in [13, 100, u32::MAX] {
        let b = raw(0, 1, |e| {
            e.string("k").unwrap();
            e.u32(ty).unwrap();
        });
        assert_eq!(problem(read_header(&b[..])), Problem::UnknownValueType(ty));
        let b = raw(0, 1, |e| {
            e.string("k").unwrap();
            e.u32(ValueType::Array as u32).unwrap();
            e.u32(ty).unwrap();
            e.u64(1).unwrap();
        });
        assert_eq!(problem(read_header(&b[..])), Problem::UnknownValueType(ty));
    }
    let nested = raw(0, 1, |e| {
        e.string("k").unwrap();
        e.u32(ValueType::Array as u32).unwrap();
        e.u32(ValueType::Array as u32).unwrap();
        e.u64(1).unwrap();
    });
    assert_eq!(problem(read_header(&nested[..])), Problem::NestedArray);
    // Removed ggml types (4, 5, 31..=33, 36..=38) and ids past the table.
    for id in [4, 5, 31, 33, 36, 38, 43, 1000, u32::MAX] {
        let b = raw(1, 0, |e| tensor_info(e, "t", &[256], id, 0));
        assert!(
            matches!(problem(read_header(&b[..])), Problem::UnknownTensorType { id: i, .. } if i == id),
            "{id}"
        );
    }
    // Rows must be whole blocks.
    let b = raw(1, 0, |e| {
        tensor_info(e, "t", &[100, 2], GgmlType::Q4K.id(), 0)
    });
    assert!(matches!(
        problem(read_header(&b[..])),
        Problem::PartialBlock { row: 100, .. }
    ));
}

#[test]
fn bad_strings_are_refused() {
    let bad_utf8 = [0xff, 0xfe, b'a'];
    let as_key = raw(0, 1, |e| {
        e.u64(3).unwrap();
        e.bytes(&bad_utf8).unwrap();
        e.u32(0).unwrap();
        e.bytes(&[0]).unwrap();
    });
    assert_eq!(
        problem(read_header(&as_key[..])),
        Problem::InvalidUtf8("a metadata key")
    );
    let as_value = raw(0, 1, |e| {
        e.string("k").unwrap();
        e.u32(ValueType::String as u32).unwrap();
        e.u64(3).unwrap();
        e.bytes(&bad_utf8).unwrap();
    });
    assert_eq!(
        problem(read_header(&as_value[..])),
        Problem::InvalidUtf8("a string value")
    );
    let as_name = raw(1, 0, |e| {
        e.u64(2).unwrap();
        e.bytes(&[0xc3, 0x28]).unwrap();
    });
    assert_eq!(
        problem(read_header(&as_name[..])),
        Problem::InvalidUtf8("a tensor name")
    );
    // A length that runs past the end of the file.
    let past_end = raw(0, 1, |e| {
        e.string("k").unwrap();
        e.u32(ValueType::String as u32).unwrap();
        e.u64(1000).unwrap();
        e.bytes(b"short").unwrap();
    });
    assert!(matches!(
        read_header(&past_end[..]),
        Err(Error::TruncatedHeader {
            what: "a string value",
            ..
        })
    ));
}

#[test]
fn io_errors_are_not_mistaken_for_truncation() {
    /// Yields the sample's first `fail_at` bytes, then an error that is not EOF.
    struct Failing {
        data: Vec<u8>,
        pos: usize,
        fail_at: usize,
    }
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.fail_at {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.fail_at - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }
    for at in [0, 2, 10, 40] {
        let e = read_header(Failing {
            data: sample(),
            pos: 0,
            fail_at: at,
        })
        .unwrap_err();
        assert!(matches!(e, Error::Io(_)), "{at}: {e}");
    }
}
