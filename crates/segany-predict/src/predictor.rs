//! The `Predictor`: an image embedding plus prompts → masks. The one predict path used by the CLI,
//! the server, the wasm bindings and the tests.

use std::sync::{Arc, OnceLock};

use burn::tensor::{Device, Tensor, TensorData};
use segany_model::{
    CpuDecoder, DensePrompt, Exchange, ImageContext, ImageEncoder, PIXEL_MEAN, PIXEL_STD, PointPrompt, SamConfig, SamDecoder, SamModel,
    Variant,
};
use serde::{Deserialize, Serialize};

use crate::geometry::{MaskUpscaler, preprocess_shape, resize_rgb_bilinear, transform_box, transform_coords, upscale_logits};
use crate::image_io::RgbImage;

/// Side of the low-resolution logits (and of a mask prompt).
pub const LOW_RES: usize = 256;

/// What an embedding is valid with, and the geometry of the image it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingMeta {
    /// `vit_b`, …, or `None` for an unreleased configuration.
    pub variant: Option<String>,
    pub encoder_digest: String,
    /// `(h, w)` of the image after the longest-side resize.
    pub input_size: [usize; 2],
    /// `(h, w)` of the original image.
    pub original_size: [usize; 2],
}

/// An image embedding `[1, C, 64, 64]` and its metadata.
#[derive(Debug, Clone)]
pub struct ImageEmbedding {
    pub tensor: Tensor<4>,
    pub meta: EmbeddingMeta,
    /// The CPU decoder's per-image work, made on the first prediction and shared by clones.
    prepared: Arc<OnceLock<ImageContext>>,
}

impl ImageEmbedding {
    fn new(tensor: Tensor<4>, meta: EmbeddingMeta) -> Self {
        Self { tensor, meta, prepared: Arc::default() }
    }

    /// The values, row-major `[1, C, 64, 64]`.
    pub fn to_vec(&self) -> Vec<f32> {
        self.tensor.to_data().convert::<f32>().try_into_vec::<f32>().expect("f32 embedding")
    }

    pub fn dims(&self) -> [usize; 4] {
        self.tensor.dims()
    }
}

/// A point in original-image pixels; `label` 1 = foreground, 0 = background.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub label: i32,
}

/// A prompt in original-image pixel coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    #[serde(default)]
    pub points: Vec<Point>,
    /// `(x0, y0, x1, y1)`.
    #[serde(default, rename = "box")]
    pub bbox: Option<[f64; 4]>,
    /// Low-resolution logits `256 × 256` of a previous prediction, to refine it.
    #[serde(default, skip_serializing)]
    pub mask_input: Option<Vec<f32>>,
    /// Three masks (whole, part, subpart) when true; the decoder's single mask otherwise.
    #[serde(default = "default_true")]
    pub multimask: bool,
}

fn default_true() -> bool {
    true
}

impl Default for Prompt {
    /// No prompt yet, three masks.
    fn default() -> Self {
        Self { points: Vec::new(), bbox: None, mask_input: None, multimask: true }
    }
}

/// Rows of a prediction's masks that one shard of a sharded decode made from its band of the
/// low-resolution logits alone ([`Predictor::shard_masks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMasks {
    /// Output rows.
    pub rows: std::ops::Range<usize>,
    /// `N × rows × W` booleans (0/1).
    pub masks: Vec<u8>,
}

/// The predicted masks, in the decoder's order (whole, part, subpart for multimask).
#[derive(Debug, Clone)]
pub struct Prediction {
    /// `N × H × W` booleans (0/1) at the original size.
    pub masks: Vec<u8>,
    /// `[N]`
    pub iou_predictions: Vec<f32>,
    /// `N × 256 × 256` logits, reusable as `mask_input`.
    pub low_res_logits: Vec<f32>,
    pub num_masks: usize,
    /// `(H, W)`
    pub size: [usize; 2],
}

