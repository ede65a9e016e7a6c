//! Automatic mask generation ("segment everything"): a grid of single-point prompts over the
//! image (and optionally over crops of it), decoded in batches, filtered by predicted IoU and
//! stability, de-duplicated by box NMS, optionally cleaned of small islands and holes.
//!
//! Behaviour and defaults follow `segment_anything.SamAutomaticMaskGenerator` (and its
//! `utils/amg.py`); `tests/everything.rs` checks the output against it on a random checkpoint.
//! The one deliberate difference is the order of work, not its result: masks whose predicted IoU
//! fails the threshold are dropped before upscaling, since nothing later depends on them.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::geometry::{preprocess_shape, upscale_logits};
use crate::image_io::RgbImage;
use crate::masks::Rle;
use crate::predictor::{ImageEmbedding, Point, PredictError, Predictor, Prompt};

/// The generator's settings; `Default` is the reference's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EverythingSettings {
    /// Points along each side of the grid of layer 0 (`points_per_side²` prompts).
    pub points_per_side: usize,
    /// Prompts decoded in one batch.
    pub points_per_batch: usize,
    /// Keep masks whose predicted IoU is above this (0 keeps all).
    pub pred_iou_thresh: f64,
    /// Keep masks whose stability score is at least this (0 keeps all).
    pub stability_score_thresh: f64,
    /// The stability score compares the mask at logit thresholds 0 ± this offset.
    pub stability_score_offset: f64,
    /// Box IoU above which the lower-scored of two masks of one crop is dropped.
    pub box_nms_thresh: f64,
    /// Crop layers beyond the whole image: layer i has (2^i)² crops.
    pub crop_n_layers: usize,
    /// Box IoU above which masks of different crops are de-duplicated (smaller crops lose).
    pub crop_nms_thresh: f64,
    /// Overlap of neighbouring crops in layer 1, as a fraction of the image's short side.
    pub crop_overlap_ratio: f64,
    /// Layer i's grid has `points_per_side / factor^i` points a side.
    pub crop_n_points_downscale_factor: usize,
    /// If > 0, islands and holes smaller than this many pixels are removed from every mask.
    pub min_mask_region_area: usize,
}

impl Default for EverythingSettings {
    fn default() -> Self {
        Self {
            points_per_side: 32,
            points_per_batch: 64,
            pred_iou_thresh: 0.88,
            stability_score_thresh: 0.95,
            stability_score_offset: 1.0,
            box_nms_thresh: 0.7,
            crop_n_layers: 0,
            crop_nms_thresh: 0.7,
            crop_overlap_ratio: 512.0 / 1500.0,
            crop_n_points_downscale_factor: 1,
            min_mask_region_area: 0,
        }
    }
}

/// A setting out of range: `field` is its name as in [`EverythingSettings`].
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsError {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for SettingsError {}

impl EverythingSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        let err = |field, message: &str| Err(SettingsError { field, message: message.to_string() });
        // Bounds the reference does not have: a batch holds `points_per_batch` copies of the
        // image features (~1 GB at 256 for SAM's 256×64×64), and 256² prompts already take hours
        // on a CPU; a server should not accept more.
        if !(1..=256).contains(&self.points_per_side) {
            return err("points_per_side", "must be 1 to 256");
        }
        if !(1..=256).contains(&self.points_per_batch) {
            return err("points_per_batch", "must be 1 to 256");
        }
        if self.crop_n_layers > 4 {
            return err("crop_n_layers", "must be 0 to 4");
        }
        if self.crop_n_points_downscale_factor < 1 {
            return err("crop_n_points_downscale_factor", "must be at least 1");
        }
        let fractions = [
            ("pred_iou_thresh", self.pred_iou_thresh),
            ("stability_score_thresh", self.stability_score_thresh),
            ("box_nms_thresh", self.box_nms_thresh),
            ("crop_nms_thresh", self.crop_nms_thresh),
        ];
        for (field, v) in fractions {
            // Predicted IoUs of a poorly trained model can exceed 1: allow a little headroom.
            if !(v.is_finite() && (0.0..=2.0).contains(&v)) {
                return err(field, "must be a number from 0 to 1");
            }
        }
        if !(self.stability_score_offset.is_finite() && self.stability_score_offset >= 0.0) {
            return err("stability_score_offset", "must be a number ≥ 0");
        }
        if !(self.crop_overlap_ratio.is_finite() && (0.0..1.0).contains(&self.crop_overlap_ratio)) {
            return err("crop_overlap_ratio", "must be at least 0 and below 1");
        }
        Ok(())
    }

    /// Prompts over all crops, for progress reports.
    pub fn total_points(&self, image_size: [usize; 2]) -> usize {
        let grids = point_grids(self.points_per_side, self.crop_n_layers, self.crop_n_points_downscale_factor);
        crop_boxes(image_size, self.crop_n_layers, self.crop_overlap_ratio).iter().map(|&(_, layer)| grids[layer].len()).sum()
    }
}

