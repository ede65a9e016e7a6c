//! Fused CPU kernels for the flex backend, where burn's one-op-at-a-time evaluation is the
//! bottleneck: GELU, and TinyViT's windowed attention. Other devices keep the tensor ops.
//!
//! Each kernel has a portable body and, on x86-64 with AVX2 and FMA, the same body compiled for
//! those features (`mul_add` becomes one instruction there; elsewhere it stays a plain `a * b + c`,
//! since a software `fma` would be far slower). Natively the work is split over threads; in wasm
//! it runs on the calling thread.

/// Runs `f` over disjoint chunks of `0..n` on every core (natively), `min_chunk` items at least
/// per chunk.
pub(crate) fn parallel_for(n: usize, min_chunk: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    #[cfg(not(target_family = "wasm"))]
    {
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let per = n.div_ceil(threads).max(min_chunk).max(1);
        if per < n {
            let f = &f;
            std::thread::scope(|s| {
                for start in (0..n).step_by(per) {
                    s.spawn(move || f(start..(start + per).min(n)));
                }
            });
            return;
        }
    }
    let _ = min_chunk;
    f(0..n)
}

/// The widest instruction set the kernels are compiled for that this CPU has.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    Portable,
    Avx2,
    Avx512,
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn isa() -> Isa {
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
        Isa::Avx512
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Isa::Avx2
    } else {
        Isa::Portable
    }
}

/// Defines `fn $name(args)` that runs the `#[inline(always)]` generic body `$body::<FMA>`
/// compiled for the best instruction set this CPU has (AVX-512, AVX2 + FMA, or portable code).
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:ident) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { $body::<true>($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { $body::<true>($($arg),*) }
                match isa() {
                    // SAFETY: `isa` detected these features on this CPU.
                    Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    Isa::Portable => {}
                }
            }
            $body::<false>($($arg),*)
        }
    };
}

/// `a * b + c`, fused where the CPU fuses it.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

// ---------------------------------------------------------------------------------------------
// GELU

/// Exact (erf) GELU in place, as PyTorch's `nn.GELU()`, through a polynomial erf (|error| < 1e-6).
pub(crate) fn gelu_in_place(values: &mut [f32]) {
    struct Ptr(*mut f32);
    // SAFETY: every chunk below is a disjoint range of `values`.
    unsafe impl Sync for Ptr {}
    let ptr = Ptr(values.as_mut_ptr());
    let ptr = &ptr;
    parallel_for(values.len(), 1 << 16, move |r| {
        // SAFETY: ranges from `parallel_for` are disjoint and inside `values`.
        gelu_slice(unsafe { std::slice::from_raw_parts_mut(ptr.0.add(r.start), r.len()) });
    });
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
multiversion!(pub(crate) fn gelu_slice(values: &mut [f32]) => gelu_body);

/// GELU in place on wasm: four lanes at a time with simd128 (LLVM leaves the scalar form, with
/// its bit-level exponent, unvectorised), the same operations in the same order as [`gelu_f32`].
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[cfg_attr(feature = "relaxed-simd", target_feature(enable = "relaxed-simd"))]
pub(crate) fn gelu_slice(values: &mut [f32]) {
    use core::arch::wasm32::*;
    let mut chunks = values.chunks_exact_mut(4);
    for c in &mut chunks {
        // SAFETY: `c` is 4 contiguous f32; simd128 loads and stores need no alignment.
        unsafe {
            let x = v128_load(c.as_ptr().cast());
            let half = f32x4_mul(f32x4_splat(0.5), x);
            let erf = simd::erf(f32x4_mul(x, f32x4_splat(std::f32::consts::FRAC_1_SQRT_2)));
            v128_store(c.as_mut_ptr().cast(), f32x4_mul(half, f32x4_add(f32x4_splat(1.0), erf)));
        }
    }
    chunks.into_remainder().iter_mut().for_each(|v| *v = gelu_f32(*v));
}

/// `row[i] ← exp(row[i] − max)` for `max ≥ row[i]`; returns their sum (in lanes, then across).
#[cfg_attr(all(target_arch = "wasm32", feature = "relaxed-simd"), target_feature(enable = "relaxed-simd"))]
pub(crate) fn exp_sub_sum(row: &mut [f32], max: f32) -> f32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use core::arch::wasm32::*;
        let (m, mut acc) = (f32x4_splat(max), f32x4_splat(0.0));
        let mut chunks = row.chunks_exact_mut(4);
        for c in &mut chunks {
            // SAFETY: `c` is 4 contiguous f32.
            unsafe {
                let e = simd::exp_neg(f32x4_sub(m, v128_load(c.as_ptr().cast())));
                v128_store(c.as_mut_ptr().cast(), e);
                acc = f32x4_add(acc, e);
            }
        }
        let mut total = f32x4_extract_lane::<0>(acc) + f32x4_extract_lane::<1>(acc) + f32x4_extract_lane::<2>(acc) + f32x4_extract_lane::<3>(acc);
        for v in chunks.into_remainder() {
            *v = exp_neg(max - *v);
            total += *v;
        }
        total
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        const LANES: usize = 8;
        let mut sum = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for l in 0..LANES {
                chunk[l] = exp_neg(max - chunk[l]);
                sum[l] += chunk[l];
            }
        }
        let mut total: f32 = sum.iter().sum();
        for v in chunks.into_remainder() {
            *v = exp_neg(max - *v);
            total += *v;
        }
        total
    }
}

