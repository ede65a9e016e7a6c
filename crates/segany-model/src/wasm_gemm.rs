//! Single-precision GEMM for wasm SIMD, the page's per-click decoder's hot loop.
//!
//! The decoder's products are tall and skinny (`[4096, 256]·[256, 56]`, `[56, 256]·[256, 4096]`,
//! `[4096, 56]·[56, 256]`, …), and a browser gives one core per worker, so what counts is the
//! work per loaded byte, not cache blocking for big squares. No operand is packed:
//!
//! - `b` row-major (`b_cs == 1`): register tiles of `MR × NR` outputs, each step of the inner
//!   product loading one row of `NR` values of `b` and broadcasting `MR` values of `a`;
//! - `b` transposed (`b_rs == 1`, e.g. `q·kᵀ`): tiles of `DM × DN` dot products along rows of
//!   `a` and of `bᵀ`, four lanes of partial sums each, reduced once at the end;
//! - `b` transposed with an inner dimension shorter than 16: `b` is copied row-major, then the
//!   first case.
//!
//! Which operand the loops stream once is chosen by size: the larger one is read once, the
//! smaller one repeatedly from cache.
//!
//! With the crate feature `relaxed-simd` the multiply-adds are `f32x4.relaxed_madd` (a fused
//! multiply-add where the CPU has one). A module built so does not validate in browsers
//! without relaxed SIMD, so the page ships it beside the plain build and picks one.

use core::arch::wasm32::*;

/// Rows × columns of a register tile: `MR` broadcasts of `a` times `NR / 4` vectors of `b`.
const MR: usize = 4;
const NR: usize = 8;
/// Rows of `a` × rows of `bᵀ` of a dot-product tile.
const DM: usize = 3;
const DN: usize = 3;
/// Inner dimensions below this take the copy-`b`-row-major path for a transposed `b`.
const MIN_DOT_K: usize = 16;
/// Slices of the inner dimension of the row-major case.
const KC: usize = 256;

/// `c[i·ldc + j] = scale · Σ_p a[i·lda + p] · b[p·b_rs + j·b_cs]  (+ c[i·ldc + j] with accumulate)`
/// for `i < m`, `j < n`; `a` has unit column stride.
///
/// Public for the browser tests only (`crates/segany-wasm/tests/browser.rs`).
///
/// # Panics
/// When an addressed element of `a`, `b` or `c` is out of bounds.
#[allow(clippy::too_many_arguments)]
pub fn gemm(m: usize, n: usize, k: usize, a: &[f32], lda: usize, b: &[f32], (b_rs, b_cs): (usize, usize), c: &mut [f32], ldc: usize, accumulate: bool, scale: f32) {
    if !crate::cpu_decoder::gemm_prologue(m, n, k, a, lda, b, (b_rs, b_cs), c, ldc, accumulate) {
        return;
    }
    let out = Out { c: c.as_mut_ptr(), ldc, accumulate, scale };
    if b_cs == 1 {
        // SAFETY: `gemm_prologue` checked every element the tiles address; `c` is borrowed
        // mutably, so it aliases neither operand.
        unsafe { nn(m, n, k, a.as_ptr(), lda, b.as_ptr(), b_rs, out) }
    } else if b_rs == 1 && k >= MIN_DOT_K {
        // SAFETY: as above.
        unsafe { nt(m, n, k, a.as_ptr(), lda, b.as_ptr(), b_cs, out) }
    } else {
        let mut rows = vec![0f32; k * n];
        for (p, row) in rows.chunks_exact_mut(n).enumerate() {
            row.iter_mut().enumerate().for_each(|(j, v)| *v = b[p * b_rs + j * b_cs]);
        }
        // SAFETY: as above; `rows` is `k × n` row-major.
        unsafe { nn(m, n, k, a.as_ptr(), lda, rows.as_ptr(), n, out) }
    }
}

/// Where a tile's results go: `c = scale · acc (+ c)`.
#[derive(Clone, Copy)]
struct Out {
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    scale: f32,
}