/// One generated mask, as the reference's `generate` returns it with `output_mode="coco_rle"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedMask {
    /// COCO RLE at the original image size (compressed counts string).
    pub segmentation: Rle,
    pub area: u64,
    /// `[x, y, w, h]` from the inclusive box: `w = x_max − x_min` as in the reference (one less
    /// than pycocotools' `toBbox` width).
    pub bbox: [i64; 4],
    pub predicted_iou: f32,
    /// The prompt point, original-image pixels.
    pub point_coords: Vec<[f64; 2]>,
    pub stability_score: f32,
    /// `[x, y, w, h]` of the crop the mask was predicted in.
    pub crop_box: [usize; 4],
}

/// A mask on its way through the filters; boxes inclusive `[x0, y0, x1, y1]`, full-image pixels.
struct Candidate {
    rle: Rle,
    bbox: [i64; 4],
    iou: f32,
    stability: f32,
    point: [f64; 2],
    crop: [usize; 4],
    /// Sigmoid of the logits, 0–255, crop-sized (only when asked for).
    probability: Option<Vec<u8>>,
}

/// Generates masks for the whole image. `progress(done, total)` is called after each decoded
/// batch with the number of prompts done so far.
pub fn generate(
    predictor: &Predictor,
    image: &RgbImage,
    settings: &EverythingSettings,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<GeneratedMask>, PredictError> {
    let out = generate_with(predictor, EverythingInput { image: Some(image), embedding: None }, settings, progress, false)?;
    Ok(out.into_iter().map(|(m, _)| m).collect())
}

/// A generated mask and, when asked for, its probability map (0–255, the size of its crop box).
pub type MaskWithProbability = (GeneratedMask, Option<Vec<u8>>);

/// What [`generate_with`] works from: the image, and/or the whole image's embedding (then the
/// image is needed only for crop layers).
#[derive(Clone, Copy)]
pub struct EverythingInput<'a> {
    pub image: Option<&'a RgbImage>,
    pub embedding: Option<&'a ImageEmbedding>,
}