/// [`erf_f32`] and [`exp_neg`] on four lanes, operation for operation; in the relaxed-SIMD build
/// each multiply-add of their polynomials is fused (one rounding instead of two).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    use crate::wasm_gemm::madd;

    #[cfg_attr(not(feature = "relaxed-simd"), inline(always))]
    #[cfg_attr(feature = "relaxed-simd", inline, target_feature(enable = "relaxed-simd"))]
    pub(super) fn erf(x: v128) -> v128 {
        const P: f32 = 0.327_591_1;
        const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
        let s = f32x4_splat;
        let a = f32x4_abs(x);
        let t = f32x4_div(s(1.0), madd!(s(P), a, s(1.0)));
        let mut poly = madd!(t, s(A[4]), s(A[3]));
        poly = madd!(t, poly, s(A[2]));
        poly = madd!(t, poly, s(A[1]));
        poly = madd!(t, poly, s(A[0]));
        poly = f32x4_mul(t, poly);
        let y = f32x4_sub(s(1.0), f32x4_mul(poly, exp_neg(f32x4_mul(a, a))));
        // y ≥ 0: copysign is an OR of x's sign bit.
        v128_or(y, v128_and(x, u32x4_splat(0x8000_0000)))
    }

    #[cfg_attr(not(feature = "relaxed-simd"), inline(always))]
    #[cfg_attr(feature = "relaxed-simd", inline, target_feature(enable = "relaxed-simd"))]
    pub(super) fn exp_neg(z: v128) -> v128 {
        const MAGIC: f32 = 12_582_912.0;
        let s = f32x4_splat;
        let far = f32x4_gt(z, s(super::EXP_NEG_CUTOFF));
        let z = f32x4_pmin(s(super::EXP_NEG_CUTOFF), z);
        let shifted = madd!(z, s(std::f32::consts::LOG2_E), s(MAGIC));
        let k = f32x4_sub(shifted, s(MAGIC));
        let r = f32x4_sub(f32x4_mul(k, s(std::f32::consts::LN_2)), z);
        let mut p = madd!(r, s(1.0 / 720.0), s(1.0 / 120.0));
        p = madd!(r, p, s(1.0 / 24.0));
        p = madd!(r, p, s(1.0 / 6.0));
        p = madd!(r, p, s(0.5));
        p = madd!(r, p, s(1.0));
        p = madd!(r, p, s(1.0));
        let ki = i32x4_sub(shifted, u32x4_splat(MAGIC.to_bits()));
        v128_andnot(f32x4_mul(p, i32x4_shl(i32x4_sub(i32x4_splat(127), ki), 23)), far)
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn gelu_body<const FMA: bool>(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = gelu_f32(*v));
}

