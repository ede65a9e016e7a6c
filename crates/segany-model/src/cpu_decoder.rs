//! The mask decoder as fused CPU code: what runs on every click, in the browser's wasm worker and
//! natively. Same network and weights as [`MaskDecoder`](crate::MaskDecoder) (read from its burn
//! modules), the same arithmetic up to the order of float additions, but organised around what
//! a click changes and what it does not:
//!
//! - **Per image** ([`ImageContext`]): the first block's image-side projections — the
//!   token→image keys and values and the image→token queries — depend only on the embedding (plus
//!   the positional encoding and, without a mask prompt, the constant `no_mask_embed`). They are
//!   computed once per embedding. A mask prompt adds `conv1x1(h)` to the image tokens; that
//!   correction is pushed through the projections as a product with the 16-channel `h`, not with
//!   the 256-channel result.
//! - **Per model**: the positional encoding's share of every later image-side projection.
//! - **Per click, few prompt tokens** (where cheaper than the other ways): the image-side
//!   projections of the later blocks are never made. The
//!   queries are pushed through the key projection instead (`q·(X·W_k)ᵀ = (q·W_kᵀ)·Xᵀ`), the
//!   attention-weighted sum of the image tokens through the value projection
//!   (`P·(X·W_v) = (P·X)·W_v`), and the prompt keys through the image→token query projection, so
//!   every image-side product has `heads · tokens` columns instead of the projections' width.
//! - **Per click, otherwise**: the remaining image-side projections as one GEMM per block; image→token
//!   attention as per-head score GEMMs and a softmax over the few prompt tokens, whose values are
//!   pushed through the output projection first when that is cheaper (few tokens); LayerNorm,
//!   GELU, bias and residual adds fused into single passes; the output upscaling as two GEMMs
//!   with LayerNorm2d, GELU and the hypernetwork dot products fused into their epilogues, tile by
//!   tile so that the 256×256×32 upscaled features never exist at once.
//!
//! - **Per click, folds**: the image tokens change per click only by the image→token updates,
//!   whose rank is at most the attention's internal width (`heads · tokens` for few tokens),
//!   and each block's last LayerNorm is affine per row. So a linear map of later image tokens
//!   can be pushed back through those LayerNorms ([`Fold`]): the image's share is made once per
//!   image, and a click pays for the updates' columns. This is done for the first transposed
//!   convolution (a `[h·w, C]·[C, 4·c1]` GEMM) when the updates have fewer than `C` columns in
//!   all, and for the later blocks' image-side projections when that is the cheapest way to
//!   them (it is for every prompt of SAM's decoder: e.g. 56 columns instead of three products
//!   of 256 for one point).
//!
//! - **Final attention**: it updates each prompt token on its own, and only the IoU token and
//!   the requested mask tokens are read afterwards, so only those query it (4 of `5 + points`
//!   for three masks), which keeps it low-rank for prompts of any length.
//!
//! - **Sharded** ([`CpuDecoder::decode_shard`]): the image tokens split into bands of grid rows,
//!   one per shard (the page runs two wasm workers). Everything on the image side is row-local
//!   except the three token→image attentions, whose softmax runs over all image tokens: each
//!   shard computes its band's share ([`AttentionPartial`]: per query row the maximum score, the
//!   sum of exponentials and the exponential-weighted values), the shards swap shares through an
//!   [`Exchange`], and every shard merges all of them in shard order, so that the prompt-token
//!   path stays identical on every shard. A shard's output is its band of the masks. The
//!   upscaling's first transposed convolution needs no other shard's share, so it is made
//!   between posting the final attention's share and merging the others' (which a slower shard
//!   may still be computing). An exchange can abandon the decode (a shard failed, or the
//!   decode was cancelled): the shard stops there.
//!
//! Layouts are row-major and token-major: image features are `[h·w, C]` (row `y·w + x`).

use std::cell::RefCell;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;

use crate::common::to_vec;
use crate::kernels::{exp_neg, exp_sub_sum, gelu_slice, parallel_for};
use crate::transformer::{Attention, TwoWayAttentionBlock};
use crate::{LayerNorm2d, SamDecoder};

/// `nn.LayerNorm`'s default, as the reference's transformer uses it.
const LN_EPS: f32 = 1e-5;
/// `LayerNorm2d`'s.
const LN2D_EPS: f32 = 1e-6;

// ---------------------------------------------------------------------------------------------
// GEMM and fused elementwise passes

/// `c = scale · a·b`, or `c += scale · a·b` with `accumulate`.
///
/// - `a`: `m × k`, row stride `lda`, unit column stride;
/// - `b`: `k × n`, element `(p, j)` at `b[p·b_rs + j·b_cs]` (so a transposed operand is free);
/// - `c`: `m × n`, row stride `ldc`.
#[allow(clippy::too_many_arguments)]
fn gemm(m: usize, n: usize, k: usize, a: &[f32], lda: usize, b: &[f32], (b_rs, b_cs): (usize, usize), c: &mut [f32], ldc: usize, accumulate: bool, scale: f32) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    crate::wasm_gemm::gemm(m, n, k, a, lda, b, (b_rs, b_cs), c, ldc, accumulate, scale);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    gemm_crate(m, n, k, a, lda, b, (b_rs, b_cs), c, ldc, accumulate, scale);
}

/// What every GEMM does first: `false` when there is nothing to multiply (an empty output, or
/// `k = 0`, which zeroes `c` unless `accumulate`); else it checks that every element the shapes
/// and strides address lies in its slice (the kernels index without checks), and panics if not.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_prologue(m: usize, n: usize, k: usize, a: &[f32], lda: usize, b: &[f32], (b_rs, b_cs): (usize, usize), c: &mut [f32], ldc: usize, accumulate: bool) -> bool {
    if m == 0 || n == 0 {
        return false;
    }
    assert!((m - 1) * ldc + n <= c.len(), "gemm: output out of bounds");
    if k == 0 {
        if !accumulate {
            c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return false;
    }
    assert!((m - 1) * lda + k <= a.len(), "gemm: lhs out of bounds");
    assert!((k - 1) * b_rs + (n - 1) * b_cs < b.len(), "gemm: rhs out of bounds");
    true
}