/// [`generate`], from an image or an embedding, optionally also returning each mask's
/// probability map (sigmoid of its logits, 0–255, the size of its `crop_box`).
pub fn generate_with(
    predictor: &Predictor,
    input: EverythingInput<'_>,
    settings: &EverythingSettings,
    progress: &mut dyn FnMut(usize, usize),
    keep_probabilities: bool,
) -> Result<Vec<MaskWithProbability>, PredictError> {
    let size = match (input.image, input.embedding) {
        (Some(image), _) => [image.height, image.width],
        (None, Some(emb)) => emb.meta.original_size,
        (None, None) => return Err(PredictError::NoImage),
    };
    let grids = point_grids(settings.points_per_side, settings.crop_n_layers, settings.crop_n_points_downscale_factor);
    let crops = crop_boxes(size, settings.crop_n_layers, settings.crop_overlap_ratio);
    let total: usize = crops.iter().map(|&(_, layer)| grids[layer].len()).sum();
    let mut done = 0;
    let mut data = Vec::new();
    for &(crop, layer) in &crops {
        if crop[2] <= crop[0] || crop[3] <= crop[1] {
            // Only on images a few pixels wide (the reference fails there): nothing to embed.
            done += grids[layer].len();
            progress(done, total);
            continue;
        }
        let whole = crop == [0, 0, size[1], size[0]];
        let emb = match (input.embedding, input.image) {
            (Some(emb), _) if whole => {
                predictor.check_embedding(&emb.meta, emb.dims().iter().product())?;
                emb.clone()
            }
            (_, Some(image)) => predictor.embed(&crop_image(image, crop))?,
            (_, None) => return Err(PredictError::NoImage),
        };
        let mut on_batch = |n: usize| {
            done += n;
            progress(done, total);
        };
        data.extend(process_crop(predictor, &emb, size, crop, &grids[layer], settings, keep_probabilities, &mut on_batch)?);
    }
    if crops.len() > 1 {
        // Between crops, prefer masks from larger crops.
        let boxes: Vec<[i64; 4]> = data.iter().map(|c| c.bbox).collect();
        let scores: Vec<f32> =
            data.iter().map(|c| 1.0 / ((c.crop[2] - c.crop[0]) as i64 * (c.crop[3] - c.crop[1]) as i64) as f32).collect();
        data = select(data, &box_nms(&boxes, &scores, settings.crop_nms_thresh));
    }
    if settings.min_mask_region_area > 0 {
        data = remove_small_regions_all(data, settings.min_mask_region_area, settings.box_nms_thresh.max(settings.crop_nms_thresh))?;
    }
    data.into_iter()
        .map(|c| {
            let area = c.rle.area().map_err(|e| PredictError::EmbeddingMismatch { reason: e.to_string() })?;
            let [x0, y0, x1, y1] = c.bbox;
            let [cx0, cy0, cx1, cy1] = c.crop;
            let mask = GeneratedMask {
                segmentation: c.rle,
                area,
                bbox: [x0, y0, x1 - x0, y1 - y0],
                predicted_iou: c.iou,
                point_coords: vec![c.point],
                stability_score: c.stability,
                crop_box: [cx0, cy0, cx1 - cx0, cy1 - cy0],
            };
            Ok((mask, c.probability))
        })
        .collect()
}

/// Keeps `items[i]` for `i` in `keep`, in that order.
fn select<T>(items: Vec<T>, keep: &[usize]) -> Vec<T> {
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    keep.iter().map(|&i| slots[i].take().expect("NMS keeps each index once")).collect()
}