#[inline(always)]
fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf by Abramowitz & Stegun 7.1.26 with a polynomial exp; |error| < 1e-6 in f32.
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp_neg(a * a);
    y.copysign(x)
}

/// Above this, [`exp_neg`] is 0. `e^-44 ≈ 8·10⁻²⁰`: a softmax row holds a 1 (its maximum), so
/// even a million terms below that move its sum by less than 10⁻¹³ relative, far under f32's
/// precision, and erf is 1 in f32 long before. What it buys: no tiny probabilities (the former
/// clamp at 87 left ~1e-38) whose products are subnormal floats, which x86 computes ~50× slower:
/// a wasm GEMM with 30% subnormal entries in one operand ran at 0.6 instead of 35 GFLOP/s.
const EXP_NEG_CUTOFF: f32 = 44.0;

/// `exp(-z)` for `z ≥ 0`, relative error < 1e-7, and 0 for `z >` [`EXP_NEG_CUTOFF`]:
/// `2^-k · e^r` with `k = round(z·log₂e)`, `|r| ≤ ln2/2`. The rounding adds 1.5·2²³ so `k` lands
/// in the low mantissa bits: no float-to-int conversion, so loops over it stay vectorised.
#[inline(always)]
pub(crate) fn exp_neg(z: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let far = z > EXP_NEG_CUTOFF;
    let z = z.min(EXP_NEG_CUTOFF);
    let shifted = z * std::f32::consts::LOG2_E + MAGIC;
    let k = shifted - MAGIC;
    let r = k * std::f32::consts::LN_2 - z;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let ki = shifted.to_bits().wrapping_sub(MAGIC.to_bits());
    let e = p * f32::from_bits(127u32.wrapping_sub(ki) << 23);
    if far { 0.0 } else { e }
}

// ---------------------------------------------------------------------------------------------
// Windowed attention

/// The geometry of a windowed attention over a token grid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Windows {
    /// `(H, W)` of the token grid.
    pub grid: [usize; 2],
    /// Side of a square window; the grid is padded at the bottom and right to a multiple of it.
    pub size: usize,
    pub heads: usize,
    /// Width of one head's query, key and value.
    pub head_dim: usize,
}

/// Columns of the key buffer are padded to this (the score loop's register block).
const SCORE_BLOCK: usize = 32; // a multiple of the softmax LANES
/// Width of the value/output register block.
const VALUE_BLOCK: usize = 32;