/// [`gemm`] through the `gemm` crate (natively: its AVX2/AVX-512 kernels, on every core for
/// large products).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[allow(clippy::too_many_arguments)]
fn gemm_crate(m: usize, n: usize, k: usize, a: &[f32], lda: usize, b: &[f32], (b_rs, b_cs): (usize, usize), c: &mut [f32], ldc: usize, accumulate: bool, scale: f32) {
    if !gemm_prologue(m, n, k, a, lda, b, (b_rs, b_cs), c, ldc, accumulate) {
        return;
    }
    #[cfg(not(target_family = "wasm"))]
    let parallelism = if m * n * k >= 1 << 20 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    #[cfg(target_family = "wasm")]
    let parallelism = gemm::Parallelism::None;
    // SAFETY: `gemm_prologue` checked that every element the strides address is inside its
    // slice, and `c` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.as_ptr(),
            1,
            lda as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The largest value of a row, in LANES partial results so that it vectorises.
fn row_max(row: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for l in 0..LANES {
            m[l] = if chunk[l] > m[l] { chunk[l] } else { m[l] };
        }
    }
    rest.iter().chain(&m).fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

/// Softmax of one row in place.
#[cfg_attr(all(target_arch = "wasm32", feature = "relaxed-simd"), target_feature(enable = "relaxed-simd"))]
fn softmax(row: &mut [f32]) {
    let max = row_max(row);
    let total = exp_sub_sum(row, max);
    let inv = 1.0 / total;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `Σ f(x_i)` in LANES partial sums, so that it vectorises (a plain float sum must keep its order).
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for l in 0..LANES {
            acc[l] += f(chunk[l]);
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// `a · b` in LANES partial sums.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Layer norm of one row in place (biased variance, as PyTorch) → its mean and `1/σ`.
fn layer_norm(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = lane_sum(row, |v| v) / n;
    let var = lane_sum(row, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
    (mean, inv)
}

/// `x` with `row` added to each of its rows, in one pass (a copy, then an add, would be two).
fn plus_rows(x: &[f32], row: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for r in x.chunks_exact(row.len()) {
        out.extend(r.iter().zip(row).map(|(a, b)| a + b));
    }
    out
}

/// `row` repeated `n` times.
fn repeat_row(row: &[f32], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(row.len() * n);
    (0..n).for_each(|_| out.extend_from_slice(row));
    out
}

fn add_rows(x: &mut [f32], row: &[f32]) {
    for r in x.chunks_exact_mut(row.len()) {
        r.iter_mut().zip(row).for_each(|(v, &b)| *v += b);
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(v, &b)| *v += b);
}

fn sum(x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(a, b)| a + b).collect()
}

/// `[C, n]` → `[n, C]`.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Weights

/// A linear layer: `y = x·W + b`, `W` as `[d_in, d_out]` (burn's layout).
#[derive(Debug, Clone)]
struct Lin {
    w: Vec<f32>,
    b: Vec<f32>,
    d_in: usize,
    d_out: usize,
}

impl Lin {
    fn new(l: &Linear) -> Self {
        let [d_in, d_out] = l.weight.val().dims();
        let b = l.bias.as_ref().map_or_else(|| vec![0.0; d_out], |b| to_vec(b.val()));
        Self { w: to_vec(l.weight.val()), b, d_in, d_out }
    }

    /// `rows × d_in` → `rows × d_out`.
    fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut y = repeat_row(&self.b, rows);
        gemm(rows, self.d_out, self.d_in, x, self.d_in, &self.w, (self.d_out, 1), &mut y, self.d_out, true, 1.0);
        y
    }
}

#[derive(Debug, Clone)]
struct Norm {
    g: Vec<f32>,
    b: Vec<f32>,
}

impl Norm {
    fn new(n: &LayerNorm) -> Self {
        let g = to_vec(n.gamma.val());
        let b = n.beta.as_ref().map_or_else(|| vec![0.0; g.len()], |b| to_vec(b.val()));
        Self { g, b }
    }

    fn new_2d(n: &LayerNorm2d) -> Self {
        Self { g: to_vec(n.weight.val()), b: to_vec(n.bias.val()) }
    }

    fn rows(&self, x: &mut [f32]) {
        x.chunks_exact_mut(self.g.len()).for_each(|r| {
            layer_norm(r, &self.g, &self.b, LN_EPS);
        });
    }

    /// [`Norm::rows`], → each row's mean and `1/σ`.
    fn rows_stats(&self, x: &mut [f32]) -> Vec<(f32, f32)> {
        x.chunks_exact_mut(self.g.len()).map(|r| layer_norm(r, &self.g, &self.b, LN_EPS)).collect()
    }
}

/// An MLP with ReLU between layers.
#[derive(Debug, Clone)]
struct Mlp(Vec<Lin>);

impl Mlp {
    fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut x = x.to_vec();
        for (i, l) in self.0.iter().enumerate() {
            x = l.forward(&x, rows);
            if i + 1 < self.0.len() {
                x.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
        x
    }
}

/// Attention weights, used on the token side (queries, or keys and values of few tokens).
#[derive(Debug, Clone)]
struct Attn {
    q: Lin,
    k: Lin,
    v: Lin,
    out: Lin,
    heads: usize,
}

impl Attn {
    fn new(a: &Attention) -> Self {
        Self { q: Lin::new(&a.q_proj), k: Lin::new(&a.k_proj), v: Lin::new(&a.v_proj), out: Lin::new(&a.out_proj), heads: a.num_heads }
    }

    fn internal(&self) -> usize {
        self.q.d_out
    }

    /// Attention among few tokens: `[n, C]` each → `[n, C]`.
    fn forward_small(&self, q: &[f32], k: &[f32], v: &[f32], nq: usize, nk: usize) -> Vec<f32> {
        let (q, k, v) = (self.q.forward(q, nq), self.k.forward(k, nk), self.v.forward(v, nk));
        let ci = self.internal();
        let o = attend(nq, nk, ci, self.heads, &q, (&k, ci), (&v, ci));
        self.out.forward(&o, nq)
    }
}

/// Multi-head `softmax(q·kᵀ/√d)·v`. `q`: `[nq, ci]`; `k`, `v`: `nk` rows of `ci` values with row
/// strides as given → `[nq, ci]`.
fn attend(nq: usize, nk: usize, ci: usize, heads: usize, q: &[f32], (k, k_rs): (&[f32], usize), (v, v_rs): (&[f32], usize)) -> Vec<f32> {
    let d = ci / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; nq * ci];
    let mut scores = vec![0f32; nq * nk];
    for h in 0..heads {
        let o = h * d;
        gemm(nq, nk, d, &q[o..], ci, &k[o..], (1, k_rs), &mut scores, nk, false, scale);
        scores.chunks_exact_mut(nk).for_each(|r| softmax(r));
        gemm(nq, d, nk, &scores, nk, &v[o..], (v_rs, 1), &mut out[o..], ci, false, 1.0);
    }
    out
}

/// Scores `[rows, tokens]` → their band's share of the softmax: `exp(s − max)` in place, and
/// per row the maximum and the sum of exponentials.
#[cfg_attr(all(target_arch = "wasm32", feature = "relaxed-simd"), target_feature(enable = "relaxed-simd"))]
fn partial_softmax(scores: &mut [f32], tokens: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = scores.len() / tokens;
    let (mut max, mut sum) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
    for row in scores.chunks_exact_mut(tokens) {
        let m = row_max(row);
        sum.push(exp_sub_sum(row, m));
        max.push(m);
    }
    (max, sum)
}

/// One shard's share of a softmax attention over the image tokens, for `rows` query rows: the
/// maximum score of each row over the shard's band, the sum of `exp(score − max)`, and the
/// values weighted by those exponentials (`[rows, width]`, not yet divided by any sum).
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionPartial {
    pub max: Vec<f32>,
    pub sum: Vec<f32>,
    pub values: Vec<f32>,
}

impl AttentionPartial {
    /// The attention output `[rows, width]` from every shard's share, merged in the order given.
    pub fn merge(parts: &[AttentionPartial]) -> Vec<f32> {
        let first = parts.first().expect("at least one shard");
        let rows = first.max.len();
        let width = first.values.len().checked_div(rows).unwrap_or(0);
        for p in parts {
            assert!(p.max.len() == rows && p.sum.len() == rows && p.values.len() == rows * width, "attention shares of one shape");
        }
        let mut out = vec![0f32; rows * width];
        for (r, o) in out.chunks_exact_mut(width.max(1)).enumerate().take(rows) {
            let m = parts.iter().fold(f32::NEG_INFINITY, |a, p| if p.max[r] > a { p.max[r] } else { a });
            let total: f32 = parts.iter().map(|p| exp_neg(m - p.max[r]) * p.sum[r]).sum();
            for p in parts {
                let f = exp_neg(m - p.max[r]) / total;
                o.iter_mut().zip(&p.values[r * width..(r + 1) * width]).for_each(|(o, &v)| *o += f * v);
            }
        }
        out
    }
}

/// How shards swap their [`AttentionPartial`]s: three times per decode, in the same order on
/// every shard.
pub trait Exchange {
    /// Gives this shard's share to every shard when called, not when first polled (the decoder
    /// works on while the shares travel); resolves to all shards' shares in shard order (this
    /// one's included), or to `None` when the decode is abandoned (another shard failed, or the
    /// decode is no longer wanted): the decoder then stops.
    fn exchange(&mut self, mine: AttentionPartial) -> impl Future<Output = Option<Vec<AttentionPartial>>>;
}

/// The exchange of a decoder that is its only shard.
#[derive(Debug, Clone, Copy, Default)]
pub struct Alone;

impl Exchange for Alone {
    fn exchange(&mut self, mine: AttentionPartial) -> impl Future<Output = Option<Vec<AttentionPartial>>> {
        std::future::ready(Some(vec![mine]))
    }
}

/// Shards in one thread: each posts its share for the current round on a common board and
/// waits until every shard's is there ([`CpuDecoder::decode_sharded_locally`]).
struct LocalExchange {
    shard: usize,
    round: usize,
    board: Rc<RefCell<Vec<Vec<Option<AttentionPartial>>>>>,
}

impl Exchange for LocalExchange {
    fn exchange(&mut self, mine: AttentionPartial) -> impl Future<Output = Option<Vec<AttentionPartial>>> {
        let (round, board) = (self.round, self.board.clone());
        self.round += 1;
        board.borrow_mut()[round][self.shard] = Some(mine);
        std::future::poll_fn(move |_| {
            let b = board.borrow();
            if b[round].iter().all(Option::is_some) { Poll::Ready(Some(b[round].iter().flatten().cloned().collect())) } else { Poll::Pending }
        })
    }
}

/// Polls a future that never waits (one whose exchanges are [`Alone`]) to its result.
fn now_or_never<T>(f: impl Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("a decode alone never waits"),
    }
}

/// Token → image attention over one shard's band: scores of the query rows of each head against
/// the band's keys `k` and values `v` (`tokens` rows with the strides given). → the band's
/// share, rows `h·nq + i` of width `d` (head `h`, query `i`).
#[allow(clippy::too_many_arguments)]
fn attend_partial(nq: usize, tokens: usize, ci: usize, heads: usize, q: &[f32], (k, k_rs): (&[f32], usize), (v, v_rs): (&[f32], usize)) -> AttentionPartial {
    let d = ci / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut scores = vec![0f32; heads * nq * tokens];
    for h in 0..heads {
        let o = h * d;
        gemm(nq, tokens, d, &q[o..], ci, &k[o..], (1, k_rs), &mut scores[h * nq * tokens..], tokens, false, scale);
    }
    let (max, sum) = partial_softmax(&mut scores, tokens);
    let mut values = vec![0f32; heads * nq * d];
    for h in 0..heads {
        gemm(nq, d, tokens, &scores[h * nq * tokens..], tokens, &v[h * d..], (v_rs, 1), &mut values[h * nq * d..], d, false, 1.0);
    }
    AttentionPartial { max, sum, values }
}

/// Rows `h·nq + i` of width `d` (merged [`attend_partial`] shares) → `[nq, heads·d]`.
fn heads_to_columns(x: &[f32], nq: usize, heads: usize) -> Vec<f32> {
    let d = x.len() / (heads * nq).max(1);
    let mut out = vec![0f32; x.len()];
    for h in 0..heads {
        for i in 0..nq {
            out[i * heads * d + h * d..][..d].copy_from_slice(&x[(h * nq + i) * d..][..d]);
        }
    }
    out
}

/// One two-way block's weights. `image_w`/`image_pe` are the image-side projections of the
/// block's cross attentions, side by side: token→image keys, token→image values, image→token
/// queries (`[C, 3·ci]`), and what the positional encoding and biases add to them (`[h·w, 3·ci]`).
#[derive(Debug, Clone)]
struct Block {
    self_attn: Attn,
    norms: [Norm; 4],
    t2i: Attn,
    mlp: (Lin, Lin),
    i2t: Attn,
    skip_first_layer_pe: bool,
    image_w: Vec<f32>,
    image_pe: Vec<f32>,
}

/// Weights side by side: `[d_in, Σ d_out]`.
fn concat_columns(lins: &[&Lin]) -> Vec<f32> {
    let d_in = lins[0].d_in;
    let mut w = Vec::with_capacity(d_in * lins.iter().map(|l| l.d_out).sum::<usize>());
    for r in 0..d_in {
        for l in lins {
            w.extend_from_slice(&l.w[r * l.d_out..(r + 1) * l.d_out]);
        }
    }
    w
}

/// What the positional encoding and biases add to image-side projections: per projection, the
/// bias plus `pe·W` when the projection's input carries the positional encoding.
fn pe_share(pe_t: &[f32], tokens: usize, dim: usize, lins: &[(&Lin, bool)]) -> Vec<f32> {
    let total: usize = lins.iter().map(|(l, _)| l.d_out).sum();
    let bias: Vec<f32> = lins.iter().flat_map(|(l, _)| l.b.iter().copied()).collect();
    let mut out = repeat_row(&bias, tokens);
    let mut col = 0;
    for (l, with_pe) in lins {
        if *with_pe {
            gemm(tokens, l.d_out, dim, pe_t, dim, &l.w, (l.d_out, 1), &mut out[col..], total, true, 1.0);
        }
        col += l.d_out;
    }
    out
}

/// `x·W` for a row vector `x` and `W` as `[len(x), n]`.
fn vec_mat(x: &[f32], w: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    gemm(1, n, x.len(), x, x.len(), w, (n, 1), &mut y, n, false, 1.0);
    y
}

/// The image embedding of one image, token-major, with its first-block projections.
#[derive(Debug, Clone)]
pub struct ImageContext {
    /// `[h·w, C]`
    image: Vec<f32>,
    /// `[h·w, 3·ci]`: the first block's `image_w` projection of `image + no_mask_embed`, plus its `image_pe`.
    first: Vec<f32>,
    /// `image·H_0` of the first transposed convolution's [`Fold`] (`[h·w, 4·c1]`), and of each
    /// later block's projections' (`[h·w, 3·ci]`, block `1 + i`); empty where the decoder's
    /// [`Projections`] never fold.
    upscale_h0: Vec<f32>,
    projection_h0: Vec<Vec<f32>>,
    /// The band of grid rows this context holds (all of them unless sharded).
    rows: Range<usize>,
}

impl ImageContext {
    /// The band of grid rows this context holds.
    pub fn rows(&self) -> Range<usize> {
        self.rows.clone()
    }
}

/// The dense prompt: nothing (the learned `no_mask_embed` everywhere), or a previous mask's
/// low-resolution logits `[4h, 4w]`.
#[derive(Debug, Clone, Copy)]
pub enum DensePrompt<'a> {
    NoMask,
    Mask(&'a [f32]),
}

/// How the later blocks treat image-side projections (see the module docs). `Auto` picks the
/// cheaper per prompt; the others exist so that tests can check both ways against the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Projections {
    #[default]
    Auto,
    /// Always project the image tokens, and apply the first transposed convolution to them.
    Direct,
    /// Always push the prompt tokens through the projections instead, and the first transposed
    /// convolution back through the LayerNorms ([`Fold`]).
    LowRank,
    /// Always push the later blocks' image-side projections and the first transposed
    /// convolution back through the LayerNorms ([`Fold`]).
    Folded,
}

