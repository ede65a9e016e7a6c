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

#[cfg(test)]
mod tests {
    use super::*;

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
