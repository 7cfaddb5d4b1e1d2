//! The GGUF reader on arbitrary bytes: it must return, never panic or overflow, and what it
//! accepts must be self-consistent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use veritas_gguf::{read_file, read_header_with, Limits};

fuzz_target!(|data: &[u8]| {
    let full = read_file(data);
    if let Err(e) = &full {
        // Messages echo file contents (names, values): rendering them must not panic.
        assert!(!e.to_string().is_empty());
    }
    if let Ok(h) = full {
        assert!(h.required_file_size() <= data.len() as u64);
        let mut end = 0u64;
        for t in &h.tensors {
            assert_eq!(t.offset, end);
            assert_eq!(t.ggml_type.bytes_for(t.n_elements()), Some(t.n_bytes));
            end += t.n_bytes.next_multiple_of(u64::from(h.alignment));
        }
        assert_eq!(end, h.data_size);
    }
    // Tight limits reach the budget checks with small inputs.
    let tight = Limits {
        max_string: 64,
        max_array: 64,
        max_count: 8,
        max_memory: 4096,
    };
    if let Err(e) = read_header_with(data, &tight) {
        assert!(!e.to_string().is_empty());
    }
});