/// The decoder's outputs for the requested mask tokens.
#[derive(Debug, Clone)]
pub struct CpuDecoderOutput {
    /// `[M, 4h, 4w]` low-resolution logits.
    pub masks: Vec<f32>,
    /// `[M]`
    pub iou_pred: Vec<f32>,
}

/// The mask-prompt downscaling convolutions, token-major.
#[derive(Debug, Clone)]
struct MaskDownscaling {
    /// `[c1, 1, 2, 2]`, `[c1]`
    conv1: (Vec<f32>, Vec<f32>),
    ln1: Norm,
    /// `[c2, c1, 2, 2]`, `[c2]`
    conv2: (Vec<f32>, Vec<f32>),
    ln2: Norm,
    /// The final 1×1 convolution as a linear layer `[c2, C]`.
    conv3: Lin,
}

/// A 2×2 stride-2 convolution over token-major `[2h·2w, c_in]` → `[h·w, c_out]`, then LayerNorm2d
/// and GELU per output pixel.
fn conv2x2_ln_gelu(x: &[f32], [h, w]: [usize; 2], c_in: usize, (weight, bias): &(Vec<f32>, Vec<f32>), ln: &Norm) -> Vec<f32> {
    let c_out = bias.len();
    let mut out = vec![0f32; h * w * c_out];
    for y in 0..h {
        for xx in 0..w {
            let o = &mut out[(y * w + xx) * c_out..][..c_out];
            for (co, v) in o.iter_mut().enumerate() {
                let mut acc = bias[co];
                for dy in 0..2 {
                    for dx in 0..2 {
                        let px = &x[((2 * y + dy) * 2 * w + 2 * xx + dx) * c_in..][..c_in];
                        for (ci, &p) in px.iter().enumerate() {
                            acc += weight[((co * c_in + ci) * 2 + dy) * 2 + dx] * p;
                        }
                    }
                }
                *v = acc;
            }
            layer_norm(o, &ln.g, &ln.b, LN2D_EPS);
            gelu_slice(o);
        }
    }
    out
}

impl MaskDownscaling {
    /// `[4h, 4w]` logits → `[h·w, c2]` features before the final 1×1 convolution (rows `4y..4y+4`
    /// of the logits make grid row `y`, so a band of logit rows makes its band of grid rows).
    fn features(&self, mask: &[f32], [h, w]: [usize; 2]) -> Vec<f32> {
        let x = conv2x2_ln_gelu(mask, [2 * h, 2 * w], 1, &self.conv1, &self.ln1);
        conv2x2_ln_gelu(&x, [h, w], self.conv1.1.len(), &self.conv2, &self.ln2)
    }
}

/// Output upscaling: both transposed convolutions as GEMMs whose columns are ordered
/// `(dy, dx, channel)`, so each output pixel's channels are contiguous.
#[derive(Debug, Clone)]
struct Upscaling {
    /// `[C, 4·c1]`, `[c1]`
    w1: Vec<f32>,
    b1: Vec<f32>,
    ln: Norm,
    /// `[c1, 4·c2]`, `[c2]`
    w2: Vec<f32>,
    b2: Vec<f32>,
}

