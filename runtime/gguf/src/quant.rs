//! Block quantisation of `f32` values into the two simplest ggml formats, and back, written
//! from the format definitions (`ggml-common.h`'s `block_q8_0` and `block_q4_0`):
//!
//! - **Q8_0**: blocks of 32 values; an IEEE half scale `d = amax / 127` (`amax` the largest
//!   magnitude in the block), then 32 `i8` `q = round(x / d)` (half away from zero). A value
//!   comes back as `q * d`.
//! - **Q4_0**: blocks of 32 values; a half scale `d = m / -8` where `m` is the signed value of
//!   largest magnitude, then 16 bytes: byte `j` holds value `j` in its low nibble and value
//!   `j + 16` in its high nibble, each `q = min(15, trunc(x / d + 8.5))`. A value comes back
//!   as `(q - 8) * d`; the value of largest magnitude is exactly `-8 * d`.
//!
//! The division is done as a multiplication by the `f32` reciprocal of the unrounded scale,
//! and the scale is stored rounded to half precision (round to nearest, ties to even); a
//! test in `veritas-fixtures` checks the bytes against ggml's own quantiser and dequantiser.
//!
//! Also here: IEEE half-precision conversions ([`f16_from_f32`], [`f32_from_f16`]), and
//! [`encode_f32s`], which writes values as any of F32, F16, Q8_0 or Q4_0.

use crate::GgmlType;

/// Values per Q8_0 and Q4_0 block.
pub const QK: usize = 32;

/// The IEEE 754 binary16 bits nearest to `x` (ties to even); overflow gives infinity, NaN
/// stays NaN (quiet).
pub fn f16_from_f32(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x007f_ffff;
    if exp == 0xff {
        let nan = if man != 0 {
            0x0200 | (man >> 13) as u16
        } else {
            0
        };
        return sign | 0x7c00 | nan;
    }
    // Unbiased exponent re-biased for half precision.
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let round = |q: u32, rem: u32, half: u32| -> u32 {
        if rem > half || (rem == half && q & 1 == 1) {
            q + 1
        } else {
            q
        }
    };
    if e <= 0 {
        // A half subnormal (or zero): value = q * 2^-24, and x = m * 2^(e - 14 - 24 + ...),
        // i.e. q = m >> (14 - e) with m the 24-bit significand.
        if e < -10 {
            return sign;
        }
        let m = man | 0x0080_0000;
        let shift = (14 - e) as u32;
        let q = round(m >> shift, m & ((1 << shift) - 1), 1 << (shift - 1));
        return sign | q as u16;
    }
    // A carry out of the mantissa moves into the exponent, up to infinity: both correct.
    let q = round(((e as u32) << 10) | (man >> 13), man & 0x1fff, 0x1000);
    sign | q as u16
}

/// The `f32` value of the binary16 `h` (exact).
pub fn f32_from_f16(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x03ff);
    let bits = match exp {
        0 => {
            // Subnormal or zero: man * 2^-24, exact in f32.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        0x1f => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

fn check_blocks(n: usize) {
    assert!(
        n % QK == 0,
        "{n} values are not a whole number of {QK}-value blocks"
    );
}

/// Appends the Q8_0 blocks of `src` (a multiple of 32 values) to `out`.
///
/// # Panics
/// When `src.len()` is not a multiple of 32.
pub fn quantize_q8_0(src: &[f32], out: &mut Vec<u8>) {
    check_blocks(src.len());
    out.reserve(src.len() / QK * (2 + QK));
    for block in src.chunks_exact(QK) {
        let amax = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16_from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|x| (x * inv).round() as i8 as u8));
    }
}