#[allow(clippy::too_many_arguments)]
fn process_crop(
    predictor: &Predictor,
    emb: &ImageEmbedding,
    [orig_h, orig_w]: [usize; 2],
    crop: [usize; 4],
    grid: &[[f64; 2]],
    s: &EverythingSettings,
    keep_probabilities: bool,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<Candidate>, PredictError> {
    let [x0, y0, x1, y1] = crop;
    let (ch, cw) = (y1 - y0, x1 - x0);
    let image_size = predictor.config().image_size;
    let input_size = preprocess_shape([ch, cw], image_size);
    let points: Vec<[f64; 2]> = grid.iter().map(|&[gx, gy]| [gx * cw as f64, gy * ch as f64]).collect();

    let iou_thresh = s.pred_iou_thresh as f32;
    let stability_thresh = s.stability_score_thresh as f32;
    let (hi, lo) = ((0.0 + s.stability_score_offset) as f32, (0.0 - s.stability_score_offset) as f32);
    let mut data: Vec<Candidate> = Vec::new();
    for batch in points.chunks(s.points_per_batch) {
        let prompts: Vec<Prompt> = batch
            .iter()
            .map(|&[x, y]| Prompt { points: vec![Point { x, y, label: 1 }], bbox: None, mask_input: None, multimask: true })
            .collect();
        let out = predictor.predict_batch(emb, &prompts, true)?;
        // (prompt, mask) in the reference's flattened order, first filtered by predicted IoU.
        let mut jobs = Vec::new();
        for b in 0..out.batch {
            for m in 0..out.num_masks {
                let iou = out.iou_predictions[b * out.num_masks + m];
                // NaN fails, as in the reference.
                if s.pred_iou_thresh > 0.0 && iou.partial_cmp(&iou_thresh) != Some(Ordering::Greater) {
                    continue;
                }
                jobs.push((b, m, iou));
            }
        }
        let masks = par_map(&jobs, |&(b, m, _)| {
            let logits = upscale_logits(out.low_res(b, m), [256, 256], image_size, input_size, [ch, cw]);
            let stability = stability_score(&logits, hi, lo);
            if s.stability_score_thresh > 0.0 && !matches!(stability.partial_cmp(&stability_thresh), Some(Ordering::Greater | Ordering::Equal)) {
                return None;
            }
            let probability = keep_probabilities.then(|| logits.iter().map(|&v| (255.0 / (1.0 + (-v).exp())).round() as u8).collect());
            Some((stability, logits.iter().map(|&v| (v > 0.0) as u8).collect::<Vec<u8>>(), probability))
        });
        for (&(b, _, iou), mask) in jobs.iter().zip(masks) {
            let Some((stability, mask, probability)) = mask else { continue };
            let [bx0, by0, bx1, by1] = mask_box(&mask, [ch, cw]);
            let bbox = [bx0 + x0 as i64, by0 + y0 as i64, bx1 + x0 as i64, by1 + y0 as i64];
            if is_box_near_crop_edge(bbox, crop, [orig_w, orig_h]) {
                continue;
            }
            let rle = if crop == [0, 0, orig_w, orig_h] {
                Rle::encode(&mask, [ch, cw])
            } else {
                let mut full = vec![0u8; orig_h * orig_w];
                for (r, row) in mask.chunks(cw).enumerate() {
                    full[(y0 + r) * orig_w + x0..(y0 + r) * orig_w + x0 + cw].copy_from_slice(row);
                }
                Rle::encode(&full, [orig_h, orig_w])
            };
            let [px, py] = batch[b];
            data.push(Candidate { rle, bbox, iou, stability, point: [px + x0 as f64, py + y0 as f64], crop, probability });
        }
        on_batch(batch.len());
    }
    // NMS within the crop (boxes relative to the crop or to the image: the same IoUs).
    let boxes: Vec<[i64; 4]> = data.iter().map(|c| c.bbox).collect();
    let scores: Vec<f32> = data.iter().map(|c| c.iou).collect();
    let keep = box_nms(&boxes, &scores, s.box_nms_thresh);
    Ok(select(data, &keep))
}

/// Pixels `[y0, y1) × [x0, x1)` of an image.
pub fn crop_image(image: &RgbImage, [x0, y0, x1, y1]: [usize; 4]) -> RgbImage {
    let (w, h) = (x1 - x0, y1 - y0);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in y0..y1 {
        data.extend_from_slice(&image.data[(y * image.width + x0) * 3..(y * image.width + x1) * 3]);
    }
    RgbImage { height: h, width: w, data }
}

/// Maps `f` over `items` on all cores (one thread per core natively, in order).
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    #[cfg(not(target_family = "wasm"))]
    {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len().max(1));
        if threads > 1 {
            let chunk = items.len().div_ceil(threads);
            return std::thread::scope(|scope| {
                let f = &f;
                let handles: Vec<_> =
                    items.chunks(chunk).map(|c| scope.spawn(move || c.iter().map(f).collect::<Vec<R>>())).collect();
                handles.into_iter().flat_map(|h| h.join().expect("worker thread")).collect()
            });
        }
    }
    items.iter().map(f).collect()
}

/// The reference's point grid: `n × n` points in `[0, 1]²` at cell centres, x varying fastest
/// (numpy's `linspace` arithmetic).
pub fn point_grid(n: usize) -> Vec<[f64; 2]> {
    let offset = 1.0 / (2 * n) as f64;
    let (start, stop) = (offset, 1.0 - offset);
    let line: Vec<f64> = (0..n)
        .map(|k| {
            if n > 1 && k == n - 1 {
                stop
            } else if n > 1 {
                k as f64 * ((stop - start) / (n - 1) as f64) + start
            } else {
                start
            }
        })
        .collect();
    line.iter().flat_map(|&y| line.iter().map(move |&x| [x, y])).collect()
}

/// Grids of every crop layer: layer i has `points_per_side / factor^i` (floored) points a side.
pub fn point_grids(points_per_side: usize, n_layers: usize, factor: usize) -> Vec<Vec<[f64; 2]>> {
    (0..=n_layers).map(|i| point_grid((points_per_side as f64 / (factor as f64).powi(i as i32)) as usize)).collect()
}

