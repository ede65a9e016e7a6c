//! Mask utilities: COCO run-length encoding exactly as pycocotools (`maskUtils.encode`,
//! `rleToString`, `rleFrString`, `area`, `toBbox`), so masks leave the server and the page in the
//! format every COCO tool reads. Pure Rust: also built for wasm.

use serde::{Deserialize, Serialize};

/// A COCO run-length encoded mask: `{"size": [h, w], "counts": "..."}`.
///
/// Runs go down the columns (Fortran order, as pycocotools stores masks) and alternate between 0s
/// and 1s, starting with the number of 0s (possibly none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rle {
    /// `[h, w]`
    pub size: [usize; 2],
    pub counts: Counts,
}

/// RLE counts: pycocotools' compressed string, or the plain list of run lengths ("uncompressed
/// RLE", as in COCO's `iscrowd` annotations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Counts {
    Compressed(String),
    Runs(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RleError(pub String);

impl std::fmt::Display for RleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad RLE: {}", self.0)
    }
}

impl std::error::Error for RleError {}

impl Rle {
    /// Encodes a row-major `h × w` mask (any non-zero byte is foreground) with compressed counts.
    pub fn encode(mask: &[u8], [h, w]: [usize; 2]) -> Rle {
        Rle { size: [h, w], counts: Counts::Compressed(runs_to_string(&runs(mask, [h, w]))) }
    }

    /// The run lengths, whichever way the counts are stored.
    pub fn runs(&self) -> Result<Vec<u32>, RleError> {
        let runs = match &self.counts {
            Counts::Runs(r) => r.clone(),
            Counts::Compressed(s) => runs_from_string(s)?,
        };
        let total: u64 = runs.iter().map(|&r| r as u64).sum();
        let [h, w] = self.size;
        if total != (h * w) as u64 {
            return Err(RleError(format!("runs cover {total} pixels, size {h}×{w} has {}", h * w)));
        }
        Ok(runs)
    }

    /// The same mask with compressed counts.
    pub fn compressed(&self) -> Result<Rle, RleError> {
        Ok(Rle { size: self.size, counts: Counts::Compressed(runs_to_string(&self.runs()?)) })
    }

    /// Decodes to a row-major `h × w` mask of 0/1.
    pub fn decode(&self) -> Result<Vec<u8>, RleError> {
        let [h, w] = self.size;
        let mut mask = vec![0u8; h * w];
        let mut i = 0usize; // position in column-major order
        for (k, &run) in self.runs()?.iter().enumerate() {
            if k % 2 == 1 {
                for j in i..i + run as usize {
                    let (x, y) = (j / h, j % h);
                    mask[y * w + x] = 1;
                }
            }
            i += run as usize;
        }
        Ok(mask)
    }

    /// Number of foreground pixels (pycocotools `area`).
    pub fn area(&self) -> Result<u64, RleError> {
        Ok(self.runs()?.iter().skip(1).step_by(2).map(|&r| r as u64).sum())
    }

    /// `[x, y, width, height]` of the tightest box around the foreground, `[0, 0, 0, 0]` for an
    /// empty mask (pycocotools `toBbox`, including its whole-height box when a run of 1s wraps
    /// from one column into the next).
    pub fn bbox(&self) -> Result<[u32; 4], RleError> {
        let runs = self.runs()?;
        let [h, _] = self.size;
        let m = runs.len() / 2 * 2;
        if m == 0 || h == 0 {
            return Ok([0; 4]);
        }
        let h = h as u64;
        let (mut xs, mut ys, mut xe, mut ye) = (u64::MAX, u64::MAX, 0u64, 0u64);
        let (mut cc, mut xp) = (0u64, 0u64);
        for (j, &run) in runs[..m].iter().enumerate() {
            cc += run as u64;
            let t = cc - (j % 2) as u64;
            let (y, x) = (t % h, t / h);
            if j % 2 == 0 {
                xp = x;
            } else if xp < x {
                ys = 0;
                ye = h - 1;
            }
            xs = xs.min(x);
            xe = xe.max(x);
            ys = ys.min(y);
            ye = ye.max(y);
        }
        Ok([xs as u32, ys as u32, (xe - xs + 1) as u32, (ye - ys + 1) as u32])
    }
}