/// Low-resolution outputs of a batch of prompts ([`Predictor::predict_batch`]).
#[derive(Debug, Clone)]
pub struct BatchPrediction {
    /// `[batch, num_masks, 256, 256]` row-major.
    pub low_res_logits: Vec<f32>,
    /// `[batch, num_masks]`
    pub iou_predictions: Vec<f32>,
    pub batch: usize,
    pub num_masks: usize,
}

impl BatchPrediction {
    /// Low-resolution logits of mask `m` of prompt `b`.
    pub fn low_res(&self, b: usize, m: usize) -> &[f32] {
        let n = LOW_RES * LOW_RES;
        let i = b * self.num_masks + m;
        &self.low_res_logits[i * n..(i + 1) * n]
    }
}

impl Prediction {
    pub fn mask(&self, i: usize) -> &[u8] {
        let n = self.size[0] * self.size[1];
        &self.masks[i * n..(i + 1) * n]
    }

    pub fn low_res(&self, i: usize) -> &[f32] {
        &self.low_res_logits[i * LOW_RES * LOW_RES..(i + 1) * LOW_RES * LOW_RES]
    }

    pub fn area(&self, i: usize) -> usize {
        self.mask(i).iter().map(|&v| v as usize).sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PredictError {
    NoImage,
    NoEncoder,
    /// Point `index` of the prompt lies outside the image.
    PointOutside { index: usize, x: f64, y: f64, width: usize, height: usize },
    BadLabel { index: usize, label: i32 },
    BadBox([f64; 4]),
    BadMaskInput(usize),
    EmbeddingMismatch { reason: String },
    /// The prompts of one batch differ in shape (number of points, box or not).
    UnevenBatch,
}

impl std::fmt::Display for PredictError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoImage => write!(f, "no image is set: call set_image or set_embedding first"),
            Self::NoEncoder => write!(f, "this model has no image encoder (decoder-only weights): give it an embedding"),
            Self::PointOutside { x, y, width, height, .. } => {
                write!(f, "point ({x}, {y}) is outside the {width}×{height} image")
            }
            Self::BadLabel { label, .. } => write!(f, "point label {label} is neither 1 (foreground) nor 0 (background)"),
            Self::BadBox(b) => write!(f, "box {b:?} is not x0 ≤ x1, y0 ≤ y1 inside the image"),
            Self::BadMaskInput(n) => write!(f, "mask input has {n} values, expected 256×256 = 65536"),
            Self::EmbeddingMismatch { reason } => write!(f, "embedding does not fit this model: {reason}"),
            Self::UnevenBatch => write!(f, "the prompts of a batch must have the same number of points and all or none a box"),
        }
    }
}

impl std::error::Error for PredictError {}

impl PredictError {
    /// The prompt field at fault, spelt as in a serialised [`Prompt`] (`points[1]`, `box`,
    /// `mask_input`), so that an API can name it.
    pub fn field(&self) -> Option<String> {
        match self {
            Self::PointOutside { index, .. } => Some(format!("points[{index}]")),
            Self::BadLabel { index, .. } => Some(format!("points[{index}].label")),
            Self::BadBox(_) => Some("box".into()),
            Self::BadMaskInput(_) => Some("mask_input".into()),
            Self::NoImage | Self::NoEncoder | Self::EmbeddingMismatch { .. } | Self::UnevenBatch => None,
        }
    }
}

/// An embedding cache of one image plus the decoder.
pub struct Predictor {
    encoder: Option<ImageEncoder>,
    decoder: SamDecoder,
    config: SamConfig,
    variant: Option<Variant>,
    encoder_digest: String,
    device: Device,
    /// The positional encoding of the embedding grid depends only on the weights: computed once.
    dense_pe: Tensor<4>,
    /// The mask decoder as fused CPU code, on the CPU device (see `segany_model::cpu_decoder`);
    /// other devices run the burn modules.
    cpu: Option<CpuDecoder>,
    /// `(index, count)`: which band of the embedding's grid rows this predictor's CPU decoder
    /// works on ([`Predictor::set_shard`]); `(0, 1)` is all of them.
    shard: (usize, usize),
    embedding: Option<ImageEmbedding>,
}