/// Crop boxes `[x0, y0, x1, y1]` with their layer: the whole image, then for layer i ≥ 1 a
/// `2^i × 2^i` set of overlapping crops (x outer, y inner, as the reference's `product`).
pub fn crop_boxes([im_h, im_w]: [usize; 2], n_layers: usize, overlap_ratio: f64) -> Vec<([usize; 4], usize)> {
    let mut out = vec![([0, 0, im_w, im_h], 0)];
    let short = im_h.min(im_w) as f64;
    for layer in 0..n_layers {
        let n = 1usize << (layer + 1);
        let overlap = (overlap_ratio * short * (2.0 / n as f64)) as i64;
        let crop_len = |len: usize| ((overlap * (n as i64 - 1) + len as i64) as f64 / n as f64).ceil() as i64;
        let (cw, ch) = (crop_len(im_w), crop_len(im_h));
        let starts = |c: i64| -> Vec<i64> { (0..n).map(|i| ((c - overlap) * i as i64).max(0)).collect() };
        for &x0 in &starts(cw) {
            for &y0 in &starts(ch) {
                let b = [x0 as usize, y0 as usize, ((x0 + cw) as usize).min(im_w), ((y0 + ch) as usize).min(im_h)];
                out.push((b, layer + 1));
            }
        }
    }
    out
}

/// IoU of the mask thresholded at `hi` and at `lo` (`hi ≥ lo`): the count above `hi` over the
/// count above `lo`. NaN when nothing is above `lo`, which fails any threshold as in the reference.
pub fn stability_score(logits: &[f32], hi: f32, lo: f32) -> f32 {
    let (mut inter, mut union) = (0u32, 0u32);
    for &v in logits {
        inter += (v > hi) as u32;
        union += (v > lo) as u32;
    }
    inter as f32 / union as f32
}

/// Inclusive box `[x0, y0, x1, y1]` of a row-major `h × w` mask; `[0, 0, 0, 0]` when empty.
pub fn mask_box(mask: &[u8], [h, w]: [usize; 2]) -> [i64; 4] {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..h {
        let row = &mask[y * w..(y + 1) * w];
        let Some(first) = row.iter().position(|&v| v != 0) else { continue };
        let last = row.iter().rposition(|&v| v != 0).expect("a set pixel");
        x0 = x0.min(first);
        x1 = x1.max(last);
        y0 = y0.min(y);
        y1 = y;
    }
    if x0 == usize::MAX { [0; 4] } else { [x0 as i64, y0 as i64, x1 as i64, y1 as i64] }
}

/// A box within 20 px of an edge of its crop that is not also an edge of the image: the object
/// probably continues outside the crop.
fn is_box_near_crop_edge(bbox: [i64; 4], crop: [usize; 4], [w, h]: [usize; 2]) -> bool {
    let image = [0, 0, w as i64, h as i64];
    (0..4).any(|i| {
        let near_crop = (bbox[i] - crop[i] as i64).abs() <= 20;
        let near_image = (bbox[i] - image[i]).abs() <= 20;
        near_crop && !near_image
    })
}