/// Run lengths of a row-major mask read in column-major order, starting with a run of 0s.
fn runs(mask: &[u8], [h, w]: [usize; 2]) -> Vec<u32> {
    assert_eq!(mask.len(), h * w, "mask is not {h}×{w}");
    let mut out = Vec::new();
    let (mut current, mut run) = (false, 0u32);
    for x in 0..w {
        for y in 0..h {
            let v = mask[y * w + x] != 0;
            if v != current {
                out.push(run);
                run = 0;
                current = v;
            }
            run += 1;
        }
    }
    out.push(run);
    out
}

/// pycocotools `rleToString`: each count (from the third on, minus the count two before it) as
/// little-endian groups of 5 bits, 0x20 marking "more follows", offset by 48 into printable ASCII.
fn runs_to_string(runs: &[u32]) -> String {
    let mut s = String::new();
    for (i, &r) in runs.iter().enumerate() {
        let mut x = r as i64;
        if i > 2 {
            x -= runs[i - 2] as i64;
        }
        loop {
            let mut c = (x & 0x1f) as u8;
            x >>= 5; // arithmetic: negative deltas end at -1
            let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                c |= 0x20;
            }
            s.push((c + 48) as char);
            if !more {
                break;
            }
        }
    }
    s
}

/// pycocotools `rleFrString`.
fn runs_from_string(s: &str) -> Result<Vec<u32>, RleError> {
    let bytes = s.as_bytes();
    let mut runs: Vec<u32> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let (mut x, mut k) = (0i64, 0u32);
        loop {
            let b = bytes[p];
            if !(48..48 + 64).contains(&b) {
                return Err(RleError(format!("character {:?} at {p} is not an RLE digit", b as char)));
            }
            if k >= 12 {
                return Err(RleError(format!("count at {p} is too long")));
            }
            let c = (b - 48) as i64;
            x |= (c & 0x1f) << (5 * k);
            p += 1;
            k += 1;
            if c & 0x20 == 0 {
                if c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
                break;
            }
            if p == bytes.len() {
                return Err(RleError("string ends inside a count".into()));
            }
        }
        if runs.len() > 2 {
            x += runs[runs.len() - 2] as i64;
        }
        let run = u32::try_from(x).map_err(|_| RleError(format!("run {} has length {x}", runs.len())))?;
        runs.push(run);
    }
    Ok(runs)
}