impl Out {
    /// Stores `v` (one vector of partial results, already scaled) at row `i`, column `j`,
    /// its first `cols` lanes (all four when `cols >= 4`).
    #[inline(always)]
    unsafe fn store(self, i: usize, j: usize, v: v128, cols: usize) {
        unsafe {
            let p = self.c.add(i * self.ldc + j);
            if cols >= 4 {
                let v = if self.accumulate { f32x4_add(v128_load(p as *const v128), v) } else { v };
                v128_store(p as *mut v128, v);
            } else {
                let mut lanes = [0f32; 4];
                v128_store(lanes.as_mut_ptr() as *mut v128, v);
                for (l, &x) in lanes.iter().enumerate().take(cols) {
                    *p.add(l) = if self.accumulate { *p.add(l) + x } else { x };
                }
            }
        }
    }
}

/// `a · b + c`, lane-wise: fused where the build has relaxed SIMD. A macro, not a function, so
/// that the intrinsic lands directly in the functions that enable its target feature (a function
/// of its own is not inlined into them: a call per multiply-add made GELU 20% slower). Also
/// `kernels`' erf and exp.
macro_rules! madd {
    ($a:expr, $b:expr, $c:expr) => {{
        #[cfg(feature = "relaxed-simd")]
        let r = core::arch::wasm32::f32x4_relaxed_madd($a, $b, $c);
        #[cfg(not(feature = "relaxed-simd"))]
        let r = core::arch::wasm32::f32x4_add(core::arch::wasm32::f32x4_mul($a, $b), $c);
        r
    }};
}
pub(crate) use madd;

/// `b` row-major with row stride `ldb`.
#[allow(clippy::too_many_arguments)]
unsafe fn nn(m: usize, n: usize, k: usize, a: *const f32, lda: usize, b: *const f32, ldb: usize, out: Out) {
    unsafe {
        // The last columns, fewer than NR, as a zero-padded copy so that every tile loads NR.
        let tail = n % NR;
        let full = n - tail;
        let padded: Vec<f32> = if tail == 0 {
            Vec::new()
        } else {
            (0..k).flat_map(|p| (0..NR).map(move |j| if j < tail { *b.add(p * ldb + full + j) } else { 0.0 })).collect()
        };
        let panel = |j0: usize| -> (*const f32, usize, usize) {
            if j0 < full { (b.add(j0), ldb, NR) } else { (padded.as_ptr(), NR, tail) }
        };
        let panels = n.div_ceil(NR);
        let blocks = m.div_ceil(MR);
        // Inner products longer than KC in slices, so that a tile's slice of `b` (KC rows of a
        // panel) stays in L1 while every row block passes over it.
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            let out = Out { accumulate: out.accumulate || p0 > 0, ..out };
            let tile = |ib: usize, jp: usize| {
                let (i0, j0) = (ib * MR, jp * NR);
                let (bp, ldb, cols) = panel(j0);
                let (ap, bp) = (a.add(i0 * lda + p0), bp.add(p0 * ldb));
                match m - i0 {
                    1 => tile_nn::<1>(kc, ap, lda, bp, ldb, out, i0, j0, cols),
                    2 => tile_nn::<2>(kc, ap, lda, bp, ldb, out, i0, j0, cols),
                    3 => tile_nn::<3>(kc, ap, lda, bp, ldb, out, i0, j0, cols),
                    _ => tile_nn::<MR>(kc, ap, lda, bp, ldb, out, i0, j0, cols),
                }
            };
            sweep(blocks, panels, m >= n, tile);
        }
    }
}

/// Calls `tile(row_block, column_block)` for every pair, streaming the larger operand once: row
/// block by row block when `rows_outer` (`a` is the larger), else column block by column block.
fn sweep(row_blocks: usize, col_blocks: usize, rows_outer: bool, mut tile: impl FnMut(usize, usize)) {
    if rows_outer {
        (0..row_blocks).for_each(|i| (0..col_blocks).for_each(|j| tile(i, j)));
    } else {
        (0..col_blocks).for_each(|j| (0..row_blocks).for_each(|i| tile(i, j)));
    }
}