/// Greedy non-maximum suppression as torchvision's `nms` (one category): boxes by descending
/// score (ties in index order), each dropping later ones whose IoU with it is above `thresh`.
/// Areas are `(x1 − x0)(y1 − y0)` in f32, so a one-pixel box has area 0. Returns the kept
/// indices, best first.
pub fn box_nms(boxes: &[[i64; 4]], scores: &[f32], thresh: f64) -> Vec<usize> {
    let b: Vec<[f32; 4]> = boxes.iter().map(|b| b.map(|v| v as f32)).collect();
    let area: Vec<f32> = b.iter().map(|b| (b[2] - b[0]) * (b[3] - b[1])).collect();
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&i, &j| scores[j].partial_cmp(&scores[i]).unwrap_or(Ordering::Equal));
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[k + 1..] {
            if suppressed[j] {
                continue;
            }
            let w = (b[i][2].min(b[j][2]) - b[i][0].max(b[j][0])).max(0.0);
            let h = (b[i][3].min(b[j][3]) - b[i][1].max(b[j][1])).max(0.0);
            let inter = w * h;
            let iou = inter / (area[i] + area[j] - inter);
            if iou as f64 > thresh {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// Which regions [`remove_small_regions`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionMode {
    /// Fill background components smaller than the area.
    Holes,
    /// Drop foreground components smaller than the area (keeping the largest if all are).
    Islands,
}

/// 8-connected components of the non-zero pixels of a row-major `h × w` image: a label per
/// pixel (0 = not set; components numbered from 1 in the raster order of their first pixel, as
/// OpenCV's `connectedComponents`) and each component's size (index `label − 1`).
pub fn connected_components(img: &[u8], [h, w]: [usize; 2]) -> (Vec<u32>, Vec<usize>) {
    let mut parent: Vec<u32> = vec![0];
    fn find(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            parent[x as usize] = parent[parent[x as usize] as usize];
            x = parent[x as usize];
        }
        x
    }
    let mut labels = vec![0u32; h * w];
    for y in 0..h {
        for x in 0..w {
            if img[y * w + x] == 0 {
                continue;
            }
            // Already-visited neighbours: W, NW, N, NE.
            let mut neighbours = [0u32; 4];
            if x > 0 {
                neighbours[0] = labels[y * w + x - 1];
            }
            if y > 0 {
                let up = (y - 1) * w;
                if x > 0 {
                    neighbours[1] = labels[up + x - 1];
                }
                neighbours[2] = labels[up + x];
                if x + 1 < w {
                    neighbours[3] = labels[up + x + 1];
                }
            }
            let mut label = 0;
            for &n in neighbours.iter().filter(|&&n| n != 0) {
                let r = find(&mut parent, n);
                if label == 0 {
                    label = r;
                } else if r != label {
                    let (lo, hi) = (label.min(r), label.max(r));
                    parent[hi as usize] = lo;
                    label = lo;
                }
            }
            if label == 0 {
                label = parent.len() as u32;
                parent.push(label);
            }
            labels[y * w + x] = label;
        }
    }
    // Roots are each component's smallest provisional label, created at its first raster pixel.
    let mut final_of = vec![0u32; parent.len()];
    let mut sizes = Vec::new();
    for l in 1..parent.len() as u32 {
        let r = find(&mut parent, l);
        if r == l {
            sizes.push(0);
            final_of[l as usize] = sizes.len() as u32;
        } else {
            final_of[l as usize] = final_of[r as usize];
        }
    }
    for v in labels.iter_mut().filter(|v| **v != 0) {
        *v = final_of[*v as usize];
        sizes[*v as usize - 1] += 1;
    }
    (labels, sizes)
}

/// The reference's `remove_small_regions`: fills holes (or drops islands) of fewer than
/// `area_thresh` pixels, 8-connected. Returns the mask and whether any region was small (the
/// reference's "changed", true even if the result happens to equal the input).
pub fn remove_small_regions(mask: &[u8], size: [usize; 2], area_thresh: usize, mode: RegionMode) -> (Vec<u8>, bool) {
    let holes = mode == RegionMode::Holes;
    let working: Vec<u8> = mask.iter().map(|&v| ((v != 0) ^ holes) as u8).collect();
    let (labels, sizes) = connected_components(&working, size);
    let small: Vec<bool> = sizes.iter().map(|&s| s < area_thresh).collect();
    if !small.iter().any(|&s| s) {
        return (mask.iter().map(|&v| (v != 0) as u8).collect(), false);
    }
    let out = if holes {
        labels.iter().map(|&l| (l == 0 || small[l as usize - 1]) as u8).collect()
    } else {
        let mut fill: Vec<bool> = small.iter().map(|&s| !s).collect();
        if !fill.iter().any(|&f| f) {
            // All islands are small: keep the largest (the first of equals).
            let largest = (0..sizes.len()).fold(0, |best, i| if sizes[i] > sizes[best] { i } else { best });
            fill[largest] = true;
        }
        labels.iter().map(|&l| (l != 0 && fill[l as usize - 1]) as u8).collect()
    };
    (out, true)
}