/// TinyViT's window attention for one image, partition and reverse partition included:
/// `softmax(q·kᵀ·scale + bias)·v` within each window, every head.
///
/// - `qkv`: `[H·W, heads·3·head_dim]`, tokens in grid order; each head's slice is its q, k, v.
/// - `pad_qkv`: `[heads·3·head_dim]`, the projection of a padding token (the reference pads
///   before its LayerNorm, so padding tokens are keys and values too).
/// - `bias`: `[heads, N, N]` with `N = size²`, added to the scaled scores.
/// - → `[H·W, heads·head_dim]`, heads concatenated, tokens in grid order.
pub(crate) fn window_attention(qkv: &[f32], pad_qkv: &[f32], bias: &[f32], geo: Windows) -> Vec<f32> {
    let Windows { grid: [h, w], size: ws, heads, head_dim: kd } = geo;
    let n = ws * ws;
    assert_eq!(qkv.len(), h * w * heads * 3 * kd, "qkv buffer");
    assert_eq!(pad_qkv.len(), heads * 3 * kd, "padding token");
    assert_eq!(bias.len(), heads * n * n, "bias table");
    let (nh, nw) = (h.div_ceil(ws), w.div_ceil(ws));
    let c = heads * kd;
    let mut out = vec![0f32; h * w * c];
    struct Ptr(*mut f32);
    // SAFETY: each (window, head) writes its own head's columns of its own window's tokens.
    unsafe impl Sync for Ptr {}
    let ptr = Ptr(out.as_mut_ptr());
    let ptr = &ptr;
    let jobs = nh * nw * heads;
    parallel_for(jobs, 1, move |range| {
        let mut scratch = Scratch::new(n, kd);
        for job in range {
            let (win, head) = (job / heads, job % heads);
            let (wy, wx) = (win / nw * ws, win % nw * ws);
            // Gather this window's q, kᵀ, v for the head; tokens outside the grid are padding.
            for t in 0..n {
                let (y, x) = (wy + t / ws, wx + t % ws);
                let row = if y < h && x < w {
                    &qkv[(y * w + x) * 3 * c + head * 3 * kd..][..3 * kd]
                } else {
                    &pad_qkv[head * 3 * kd..][..3 * kd]
                };
                scratch.q[t * kd..(t + 1) * kd].copy_from_slice(&row[..kd]);
                for d in 0..kd {
                    scratch.kt[d * scratch.n_pad + t] = row[kd + d];
                }
                scratch.v[t * scratch.kd_pad..t * scratch.kd_pad + kd].copy_from_slice(&row[2 * kd..]);
            }
            attend(&mut scratch, &bias[head * n * n..(head + 1) * n * n], n, kd);
            for t in 0..n {
                let (y, x) = (wy + t / ws, wx + t % ws);
                if y < h && x < w {
                    let o = &scratch.o[t * scratch.kd_pad..t * scratch.kd_pad + kd];
                    // SAFETY: disjoint per (window, head), inside `out`.
                    let dst = unsafe { std::slice::from_raw_parts_mut(ptr.0.add((y * w + x) * c + head * kd), kd) };
                    dst.copy_from_slice(o);
                }
            }
        }
    });
    out
}

/// Per-thread buffers for one (window, head).
struct Scratch {
    n_pad: usize,
    kd_pad: usize,
    /// `[N, kd]`
    q: Vec<f32>,
    /// `[kd, n_pad]`, zero beyond N.
    kt: Vec<f32>,
    /// `[N, kd_pad]`, zero beyond kd.
    v: Vec<f32>,
    /// `[N, n_pad]` scores, then probabilities.
    s: Vec<f32>,
    /// `[N, kd_pad]`
    o: Vec<f32>,
    /// `[N]`, 1 / the softmax denominator of each row.
    inv_sum: Vec<f32>,
}

impl Scratch {
    fn new(n: usize, kd: usize) -> Self {
        let n_pad = n.div_ceil(SCORE_BLOCK) * SCORE_BLOCK;
        let kd_pad = kd.div_ceil(VALUE_BLOCK) * VALUE_BLOCK;
        Self {
            n_pad,
            kd_pad,
            q: vec![0.0; n * kd],
            kt: vec![0.0; kd * n_pad],
            v: vec![0.0; n * kd_pad],
            s: vec![0.0; n * n_pad],
            o: vec![0.0; n * kd_pad],
            inv_sum: vec![0.0; n],
        }
    }
}

multiversion!(fn attend(s: &mut Scratch, bias: &[f32], n: usize, kd: usize) => attend_body);

