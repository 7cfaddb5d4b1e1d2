//! ggml's tensor types: how many elements a block holds and how many bytes it takes.
//!
//! The numbers follow the block layouts of the llama.cpp version this workspace vendors
//! (`ggml-common.h`: `QK_K` = 256 elements per K-quant super-block, and so on). A test in
//! `veritas-fixtures` checks every entry against ggml's own `ggml_blck_size` and
//! `ggml_type_size`, so a llama.cpp upgrade that changes a layout fails there first.

/// A ggml tensor type that a GGUF file may name. Ids that ggml removed (4, 5, 31..=33,
/// 36..=38) have no variant: no current loader accepts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    Iq2Xxs,
    Iq2Xs,
    Iq3Xxs,
    Iq1S,
    Iq4Nl,
    Iq3S,
    Iq2S,
    Iq4Xs,
    I8,
    I16,
    I32,
    I64,
    F64,
    Iq1M,
    Bf16,
    Tq1_0,
    Tq2_0,
    Mxfp4,
    Nvfp4,
    Q1_0,
    Q2_0,
}

/// Elements per K-quant (and most IQ) super-block.
const QK_K: u32 = 256;

/// `(type, id, name, elements per block, bytes per block)`.
const TABLE: [(GgmlType, u32, &str, u32, u32); 35] = {
    use GgmlType::*;
    [
        (F32, 0, "f32", 1, 4),
        (F16, 1, "f16", 1, 2),
        // f16 scale + 32 nibbles.
        (Q4_0, 2, "q4_0", 32, 2 + 16),
        // f16 scale and min + 32 nibbles.
        (Q4_1, 3, "q4_1", 32, 4 + 16),
        // f16 scale + 32 high bits + 32 nibbles.
        (Q5_0, 6, "q5_0", 32, 2 + 4 + 16),
        (Q5_1, 7, "q5_1", 32, 4 + 4 + 16),
        (Q8_0, 8, "q8_0", 32, 2 + 32),
        (Q8_1, 9, "q8_1", 32, 4 + 32),
        // Super-blocks of 256: scales, quants, and one or two f16 super-scales.
        (Q2K, 10, "q2_K", QK_K, 4 + 16 + 64),
        (Q3K, 11, "q3_K", QK_K, 2 + 64 + 32 + 12),
        (Q4K, 12, "q4_K", QK_K, 4 + 12 + 128),
        (Q5K, 13, "q5_K", QK_K, 4 + 12 + 128 + 32),
        (Q6K, 14, "q6_K", QK_K, 2 + 16 + 192),
        // f32 scale + 256 int8 + 16 int16 block sums.
        (Q8K, 15, "q8_K", QK_K, 4 + 256 + 32),
        (Iq2Xxs, 16, "iq2_xxs", QK_K, 2 + 64),
        (Iq2Xs, 17, "iq2_xs", QK_K, 2 + 64 + 8),
        (Iq3Xxs, 18, "iq3_xxs", QK_K, 2 + 96),
        (Iq1S, 19, "iq1_s", QK_K, 2 + 32 + 16),
        (Iq4Nl, 20, "iq4_nl", 32, 2 + 16),
        (Iq3S, 21, "iq3_s", QK_K, 2 + 104 + 4),
        (Iq2S, 22, "iq2_s", QK_K, 2 + 64 + 16),
        (Iq4Xs, 23, "iq4_xs", QK_K, 2 + 2 + 4 + 128),
        (I8, 24, "i8", 1, 1),
        (I16, 25, "i16", 1, 2),
        (I32, 26, "i32", 1, 4),
        (I64, 27, "i64", 1, 8),
        (F64, 28, "f64", 1, 8),
        // No f16 scale of its own: the scales carry it.
        (Iq1M, 29, "iq1_m", QK_K, 32 + 16 + 8),
        (Bf16, 30, "bf16", 1, 2),
        // Ternary: 5 trits per byte for 240 elements, 4 per byte for 16, f16 scale.
        (Tq1_0, 34, "tq1_0", QK_K, 2 + 4 + 48),
        (Tq2_0, 35, "tq2_0", QK_K, 2 + 64),
        // One e8m0 scale byte + 32 fp4 nibbles.
        (Mxfp4, 39, "mxfp4", 32, 1 + 16),
        // Four e4m3 sub-block scales + 64 fp4 nibbles.
        (Nvfp4, 40, "nvfp4", 64, 4 + 32),
        (Q1_0, 41, "q1_0", 128, 2 + 16),
        (Q2_0, 42, "q2_0", 64, 2 + 16),
    ]
};

impl GgmlType {
    /// Every type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|e| e.0)
    }

    /// The type a GGUF tensor info names by `id`, if ggml still defines it.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|e| e.1 == id).map(|e| e.0)
    }

    fn entry(self) -> &'static (GgmlType, u32, &'static str, u32, u32) {
        TABLE
            .iter()
            .find(|e| e.0 == self)
            .expect("every variant has a table entry")
    }

    /// ggml's numeric id (`enum ggml_type`).
    pub fn id(self) -> u32 {
        self.entry().1
    }

    /// ggml's name (`ggml_type_name`).
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Elements per block (`ggml_blck_size`); a row's length must be a multiple of it.
    pub fn block_size(self) -> u32 {
        self.entry().3
    }

    /// Bytes per block (`ggml_type_size`).
    pub fn type_size(self) -> u32 {
        self.entry().4
    }

    /// Bytes of a tensor of `n_elements` elements, or `None` when `n_elements` is not a whole
    /// number of blocks or the size does not fit in a `u64`.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let block = u64::from(self.block_size());
        if n_elements % block != 0 {
            return None;
        }
        (n_elements / block).checked_mul(u64::from(self.type_size()))
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique_and_round_trip() {
        let mut ids: Vec<u32> = TABLE.iter().map(|e| e.1).collect();
        ids.dedup();
        assert_eq!(ids.len(), TABLE.len(), "ids are sorted and distinct");
        for t in GgmlType::all() {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert!(t.block_size() >= 1 && t.type_size() >= 1, "{t}");
        }
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 43, u32::MAX] {
            assert_eq!(GgmlType::from_id(removed), None, "{removed}");
        }
    }

    #[test]
    fn low_bit_quantisations_are_below_half_a_byte_per_element() {
        // The old verifier assumed >= 0.5 byte/element for these and refused valid models.
        for t in [
            GgmlType::Q2K,
            GgmlType::Q3K,
            GgmlType::Iq2Xxs,
            GgmlType::Iq1S,
            GgmlType::Iq1M,
            GgmlType::Tq1_0,
            GgmlType::Tq2_0,
        ] {
            let per_element = f64::from(t.type_size()) / f64::from(t.block_size());
            assert!(per_element < 0.5, "{t}: {per_element}");
        }
        assert_eq!(GgmlType::Q2K.bytes_for(4096 * 4096), Some(4096 * 16 * 84));
        assert_eq!(GgmlType::Q4K.bytes_for(100), None, "not a whole block");
        assert_eq!(GgmlType::F64.bytes_for(u64::MAX), None, "overflows");
    }
}