/// The reference's `postprocess_small_regions`: cleans every mask, then NMS preferring masks
/// that did not change; kept masks that changed take their cleaned shape and box.
fn remove_small_regions_all(data: Vec<Candidate>, min_area: usize, nms_thresh: f64) -> Result<Vec<Candidate>, PredictError> {
    let cleaned = par_map(&data, |c| -> Result<(Vec<u8>, bool), String> {
        let mask = c.rle.decode().map_err(|e| e.to_string())?;
        let (mask, holes_changed) = remove_small_regions(&mask, c.rle.size, min_area, RegionMode::Holes);
        let (mask, islands_changed) = remove_small_regions(&mask, c.rle.size, min_area, RegionMode::Islands);
        Ok((mask, !(holes_changed || islands_changed)))
    });
    let cleaned: Vec<(Vec<u8>, bool)> =
        cleaned.into_iter().collect::<Result<_, _>>().map_err(|reason| PredictError::EmbeddingMismatch { reason })?;
    let boxes: Vec<[i64; 4]> = data.iter().zip(&cleaned).map(|(c, (m, _))| mask_box(m, c.rle.size)).collect();
    let scores: Vec<f32> = cleaned.iter().map(|&(_, unchanged)| unchanged as u8 as f32).collect();
    let keep = box_nms(&boxes, &scores, nms_thresh);
    let mut data: Vec<Option<Candidate>> = data.into_iter().map(Some).collect();
    Ok(keep
        .iter()
        .map(|&i| {
            let mut c = data[i].take().expect("NMS keeps each index once");
            let (mask, unchanged) = &cleaned[i];
            if !unchanged {
                c.rle = Rle::encode(mask, c.rle.size);
                c.bbox = boxes[i];
            }
            c
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::masks::test_mask as mask;

    #[test]
    fn point_grid_is_cell_centres_x_fastest() {
        assert_eq!(point_grid(1), vec![[0.5, 0.5]]);
        assert_eq!(point_grid(2), vec![[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]);
        assert_eq!(point_grids(32, 2, 2).iter().map(Vec::len).collect::<Vec<_>>(), vec![1024, 256, 64]);
    }

    #[test]
    fn crops_of_a_one_pixel_image_may_be_empty_and_are_skipped() {
        let crops = crop_boxes([1, 1], 1, 512.0 / 1500.0);
        assert_eq!(crops[0], ([0, 0, 1, 1], 0));
        assert!(crops.iter().any(|&([x0, y0, x1, y1], _)| x1 <= x0 || y1 <= y0));
    }

    #[test]
    fn stability_is_iou_of_two_thresholds() {
        assert_eq!(stability_score(&[2.0, 0.5, -0.5, -2.0], 1.0, -1.0), 1.0 / 3.0);
        assert!(stability_score(&[-2.0, -3.0], 1.0, -1.0).is_nan());
    }

    #[test]
    fn mask_box_is_inclusive() {
        let (m, size) = mask(&["....", ".#..", "..#.", "...."]);
        assert_eq!(mask_box(&m, size), [1, 1, 2, 2]);
        let (m, size) = mask(&["...", "..."]);
        assert_eq!(mask_box(&m, size), [0, 0, 0, 0]);
    }

    #[test]
    fn components_are_eight_connected() {
        let (m, size) = mask(&["#..#", ".#..", "...#", "##.#"]);
        let (labels, sizes) = connected_components(&m, size);
        assert_eq!(sizes, vec![2, 1, 2, 2]);
        assert_eq!(labels[0], 1);
        assert_eq!(labels[3], 2);
        // A U shape whose arms meet late still gets the label of its first pixel.
        let (m, size) = mask(&["#.#", "#.#", "###"]);
        let (labels, sizes) = connected_components(&m, size);
        assert_eq!(sizes, vec![7]);
        assert!(labels.iter().all(|&l| l <= 1));
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let boxes = [[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]];
        assert_eq!(box_nms(&boxes, &[0.5, 0.9, 0.1], 0.7), vec![1, 2]);
        assert_eq!(box_nms(&boxes, &[0.5, 0.9, 0.1], 0.9), vec![1, 0, 2]);
    }

    #[test]
    fn settings_errors_name_the_field() {
        let bad = EverythingSettings { crop_overlap_ratio: 1.5, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().field, "crop_overlap_ratio");
        let bad = EverythingSettings { points_per_side: 0, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().field, "points_per_side");
        assert!(EverythingSettings::default().validate().is_ok());
    }
}
