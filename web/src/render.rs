//! Masks as RGBA overlays for the page's canvases.

/// Colours of the three candidates: whole, part, subpart.
pub const CANDIDATE_COLORS: [[u8; 3]; 3] = [[30, 144, 255], [255, 140, 0], [50, 205, 50]];

/// A colour per committed object, cycling.
pub fn object_color(id: u32) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 10] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [0, 128, 128],
    ];
    PALETTE[(id as usize).wrapping_sub(1) % PALETTE.len()]
}

/// Paints a mask into an RGBA buffer: its inside at `alpha`, its outline (pixels with a
/// 4-neighbour outside the mask) opaque. Pixels outside the mask are left as they are.
pub fn paint(rgba: &mut [u8], mask: &[u8], [h, w]: [usize; 2], color: [u8; 3], alpha: u8) {
    assert_eq!(mask.len(), h * w, "mask size");
    assert_eq!(rgba.len(), h * w * 4, "buffer size");
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if mask[i] == 0 {
                continue;
            }
            let edge = x == 0 || y == 0 || x + 1 == w || y + 1 == h || mask[i - 1] == 0 || mask[i + 1] == 0 || mask[i - w] == 0 || mask[i + w] == 0;
            rgba[i * 4..i * 4 + 4].copy_from_slice(&[color[0], color[1], color[2], if edge { 255 } else { alpha }]);
        }
    }
}

/// One mask alone on a transparent buffer.
pub fn overlay(mask: &[u8], size: [usize; 2], color: [u8; 3], alpha: u8) -> Vec<u8> {
    let mut rgba = vec![0u8; size[0] * size[1] * 4];
    paint(&mut rgba, mask, size, color, alpha);
    rgba
}

/// A mask at thumbnail size `[th, tw]` over a transparent buffer: each pixel's alpha is `alpha`
/// times the share of the mask in the pixels it covers (an area average, as a smooth
/// downscale of [`overlay`] without its outline).
pub fn thumbnail_overlay(mask: &[u8], [h, w]: [usize; 2], [th, tw]: [usize; 2], color: [u8; 3], alpha: u8) -> Vec<u8> {
    assert_eq!(mask.len(), h * w, "mask size");
    // Source columns of each thumbnail column, as `[start, end)` (at least one).
    let span = |i: usize, n: usize, of: usize| {
        let start = (i * of / n).min(of - 1);
        (start, ((i + 1) * of / n).clamp(start + 1, of))
    };
    let cols: Vec<(usize, usize)> = (0..tw).map(|x| span(x, tw, w)).collect();
    let mut rgba = vec![0u8; th * tw * 4];
    let mut counts = vec![0u32; tw];
    for ty in 0..th {
        let (y0, y1) = span(ty, th, h);
        counts.iter_mut().for_each(|c| *c = 0);
        for row in mask[y0 * w..y1 * w].chunks_exact(w) {
            for (c, &(x0, x1)) in counts.iter_mut().zip(&cols) {
                *c += row[x0..x1].iter().map(|&m| (m != 0) as u32).sum::<u32>();
            }
        }
        for (tx, (&c, &(x0, x1))) in counts.iter().zip(&cols).enumerate() {
            let area = ((y1 - y0) * (x1 - x0)) as u32;
            let a = (c * alpha as u32 + area / 2) / area;
            if a > 0 {
                rgba[(ty * tw + tx) * 4..][..4].copy_from_slice(&[color[0], color[1], color[2], a as u8]);
            }
        }
    }
    rgba
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thumbnail_averages_the_mask_over_the_pixels_it_covers() {
        // 4×6 → 2×3: each thumbnail pixel covers 2×2; the mask fills the left third, half of
        // the middle block and none of the right one.
        #[rustfmt::skip]
        let mask = [
            1, 1, 1, 0, 0, 0,
            1, 1, 1, 0, 0, 0,
            1, 1, 0, 0, 0, 0,
            1, 1, 0, 0, 0, 1,
        ];
        let t = thumbnail_overlay(&mask, [4, 6], [2, 3], [9, 8, 7], 200);
        let alpha: Vec<u8> = t.chunks(4).map(|p| p[3]).collect();
        assert_eq!(alpha, vec![200, 100, 0, 200, 0, 50]);
        assert_eq!(&t[..3], &[9, 8, 7]);
        assert_eq!(&t[8..12], &[0, 0, 0, 0], "no colour where nothing is covered");
        // Larger than the mask: every thumbnail pixel covers one mask pixel at least.
        let up = thumbnail_overlay(&[1, 0], [1, 2], [2, 4], [1, 1, 1], 100);
        assert_eq!(up.chunks(4).map(|p| p[3]).collect::<Vec<_>>(), vec![100, 100, 0, 0, 100, 100, 0, 0]);
    }

    #[test]
    fn only_mask_pixels_are_painted_and_the_outline_is_opaque() {
        #[rustfmt::skip]
        let mask = [
            0, 0, 0, 0,
            0, 1, 1, 1,
            0, 1, 1, 1,
            0, 1, 1, 1,
        ];
        let rgba = overlay(&mask, [4, 4], [1, 2, 3], 100);
        let alpha: Vec<u8> = rgba.chunks(4).map(|p| p[3]).collect();
        assert_eq!(alpha, vec![0, 0, 0, 0, 0, 255, 255, 255, 0, 255, 100, 255, 0, 255, 255, 255]);
        assert_eq!(&rgba[40..43], &[1, 2, 3]);
    }
}
