//! Masks as polygons with holes: the exact outline of each 4-connected region, traced along pixel
//! edges, so that filling the polygons (even-odd, at pixel centres) gives the mask back pixel for
//! pixel. Vertices lie on pixel corners: `(x, y)` with `0 ≤ x ≤ W`, `0 ≤ y ≤ H`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One 4-connected region: its outer boundary and the boundaries of its holes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Polygon {
    /// Clockwise on screen (y down), `[x, y]` corners, not closed (the last vertex connects to
    /// the first).
    pub exterior: Vec<[u32; 2]>,
    /// Counter-clockwise on screen.
    pub holes: Vec<Vec<[u32; 2]>>,
}

/// A step between neighbouring corners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dir {
    East,
    South,
    West,
    North,
}

impl Dir {
    fn step(self, [x, y]: [u32; 2]) -> [u32; 2] {
        match self {
            Dir::East => [x + 1, y],
            Dir::South => [x, y + 1],
            Dir::West => [x - 1, y],
            Dir::North => [x, y - 1],
        }
    }

    /// The direction after a right turn (clockwise on screen).
    fn right(self) -> Dir {
        match self {
            Dir::East => Dir::South,
            Dir::South => Dir::West,
            Dir::West => Dir::North,
            Dir::North => Dir::East,
        }
    }
}

/// The polygons of a row-major `h × w` mask (non-zero = foreground), one per 4-connected region,
/// in the order of their top-left pixel (row-major).
pub fn polygons(mask: &[u8], [h, w]: [usize; 2]) -> Vec<Polygon> {
    assert_eq!(mask.len(), h * w, "mask is not {h}×{w}");
    let fg = |x: i64, y: i64| x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h && mask[y as usize * w + x as usize] != 0;
    let labels = components(mask, [h, w]);

    // Boundary edges with the foreground on their right: every pixel side facing background.
    // Each records the region on its right.
    let mut out: HashMap<[u32; 2], Vec<(Dir, u32)>> = HashMap::new();
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            if !fg(x, y) {
                continue;
            }
            let label = labels[y as usize * w + x as usize];
            let (cx, cy) = (x as u32, y as u32);
            if !fg(x, y - 1) {
                out.entry([cx, cy]).or_default().push((Dir::East, label));
            }
            if !fg(x + 1, y) {
                out.entry([cx + 1, cy]).or_default().push((Dir::South, label));
            }
            if !fg(x, y + 1) {
                out.entry([cx + 1, cy + 1]).or_default().push((Dir::West, label));
            }
            if !fg(x - 1, y) {
                out.entry([cx, cy + 1]).or_default().push((Dir::North, label));
            }
        }
    }

    // Follow the edges into loops. Where two regions touch at a corner, turning right keeps to
    // the region being traced (diagonal neighbours are separate regions).
    let mut starts: Vec<[u32; 2]> = out.keys().copied().collect();
    starts.sort_by_key(|&[x, y]| (y, x));
    let mut loops: Vec<(u32, Vec<[u32; 2]>)> = Vec::new();
    for start in starts {
        while let Some((first, label)) = out.get_mut(&start).and_then(|v| v.pop()) {
            let mut ring = Vec::new();
            let (mut at, mut heading) = (first.step(start), first);
            loop {
                let edges = out.get_mut(&at).expect("boundary edges form closed loops");
                let preferred = [heading.right(), heading, heading.right().right().right()];
                let closing = at == start;
                let next = preferred
                    .into_iter()
                    .find(|&d| edges.iter().any(|e| e.0 == d) || (closing && d == first))
                    .expect("a boundary edge leaves every boundary corner");
                if closing && next == first {
                    if heading != first {
                        ring.insert(0, start);
                    }
                    break;
                }
                edges.retain(|e| e.0 != next);
                if next != heading {
                    ring.push(at);
                }
                (at, heading) = (next.step(at), next);
            }
            loops.push((label, ring));
        }
    }

    let regions = labels.iter().copied().filter(|&l| l != NO_REGION).max().map_or(0, |m| m as usize + 1);
    let mut by_region: Vec<Polygon> = (0..regions)
        .map(|_| Polygon { exterior: Vec::new(), holes: Vec::new() })
        .collect();
    for (label, ring) in loops {
        let p = &mut by_region[label as usize];
        if signed_area2(&ring) > 0 {
            p.exterior = ring;
        } else {
            p.holes.push(ring);
        }
    }
    by_region.retain(|p| !p.exterior.is_empty());
    by_region
}

