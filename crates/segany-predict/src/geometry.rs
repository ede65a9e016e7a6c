//! Image geometry as pure functions: the longest-side resize (bit-exact with the reference's PIL
//! bilinear resampling), coordinate and box transforms, and mask postprocessing (PyTorch's
//! bilinear interpolation, `align_corners = false`).

use std::ops::Range;

/// `(h, w)` after scaling the longest side to `long_side`, rounding half up like the reference.
pub fn preprocess_shape([h, w]: [usize; 2], long_side: usize) -> [usize; 2] {
    let scale = long_side as f64 / h.max(w) as f64;
    let round = |v: f64| (v + 0.5) as usize; // int(x + 0.5)
    [round(h as f64 * scale), round(w as f64 * scale)]
}

/// Maps points from original-image pixels to the resized frame, in f64 as the reference does.
pub fn transform_coords(coords: &[[f64; 2]], original: [usize; 2], resized: [usize; 2]) -> Vec<[f64; 2]> {
    let (sx, sy) = (resized[1] as f64 / original[1] as f64, resized[0] as f64 / original[0] as f64);
    coords.iter().map(|&[x, y]| [x * sx, y * sy]).collect()
}

/// Maps an `(x0, y0, x1, y1)` box from original-image pixels to the resized frame.
pub fn transform_box(b: [f64; 4], original: [usize; 2], resized: [usize; 2]) -> [f64; 4] {
    let c = transform_coords(&[[b[0], b[1]], [b[2], b[3]]], original, resized);
    [c[0][0], c[0][1], c[1][0], c[1][1]]
}

// ---------------------------------------------------------------------------------------------
// PIL-exact bilinear resize of 8-bit RGB.
//
// The reference resizes with PIL (via torchvision), which resamples separably — horizontal
// pass, then vertical — with a triangle filter widened by the downscale factor (antialiasing),
// fixed-point coefficients of 22 fractional bits, and rounding to u8 after each pass. We
// reproduce that arithmetic so the encoder sees the very same pixels.

const PRECISION_BITS: u32 = 32 - 8 - 2;