/// A linear map `M` of the image tokens after block `L − 1` (`keys_L·M`), pushed back through
/// the blocks' last LayerNorms: the first transposed convolution (`M = W1`, `L` = all blocks),
/// and a later block's image-side projections (`M` = its `image_w`, `L` = its index).
///
/// Block `b` ends with `keys_{b+1} = LN_b(keys_b + A_b)`, where the image→token update `A_b` has
/// low rank (few prompt tokens: [`image_to_token`]; at most the attention's internal width) and each
/// row's LayerNorm is affine: `LN(x) = (x − μ)·(1/σ)·γ + β`. With `H_L = M` and
/// `H_b = diag(γ_b)·H_{b+1}`,
///
/// `keys_{b+1}·H_{b+1} = (1/σ) ⊙ ((keys_b + A_b)·H_b − μ ⊗ 1ᵀH_b) + β_b·H_{b+1}`,
///
/// so `keys_0·H_0` is made once per image ([`ImageContext`]) and each click adds only
/// `left_b·(right_b·H_b)` per block and per-row scalings: `Σ rank_b` columns of inner
/// dimension instead of `C`. The same sum as the reference's up to float rounding.
#[derive(Debug, Clone)]
struct Fold {
    /// `H_b` for `b = 0..=L`, `[C, n]` each.
    h: Vec<Vec<f32>>,
    /// Per block: `1ᵀ·H_b`, `β_b·H_{b+1}`, and the image→token output bias times `H_b`.
    colsum: Vec<Vec<f32>>,
    beta: Vec<Vec<f32>>,
    out_bias: Vec<Vec<f32>>,
    /// `no_mask_embed·H_0`; a mask prompt's 1×1 convolution through `H_0`: `W3·H_0`, `b3·H_0`.
    no_mask: Vec<f32>,
    mask_w: Vec<f32>,
    mask_b: Vec<f32>,
}

impl Fold {
    /// `M` (`[C, n]`) after `blocks`.
    fn new(blocks: &[Block], m: &[f32], no_mask: &[f32], conv3: &Lin) -> Self {
        let c = conv3.d_out;
        let n = m.len() / c;
        let mut h = vec![m.to_vec()];
        for b in blocks.iter().rev() {
            let next = h.last().expect("H_L");
            let g = &b.norms[3].g;
            h.push(next.chunks_exact(n).zip(g).flat_map(|(row, &g)| row.iter().map(move |v| v * g)).collect());
        }
        h.reverse();
        let colsum = h[..blocks.len()].iter().map(|hb| hb.chunks_exact(n).fold(vec![0f32; n], |acc, r| sum(&acc, r))).collect();
        let beta = blocks.iter().zip(&h[1..]).map(|(b, hn)| vec_mat(&b.norms[3].b, hn, n)).collect();
        let out_bias = blocks.iter().zip(&h).map(|(b, hb)| vec_mat(&b.i2t.out.b, hb, n)).collect();
        let mut mask_w = vec![0f32; conv3.d_in * n];
        gemm(conv3.d_in, n, c, &conv3.w, c, &h[0], (n, 1), &mut mask_w, n, false, 1.0);
        Self { no_mask: vec_mat(no_mask, &h[0], n), mask_w, mask_b: vec_mat(&conv3.b, &h[0], n), h, colsum, beta, out_bias }
    }

    /// Columns of `M`.
    fn width(&self) -> usize {
        self.no_mask.len()
    }

    /// Blocks it passes through.
    fn depth(&self) -> usize {
        self.out_bias.len()
    }

    /// `image·H_0` of a band of `tokens` image tokens `[tokens, C]`: the per-image share.
    fn image_share(&self, image: &[f32], tokens: usize) -> Vec<f32> {
        let (n, c) = (self.width(), self.h[0].len() / self.width());
        let mut out = vec![0f32; tokens * n];
        gemm(tokens, n, c, image, c, &self.h[0], (n, 1), &mut out, n, false, 1.0);
        out
    }

    /// `keys_0·H_0` of a click from the image's share `image·H_0`: plus `no_mask_embed`'s share,
    /// or a mask prompt's 1×1 convolution of its features `[tokens, c_in]`.
    fn start(&self, image_h0: &[f32], feats: Option<&[f32]>, tokens: usize) -> Vec<f32> {
        let n = self.width();
        match feats {
            None => plus_rows(image_h0, &self.no_mask),
            Some(f) => {
                let mut kh = plus_rows(image_h0, &self.mask_b);
                let c_in = self.mask_w.len() / n;
                gemm(tokens, n, c_in, f, c_in, &self.mask_w, (n, 1), &mut kh, n, true, 1.0);
                kh
            }
        }
    }

    /// Block `b`'s update `left·right` (`right`: `[rank, C]`) through `H_b`: `right·H_b`.
    fn right_h(&self, b: usize, right: &[f32], rank: usize, c: usize) -> Vec<f32> {
        let n = self.width();
        let mut out = vec![0f32; rank * n];
        gemm(rank, n, c, right, c, &self.h[b], (n, 1), &mut out, n, false, 1.0);
        out
    }

    /// `keys_b·H_b` → `keys_{b+1}·H_{b+1}` in place for some rows `kh`, given their rows `left`
    /// of block `b`'s update, `right_h` ([`Fold::right_h`]) and their last LayerNorm's mean and
    /// `1/σ`; plus the same rows of `addend` if given (a block's positional share, after its fold's
    /// last step).
    fn after_block(&self, b: usize, kh: &mut [f32], (left, right_h, rank): (&[f32], &[f32], usize), stats: &[(f32, f32)], addend: Option<&[f32]>) {
        let n = self.width();
        gemm(stats.len(), n, rank, left, rank, right_h, (n, 1), kh, n, true, 1.0);
        let (colsum, beta, bias) = (&self.colsum[b], &self.beta[b], &self.out_bias[b]);
        let step = |row: &mut [f32], (mean, inv): (f32, f32)| {
            for (((v, &s), &b), &o) in row.iter_mut().zip(colsum).zip(beta).zip(bias) {
                *v = (*v + o - mean * s) * inv + b;
            }
        };
        match addend {
            None => kh.chunks_exact_mut(n).zip(stats).for_each(|(row, &st)| step(row, st)),
            Some(add) => {
                for ((row, &st), a) in kh.chunks_exact_mut(n).zip(stats).zip(add.chunks_exact(n)) {
                    step(row, st);
                    row.iter_mut().zip(a).for_each(|(v, &a)| *v += a);
                }
            }
        }
    }
}

/// A fold during a decode: the fold, its `keys_b·H_b` for the band so far, and the band's rows to
/// add at its last step (a folded block's positional share).
type FoldUnderWay<'a> = (&'a Fold, Vec<f32>, Option<&'a [f32]>);

/// A 2×2 stride-2 `ConvTranspose2d` weight `[c_in, c_out, 2, 2]` as a GEMM operand `[c_in, (dy, dx, c_out)]`.
fn deconv_matrix(weight: &Tensor<4>) -> (Vec<f32>, usize) {
    let [c_in, c_out, kh, kw] = weight.dims();
    assert_eq!([kh, kw], [2, 2], "output upscaling uses 2×2 transposed convolutions");
    let w = to_vec(weight.clone());
    let mut m = vec![0f32; c_in * 4 * c_out];
    for ci in 0..c_in {
        for co in 0..c_out {
            for s in 0..4 {
                m[ci * 4 * c_out + s * c_out + co] = w[(ci * c_out + co) * 4 + s];
            }
        }
    }
    (m, c_out)
}

/// The mask decoder on the CPU. Build once per model with [`CpuDecoder::new`]; per image,
/// [`CpuDecoder::prepare`]; per prompt, [`CpuDecoder::decode`].
#[derive(Debug, Clone)]
pub struct CpuDecoder {
    dim: usize,
    /// `(h, w)` of the embedding grid.
    grid: [usize; 2],
    blocks: Vec<Block>,
    final_attn: Attn,
    /// `[C, 2·ci]` keys | values, and `[h·w, 2·ci]` their positional-encoding share and biases.
    final_w: Vec<f32>,
    final_pe: Vec<f32>,
    norm_final: Norm,
    /// `[1 + mask tokens, C]`: the IoU token, then the mask tokens.
    output_tokens: Vec<f32>,
    no_mask: Vec<f32>,
    mask_downscaling: MaskDownscaling,
    /// The first block's projections of `conv3(h) − no_mask_embed` = `h·mask_first + mask_first_bias`.
    mask_first: Vec<f32>,
    mask_first_bias: Vec<f32>,
    /// `no_mask_embed · image_w` of the first block.
    no_mask_first: Vec<f32>,
    upscaling: Upscaling,
    upscale_fold: Fold,
    /// For block `1 + i`: its image-side projections `image_w` after the blocks before it.
    projection_folds: Vec<Fold>,
    hypernetworks: Vec<Mlp>,
    iou_head: Mlp,
    projections: Projections,
}