/// One `R × NR` tile of [`nn`]: rows `i0..i0 + R` (`a` points at row `i0`), columns
/// `j0..j0 + cols` (`b` at column `j0`, rows `ldb` apart).
#[cfg_attr(feature = "relaxed-simd", target_feature(enable = "relaxed-simd"))]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_nn<const R: usize>(k: usize, a: *const f32, lda: usize, b: *const f32, ldb: usize, out: Out, i0: usize, j0: usize, cols: usize) {
    unsafe {
        let mut acc = [[f32x4_splat(0.0); 2]; R];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..k {
            let b0 = v128_load(bp as *const v128);
            let b1 = v128_load(bp.add(4) as *const v128);
            for (i, acc) in acc.iter_mut().enumerate() {
                let ai = v128_load32_splat(ap.add(i * lda) as *const u32);
                acc[0] = madd!(ai, b0, acc[0]);
                acc[1] = madd!(ai, b1, acc[1]);
            }
            ap = ap.add(1);
            bp = bp.add(ldb);
        }
        let s = f32x4_splat(out.scale);
        for (i, acc) in acc.iter().enumerate() {
            out.store(i0 + i, j0, f32x4_mul(acc[0], s), cols);
            if cols > 4 {
                out.store(i0 + i, j0 + 4, f32x4_mul(acc[1], s), cols - 4);
            }
        }
    }
}

/// `b` transposed: element `(p, j)` at `b[p + j·ldb]`, so output `(i, j)` is the dot product of
/// row `i` of `a` and row `j` of `bᵀ`.
#[allow(clippy::too_many_arguments)]
unsafe fn nt(m: usize, n: usize, k: usize, a: *const f32, lda: usize, b: *const f32, ldb: usize, out: Out) {
    unsafe {
        let (blocks_m, blocks_n) = (m.div_ceil(DM), n.div_ceil(DN));
        let tile = |ib: usize, jb: usize| {
            let (i0, j0) = (ib * DM, jb * DN);
            // Rows past the end repeat the last row (computed, never stored).
            let ra: [*const f32; DM] = std::array::from_fn(|r| a.add((i0 + r).min(m - 1) * lda));
            let rb: [*const f32; DN] = std::array::from_fn(|r| b.add((j0 + r).min(n - 1) * ldb));
            tile_nt(k, ra, rb, out, i0, j0, (m - i0).min(DM), (n - j0).min(DN));
        };
        sweep(blocks_m, blocks_n, m >= n, tile);
    }
}

/// One `DM × DN` tile of [`nt`]: dot products of rows `ra` of `a` with rows `rb` of `bᵀ`.
#[cfg_attr(feature = "relaxed-simd", target_feature(enable = "relaxed-simd"))]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_nt(k: usize, ra: [*const f32; DM], rb: [*const f32; DN], out: Out, i0: usize, j0: usize, rows: usize, cols: usize) {
    unsafe {
        let mut acc = [[f32x4_splat(0.0); DN]; DM];
        let body = k - k % 4;
        let mut p = 0;
        while p < body {
            let bv: [v128; DN] = std::array::from_fn(|j| v128_load(rb[j].add(p) as *const v128));
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = v128_load(ra[i].add(p) as *const v128);
                for j in 0..DN {
                    acc[j] = madd!(av, bv[j], acc[j]);
                }
            }
            p += 4;
        }
        for (i, acc) in acc.iter().enumerate().take(rows) {
            for (j, v) in acc.iter().enumerate().take(cols) {
                let mut s = f32x4_extract_lane::<0>(*v) + f32x4_extract_lane::<1>(*v) + (f32x4_extract_lane::<2>(*v) + f32x4_extract_lane::<3>(*v));
                for q in body..k {
                    s += *ra[i].add(q) * *rb[j].add(q);
                }
                let at = out.c.add((i0 + i) * out.ldc + j0 + j);
                *at = if out.accumulate { *at + out.scale * s } else { out.scale * s };
            }
        }
    }
}