struct Coeffs {
    /// Per output pixel: first input index and tap count.
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    /// `out_size × ksize` fixed-point weights.
    weights: Vec<i32>,
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn precompute_coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the bilinear filter's support is 1
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = bilinear_filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..xmax {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 { (-0.5 + fixed) as i32 } else { (0.5 + fixed) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs { bounds, ksize, weights }
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// One resampling pass along rows (`horizontal`) or columns of an `h × w × 3` image.
fn resample_pass(src: &[u8], [h, w]: [usize; 2], out_len: usize, horizontal: bool) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let (in_len, lines) = if horizontal { (w, h) } else { (h, w) };
    let coeffs = precompute_coeffs(in_len, out_len);
    let (oh, ow) = if horizontal { (h, out_len) } else { (out_len, w) };
    let mut out = vec![0u8; oh * ow * 3];
    // Pixel offset of tap `t` on line `l`, and of output `o` on line `l`.
    let at_in = |l: usize, t: usize| if horizontal { (l * w + t) * 3 } else { (t * w + l) * 3 };
    let at_out = |l: usize, o: usize| if horizontal { (l * ow + o) * 3 } else { (o * ow + l) * 3 };
    for l in 0..lines {
        for (o, &(first, n)) in coeffs.bounds.iter().enumerate() {
            let k = &coeffs.weights[o * coeffs.ksize..o * coeffs.ksize + n];
            let mut ss = [half; 3];
            for (t, &kt) in k.iter().enumerate() {
                let p = at_in(l, first + t);
                for c in 0..3 {
                    ss[c] += src[p + c] as i64 * kt as i64;
                }
            }
            let q = at_out(l, o);
            for c in 0..3 {
                out[q + c] = clip8(ss[c]);
            }
        }
    }
    out
}

/// Pillow ≥ 13 runs the vertical pass first when the height shrinks by more than twice as many
/// pixels as the width (found against Pillow 13.0.0; see `scripts/pil_resize_ref.py`).
fn vertical_first([h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> bool {
    oh < h && (h - oh) as i64 > 2 * (w as i64 - ow as i64)
}

/// Resizes an 8-bit RGB image (`h × w × 3`, row-major) to `(h', w')` exactly as Pillow's
/// `Image.resize(..., BILINEAR)` does: two separable passes, each rounded to u8.
pub fn resize_rgb_bilinear(src: &[u8], [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Vec<u8> {
    assert_eq!(src.len(), h * w * 3, "image buffer does not match its size");
    let horizontal = |img: Vec<u8>, rows: usize| if ow != w { resample_pass(&img, [rows, w], ow, true) } else { img };
    let vertical = |img: Vec<u8>, cols: usize| if oh != h { resample_pass(&img, [h, cols], oh, false) } else { img };
    if vertical_first([h, w], [oh, ow]) {
        horizontal(vertical(src.to_vec(), w), oh)
    } else {
        vertical(horizontal(src.to_vec(), h), ow)
    }
}

// ---------------------------------------------------------------------------------------------
// PyTorch's bilinear interpolation (align_corners = false, no antialiasing), in f32 as PyTorch
// computes it for f32 tensors.

/// Source indices and weights along one axis.
fn linear_taps(in_size: usize, out_size: usize) -> Vec<(usize, usize, f32, f32)> {
    let ratio = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|o| {
            if in_size == out_size {
                return (o, o, 1.0, 0.0);
            }
            let real = (ratio * (o as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (real.floor() as usize).min(in_size - 1);
            let l1 = (real - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < in_size - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinearly resamples the top-left `crop` region of an `[ih, iw]` plane, which is first
/// (conceptually) upsampled to `[uh, uw]`, i.e. `interpolate(x, (uh, uw))[:crop_h, :crop_w]`:
/// the reference's two steps literally, kept to check [`MaskUpscaler`] against.
#[cfg(test)]
fn interpolate_cropped(src: &[f32], [ih, iw]: [usize; 2], [uh, uw]: [usize; 2], [ch, cw]: [usize; 2]) -> Vec<f32> {
    let ty = linear_taps(ih, uh);
    let tx = linear_taps(iw, uw);
    let mut out = vec![0f32; ch * cw];
    for (y, &(y0, y1, hl0, hl1)) in ty.iter().take(ch).enumerate() {
        let r0 = &src[y0 * iw..(y0 + 1) * iw];
        let r1 = &src[y1 * iw..(y1 + 1) * iw];
        let row = &mut out[y * cw..(y + 1) * cw];
        for (x, &(x0, x1, wl0, wl1)) in tx.iter().take(cw).enumerate() {
            row[x] = hl0 * (wl0 * r0[x0] + wl1 * r0[x1]) + hl1 * (wl0 * r1[x0] + wl1 * r1[x1]);
        }
    }
    out
}

/// Up to four `(source index, weight)` taps of one output index.
type Taps = [(u32, f32); 4];

/// The composite of the two resamples along one axis: output index → taps into the low-res axis.
fn composite_taps(low: usize, image_size: usize, input: usize, original: usize) -> Vec<Taps> {
    let first = linear_taps(low, image_size);
    linear_taps(input, original)
        .into_iter()
        .map(|(i0, i1, w0, w1)| {
            let (a0, a1, v0, v1) = first[i0];
            let (b0, b1, u0, u1) = first[i1];
            [(a0 as u32, w0 * v0), (a1 as u32, w0 * v1), (b0 as u32, w1 * u0), (b1 as u32, w1 * u1)]
        })
        .collect()
}

/// The reference's `postprocess_masks` for low-resolution logit planes: bilinear to
/// `image_size²`, crop to the resized input, bilinear to the original size — composed into one
/// separable resample (both steps are linear along each axis), so that neither the 1024² plane
/// nor the crop is ever made. Equal to the two steps up to the order of float additions.
#[derive(Debug, Clone)]
pub struct MaskUpscaler {
    low: [usize; 2],
    original: [usize; 2],
    ty: Vec<Taps>,
    tx: Vec<Taps>,
}

impl MaskUpscaler {
    pub fn new(low_res_size: [usize; 2], image_size: usize, input_size: [usize; 2], original_size: [usize; 2]) -> Self {
        let ty = composite_taps(low_res_size[0], image_size, input_size[0], original_size[0]);
        let tx = composite_taps(low_res_size[1], image_size, input_size[1], original_size[1]);
        Self { low: low_res_size, original: original_size, ty, tx }
    }

    /// Calls `f(y, row)` with each output row's logits, top to bottom.
    fn rows(&self, low: &[f32], f: impl FnMut(usize, &[f32])) {
        self.rows_of_band(low, 0..self.low[0], 0..self.original[0], f);
    }

    /// The output rows whose every tap lies in low-res rows `low_rows`: what a shard holding only
    /// that band of a plane can make ([`MaskUpscaler::mask_rows_into`]). One range, since the taps
    /// move down with the output row.
    pub fn rows_within(&self, low_rows: Range<usize>) -> Range<usize> {
        let inside = |taps: &Taps| taps.iter().all(|&(i, _)| low_rows.contains(&(i as usize)));
        let Some(start) = self.ty.iter().position(inside) else { return 0..0 };
        let end = start + self.ty[start..].iter().take_while(|t| inside(t)).count();
        debug_assert!(!self.ty[end..].iter().any(inside), "taps move down with the output row");
        start..end
    }

    /// Calls `f(y, row)` with the logits of output rows `ys`, top to bottom, from `band`: low-res
    /// rows `low_rows` of a plane (`[low_rows.len(), lw]`), which must hold every tap of `ys`.
    fn rows_of_band(&self, band: &[f32], low_rows: Range<usize>, ys: Range<usize>, mut f: impl FnMut(usize, &[f32])) {
        let [lh, lw] = self.low;
        let ow = self.original[1];
        assert!(low_rows.end <= lh && band.len() == low_rows.len() * lw, "a band of low-res rows {low_rows:?} of {lh}");
        assert!(ys.end <= self.original[0], "output rows {ys:?}");
        let taps = &self.ty[ys.clone()];
        assert!(
            taps.iter().flatten().all(|&(i, _)| low_rows.contains(&(i as usize))),
            "output rows {ys:?} read low-res rows outside {low_rows:?}"
        );
        // The horizontal pass of the band's rows that the output rows read.
        let r0 = low_rows.start;
        let mut read = vec![false; low_rows.len()];
        taps.iter().flatten().for_each(|&(i, _)| read[i as usize - r0] = true);
        let mut horizontal = vec![0f32; low_rows.len() * ow];
        for r in low_rows.clone().filter(|&r| read[r - r0]) {
            let src = &band[(r - r0) * lw..(r - r0 + 1) * lw];
            let dst = &mut horizontal[(r - r0) * ow..(r - r0 + 1) * ow];
            for (d, taps) in dst.iter_mut().zip(&self.tx) {
                *d = taps.iter().map(|&(i, w)| w * src[i as usize]).sum();
            }
        }
        let mut row = vec![0f32; ow];
        for (y, taps) in ys.zip(taps) {
            let src = |t: usize| &horizontal[(taps[t].0 as usize - r0) * ow..][..ow];
            let (s0, s1, s2, s3) = (src(0), src(1), src(2), src(3));
            let [w0, w1, w2, w3] = taps.map(|t| t.1);
            for x in 0..ow {
                row[x] = w0 * s0[x] + w1 * s1[x] + w2 * s2[x] + w3 * s3[x];
            }
            f(y, &row);
        }
    }

    /// Logits `[H, W]` at the original size.
    pub fn logits(&self, low: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.original[0] * self.original[1]);
        self.rows(low, |_, row| out.extend_from_slice(row));
        out
    }

    /// The mask (logit > 0, as 0/1) `[H, W]` at the original size, written to `out`.
    pub fn mask_into(&self, low: &[f32], out: &mut [u8]) {
        self.mask_rows_into(low, 0..self.low[0], 0..self.original[0], out);
    }

    /// Rows `ys` of the mask (`[ys.len(), W]`, written to `out`) from `band`: low-res rows
    /// `low_rows` of a plane, holding every tap of those rows ([`MaskUpscaler::rows_within`]).
    pub fn mask_rows_into(&self, band: &[f32], low_rows: Range<usize>, ys: Range<usize>, out: &mut [u8]) {
        let ow = self.original[1];
        assert_eq!(out.len(), ys.len() * ow, "mask buffer size");
        let y0 = ys.start;
        self.rows_of_band(band, low_rows, ys, |y, row| {
            out[(y - y0) * ow..(y - y0 + 1) * ow].iter_mut().zip(row).for_each(|(m, &v)| *m = (v > 0.0) as u8);
        });
    }
}

/// The reference's `postprocess_masks` for one low-resolution logit plane (see [`MaskUpscaler`]).
///
/// - low_res: `[lh, lw]` logits → `[H, W]` logits at the original size
pub fn upscale_logits(
    low_res: &[f32],
    low_res_size: [usize; 2],
    image_size: usize,
    input_size: [usize; 2],
    original_size: [usize; 2],
) -> Vec<f32> {
    MaskUpscaler::new(low_res_size, image_size, input_size, original_size).logits(low_res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_shape_rounds_half_up() {
        assert_eq!(preprocess_shape([117, 173], 1024), [693, 1024]); // 117·1024/173 = 692.53
        assert_eq!(preprocess_shape([1024, 1024], 1024), [1024, 1024]);
        assert_eq!(preprocess_shape([2, 1], 1024), [1024, 512]);
        // 3·1024/8 = 384 exactly; 5·1024/8 = 640; 1·1024/8 = 128
        assert_eq!(preprocess_shape([8, 3], 1024), [1024, 384]);
        // 683·1024/2048 = 341.5 rounds up, not to even
        assert_eq!(preprocess_shape([683, 2048], 1024), [342, 1024]);
    }

    #[test]
    fn coords_scale_per_axis() {
        let c = transform_coords(&[[10.0, 20.0]], [100, 200], [512, 1024]);
        assert_eq!(c, vec![[51.2, 102.4]]);
        assert_eq!(transform_box([0.0, 0.0, 200.0, 100.0], [100, 200], [512, 1024]), [0.0, 0.0, 1024.0, 512.0]);
    }

    #[test]
    fn resize_keeps_a_constant_image_constant() {
        let src = vec![77u8; 13 * 7 * 3];
        for out in [[26, 14], [5, 3], [13, 7], [9, 20]] {
            assert!(resize_rgb_bilinear(&src, [13, 7], out).iter().all(|&v| v == 77), "{out:?}");
        }
    }

    #[test]
    fn composite_upscale_equals_the_two_steps_for_odd_and_non_square_sizes() {
        let low: Vec<f32> = (0..64 * 64).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 20.0).collect();
        for (original, image_size) in [([117, 173], 256), ([173, 117], 256), ([851, 1283], 1024), ([300, 300], 256), ([40, 9], 256), ([2000, 1999], 1024)] {
            let input = preprocess_shape(original, image_size);
            let cropped = interpolate_cropped(&low, [64, 64], [image_size, image_size], input);
            let want = interpolate_cropped(&cropped, input, original, original);
            let up = MaskUpscaler::new([64, 64], image_size, input, original);
            let got = up.logits(&low);
            assert_eq!(got.len(), want.len());
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "{original:?}: max |Δ| {worst}");
            let mut mask = vec![0u8; original[0] * original[1]];
            up.mask_into(&low, &mut mask);
            assert!(mask.iter().zip(&got).all(|(&m, &v)| m == (v > 0.0) as u8));
        }
    }

    #[test]
    fn mask_rows_from_bands_and_the_rows_between_equal_the_whole_mask() {
        let low: Vec<f32> = (0..256 * 256).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 20.0).collect();
        for (original, bands) in [([851, 1283], vec![0..128, 128..256]), ([1283, 851], vec![0..84, 84..168, 168..256]), ([40, 9], vec![0..128, 128..256]), ([2000, 1999], vec![0..128, 128..256])] {
            let input = preprocess_shape(original, 1024);
            let up = MaskUpscaler::new([256, 256], 1024, input, original);
            let mut whole = vec![0u8; original[0] * original[1]];
            up.mask_into(&low, &mut whole);
            let ow = original[1];
            let mut got = vec![2u8; whole.len()];
            let mut covered = 0;
            for band in &bands {
                let ys = up.rows_within(band.clone());
                covered += ys.len();
                let mut rows = vec![0u8; ys.len() * ow];
                up.mask_rows_into(&low[band.start * 256..band.end * 256], band.clone(), ys.clone(), &mut rows);
                got[ys.start * ow..ys.end * ow].copy_from_slice(&rows);
            }
            // What no band makes alone: the rows that read two bands, from the whole plane.
            let mut y = 0;
            while y < original[0] {
                if got[y * ow] == 2 {
                    up.mask_rows_into(&low, 0..256, y..y + 1, &mut got[y * ow..(y + 1) * ow]);
                }
                y += 1;
            }
            assert!(got == whole, "{original:?} {bands:?}");
            // The rows between bands are few: one or two low-res rows' worth per boundary.
            let between = original[0] - covered;
            assert!(between <= (bands.len() - 1) * (2 * original[0] / 256 + 2), "{original:?}: {between} rows between bands");
        }
    }

    #[test]
    fn interpolation_is_identity_at_the_same_size_and_exact_at_2x() {
        let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(interpolate_cropped(&src, [3, 4], [3, 4], [3, 4]), src);
        // Upsampling ×2 with align_corners = false: out[1] = 0.75·in[0] + 0.25·in[1].
        let up = interpolate_cropped(&[0.0, 4.0], [1, 2], [1, 4], [1, 4]);
        assert_eq!(up, vec![0.0, 1.0, 3.0, 4.0]);
    }
}