impl CpuDecoder {
    /// Reads the decoder's weights. `dense_pe`: the positional encoding of the embedding grid,
    /// `[1, C, h, w]` (the prompt encoder's `dense_pe`).
    pub fn new(decoder: &SamDecoder, dense_pe: &Tensor<4>) -> Self {
        let [_, dim, h, w] = dense_pe.dims();
        let tokens = h * w;
        let pe_t = transpose(&to_vec(dense_pe.clone()), dim, tokens);
        let md = &decoder.mask_decoder;
        let pe = &decoder.prompt_encoder;
        let blocks: Vec<Block> = md.transformer.layers.iter().map(|b| Self::block(b, &pe_t, tokens, dim)).collect();
        let final_attn = Attn::new(&md.transformer.final_attn_token_to_image);
        let final_w = concat_columns(&[&final_attn.k, &final_attn.v]);
        let final_pe = pe_share(&pe_t, tokens, dim, &[(&final_attn.k, true), (&final_attn.v, false)]);

        let mut output_tokens = to_vec(md.iou_token.weight.val());
        output_tokens.extend(to_vec(md.mask_tokens.weight.val()));
        let no_mask = to_vec(pe.no_mask_embed.weight.val());

        let ds = &pe.mask_downscaling;
        let conv = |c: &burn::nn::conv::Conv2d| {
            let [c_out, ..] = c.weight.val().dims();
            (to_vec(c.weight.val()), c.bias.as_ref().map_or_else(|| vec![0.0; c_out], |b| to_vec(b.val())))
        };
        let (w3, b3) = conv(&ds.conv3);
        let [c_out3, c_in3, ..] = ds.conv3.weight.val().dims();
        let conv3 = Lin { w: transpose(&w3, c_out3, c_in3), b: b3, d_in: c_in3, d_out: c_out3 };
        let mask_downscaling =
            MaskDownscaling { conv1: conv(&ds.conv1), ln1: Norm::new_2d(&ds.ln1), conv2: conv(&ds.conv2), ln2: Norm::new_2d(&ds.ln2), conv3 };

        let first = &blocks[0];
        let n_first = 3 * first.t2i.internal();
        let mut mask_first = vec![0f32; c_in3 * n_first];
        let m3 = &mask_downscaling.conv3;
        gemm(c_in3, n_first, dim, &m3.w, dim, &first.image_w, (n_first, 1), &mut mask_first, n_first, false, 1.0);
        let shift: Vec<f32> = m3.b.iter().zip(&no_mask).map(|(b, n)| b - n).collect();
        let mask_first_bias = vec_mat(&shift, &first.image_w, n_first);
        let no_mask_first = vec_mat(&no_mask, &first.image_w, n_first);

        let up = &md.output_upscaling;
        let (w1, c1) = deconv_matrix(&up.deconv1.weight.val());
        let (w2, c2) = deconv_matrix(&up.deconv2.weight.val());
        let bias = |b: &Option<burn::module::Param<Tensor<1>>>, n| b.as_ref().map_or_else(|| vec![0.0; n], |b| to_vec(b.val()));
        let upscaling = Upscaling {
            w1,
            b1: bias(&up.deconv1.bias, c1),
            ln: Norm::new_2d(&up.ln),
            w2,
            b2: bias(&up.deconv2.bias, c2),
        };
        let mlp = |m: &crate::mask_decoder::Mlp| Mlp(m.layers.iter().map(Lin::new).collect());
        let upscale_fold = Fold::new(&blocks, &upscaling.w1, &no_mask, &mask_downscaling.conv3);
        let projection_folds = (1..blocks.len()).map(|i| Fold::new(&blocks[..i], &blocks[i].image_w, &no_mask, &mask_downscaling.conv3)).collect();
        Self {
            dim,
            grid: [h, w],
            blocks,
            final_attn,
            final_w,
            final_pe,
            norm_final: Norm::new(&md.transformer.norm_final_attn),
            output_tokens,
            no_mask,
            mask_downscaling,
            mask_first,
            mask_first_bias,
            no_mask_first,
            upscaling,
            upscale_fold,
            projection_folds,
            hypernetworks: md.output_hypernetworks_mlps.iter().map(mlp).collect(),
            iou_head: mlp(&md.iou_prediction_head),
            projections: Projections::Auto,
        }
    }

    /// The same decoder with another [`Projections`] strategy.
    pub fn with_projections(mut self, projections: Projections) -> Self {
        self.projections = projections;
        self
    }

    /// The summed ranks of the image tokens' updates before block `i` (the mask prompt's 1×1
    /// convolution counts as one): the inner dimension of a [`Fold`] through those blocks.
    fn rank_before(&self, i: usize, nt: usize, mask: bool) -> usize {
        let updates: usize = self.blocks[..i].iter().map(|b| update_rank(&b.i2t, nt, self.dim)).sum();
        updates + if mask { self.mask_downscaling.conv3.d_in } else { 0 }
    }

    /// Whether a decode with `nt` prompt tokens (and a mask prompt or not) folds the first
    /// transposed convolution ([`Fold`]): when the blocks' updates have fewer columns in all
    /// than the image tokens.
    fn fold_upscaling(&self, nt: usize, mask: bool) -> bool {
        match self.projections {
            Projections::Auto => self.rank_before(self.blocks.len(), nt, mask) < self.dim,
            Projections::Direct => false,
            Projections::LowRank | Projections::Folded => true,
        }
    }

    /// How block `i ≥ 1` gets its image-side projections, by multiply-adds per image token:
    /// projecting the tokens (`C·3ci`), pushing the `heads·nt` prompt rows through the
    /// projections instead (three products of `C` columns), or folding them ([`Fold`]).
    fn block_way(&self, i: usize, nt: usize, mask: bool) -> Way {
        let b = &self.blocks[i];
        let n = 3 * b.t2i.internal();
        let direct = self.dim * n;
        let low_rank = 3 * b.t2i.heads * nt * self.dim;
        let folded = self.rank_before(i, nt, mask) * n;
        match self.projections {
            Projections::Auto if folded <= direct.min(low_rank) => Way::Folded,
            Projections::Auto if low_rank < direct => Way::LowRank,
            Projections::Auto | Projections::Direct => Way::Direct,
            Projections::LowRank => Way::LowRank,
            Projections::Folded => Way::Folded,
        }
    }

    /// Whether the final attention pushes its `heads·nq` query rows through the projections.
    fn low_rank(&self, heads: usize, nq: usize, ci: usize) -> bool {
        match self.projections {
            Projections::Auto | Projections::Folded => heads * nq < ci,
            Projections::Direct => false,
            Projections::LowRank => true,
        }
    }

    fn block(b: &TwoWayAttentionBlock, pe_t: &[f32], tokens: usize, dim: usize) -> Block {
        let t2i = Attn::new(&b.cross_attn_token_to_image);
        let i2t = Attn::new(&b.cross_attn_image_to_token);
        assert_eq!(t2i.internal(), i2t.internal(), "both cross attentions of a block have one internal width");
        let image_w = concat_columns(&[&t2i.k, &t2i.v, &i2t.q]);
        let image_pe = pe_share(pe_t, tokens, dim, &[(&t2i.k, true), (&t2i.v, false), (&i2t.q, true)]);
        Block {
            self_attn: Attn::new(&b.self_attn),
            norms: [Norm::new(&b.norm1), Norm::new(&b.norm2), Norm::new(&b.norm3), Norm::new(&b.norm4)],
            t2i,
            mlp: (Lin::new(&b.mlp.lin1), Lin::new(&b.mlp.lin2)),
            i2t,
            skip_first_layer_pe: b.skip_first_layer_pe,
            image_w,
            image_pe,
        }
    }

    /// Number of mask tokens (4 for SAM: the single-mask output, then whole, part, subpart).
    pub fn num_mask_tokens(&self) -> usize {
        self.hypernetworks.len()
    }

    /// Side lengths `(4h, 4w)` of the low-resolution masks.
    pub fn low_res_size(&self) -> [usize; 2] {
        [4 * self.grid[0], 4 * self.grid[1]]
    }

    /// The per-image work: `embedding` is `[C, h, w]` row-major.
    pub fn prepare(&self, embedding: &[f32]) -> ImageContext {
        self.prepare_rows(embedding, 0..self.grid[0])
    }

    /// Grid rows of shard `index` of `count` (bands as equal as can be, in order).
    pub fn band(&self, index: usize, count: usize) -> Range<usize> {
        let h = self.grid[0];
        assert!(index < count && count <= h, "shard {index} of {count} over {h} grid rows");
        index * h / count..(index + 1) * h / count
    }