/// Twice the signed area (shoelace) in screen coordinates: positive when clockwise on screen.
fn signed_area2(ring: &[[u32; 2]]) -> i64 {
    let n = ring.len();
    (0..n)
        .map(|i| {
            let ([x0, y0], [x1, y1]) = (ring[i], ring[(i + 1) % n]);
            x0 as i64 * y1 as i64 - x1 as i64 * y0 as i64
        })
        .sum()
}

/// The label of background pixels.
const NO_REGION: u32 = u32::MAX;

/// 4-connected region labels (0, 1, … in row-major order of first pixel; background
/// [`NO_REGION`]).
fn components(mask: &[u8], [h, w]: [usize; 2]) -> Vec<u32> {
    const NONE: u32 = NO_REGION;
    let mut labels = vec![NONE; h * w];
    let mut next = 0;
    let mut stack = Vec::new();
    for i in 0..h * w {
        if mask[i] == 0 || labels[i] != NONE {
            continue;
        }
        labels[i] = next;
        stack.push(i);
        while let Some(j) = stack.pop() {
            let (x, y) = (j % w, j / w);
            let mut visit = |k: usize| {
                if mask[k] != 0 && labels[k] == NONE {
                    labels[k] = next;
                    stack.push(k);
                }
            };
            if x > 0 {
                visit(j - 1);
            }
            if x + 1 < w {
                visit(j + 1);
            }
            if y > 0 {
                visit(j - w);
            }
            if y + 1 < h {
                visit(j + w);
            }
        }
        next += 1;
    }
    labels
}

/// Fills polygons at pixel centres with the even-odd rule: the inverse of [`polygons`].
pub fn rasterize(polygons: &[Polygon], [h, w]: [usize; 2]) -> Vec<u8> {
    let mut mask = vec![0u8; h * w];
    let rings = polygons.iter().flat_map(|p| std::iter::once(&p.exterior).chain(&p.holes));
    let mut crossings: Vec<Vec<f64>> = vec![Vec::new(); h];
    for ring in rings {
        let n = ring.len();
        for i in 0..n {
            let ([x0, y0], [x1, y1]) = (ring[i], ring[(i + 1) % n]);
            if y0 == y1 {
                continue;
            }
            let (lo, hi) = (y0.min(y1), y0.max(y1));
            for (y, row) in crossings.iter_mut().enumerate().take(hi as usize).skip(lo as usize) {
                let cy = y as f64 + 0.5;
                let t = (cy - y0 as f64) / (y1 as f64 - y0 as f64);
                row.push(x0 as f64 + t * (x1 as f64 - x0 as f64));
            }
        }
    }
    for (y, xs) in crossings.iter_mut().enumerate() {
        xs.sort_by(f64::total_cmp);
        for pair in xs.chunks_exact(2) {
            for x in 0..w {
                let cx = x as f64 + 0.5;
                if cx > pair[0] && cx < pair[1] {
                    mask[y * w + x] = 1;
                }
            }
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::masks::test_mask as mask;

    #[test]
    fn a_pixel_is_a_clockwise_unit_square() {
        let (m, size) = mask(&["...", ".#.", "..."]);
        let p = polygons(&m, size);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].exterior, vec![[1, 1], [2, 1], [2, 2], [1, 2]]);
        assert!(p[0].holes.is_empty());
    }

    #[test]
    fn a_ring_has_one_hole_and_diagonal_pixels_are_separate_regions() {
        let (m, size) = mask(&["###", "#.#", "###"]);
        let p = polygons(&m, size);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].exterior, vec![[0, 0], [3, 0], [3, 3], [0, 3]]);
        assert_eq!(p[0].holes.len(), 1);
        assert_eq!(signed_area2(&p[0].holes[0]), -2);

        let (m, size) = mask(&["#.", ".#"]);
        let p = polygons(&m, size);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(rasterize(&p, size), m);
    }

    #[test]
    fn rasterizing_the_polygons_gives_the_mask_back() {
        let (h, w) = (23, 17);
        let mut state = 99u32;
        for density in [2, 3, 5] {
            for _ in 0..20 {
                let m: Vec<u8> = (0..h * w)
                    .map(|_| {
                        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (state >> 16).is_multiple_of(density) as u8
                    })
                    .collect();
                let p = polygons(&m, [h, w]);
                assert_eq!(rasterize(&p, [h, w]), m);
                for poly in &p {
                    assert!(signed_area2(&poly.exterior) > 0);
                    assert!(poly.holes.iter().all(|r| signed_area2(r) < 0));
                }
            }
        }
        assert!(polygons(&vec![0; h * w], [h, w]).is_empty());
    }
}