/// Appends the Q4_0 blocks of `src` (a multiple of 32 values) to `out`.
///
/// # Panics
/// When `src.len()` is not a multiple of 32.
pub fn quantize_q4_0(src: &[f32], out: &mut Vec<u8>) {
    check_blocks(src.len());
    out.reserve(src.len() / QK * (2 + QK / 2));
    for block in src.chunks_exact(QK) {
        // The signed value of largest magnitude (the first one on a tie).
        let m = block
            .iter()
            .fold(0.0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
        let d = m / -8.0;
        let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
        // x * inv is in [-8, 8]: + 8.5 is in [0.5, 16.5], truncated to 0..=16, capped at 15.
        let q = |x: f32| ((x * inv + 8.5) as u8).min(15);
        out.extend_from_slice(&f16_from_f32(d).to_le_bytes());
        let (lo, hi) = block.split_at(QK / 2);
        out.extend(lo.iter().zip(hi).map(|(&a, &b)| q(a) | (q(b) << 4)));
    }
}

/// Appends the values of Q8_0 `blocks` to `out`.
///
/// # Panics
/// When `blocks` is not a whole number of 34-byte blocks.
pub fn dequantize_q8_0(blocks: &[u8], out: &mut Vec<f32>) {
    assert!(blocks.len() % (2 + QK) == 0, "not whole Q8_0 blocks");
    for b in blocks.chunks_exact(2 + QK) {
        let d = f32_from_f16(u16::from_le_bytes([b[0], b[1]]));
        out.extend(b[2..].iter().map(|&q| f32::from(q as i8) * d));
    }
}

/// Appends the values of Q4_0 `blocks` to `out`.
///
/// # Panics
/// When `blocks` is not a whole number of 18-byte blocks.
pub fn dequantize_q4_0(blocks: &[u8], out: &mut Vec<f32>) {
    assert!(blocks.len() % (2 + QK / 2) == 0, "not whole Q4_0 blocks");
    for b in blocks.chunks_exact(2 + QK / 2) {
        let d = f32_from_f16(u16::from_le_bytes([b[0], b[1]]));
        let qs = &b[2..];
        out.extend(qs.iter().map(|&q| (i32::from(q & 0x0f) - 8) as f32 * d));
        out.extend(qs.iter().map(|&q| (i32::from(q >> 4) - 8) as f32 * d));
    }
}

/// The types [`encode_f32s`] can write.
pub const ENCODABLE: [GgmlType; 4] = [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0];

/// Appends `src` encoded as `ty` to `out`: little-endian F32 or F16, or Q8_0 / Q4_0 blocks.
/// `None` (and nothing appended) when `ty` is not one of [`ENCODABLE`] or `src` is not a
/// whole number of `ty`'s blocks.
pub fn encode_f32s(ty: GgmlType, src: &[f32], out: &mut Vec<u8>) -> Option<()> {
    if src.len() % ty.block_size() as usize != 0 {
        return None;
    }
    match ty {
        GgmlType::F32 => src
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => src
            .iter()
            .for_each(|v| out.extend_from_slice(&f16_from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => quantize_q8_0(src, out),
        GgmlType::Q4_0 => quantize_q4_0(src, out),
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of values, some blocks with extreme or degenerate content.
    fn samples() -> Vec<f32> {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut v: Vec<f32> = (0..32 * 200)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
                let scale = [1e-3, 0.05, 1.0, 30.0, 4000.0][(i / 32) % 5];
                (2.0 * u - 1.0) * scale
            })
            .collect();
        v.extend([0.0; 32]); // an all-zero block
        v.extend((0..32).map(|i| if i == 7 { -3.0 } else { 0.0 })); // one negative spike
        v.extend((0..32).map(|i| i as f32)); // positive maximum last
        v
    }

    #[test]
    fn f16_round_trips_every_half_and_rounds_midpoints_to_even() {
        for h in 0..=u16::MAX {
            let f = f32_from_f16(h);
            if f.is_nan() {
                assert!(f16_from_f32(f) & 0x7c00 == 0x7c00 && f16_from_f32(f) & 0x3ff != 0);
                continue;
            }
            assert_eq!(f16_from_f32(f), h, "{h:#06x} = {f}");
            // Halfway to the next half of larger magnitude (finite ones only).
            let next = h.wrapping_add(1);
            if h & 0x7fff < 0x7bff {
                let g = f32_from_f16(next);
                let mid = (f64::from(f) + f64::from(g)) / 2.0;
                let mid = mid as f32;
                assert_eq!(f64::from(mid), (f64::from(f) + f64::from(g)) / 2.0);
                let even = if h & 1 == 0 { h } else { next };
                assert_eq!(f16_from_f32(mid), even, "midpoint above {h:#06x}");
                // Just either side of the midpoint goes to the nearer one.
                let below = f32::from_bits(mid.to_bits() - 1);
                let above = f32::from_bits(mid.to_bits() + 1);
                assert_eq!(f16_from_f32(below), h);
                assert_eq!(f16_from_f32(above), next);
            }
        }
        assert_eq!(f16_from_f32(1e6), 0x7c00);
        assert_eq!(f16_from_f32(-1e6), 0xfc00);
        assert_eq!(
            f16_from_f32(65_519.0),
            0x7bff,
            "below the overflow midpoint"
        );
        assert_eq!(
            f16_from_f32(65_520.0),
            0x7c00,
            "the midpoint rounds to infinity"
        );
        assert_eq!(f16_from_f32(1e-9), 0);
        assert_eq!(f16_from_f32(-1e-9), 0x8000);
    }

    #[test]
    fn q8_0_comes_back_within_half_a_step() {
        let v = samples();
        let mut q = Vec::new();
        quantize_q8_0(&v, &mut q);
        assert_eq!(q.len(), v.len() / 32 * 34);
        let mut back = Vec::new();
        dequantize_q8_0(&q, &mut back);
        for (block, (x, y)) in v.chunks(32).zip(back.chunks(32)).enumerate() {
            let amax = x.iter().fold(0f32, |m, a| m.max(a.abs()));
            let d = amax / 127.0;
            // The scale as stored: half precision (subnormal, so coarser, for tiny blocks).
            let scale_err = (f32_from_f16(f16_from_f32(d)) - d).abs() * 127.0;
            for (a, b) in x.iter().zip(y) {
                // Half a step, plus the scale's rounding times at most 127 steps.
                let tol = (d * 0.5 + scale_err) * (1.0 + 1e-5);
                assert!((a - b).abs() <= tol, "block {block}: {a} -> {b}");
            }
            if amax > 0.0 {
                let back_max = y.iter().fold(0f32, |m, a| m.max(a.abs()));
                assert!((back_max - amax).abs() <= scale_err * (1.0 + 1e-5) + amax * 1e-6);
            } else {
                assert!(y.iter().all(|&b| b == 0.0));
            }
        }
    }

    #[test]
    fn q4_0_comes_back_within_one_step_and_keeps_the_extreme() {
        let v = samples();
        let mut q = Vec::new();
        quantize_q4_0(&v, &mut q);
        assert_eq!(q.len(), v.len() / 32 * 18);
        let mut back = Vec::new();
        dequantize_q4_0(&q, &mut back);
        for (block, (x, y)) in v.chunks(32).zip(back.chunks(32)).enumerate() {
            let m = x
                .iter()
                .fold(0f32, |m, &a| if a.abs() > m.abs() { a } else { m });
            let d = (m / 8.0).abs();
            let scale_err = (f32_from_f16(f16_from_f32(d)) - d).abs() * 8.0;
            for (a, b) in x.iter().zip(y) {
                // Half a step, except at the far end from the extreme, where q is capped at
                // 15 (+7 steps) for values up to +8 steps: one step; plus the scale's
                // half-precision rounding.
                let tol = (d + scale_err) * (1.0 + 1e-5);
                assert!((a - b).abs() <= tol, "block {block}: {a} -> {b}");
            }
            // The extreme maps to q = 0: exactly -8 * d16.
            let at = x.iter().position(|&a| a == m).unwrap();
            assert!(
                (y[at] - m).abs() <= scale_err * (1.0 + 1e-5),
                "block {block}"
            );
        }
        // Nibble layout: value j in the low nibble of byte j, value j + 16 in the high one.
        let mut one = Vec::new();
        let mut x = [0.0f32; 32];
        x[0] = -8.0; // d = 1, q = 0
        x[16] = 7.0; // q = 15
        x[1] = 1.0; // q = 9
        quantize_q4_0(&x, &mut one);
        assert_eq!(&one[..2], &f16_from_f32(1.0).to_le_bytes());
        assert_eq!(one[2], 0xf0);
        assert_eq!(one[3], 0x89);
        assert_eq!(one[4], 0x88);
    }

    #[test]
    fn encode_refuses_partial_blocks_and_other_types() {
        let mut out = Vec::new();
        assert_eq!(encode_f32s(GgmlType::Q8_0, &[0.0; 31], &mut out), None);
        assert_eq!(encode_f32s(GgmlType::Q4K, &[0.0; 256], &mut out), None);
        assert!(out.is_empty());
        for t in ENCODABLE {
            out.clear();
            encode_f32s(t, &[0.5; 64], &mut out).unwrap();
            assert_eq!(out.len() as u64, t.bytes_for(64).unwrap(), "{t}");
        }
    }
}