    /// The per-image work of one band of grid rows (a shard's; see [`CpuDecoder::decode_shard`]).
    pub fn prepare_rows(&self, embedding: &[f32], rows: Range<usize>) -> ImageContext {
        let [h, w] = self.grid;
        let all = h * w;
        assert_eq!(embedding.len(), self.dim * all, "embedding size");
        assert!(rows.start < rows.end && rows.end <= h, "grid rows {rows:?} of {h}");
        let (t0, tokens) = (rows.start * w, rows.len() * w);
        let image = transpose(embedding, self.dim, all)[t0 * self.dim..(t0 + tokens) * self.dim].to_vec();
        let b = &self.blocks[0];
        let n = b.image_pe.len() / all;
        let mut first = b.image_pe[t0 * n..(t0 + tokens) * n].to_vec();
        add_rows(&mut first, &self.no_mask_first);
        gemm(tokens, n, self.dim, &image, self.dim, &b.image_w, (n, 1), &mut first, n, true, 1.0);
        let upscale_h0 = if self.projections == Projections::Direct { Vec::new() } else { self.upscale_fold.image_share(&image, tokens) };
        let projection_h0 = if matches!(self.projections, Projections::Auto | Projections::Folded) {
            self.projection_folds.iter().map(|f| f.image_share(&image, tokens)).collect()
        } else {
            Vec::new()
        };
        ImageContext { image, first, upscale_h0, projection_h0, rows }
    }

    /// Decodes one prompt: `sparse` is the prompt encoder's `[n, C]` point and box embeddings.
    /// Returns the masks and IoU predictions of mask tokens `masks` (`0..1` single mask, `1..4`
    /// multimask, `0..4` all). `ctx` must hold every grid row ([`CpuDecoder::prepare`]).
    pub fn decode(&self, ctx: &ImageContext, sparse: &[f32], dense: DensePrompt, masks: Range<usize>) -> CpuDecoderOutput {
        assert_eq!(ctx.rows, 0..self.grid[0], "a decode alone needs the context of every grid row");
        now_or_never(self.decode_shard(ctx, sparse, dense, masks, &mut Alone)).expect("a decode alone is never abandoned")
    }

    /// Decodes one prompt as one shard of several, each with the context of its band of grid
    /// rows ([`CpuDecoder::prepare_rows`]) and the same prompt (`dense`: the whole mask prompt),
    /// swapping attention shares through `exchange`. Returns the band's rows of the masks
    /// (`[M, 4·rows, 4w]`) and the IoU predictions (the same on every shard), or `None` when an
    /// exchange abandoned the decode (it stops there).
    pub async fn decode_shard(&self, ctx: &ImageContext, sparse: &[f32], dense: DensePrompt<'_>, masks: Range<usize>, exchange: &mut impl Exchange) -> Option<CpuDecoderOutput> {
        let c = self.dim;
        let [_, w] = self.grid;
        let all = self.grid[0] * w;
        let (t0, tokens) = (ctx.rows.start * w, ctx.rows.len() * w);
        // The band's rows of a per-token array over the whole grid.
        fn rows_of(pe: &[f32], all: usize, t0: usize, tokens: usize) -> &[f32] {
            let n = pe.len() / all;
            &pe[t0 * n..(t0 + tokens) * n]
        }
        let band_pe = |pe| rows_of(pe, all, t0, tokens);
        assert!(sparse.len().is_multiple_of(c), "sparse embeddings are rows of C values");
        assert!(masks.end <= self.num_mask_tokens(), "no such mask token");
        let query_pe: Vec<f32> = self.output_tokens.iter().chain(sparse).copied().collect();
        let nt = query_pe.len() / c;
        let mut queries = query_pe.clone();
        let mask = matches!(dense, DensePrompt::Mask(_));
        // How each later block gets its image-side projections.
        // (None for the first block, whose projections come with the image.)
        let ways: Vec<Option<Way>> = (0..self.blocks.len()).map(|i| (i > 0).then(|| self.block_way(i, nt, mask))).collect();
        // The image tokens, the first block's image-side projections, and the mask prompt's
        // features.
        let (mut keys, first, feats) = match dense {
            DensePrompt::NoMask => (plus_rows(&ctx.image, &self.no_mask), std::borrow::Cow::Borrowed(&ctx.first), None),
            DensePrompt::Mask(mask) => {
                let [lh, lw] = self.low_res_size();
                assert_eq!(mask.len(), lh * lw, "mask prompt size");
                let band = &mask[4 * ctx.rows.start * lw..4 * ctx.rows.end * lw];
                let feats = self.mask_downscaling.features(band, [ctx.rows.len(), w]);
                let conv3 = &self.mask_downscaling.conv3;
                let mut keys = plus_rows(&ctx.image, &conv3.b);
                gemm(tokens, c, conv3.d_in, &feats, conv3.d_in, &conv3.w, (c, 1), &mut keys, c, true, 1.0);
                let mut first = plus_rows(&ctx.first, &self.mask_first_bias);
                let n = self.mask_first_bias.len();
                gemm(tokens, n, conv3.d_in, &feats, conv3.d_in, &self.mask_first, (n, 1), &mut first, n, true, 1.0);
                (keys, std::borrow::Cow::Owned(first), Some(feats))
            }
        };
        // The folds under way, `keys·H_b` as the blocks go ([`Fold`]): the upscaling's, and
        // those of the folded blocks' projections (with the block's positional share, added at
        // the fold's last step).
        let mut folds: Vec<FoldUnderWay> = Vec::new();
        if self.fold_upscaling(nt, mask) {
            folds.push((&self.upscale_fold, self.upscale_fold.start(&ctx.upscale_h0, feats.as_deref(), tokens), None));
        }
        for (i, way) in ways.iter().enumerate() {
            if *way == Some(Way::Folded) {
                let h0 = ctx.projection_h0.get(i - 1).expect("a context prepared for folded projections");
                let fold = &self.projection_folds[i - 1];
                folds.push((fold, fold.start(h0, feats.as_deref(), tokens), Some(band_pe(&self.blocks[i].image_pe))));
            }
        }

        for (i, b) in self.blocks.iter().enumerate() {
            let ci = b.t2i.internal();
            let n = 3 * ci;
            let image_pe = band_pe(&b.image_pe);
            // The image-side projections `[tokens, 3·ci]` (none for a low-rank block).
            let low_rank = ways[i] == Some(Way::LowRank);
            let image_side = match ways[i] {
                None | Some(Way::LowRank) => None,
                Some(Way::Direct) => {
                    let mut g = image_pe.to_vec();
                    gemm(tokens, n, c, &keys, c, &b.image_w, (n, 1), &mut g, n, true, 1.0);
                    Some(g)
                }
                Some(Way::Folded) => {
                    // The upscaling's fold passes every block: the one of depth `i` is this block's.
                    let at = folds.iter().position(|(f, ..)| f.depth() == i).expect("this block's fold");
                    Some(folds.swap_remove(at).1)
                }
            };
            let g: &[f32] = if i == 0 { &first[..] } else { image_side.as_deref().unwrap_or(&[]) };
            let [n1, n2, n3, n4] = &b.norms;

            if b.skip_first_layer_pe {
                queries = b.self_attn.forward_small(&queries, &queries, &queries, nt, nt);
            } else {
                let q = sum(&queries, &query_pe);
                let a = b.self_attn.forward_small(&q, &q, &queries, nt, nt);
                add(&mut queries, &a);
            }
            n1.rows(&mut queries);

            let q = b.t2i.q.forward(&sum(&queries, &query_pe), nt);
            let o = if low_rank {
                let (k, v) = (Projection::new(&b.image_w, 0, n, image_pe), Projection::new(&b.image_w, ci, n, image_pe));
                let share = low_rank_partial(nt, &keys, tokens, c, ci, b.t2i.heads, &q, k);
                low_rank_output(&AttentionPartial::merge(&exchange.exchange(share).await?), nt, c, ci, b.t2i.heads, v)
            } else {
                let share = attend_partial(nt, tokens, ci, b.t2i.heads, &q, (g, n), (&g[ci..], n));
                heads_to_columns(&AttentionPartial::merge(&exchange.exchange(share).await?), nt, b.t2i.heads)
            };
            add(&mut queries, &b.t2i.out.forward(&o, nt));
            n2.rows(&mut queries);

            let hidden: Vec<f32> = b.mlp.0.forward(&queries, nt).into_iter().map(|v| v.max(0.0)).collect();
            add(&mut queries, &b.mlp.1.forward(&hidden, nt));
            n3.rows(&mut queries);

            let k = b.i2t.k.forward(&sum(&queries, &query_pe), nt);
            let v = b.i2t.v.forward(&queries, nt);
            let q = if low_rank {
                ImageQueries::LowRank(Projection::new(&b.image_w, 2 * ci, n, image_pe))
            } else {
                ImageQueries::Direct(&g[2 * ci..], n)
            };
            image_to_token(i, &mut keys, c, q, (&k, &v, nt), &b.i2t, n4, &mut folds);
        }
        // What is left is the upscaling's fold, if any.
        let keys_h = folds.pop().map(|(_, kh, _)| kh);
        debug_assert!(folds.is_empty(), "every block's fold was used");

        // The final attention changes each query on its own, and only the IoU token and the
        // wanted mask tokens are read after it: the other queries are left out (for long
        // prompts that makes it low-rank too).
        let keep: Vec<usize> = std::iter::once(0).chain(masks.clone().map(|m| 1 + m)).collect();
        let pick = |x: &[f32]| -> Vec<f32> { keep.iter().flat_map(|&r| &x[r * c..(r + 1) * c]).copied().collect() };
        let (mut queries, nq) = (pick(&queries), keep.len());
        let fa = &self.final_attn;
        let ci = fa.internal();
        let q = fa.q.forward(&sum(&queries, &pick(&query_pe)), nq);
        let final_pe = band_pe(&self.final_pe);
        let low_rank = self.low_rank(fa.heads, nq, ci);
        let share = if low_rank {
            let k = Projection::new(&self.final_w, 0, 2 * ci, final_pe);
            low_rank_partial(nq, &keys, tokens, c, ci, fa.heads, &q, k)
        } else {
            let mut g = final_pe.to_vec();
            gemm(tokens, 2 * ci, c, &keys, c, &self.final_w, (2 * ci, 1), &mut g, 2 * ci, true, 1.0);
            attend_partial(nq, tokens, ci, fa.heads, &q, (&g, 2 * ci), (&g[ci..], 2 * ci))
        };
        // The share is on its way; the first transposed convolution of the band needs no other
        // shard's, so it is made while theirs travel (and while a slower shard finishes its own).
        let shares = exchange.exchange(share);
        let upscaled = self.upscale_first(&keys, keys_h, ctx.rows.len());
        let merged = AttentionPartial::merge(&shares.await?);
        let o = if low_rank {
            low_rank_output(&merged, nq, c, ci, fa.heads, Projection::new(&self.final_w, ci, 2 * ci, final_pe))
        } else {
            heads_to_columns(&merged, nq, fa.heads)
        };
        add(&mut queries, &fa.out.forward(&o, nq));
        self.norm_final.rows(&mut queries);

        let hyper: Vec<Vec<f32>> = masks.clone().enumerate().map(|(i, m)| self.hypernetworks[m].forward(&queries[(1 + i) * c..(2 + i) * c], 1)).collect();
        let iou_all = self.iou_head.forward(&queries[..c], 1);
        let masks_out = self.upscale_masks(upscaled, ctx.rows.len(), &hyper);
        Some(CpuDecoderOutput { masks: masks_out, iou_pred: iou_all[masks].to_vec() })
    }