impl Predictor {
    pub fn new(model: SamModel, device: Device) -> Self {
        let SamModel { encoder, decoder, config, variant, encoder_digest } = model;
        let dense_pe = decoder.prompt_encoder.dense_pe();
        let cpu = (device == Device::flex()).then(|| CpuDecoder::new(&decoder, &dense_pe));
        Self { encoder, decoder, config, variant, encoder_digest, device, dense_pe, cpu, shard: (0, 1), embedding: None }
    }

    /// Makes this predictor shard `index` of `count` of a sharded decoder (see
    /// [`Predictor::decode_shard`]; the page runs one per worker): its per-image work covers its
    /// band of grid rows only. `(0, 1)` undoes it. Only on the CPU device, for 1 ≤ `count` ≤ the
    /// grid's rows.
    pub fn set_shard(&mut self, index: usize, count: usize) -> Result<(), String> {
        let rows = self.config.embedding_size();
        if self.cpu.is_none() {
            return Err("only the CPU decoder can be sharded".into());
        }
        if count == 0 || index >= count || count > rows {
            return Err(format!("no shard {index} of {count} over {rows} grid rows"));
        }
        if self.shard == (index, count) {
            return Ok(());
        }
        self.shard = (index, count);
        if let Some(e) = self.embedding.take() {
            let fresh = ImageEmbedding::new(e.tensor, e.meta);
            self.prepare(&fresh);
            self.embedding = Some(fresh);
        }
        Ok(())
    }

    /// `(index, count)` of this predictor's shard.
    pub fn shard(&self) -> (usize, usize) {
        self.shard
    }

    pub fn config(&self) -> &SamConfig {
        &self.config
    }

    pub fn variant(&self) -> Option<Variant> {
        self.variant
    }

    pub fn encoder_digest(&self) -> &str {
        &self.encoder_digest
    }

    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    pub fn embedding(&self) -> Option<&ImageEmbedding> {
        self.embedding.as_ref()
    }

    /// Resizes, normalises and pads an image to the encoder's input.
    ///
    /// # Shapes
    /// - → `[1, 3, S, S]` with S = `image_size` (1024)
    pub fn preprocess(&self, image: &RgbImage) -> (Tensor<4>, [usize; 2]) {
        let s = self.config.image_size;
        let [h, w] = preprocess_shape([image.height, image.width], s);
        let resized = resize_rgb_bilinear(&image.data, [image.height, image.width], [h, w]);
        let mut input = vec![0f32; 3 * s * s];
        for c in 0..3 {
            let plane = &mut input[c * s * s..(c + 1) * s * s];
            for y in 0..h {
                for x in 0..w {
                    plane[y * s + x] = (resized[(y * w + x) * 3 + c] as f32 - PIXEL_MEAN[c]) / PIXEL_STD[c];
                }
            }
        }
        (Tensor::from_data(TensorData::new(input, [1, 3, s, s]), &self.device), [h, w])
    }

    /// Computes the image embedding (the heavy step) without keeping it: for callers that hold
    /// many images' embeddings themselves (the server's cache).
    pub fn embed(&self, image: &RgbImage) -> Result<ImageEmbedding, PredictError> {
        let encoder = self.encoder.as_ref().ok_or(PredictError::NoEncoder)?;
        let (input, input_size) = self.preprocess(image);
        let tensor = encoder.forward(input);
        Ok(ImageEmbedding::new(
            tensor,
            EmbeddingMeta {
                variant: self.variant.map(|v| v.name().to_string()),
                encoder_digest: self.encoder_digest.clone(),
                input_size,
                original_size: [image.height, image.width],
            },
        ))
    }

