//! Property tests over mutated valid files: whatever the bytes, the reader returns (no
//! panic, no overflow, bounded memory), and what it accepts is self-consistent.

mod common;

use proptest::prelude::*;
use veritas_gguf::{read_file, read_header, Error, Header};

/// Values that break naive arithmetic when they land on a count, length, dimension or offset.
const EXTREMES: [u64; 10] = [
    0,
    1,
    31,
    255,
    1 << 31,
    1 << 32,
    1 << 62,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Byte { at: usize, value: u8 },
    Word { at: usize, value: u64 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Positions are fractions of the file so every region (header, padding, data) is hit.
    let at = any::<prop::sample::Index>();
    prop_oneof![
        (at.clone(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip {
            at: i.index(1 << 16),
            bit
        }),
        (at.clone(), any::<u8>()).prop_map(|(i, value)| Mutation::Byte {
            at: i.index(1 << 16),
            value
        }),
        (at.clone(), prop::sample::select(&EXTREMES[..])).prop_map(|(i, value)| Mutation::Word {
            at: i.index(1 << 16),
            value
        }),
        (at.clone(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, bytes)| {
            Mutation::Insert {
                at: i.index(1 << 16),
                bytes,
            }
        }),
        (at.clone(), 1usize..64).prop_map(|(i, len)| Mutation::Remove {
            at: i.index(1 << 16),
            len
        }),
        at.prop_map(|i| Mutation::Truncate {
            at: i.index(1 << 16)
        }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    // Scale a position in 0..65536 to the current length.
    let pos = |at: usize, len: usize| if len == 0 { 0 } else { at * len / (1 << 16) };
    let len = bytes.len();
    match *m {
        Mutation::Flip { at, bit } if len > 0 => bytes[pos(at, len)] ^= 1 << bit,
        Mutation::Byte { at, value } if len > 0 => bytes[pos(at, len)] = value,
        Mutation::Word { at, value } if len >= 8 => {
            let p = pos(at, len - 7);
            bytes[p..p + 8].copy_from_slice(&value.to_le_bytes());
        }
        Mutation::Insert { at, bytes: ref ins } => {
            let p = pos(at, len + 1);
            bytes.splice(p..p, ins.iter().copied());
        }
        Mutation::Remove { at, len: n } if len > 0 => {
            let p = pos(at, len);
            bytes.drain(p..(p + n).min(len));
        }
        Mutation::Truncate { at } => bytes.truncate(pos(at, len + 1)),
        _ => {}
    }
}

/// What an accepted header promises: unique names, tensors tiling the data section at
/// aligned offsets with sizes from the type table, all inside the file.
fn check_accepted(h: &Header, len: usize) {
    assert!(h.alignment.is_power_of_two());
    assert!(h.required_file_size() <= len as u64);
    let mut expected = 0u64;
    for t in &h.tensors {
        assert_eq!(t.offset, expected);
        assert_eq!(t.offset % u64::from(h.alignment), 0);
        assert_eq!(t.ggml_type.bytes_for(t.n_elements()), Some(t.n_bytes));
        expected += t.n_bytes.next_multiple_of(u64::from(h.alignment));
    }
    assert_eq!(expected, h.data_size);
    let mut keys: Vec<&str> = h.metadata.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), h.metadata.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        let mut bytes = common::sample();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        match read_file(&bytes) {
            Ok(h) => check_accepted(&h, bytes.len()),
            // Every refusal renders a message (Display must not panic either).
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_preamble_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..512),
        n_tensors in prop::sample::select(&EXTREMES[..]),
        n_kv in prop::sample::select(&EXTREMES[..]),
    ) {
        let mut bytes = common::raw(n_tensors, n_kv, |_| {});
        bytes.extend_from_slice(&tail);
        if let Ok(h) = read_file(&bytes) {
            check_accepted(&h, bytes.len());
        }
    }
}

#[test]
fn the_unmutated_sample_is_accepted() {
    let bytes = common::sample();
    let h = read_file(&bytes).unwrap();
    check_accepted(&h, bytes.len());
    assert_eq!(h.tensors.len(), 3);
    assert!(matches!(
        read_header(&bytes[..10]),
        Err(Error::TruncatedHeader { .. })
    ));
}