    /// Decodes one prompt as `ctxs.len()` shards in this thread, taking turns at each exchange,
    /// and joins their bands: what [`CpuDecoder::decode`] returns, computed the sharded way.
    pub fn decode_sharded_locally(&self, ctxs: &[ImageContext], sparse: &[f32], dense: DensePrompt, masks: Range<usize>) -> CpuDecoderOutput {
        let board = Rc::new(RefCell::new(vec![vec![None; ctxs.len()]; 3]));
        let mut exchanges: Vec<LocalExchange> = (0..ctxs.len()).map(|shard| LocalExchange { shard, round: 0, board: board.clone() }).collect();
        let mut shards: Vec<Pin<Box<dyn Future<Output = Option<CpuDecoderOutput>> + '_>>> =
            ctxs.iter().zip(&mut exchanges).map(|(ctx, ex)| Box::pin(self.decode_shard(ctx, sparse, dense, masks.clone(), ex)) as Pin<Box<_>>).collect();
        let mut done: Vec<Option<CpuDecoderOutput>> = vec![None; ctxs.len()];
        let mut cx = Context::from_waker(Waker::noop());
        // Each turn takes every shard to its next exchange: four turns finish a decode.
        for _turn in 0..8 {
            for (f, d) in shards.iter_mut().zip(&mut done) {
                if d.is_none()
                    && let Poll::Ready(out) = f.as_mut().poll(&mut cx)
                {
                    *d = Some(out.expect("local shards are never abandoned"));
                }
            }
        }
        assert!(done.iter().all(Option::is_some), "shards still wait for each other");
        let outs: Vec<CpuDecoderOutput> = done.into_iter().flatten().collect();
        let bands: Vec<&[f32]> = outs.iter().map(|o| &o.masks[..]).collect();
        CpuDecoderOutput { masks: join_bands(&bands, masks.len()), iou_pred: outs[0].iou_pred.clone() }
    }

    /// The output upscaling's first transposed convolution, LayerNorm2d and GELU of a band of
    /// `h` grid rows of image tokens `[h·w, C]` → `[4·h·w, c1]`, row `(y·w + x)·4 + dy·2 + dx`
    /// pixel `(2y + dy, 2x + dx)`. `keys_h`: `keys·W1` when made already ([`Fold`]).
    fn upscale_first(&self, keys: &[f32], keys_h: Option<Vec<f32>>, h: usize) -> Vec<f32> {
        let tokens = h * self.grid[1];
        let up = &self.upscaling;
        let c1 = up.b1.len();
        let mut u1 = match keys_h {
            Some(mut u1) => {
                u1.chunks_exact_mut(c1).for_each(|px| add(px, &up.b1));
                u1
            }
            None => {
                let mut u1 = repeat_row(&up.b1, tokens * 4);
                gemm(tokens, 4 * c1, self.dim, keys, self.dim, &up.w1, (4 * c1, 1), &mut u1, 4 * c1, true, 1.0);
                u1
            }
        };
        u1.chunks_exact_mut(c1).for_each(|px| {
            layer_norm(px, &up.ln.g, &up.ln.b, LN2D_EPS);
            gelu_slice(px);
        });
        u1
    }

    /// The rest of the output upscaling of a band of `h` grid rows ([`CpuDecoder::upscale_first`]'s
    /// `u1`: the second transposed convolution and GELU) and each hypernetwork vector's dot
    /// product with it → `[M, 4h, 4w]`.
    fn upscale_masks(&self, u1: Vec<f32>, h: usize, hyper: &[Vec<f32>]) -> Vec<f32> {
        let w = self.grid[1];
        let tokens = h * w;
        let up = &self.upscaling;
        let (c1, c2) = (up.b1.len(), up.b2.len());
        let (lh, lw) = (4 * h, 4 * w);
        let plane = lh * lw;
        let mut out = vec![0f32; hyper.len() * plane];
        struct Out(*mut f32);
        // SAFETY: every output pixel is written by exactly one row of exactly one tile.
        unsafe impl Sync for Out {}
        let out_ptr = Out(out.as_mut_ptr());
        let out_ptr = &out_ptr;
        const TILE: usize = 256; // rows of u1 per GEMM: the tile's outputs stay in cache
        let rows = 4 * tokens;
        parallel_for(rows.div_ceil(TILE), 1, |tiles| {
            let mut u2 = vec![0f32; TILE * 4 * c2];
            for t in tiles {
                let r0 = t * TILE;
                let nr = TILE.min(rows - r0);
                let u2 = &mut u2[..nr * 4 * c2];
                for row in u2.chunks_exact_mut(4 * c2) {
                    row.chunks_exact_mut(c2).for_each(|px| px.copy_from_slice(&up.b2));
                }
                gemm(nr, 4 * c2, c1, &u1[r0 * c1..], c1, &up.w2, (4 * c2, 1), u2, 4 * c2, true, 1.0);
                gelu_slice(u2);
                for (i, row) in u2.chunks_exact(4 * c2).enumerate() {
                    let r = r0 + i;
                    let (n, s) = (r / 4, r % 4);
                    let (y2, x2) = (2 * (n / w) + s / 2, 2 * (n % w) + s % 2);
                    for (s2, px) in row.chunks_exact(c2).enumerate() {
                        let at = (2 * y2 + s2 / 2) * lw + 2 * x2 + s2 % 2;
                        for (m, hv) in hyper.iter().enumerate() {
                            let v = dot(hv, px);
                            // SAFETY: `at < plane` and pixel `at` of mask `m` belongs to this row only.
                            unsafe { *out_ptr.0.add(m * plane + at) = v };
                        }
                    }
                }
            }
        });
        out
    }
}

/// One image-side projection inside side-by-side weights: columns `col..col + width` of `w`
/// (`[C, stride]`) and of `pe` (`[tokens, stride]`, the positional-encoding share and bias).
#[derive(Debug, Clone, Copy)]
struct Projection<'a> {
    w: &'a [f32],
    pe: &'a [f32],
    stride: usize,
}

impl<'a> Projection<'a> {
    fn new(w: &'a [f32], col: usize, stride: usize, pe: &'a [f32]) -> Self {
        Self { w: &w[col..], pe: &pe[col..], stride }
    }
}