    /// Computes the image embedding and keeps it for the following predictions.
    pub fn set_image(&mut self, image: &RgbImage) -> Result<&ImageEmbedding, PredictError> {
        let embedding = self.embed(image)?;
        self.prepare(&embedding);
        Ok(self.embedding.insert(embedding))
    }

    /// Uses an embedding computed elsewhere (the server, another process, WebGPU). It must come from
    /// the same encoder weights.
    pub fn set_embedding(&mut self, values: Vec<f32>, meta: EmbeddingMeta) -> Result<(), PredictError> {
        let embedding = self.embedding_from(values, meta)?;
        self.prepare(&embedding);
        self.embedding = Some(embedding);
        Ok(())
    }

    /// Does the decoder's per-image work for `emb` now rather than on its first prediction (the
    /// current image's is done when it is set, before the first click). `None` off the CPU.
    /// A sharded predictor's context covers its band only.
    pub fn prepare<'a>(&self, emb: &'a ImageEmbedding) -> Option<&'a ImageContext> {
        let cpu = self.cpu.as_ref()?;
        let (index, count) = self.shard;
        Some(emb.prepared.get_or_init(|| cpu.prepare_rows(&emb.to_vec(), cpu.band(index, count))))
    }

    /// An embedding from its values `[1, C, 64, 64]` row-major, checked to fit this model (see
    /// [`Predictor::set_embedding`]), without keeping it.
    pub fn embedding_from(&self, values: Vec<f32>, meta: EmbeddingMeta) -> Result<ImageEmbedding, PredictError> {
        let c = self.config.prompt_embed_dim;
        let e = self.config.embedding_size();
        self.check_embedding(&meta, values.len())?;
        let tensor = Tensor::from_data(TensorData::new(values, [1, c, e, e]), &self.device);
        Ok(ImageEmbedding::new(tensor, meta))
    }

    /// An embedding fits when it comes from this model's encoder weights, has the embedding's
    /// number of values (`len`) and a consistent geometry.
    pub fn check_embedding(&self, meta: &EmbeddingMeta, len: usize) -> Result<(), PredictError> {
        let c = self.config.prompt_embed_dim;
        let e = self.config.embedding_size();
        if meta.encoder_digest != self.encoder_digest {
            return Err(PredictError::EmbeddingMismatch {
                reason: format!(
                    "it was made by encoder weights {} but this model's are {}",
                    short(&meta.encoder_digest),
                    short(&self.encoder_digest)
                ),
            });
        }
        if len != c * e * e {
            return Err(PredictError::EmbeddingMismatch { reason: format!("{len} values, expected 1×{c}×{e}×{e}") });
        }
        let [oh, ow] = meta.original_size;
        if oh == 0 || ow == 0 || meta.input_size != preprocess_shape(meta.original_size, self.config.image_size) {
            return Err(PredictError::EmbeddingMismatch {
                reason: format!("input size {:?} does not follow from original size {:?}", meta.input_size, meta.original_size),
            });
        }
        Ok(())
    }

    /// Checks a prompt against the current image.
    fn validate(&self, prompt: &Prompt, [h, w]: [usize; 2]) -> Result<(), PredictError> {
        let inside = |x: f64, y: f64| x.is_finite() && y.is_finite() && (0.0..=w as f64).contains(&x) && (0.0..=h as f64).contains(&y);
        for (index, p) in prompt.points.iter().enumerate() {
            if !inside(p.x, p.y) {
                return Err(PredictError::PointOutside { index, x: p.x, y: p.y, width: w, height: h });
            }
            if p.label != 0 && p.label != 1 {
                return Err(PredictError::BadLabel { index, label: p.label });
            }
        }
        if let Some(b) = prompt.bbox
            && !(inside(b[0], b[1]) && inside(b[2], b[3]) && b[0] <= b[2] && b[1] <= b[3])
        {
            return Err(PredictError::BadBox(b));
        }
        if let Some(m) = &prompt.mask_input
            && m.len() != LOW_RES * LOW_RES
        {
            return Err(PredictError::BadMaskInput(m.len()));
        }
        Ok(())
    }

    /// A prompt in original-image pixels as the model's inputs: points and box moved to the
    /// resized frame (in f64, as the reference), then batched tensors of one prompt.
    pub fn model_prompt(
        &self,
        prompt: &Prompt,
        original_size: [usize; 2],
    ) -> (Option<PointPrompt>, Option<Tensor<2>>, Option<Tensor<4>>) {
        let (points, boxes) = self.sparse_prompt(prompt, original_size);
        let masks = prompt
            .mask_input
            .as_ref()
            .map(|m| Tensor::from_data(TensorData::new(m.clone(), [1, 1, LOW_RES, LOW_RES]), &self.device));
        (points, boxes, masks)
    }

    /// The points and box of [`Predictor::model_prompt`], without the mask.
    fn sparse_prompt(&self, prompt: &Prompt, original_size: [usize; 2]) -> (Option<PointPrompt>, Option<Tensor<2>>) {
        let input_size = preprocess_shape(original_size, self.config.image_size);
        let dev = &self.device;
        let points = (!prompt.points.is_empty()).then(|| {
            let n = prompt.points.len();
            let coords: Vec<[f64; 2]> = prompt.points.iter().map(|p| [p.x, p.y]).collect();
            let coords: Vec<f32> =
                transform_coords(&coords, original_size, input_size).into_iter().flatten().map(|v| v as f32).collect();
            let labels: Vec<f32> = prompt.points.iter().map(|p| p.label as f32).collect();
            PointPrompt {
                coords: Tensor::from_data(TensorData::new(coords, [1, n, 2]), dev),
                labels: Tensor::from_data(TensorData::new(labels, [1, n]), dev),
            }
        });
        let boxes = prompt.bbox.map(|b| {
            let b: Vec<f32> = transform_box(b, original_size, input_size).iter().map(|&v| v as f32).collect();
            Tensor::from_data(TensorData::new(b, [1, 4]), dev)
        });
        (points, boxes)
    }

    /// Predicts masks for a prompt on the current image.
    pub fn predict(&self, prompt: &Prompt) -> Result<Prediction, PredictError> {
        self.predict_with(self.embedding.as_ref().ok_or(PredictError::NoImage)?, prompt)
    }

    /// Predicts masks for a prompt on the image of `emb`, which must come from this model's
    /// encoder weights: the computation behind [`Predictor::predict`], for callers that keep
    /// embeddings themselves.
    pub fn predict_with(&self, emb: &ImageEmbedding, prompt: &Prompt) -> Result<Prediction, PredictError> {
        self.check_embedding(&emb.meta, emb.dims().iter().product())?;
        self.validate(prompt, emb.meta.original_size)?;
        let (low_res_logits, iou_predictions) = self.decode(emb, prompt)?;
        Ok(self.postprocess(emb, low_res_logits, iou_predictions, &[]))
    }

    /// The prediction of a sharded decode on the current image: the low-resolution logits
    /// `[N, 256, 256]` joined from every shard's band ([`segany_model::join_bands`]) and the IoU
    /// predictions, upscaled to masks as [`Predictor::predict`] does. `made`: mask rows that
    /// shards made already ([`Predictor::shard_masks`]); only the other rows are upscaled here
    /// (one that does not fit this prediction is ignored, and its rows made again).
    pub fn prediction_from_shards(&self, low_res_logits: Vec<f32>, iou_predictions: Vec<f32>, made: &[ShardMasks]) -> Result<Prediction, PredictError> {
        let emb = self.embedding.as_ref().ok_or(PredictError::NoImage)?;
        assert_eq!(low_res_logits.len(), iou_predictions.len() * LOW_RES * LOW_RES, "one low-resolution plane per IoU prediction");
        Ok(self.postprocess(emb, low_res_logits, iou_predictions, made))
    }

    /// The low-resolution rows of this predictor's shard ([`Predictor::set_shard`]).
    fn shard_low_rows(&self) -> std::ops::Range<usize> {
        let (index, count) = self.shard;
        let grid = self.config.embedding_size();
        // Only the CPU decoder shards (`set_shard`); its bands of grid rows.
        let rows = self.cpu.as_ref().map_or(0..grid, |cpu| cpu.band(index, count));
        let per = LOW_RES / grid;
        per * rows.start..per * rows.end
    }

    /// The mask rows this shard can make alone from its band of the low-resolution logits
    /// (`[N, rows, 256]`, as [`Predictor::decode_shard`] returns it), on the current image: the
    /// output rows whose every bilinear tap lies in the band. The shards make theirs side by
    /// side; [`Predictor::prediction_from_shards`] then makes only the few rows between bands.
    pub fn shard_masks(&self, band: &[f32], n: usize) -> Result<ShardMasks, PredictError> {
        let emb = self.embedding.as_ref().ok_or(PredictError::NoImage)?;
        let low_rows = self.shard_low_rows();
        let plane = low_rows.len() * LOW_RES;
        assert_eq!(band.len(), n * plane, "a band of {n} planes of low-res rows {low_rows:?}");
        let upscaler = self.upscaler(&emb.meta);
        let rows = upscaler.rows_within(low_rows.clone());
        let ow = emb.meta.original_size[1];
        let mut masks = vec![0u8; n * rows.len() * ow];
        if !rows.is_empty() {
            for (b, out) in band.chunks_exact(plane).zip(masks.chunks_exact_mut(rows.len() * ow)) {
                upscaler.mask_rows_into(b, low_rows.clone(), rows.clone(), out);
            }
        }
        Ok(ShardMasks { rows, masks })
    }

    /// This shard's part of a prediction on the current image: its band of the low-resolution
    /// logits (`[N, rows, 256]`) and the IoU predictions. Every shard (see
    /// [`Predictor::set_shard`]) decodes the same prompt with exchanges that connect them.
    /// `Ok(None)`: an exchange abandoned the decode ([`Exchange::exchange`]).
    pub async fn decode_shard(&self, prompt: &Prompt, exchange: &mut impl Exchange) -> Result<Option<(Vec<f32>, Vec<f32>)>, PredictError> {
        let emb = self.embedding.as_ref().ok_or(PredictError::NoImage)?;
        self.check_embedding(&emb.meta, emb.dims().iter().product())?;
        self.validate(prompt, emb.meta.original_size)?;
        let (Some(cpu), Some(ctx)) = (&self.cpu, self.prepare(emb)) else {
            // Off the CPU a predictor is its only shard (`set_shard` refuses otherwise).
            return self.decode(emb, prompt).map(Some);
        };
        let (sparse, dense, range) = self.cpu_prompt(cpu, prompt, emb.meta.original_size);
        let out = cpu.decode_shard(ctx, &sparse, dense, range, exchange).await;
        Ok(out.map(|out| (out.masks, out.iou_pred)))
    }

    /// The CPU decoder's inputs for a validated prompt: the sparse embeddings, the mask prompt
    /// and the mask tokens wanted.
    fn cpu_prompt<'a>(&self, cpu: &CpuDecoder, prompt: &'a Prompt, original_size: [usize; 2]) -> (Vec<f32>, DensePrompt<'a>, std::ops::Range<usize>) {
        let (points, boxes) = self.sparse_prompt(prompt, original_size);
        let sparse = self.decoder.prompt_encoder.sparse(points, boxes, 1);
        let sparse: Vec<f32> = sparse.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 sparse");
        // The mask prompt goes to the CPU decoder as the slice it is, not as a tensor.
        let dense = prompt.mask_input.as_deref().map_or(DensePrompt::NoMask, DensePrompt::Mask);
        let n = cpu.num_mask_tokens();
        (sparse, dense, if prompt.multimask { 1..n } else { 0..1 })
    }

    fn upscaler(&self, meta: &EmbeddingMeta) -> MaskUpscaler {
        MaskUpscaler::new([LOW_RES, LOW_RES], self.config.image_size, meta.input_size, meta.original_size)
    }

    /// Low-resolution logits → the prediction at the original size, but for the mask rows in
    /// `made` (see [`Predictor::prediction_from_shards`]).
    fn postprocess(&self, emb: &ImageEmbedding, low_res_logits: Vec<f32>, iou_predictions: Vec<f32>, made: &[ShardMasks]) -> Prediction {
        let n = iou_predictions.len();
        let [oh, ow] = emb.meta.original_size;
        let upscaler = self.upscaler(&emb.meta);
        let mut masks = vec![0u8; n * oh * ow];
        // Rows made already, copied in; the rows between them (all, when none) left to make.
        let mut made: Vec<&ShardMasks> = made.iter().filter(|m| !m.rows.is_empty() && m.rows.end <= oh && m.masks.len() == n * m.rows.len() * ow).collect();
        made.sort_by_key(|m| m.rows.start);
        let mut todo = Vec::new();
        let mut y = 0;
        for m in made {
            if m.rows.start < y {
                continue; // overlaps one taken already
            }
            todo.push(y..m.rows.start);
            for (plane, rows) in masks.chunks_exact_mut(oh * ow).zip(m.masks.chunks_exact(m.rows.len() * ow)) {
                plane[m.rows.start * ow..m.rows.end * ow].copy_from_slice(rows);
            }
            y = m.rows.end;
        }
        todo.push(y..oh);
        todo.retain(|r| !r.is_empty());
        let planes: Vec<&[f32]> = low_res_logits.chunks(LOW_RES * LOW_RES).collect();
        let outs: Vec<&mut [u8]> = masks.chunks_mut(oh * ow).collect();
        let make = |plane: &[f32], out: &mut [u8]| {
            for ys in &todo {
                upscaler.mask_rows_into(plane, 0..LOW_RES, ys.clone(), &mut out[ys.start * ow..ys.end * ow]);
            }
        };
        // Each mask is postprocessed independently: one thread each where threads exist.
        #[cfg(not(target_family = "wasm"))]
        std::thread::scope(|s| {
            for (plane, out) in planes.into_iter().zip(outs) {
                let make = &make;
                s.spawn(move || make(plane, out));
            }
        });
        #[cfg(target_family = "wasm")]
        planes.into_iter().zip(outs).for_each(|(plane, out)| make(plane, out));
        Prediction { masks, iou_predictions, low_res_logits, num_masks: n, size: emb.meta.original_size }
    }

    /// The decoder's low-resolution logits `[N, 256, 256]` and IoU predictions `[N]` for one
    /// validated prompt: the fused CPU decoder where the device is the CPU, else burn's modules.
    fn decode(&self, emb: &ImageEmbedding, prompt: &Prompt) -> Result<(Vec<f32>, Vec<f32>), PredictError> {
        let original_size = emb.meta.original_size;
        if let (Some(cpu), Some(ctx)) = (&self.cpu, self.prepare(emb)) {
            let (sparse, dense, range) = self.cpu_prompt(cpu, prompt, original_size);
            // A shard's own context covers its band: alone, it needs all of them.
            let whole;
            let ctx = if self.shard.1 == 1 {
                ctx
            } else {
                whole = cpu.prepare(&emb.to_vec());
                &whole
            };
            let out = cpu.decode(ctx, &sparse, dense, range);
            return Ok((out.masks, out.iou_pred));
        }
        let (points, boxes, masks) = self.model_prompt(prompt, original_size);
        let (sparse, dense) = self.decoder.prompt_encoder.forward(points, boxes, masks);
        let out = self.decoder.mask_decoder.forward(emb.tensor.clone(), self.dense_pe.clone(), sparse, dense);
        let (low_res, iou) = out.select(prompt.multimask);
        let low_res_logits: Vec<f32> = low_res.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 logits");
        let iou_predictions: Vec<f32> = iou.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 iou");
        Ok((low_res_logits, iou_predictions))
    }

    /// Decodes many prompts at once: one decoder run over a batch of `B` prompts on the image of
    /// `emb` (automatic mask generation's point grid, detector boxes). The prompts must agree in
    /// shape — the same number of points, all with or all without a box, and no mask input — as
    /// the decoder's batch dimension requires. Returns the low-resolution logits only; callers
    /// upscale what they keep (see [`upscale_logits`]).
    ///
    /// # Shapes
    /// - → low_res `[B, N, 256, 256]`, iou `[B, N]`, N = 3 for multimask, 1 otherwise
    pub fn predict_batch(&self, emb: &ImageEmbedding, prompts: &[Prompt], multimask: bool) -> Result<BatchPrediction, PredictError> {
        self.check_embedding(&emb.meta, emb.dims().iter().product())?;
        let original_size = emb.meta.original_size;
        let Some(first) = prompts.first() else {
            return Ok(BatchPrediction { low_res_logits: Vec::new(), iou_predictions: Vec::new(), batch: 0, num_masks: 0 });
        };
        for p in prompts {
            self.validate(p, original_size)?;
            if p.points.len() != first.points.len() || p.bbox.is_some() != first.bbox.is_some() {
                return Err(PredictError::UnevenBatch);
            }
            if p.mask_input.is_some() {
                return Err(PredictError::BadMaskInput(0));
            }
        }
        if self.cpu.is_some() {
            // The fused CPU decoder takes one prompt at a time; its per-image work is shared.
            let (mut low_res_logits, mut iou_predictions) = (Vec::new(), Vec::new());
            for p in prompts {
                let (l, i) = self.decode(emb, &Prompt { multimask, ..p.clone() })?;
                low_res_logits.extend(l);
                iou_predictions.extend(i);
            }
            let batch = prompts.len();
            return Ok(BatchPrediction { low_res_logits, num_masks: iou_predictions.len() / batch, iou_predictions, batch });
        }
        let (mut points, mut boxes) = (Vec::new(), Vec::new());
        for p in prompts {
            let (pt, bx, _) = self.model_prompt(p, original_size);
            points.extend(pt);
            boxes.extend(bx);
        }
        let points = (!points.is_empty()).then(|| PointPrompt {
            coords: Tensor::cat(points.iter().map(|p| p.coords.clone()).collect(), 0),
            labels: Tensor::cat(points.into_iter().map(|p| p.labels).collect(), 0),
        });
        let boxes = (!boxes.is_empty()).then(|| Tensor::cat(boxes, 0));
        let (sparse, dense) = self.decoder.prompt_encoder.forward(points, boxes, None);
        let out = self.decoder.mask_decoder.forward(emb.tensor.clone(), self.dense_pe.clone(), sparse, dense);
        let (low_res, iou) = out.select(multimask);
        let [batch, num_masks, _, _] = low_res.dims();
        Ok(BatchPrediction {
            low_res_logits: low_res.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 logits"),
            iou_predictions: iou.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 iou"),
            batch,
            num_masks,
        })
    }

    /// Full-resolution logits of mask `i` of a prediction (what thresholding at 0 turns into the mask).
    pub fn upscaled_logits(&self, prediction: &Prediction, i: usize) -> Vec<f32> {
        let meta = &self.embedding.as_ref().expect("a prediction implies an image").meta;
        upscale_logits(prediction.low_res(i), [LOW_RES, LOW_RES], self.config.image_size, meta.input_size, meta.original_size)
    }

    /// The decoder, for callers that batch prompts themselves (automatic mask generation).
    pub fn decoder(&self) -> &SamDecoder {
        &self.decoder
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}