/// Scores, softmax and the weighted sum of values for one (window, head), into `s.o`. Two query
/// rows at a time, so that the register blocks hold independent sums.
#[inline(always)]
fn attend_body<const FMA: bool>(s: &mut Scratch, bias: &[f32], n: usize, kd: usize) {
    let scale = (kd as f32).powf(-0.5);
    let (n_pad, kd_pad) = (s.n_pad, s.kd_pad);
    for i in (0..n).step_by(2) {
        let i1 = (i + 1).min(n - 1); // an odd last row is computed twice
        let (q0, q1) = (&s.q[i * kd..(i + 1) * kd], &s.q[i1 * kd..(i1 + 1) * kd]);
        for jb in 0..n_pad / SCORE_BLOCK {
            let (mut a0, mut a1) = ([0f32; SCORE_BLOCK], [0f32; SCORE_BLOCK]);
            for d in 0..kd {
                let k = &s.kt[d * n_pad + jb * SCORE_BLOCK..][..SCORE_BLOCK];
                let (x0, x1) = (q0[d], q1[d]);
                for l in 0..SCORE_BLOCK {
                    a0[l] = madd::<FMA>(x0, k[l], a0[l]);
                    a1[l] = madd::<FMA>(x1, k[l], a1[l]);
                }
            }
            s.s[i * n_pad + jb * SCORE_BLOCK..][..SCORE_BLOCK].copy_from_slice(&a0);
            s.s[i1 * n_pad + jb * SCORE_BLOCK..][..SCORE_BLOCK].copy_from_slice(&a1);
        }
    }
    // Softmax numerators; each row's 1/Σ is applied to its output instead. Reductions run in
    // LANES independent partial results so that they vectorise.
    const LANES: usize = 16;
    for i in 0..n {
        let row = &mut s.s[i * n_pad..(i + 1) * n_pad];
        let b = &bias[i * n..(i + 1) * n];
        for (v, &bj) in row.iter_mut().zip(b) {
            *v = *v * scale + bj;
        }
        row[n..].fill(f32::NEG_INFINITY); // padding columns: e^-∞ = 0 below
        let mut m = [f32::NEG_INFINITY; LANES];
        for chunk in row.chunks_exact(LANES) {
            for l in 0..LANES {
                m[l] = if chunk[l] > m[l] { chunk[l] } else { m[l] };
            }
        }
        let max = m.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        let mut sum = [0f32; LANES];
        for chunk in row.chunks_exact_mut(LANES) {
            for l in 0..LANES {
                chunk[l] = exp_neg(max - chunk[l]);
                sum[l] += chunk[l];
            }
        }
        s.inv_sum[i] = 1.0 / sum.iter().sum::<f32>();
    }
    for i in (0..n).step_by(2) {
        let i1 = (i + 1).min(n - 1);
        let (p0, p1) = (&s.s[i * n_pad..i * n_pad + n], &s.s[i1 * n_pad..i1 * n_pad + n]);
        for cb in 0..kd_pad / VALUE_BLOCK {
            let (mut a0, mut a1) = ([0f32; VALUE_BLOCK], [0f32; VALUE_BLOCK]);
            for j in 0..n {
                let v = &s.v[j * kd_pad + cb * VALUE_BLOCK..][..VALUE_BLOCK];
                let (x0, x1) = (p0[j], p1[j]);
                for l in 0..VALUE_BLOCK {
                    a0[l] = madd::<FMA>(x0, v[l], a0[l]);
                    a1[l] = madd::<FMA>(x1, v[l], a1[l]);
                }
            }
            let (inv0, inv1) = (s.inv_sum[i], s.inv_sum[i1]);
            let o0 = &mut s.o[i * kd_pad + cb * VALUE_BLOCK..][..VALUE_BLOCK];
            o0.iter_mut().zip(&a0).for_each(|(o, a)| *o = a * inv0);
            let o1 = &mut s.o[i1 * kd_pad + cb * VALUE_BLOCK..][..VALUE_BLOCK];
            o1.iter_mut().zip(&a1).for_each(|(o, a)| *o = a * inv1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stride-2 3×3 convolution of few input channels (the TinyViT stem)

/// `conv2d(x, weight, bias, stride 2, padding 1)` for one image, where flex's im2col + GEMM is
/// slow (the stem: 27-wide im2col rows, then stride-2 gathers). Each input channel is split into its four
/// stride-2 phases (even/odd rows × even/odd columns, zero-padded), after which every tap is a
/// contiguous multiply-add of one phase row into one output row.
///
/// - x: `[C_in, H, W]`, weight: `[C_out, C_in, 3, 3]`, bias: `[C_out]` → `[C_out, OH, OW]` with
///   `OH = ⌈H/2⌉`, `OW = ⌈W/2⌉`.
pub(crate) fn conv3x3_stride2(x: &[f32], [c_in, h, w]: [usize; 3], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let c_out = bias.len();
    assert_eq!(x.len(), c_in * h * w, "input");
    assert_eq!(weight.len(), c_out * c_in * 9, "weight");
    let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
    let (ph, pw) = (oh + 1, ow + 1);
    // phases[c][py][px][i][j] = input[c][2i + py − 1][2j + px − 1], zero outside the image.
    let mut phases = vec![0f32; c_in * 4 * ph * pw];
    for (k, plane) in phases.chunks_exact_mut(ph * pw).enumerate() {
        let (c, py, px) = (k / 4, k / 2 % 2, k % 2);
        for (i, dst) in plane.chunks_exact_mut(pw).enumerate() {
            let Some(y) = (2 * i + py).checked_sub(1).filter(|&y| y < h) else { continue };
            let src = &x[(c * h + y) * w..(c * h + y + 1) * w];
            // Column j reads input column 2j + px − 1: from j = 1 − px on, every other one.
            for (d, &v) in dst[1 - px..].iter_mut().zip(src[px ^ 1..].iter().step_by(2)) {
                *d = v;
            }
        }
    }
    let mut out = vec![0f32; c_out * oh * ow];
    struct Ptr(*mut f32);
    // SAFETY: each output row is written by one job only.
    unsafe impl Sync for Ptr {}
    let ptr = Ptr(out.as_mut_ptr());
    let ptr = &ptr;
    let phases = &phases[..];
    // Rows outermost: the phase rows one output row reads (a few hundred KB) stay in cache
    // while every output channel is computed from them.
    parallel_for(oh, 1, move |rows| {
        for oy in rows {
            for o in 0..c_out {
                // SAFETY: row `oy` of channel `o`, disjoint from every other job's rows.
                let row = unsafe { std::slice::from_raw_parts_mut(ptr.0.add((o * oh + oy) * ow), ow) };
                conv_row(phases, &weight[o * c_in * 9..(o + 1) * c_in * 9], bias[o], [c_in, ph, pw, oy], row);
            }
        }
    });
    out
}

multiversion!(fn conv_row(phases: &[f32], weight: &[f32], bias: f32, dims: [usize; 4], row: &mut [f32]) => conv_row_body);

/// Width of the output-row block summed in registers.
const ROW_BLOCK: usize = 128;

/// One output row of one channel: each block is summed over every input channel and tap in
/// registers, then stored once.
#[inline(always)]
fn conv_row_body<const FMA: bool>(phases: &[f32], weight: &[f32], bias: f32, [c_in, ph, pw, oy]: [usize; 4], row: &mut [f32]) {
    for (bi, block) in row.chunks_mut(ROW_BLOCK).enumerate() {
        let x0 = bi * ROW_BLOCK;
        let mut acc = [bias; ROW_BLOCK];
        let len = block.len();
        for c in 0..c_in {
            for ky in 0..3 {
                for kx in 0..3 {
                    let wv = weight[(c * 3 + ky) * 3 + kx];
                    let start = ((c * 2 + ky % 2) * 2 + kx % 2) * ph * pw + (oy + ky / 2) * pw + kx / 2 + x0;
                    if len == ROW_BLOCK {
                        let src = &phases[start..start + ROW_BLOCK];
                        for l in 0..ROW_BLOCK {
                            acc[l] = madd::<FMA>(wv, src[l], acc[l]);
                        }
                    } else {
                        for (a, &v) in acc[..len].iter_mut().zip(&phases[start..start + len]) {
                            *a = madd::<FMA>(wv, v, *a);
                        }
                    }
                }
            }
        }
        block.copy_from_slice(&acc[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_erf_is_within_1e6_of_erf() {
        let mut worst = 0f64;
        for i in -100_000..=100_000 {
            let x = i as f32 * 1e-4;
            let d = (erf_f32(x) as f64 - series_erf(x as f64)).abs();
            worst = worst.max(d);
        }
        assert!(worst < 1e-6, "max |erf error| {worst:e}");
        assert_eq!(erf_f32(20.0), 1.0);
        assert_eq!(erf_f32(-20.0), -1.0);
    }

    /// erf by its Taylor series (|x| ≤ 3) or asymptotic expansion, in f64: a reference for the test.
    fn series_erf(x: f64) -> f64 {
        if x.abs() > 3.0 {
            let a = x.abs();
            let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt()) * (1.0 - 1.0 / (2.0 * a * a) + 3.0 / (4.0 * a.powi(4)));
            return (1.0 - erfc).copysign(x);
        }
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }

    /// The same attention written the obvious way, in f64, padding by explicit tokens.
    fn naive(qkv: &[f32], pad: &[f32], bias: &[f32], geo: Windows) -> Vec<f32> {
        let Windows { grid: [h, w], size: ws, heads, head_dim: kd } = geo;
        let (c, n) = (heads * kd, ws * ws);
        let mut out = vec![0f32; h * w * c];
        for wy in (0..h).step_by(ws) {
            for wx in (0..w).step_by(ws) {
                let tok = |t: usize, head: usize| -> Vec<f64> {
                    let (y, x) = (wy + t / ws, wx + t % ws);
                    let row = if y < h && x < w { &qkv[(y * w + x) * 3 * c..][..3 * c] } else { pad };
                    row[head * 3 * kd..][..3 * kd].iter().map(|&v| v as f64).collect()
                };
                for head in 0..heads {
                    for i in 0..n {
                        let (y, x) = (wy + i / ws, wx + i % ws);
                        if y >= h || x >= w {
                            continue;
                        }
                        let qi = tok(i, head);
                        let scores: Vec<f64> = (0..n)
                            .map(|j| {
                                let kj = tok(j, head);
                                let dot: f64 = (0..kd).map(|d| qi[d] * kj[kd + d]).sum();
                                dot / (kd as f64).sqrt() + bias[head * n * n + i * n + j] as f64
                            })
                            .collect();
                        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                        let sum: f64 = e.iter().sum();
                        for d in 0..kd {
                            let v: f64 = (0..n).map(|j| e[j] / sum * tok(j, head)[2 * kd + d]).sum();
                            out[(y * w + x) * c + head * kd + d] = v as f32;
                        }
                    }
                }
            }
        }
        out
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 4.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn stride_2_conv_matches_the_definition_on_odd_and_even_sizes() {
        for [c_in, h, w, c_out] in [[3, 9, 14, 4], [2, 8, 7, 3], [1, 1, 1, 1]] {
            let x = pseudo_random(c_in * h * w, 4);
            let weight = pseudo_random(c_out * c_in * 9, 5);
            let bias = pseudo_random(c_out, 6);
            let got = conv3x3_stride2(&x, [c_in, h, w], &weight, &bias);
            let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
            assert_eq!(got.len(), c_out * oh * ow);
            for o in 0..c_out {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut want = bias[o] as f64;
                        for c in 0..c_in {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (y, xx) = ((2 * oy + ky) as isize - 1, (2 * ox + kx) as isize - 1);
                                    if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                                        want += weight[((o * c_in + c) * 3 + ky) * 3 + kx] as f64
                                            * x[(c * h + y as usize) * w + xx as usize] as f64;
                                    }
                                }
                            }
                        }
                        let g = got[(o * oh + oy) * ow + ox] as f64;
                        assert!((g - want).abs() < 1e-5, "[{o}, {oy}, {ox}]: {g} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn window_attention_matches_the_definition_with_padding_and_odd_head_width() {
        for geo in [
            Windows { grid: [9, 11], size: 4, heads: 3, head_dim: 5 },
            Windows { grid: [7, 7], size: 7, heads: 2, head_dim: 32 },
            Windows { grid: [10, 6], size: 7, heads: 1, head_dim: 40 },
        ] {
            let Windows { grid: [h, w], size, heads, head_dim } = geo;
            let c3 = heads * 3 * head_dim;
            let qkv = pseudo_random(h * w * c3, 1);
            let pad = pseudo_random(c3, 2);
            let bias = pseudo_random(heads * size.pow(4), 3);
            let got = window_attention(&qkv, &pad, &bias, geo);
            let want = naive(&qkv, &pad, &bias, geo);
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "{geo:?}: max |Δ| {worst:e}");
        }
    }
}