/// Token → image attention without projecting the image tokens `x` (`[tokens, C]` of a band):
/// with `K = x·W_k + pe_k` and `V = x·W_v + b_v`, head `h`'s scores are
/// `(q_h·W_k,hᵀ)·xᵀ + q_h·pe_k,hᵀ` and its output `(P_h·x)·W_v,h + b_v,h` (the softmax rows sum
/// to one). → the band's share of `P_h·x`, rows `h·nq + i` of width `C` ([`low_rank_output`]
/// finishes the merged shares).
#[allow(clippy::too_many_arguments)]
fn low_rank_partial(nq: usize, x: &[f32], tokens: usize, c: usize, ci: usize, heads: usize, q: &[f32], k: Projection) -> AttentionPartial {
    let d = ci / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let rows = heads * nq;
    // Row `h·nq + i`: query i of head h through head h's key projection.
    let mut qk = vec![0f32; rows * c];
    let mut scores = vec![0f32; rows * tokens];
    for h in 0..heads {
        let o = h * d;
        gemm(nq, c, d, &q[o..], ci, &k.w[o..], (1, k.stride), &mut qk[h * nq * c..], c, false, 1.0);
        gemm(nq, tokens, d, &q[o..], ci, &k.pe[o..], (1, k.stride), &mut scores[h * nq * tokens..], tokens, false, scale);
    }
    gemm(rows, tokens, c, &qk, c, x, (1, c), &mut scores, tokens, true, scale);
    let (max, sum) = partial_softmax(&mut scores, tokens);
    let mut values = vec![0f32; rows * c];
    gemm(rows, c, tokens, &scores, tokens, x, (c, 1), &mut values, c, false, 1.0);
    AttentionPartial { max, sum, values }
}

/// `P_h·x` (merged [`low_rank_partial`] shares, rows `h·nq + i`) through the value projection
/// → `[nq, ci]`.
fn low_rank_output(px: &[f32], nq: usize, c: usize, ci: usize, heads: usize, v: Projection) -> Vec<f32> {
    let d = ci / heads;
    // The value bias is in `v.pe`'s every row: take the first.
    let mut out = repeat_row(&v.pe[..ci], nq);
    for h in 0..heads {
        let o = h * d;
        gemm(nq, d, c, &px[h * nq * c..], c, &v.w[o..], (v.stride, 1), &mut out[o..], ci, true, 1.0);
    }
    out
}

/// The image tokens' queries of an image → token attention: projected already (`tokens` rows of
/// `ci`, with a row stride), or their projection, to be applied to the prompt keys instead.
#[derive(Debug, Clone, Copy)]
enum ImageQueries<'a> {
    Direct(&'a [f32], usize),
    LowRank(Projection<'a>),
}

/// Image → token cross attention and the rest of block `block`'s image side: the attention's
/// update (with the output projection's bias) added to the image tokens `keys` (`[tokens, C]`),
/// the block's last LayerNorm `norm`, and every fold's step through it ([`Fold::after_block`]).
/// `k`, `v` are the prompt tokens' keys and values (`[nt, ci]`). Every step is row-local, so it
/// all runs chunk by chunk of image tokens, each chunk's rows staying in cache from the scores to
/// the last fold (one pass over each large array instead of several).
///
/// Each image token attends to few prompt tokens, so each head's attention output lies in the
/// span of its `nt` value rows: when `heads·nt·C < heads·nt·d + ci·C` it is cheaper to push the
/// values through the output projection first (`[nt, C]` per head) and accumulate
/// `scores_h · (v_h W_o,h)` straight into the tokens. With [`ImageQueries::LowRank`] the scores
/// are `keys·(W_q,h·k_hᵀ) + pe_q,h·k_hᵀ`, for all heads in one product.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(all(target_arch = "wasm32", feature = "relaxed-simd"), target_feature(enable = "relaxed-simd"))]
fn image_to_token(block: usize, keys: &mut [f32], c: usize, q: ImageQueries, (k, v, nt): (&[f32], &[f32], usize), a: &Attn, norm: &Norm, folds: &mut [FoldUnderWay]) {
    const CHUNK: usize = 64;
    let tokens = keys.len() / c;
    let ci = a.internal();
    let (heads, d) = (a.heads, ci / a.heads);
    let scale = 1.0 / (d as f32).sqrt();
    let cols = heads * nt;
    // Head h's keys transposed, `[d, nt]` row-major at `kt[h·d·nt..]`.
    let kt: Vec<f32> = (0..heads).flat_map(|h| (0..d).flat_map(move |p| (0..nt).map(move |j| k[j * ci + h * d + p]))).collect();
    let kt_h = |h: usize| &kt[h * d * nt..(h + 1) * d * nt];
    // Low-rank queries: the image tokens' query projection times the keys, `[C, cols]`.
    let wk = match q {
        ImageQueries::LowRank(p) => {
            let mut wk = vec![0f32; c * cols];
            for h in 0..heads {
                gemm(c, nt, d, &p.w[h * d..], p.stride, kt_h(h), (nt, 1), &mut wk[h * nt..], cols, false, 1.0);
            }
            wk
        }
        ImageQueries::Direct(..) => Vec::new(),
    };
    // The update is `left·right`: scores (column `h·nt + j`: prompt token j in head h) times the
    // values through the output projection, or the attention output times the projection.
    let first = values_first(a, nt, c);
    let (right, rank) = if first {
        let mut vwo = vec![0f32; cols * c];
        for h in 0..heads {
            let off = h * d;
            gemm(nt, c, d, &v[off..], ci, &a.out.w[off * c..], (c, 1), &mut vwo[h * nt * c..], c, false, 1.0);
        }
        (std::borrow::Cow::Owned(vwo), cols)
    } else {
        (std::borrow::Cow::Borrowed(&a.out.w[..]), ci)
    };
    let right_h: Vec<Vec<f32>> = folds.iter().map(|(f, ..)| f.right_h(block, &right, rank, c)).collect();
    let mut scores = vec![0f32; CHUNK * cols];
    let mut o = if first { Vec::new() } else { vec![0f32; CHUNK * ci] };
    for r0 in (0..tokens).step_by(CHUNK) {
        let rows = CHUNK.min(tokens - r0);
        let sc = &mut scores[..rows * cols];
        match q {
            ImageQueries::Direct(q, q_rs) => {
                for h in 0..heads {
                    gemm(rows, nt, d, &q[r0 * q_rs + h * d..], q_rs, kt_h(h), (nt, 1), &mut sc[h * nt..], cols, false, scale);
                }
            }
            ImageQueries::LowRank(p) => {
                for h in 0..heads {
                    gemm(rows, nt, d, &p.pe[r0 * p.stride + h * d..], p.stride, kt_h(h), (nt, 1), &mut sc[h * nt..], cols, false, scale);
                }
                gemm(rows, cols, c, &keys[r0 * c..], c, &wk, (cols, 1), sc, cols, true, scale);
            }
        }
        sc.chunks_exact_mut(nt).for_each(|r| softmax(r));
        let left: &[f32] = if first {
            sc
        } else {
            for h in 0..heads {
                let off = h * d;
                gemm(rows, d, nt, &sc[h * nt..], cols, &v[off..], (ci, 1), &mut o[off..], ci, false, 1.0);
            }
            &o[..rows * ci]
        };
        let kc = &mut keys[r0 * c..(r0 + rows) * c];
        add_rows(kc, &a.out.b);
        gemm(rows, c, rank, left, rank, &right, (c, 1), kc, c, true, 1.0);
        let stats = norm.rows_stats(kc);
        for ((f, kh, addend), rh) in folds.iter_mut().zip(&right_h) {
            let n = f.width();
            let addend = addend.filter(|_| block + 1 == f.depth()).map(|a| &a[r0 * n..(r0 + rows) * n]);
            f.after_block(block, &mut kh[r0 * n..(r0 + rows) * n], (left, rh, rank), &stats, addend);
        }
    }
}

/// How a later block gets its image-side projections ([`CpuDecoder::block_way`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Direct,
    LowRank,
    Folded,
}

/// Whether [`image_to_token`] pushes the prompt values through the output projection first.
fn values_first(a: &Attn, nt: usize, c: usize) -> bool {
    let ci = a.internal();
    a.heads * nt * c < a.heads * nt * (ci / a.heads) + ci * c
}

/// The rank of [`image_to_token`]'s update.
fn update_rank(a: &Attn, nt: usize, c: usize) -> usize {
    if values_first(a, nt, c) { a.heads * nt } else { a.internal() }
}

/// Shards' bands of masks (`[M, rows_s, W]` each, in order) → `[M, Σ rows_s, W]`.
pub fn join_bands(bands: &[&[f32]], masks: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(bands.iter().map(|b| b.len()).sum());
    for m in 0..masks {
        for b in bands {
            let plane = b.len() / masks.max(1);
            out.extend_from_slice(&b[m * plane..(m + 1) * plane]);
        }
    }
    out
}