/// A row-major mask from rows of '#' (1) and '.' (0), for the tests of this crate.
#[cfg(test)]
pub(crate) fn test_mask(rows: &[&str]) -> (Vec<u8>, [usize; 2]) {
    let data = rows.iter().flat_map(|r| r.bytes().map(|b| (b == b'#') as u8)).collect();
    (data, [rows.len(), rows[0].len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::masks::test_mask as mask;

    #[test]
    fn runs_go_down_columns_starting_with_zeros() {
        // Columns [0,1,1], [0,0,1], [1,0,0] → 0 11 00 11 00.
        let (m, size) = mask(&["..#", "#..", "##."]);
        assert_eq!(runs(&m, size), vec![1, 2, 2, 2, 2]);
        // Columns [0,1,1], [1,0,1], [0,1,0] → 0 111 0 1 0 1 0.
        let (m, size) = mask(&[".#.", "#.#", "##."]);
        assert_eq!(runs(&m, size), vec![1, 3, 1, 1, 1, 1, 1]);
        // A mask starting with a 1 begins with an empty run of 0s.
        let (ones, size) = mask(&["##", "##"]);
        assert_eq!(runs(&ones, size), vec![0, 4]);
    }

    #[test]
    fn compressed_counts_follow_rle_to_string() {
        // runs [1, 2, 2, 2, 2]: the first three as is ('1', '2', '2' → 49, 50, 50), then deltas
        // 2 − 2 = 0 → '0' twice.
        assert_eq!(runs_to_string(&[1, 2, 2, 2, 2]), "12200");
        // 100 = 0b11_00100: low group 4 | 0x20 (more) = 36 → 'T', then 3 → '3'.
        assert_eq!(runs_to_string(&[100]), "T3");
        // A negative delta: runs [0, 5, 7, 1]: 1 − 5 = −4 → low 5 bits 28 (0x1c, sign bit set,
        // rest −1) → 28 + 48 = 'L'.
        assert_eq!(runs_to_string(&[0, 5, 7, 1]), "057L");
        // 16 needs a second group: its low group has the sign bit, rest 0 → 0x10|0x20 = 48 → '`'.
        assert_eq!(runs_to_string(&[16]), "`0");
    }

    #[test]
    fn encode_decode_round_trips_odd_sizes() {
        let (h, w) = (7, 5);
        let mut state = 12345u32;
        for _ in 0..50 {
            let m: Vec<u8> = (0..h * w)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (state >> 16).is_multiple_of(3) as u8
                })
                .collect();
            let rle = Rle::encode(&m, [h, w]);
            assert_eq!(rle.decode().unwrap(), m);
            assert_eq!(rle.area().unwrap(), m.iter().map(|&v| v as u64).sum::<u64>());
            let plain = Rle { size: [h, w], counts: Counts::Runs(rle.runs().unwrap()) };
            assert_eq!(plain.decode().unwrap(), m, "uncompressed counts decode the same");
            assert_eq!(plain.compressed().unwrap(), rle);
        }
    }

    #[test]
    fn bbox_is_xywh_of_the_foreground() {
        let (m, size) = mask(&[".....", "..#..", "..##.", "....."]);
        assert_eq!(Rle::encode(&m, size).bbox().unwrap(), [2, 1, 2, 2]);
        let (empty, size) = mask(&["...", "..."]);
        assert_eq!(Rle::encode(&empty, size).bbox().unwrap(), [0, 0, 0, 0]);
        let (full, size) = mask(&["##", "##", "##"]);
        assert_eq!(Rle::encode(&full, size).bbox().unwrap(), [0, 0, 2, 3]);
    }

    #[test]
    fn bbox_of_a_run_wrapping_into_the_next_column_spans_the_height() {
        // Column 0 = [0,0,1], column 1 = [1,0,0]: one run of 1s across the column boundary, which
        // toBbox handles by spanning the whole height.
        let (m, size) = mask(&[".#", "..", "#."]);
        assert_eq!(Rle::encode(&m, size).bbox().unwrap(), [0, 0, 2, 3]);
    }

    #[test]
    fn json_is_the_coco_shape() {
        let (m, size) = mask(&["..#", "#..", "##."]);
        let json = serde_json::to_value(Rle::encode(&m, size)).unwrap();
        assert_eq!(json, serde_json::json!({"size": [3, 3], "counts": "12200"}));
        let back: Rle = serde_json::from_value(serde_json::json!({"size": [3, 3], "counts": [1, 2, 2, 2, 2]})).unwrap();
        assert_eq!(back.decode().unwrap(), m);
    }

    #[test]
    fn malformed_counts_are_errors_not_panics() {
        let bad = |counts: Counts, size| Rle { size, counts }.decode().unwrap_err();
        assert!(bad(Counts::Compressed("12 0".into()), [3, 3]).0.contains("not an RLE digit"));
        assert!(bad(Counts::Compressed("1T".into()), [3, 3]).0.contains("ends inside"));
        assert!(bad(Counts::Runs(vec![1, 2]), [3, 3]).0.contains("cover 3 pixels"));
        assert!(bad(Counts::Compressed("0L".into()), [2, 2]).0.contains("length"));
    }
}
