//! The prompt encoder: random-Fourier positional encoding of points and box corners, learned
//! embeddings per point kind, and convolutional downscaling of a mask prompt.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::tensor::{Device, Tensor};

use crate::common::{Activation, LayerNorm2d, zeros_param};

/// Positional encoding with a fixed random Gaussian matrix (`PositionEmbeddingRandom`).
#[derive(Module, Debug)]
pub struct PositionEmbeddingRandom {
    /// `[2, C/2]`; a buffer in the reference, a parameter here so it loads like one.
    pub positional_encoding_gaussian_matrix: Param<Tensor<2>>,
}

impl PositionEmbeddingRandom {
    fn new(num_pos_feats: usize, device: &Device) -> Self {
        Self { positional_encoding_gaussian_matrix: zeros_param([2, num_pos_feats], device) }
    }

    /// Encodes points normalised to `[0, 1]`.
    ///
    /// # Shapes
    /// - coords: `[..., 2]` (x, y) → `[..., C]` (sin then cos)
    fn encode<const D: usize>(&self, coords: Tensor<D>) -> Tensor<D> {
        let coords = coords.mul_scalar(2.0).sub_scalar(1.0);
        let m = self.positional_encoding_gaussian_matrix.val();
        let [_, f] = m.dims();
        let mut dims = coords.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let proj = coords.reshape([rows, 2]).matmul(m).mul_scalar(2.0 * std::f64::consts::PI);
        let out = Tensor::cat(vec![proj.clone().sin(), proj.cos()], 1);
        dims[D - 1] = 2 * f;
        out.reshape(dims)
    }

    /// The encoding of every cell centre of an `h × w` grid.
    ///
    /// # Shapes
    /// - → `[C, h, w]`
    pub fn grid(&self, [h, w]: [usize; 2], device: &Device) -> Tensor<3> {
        // Cell centres exactly as the reference computes them: cumsum of ones minus 0.5, over the size.
        let ys: Vec<f32> = (0..h).map(|i| ((i + 1) as f32 - 0.5) / h as f32).collect();
        let xs: Vec<f32> = (0..w).map(|j| ((j + 1) as f32 - 0.5) / w as f32).collect();
        let coords: Vec<f32> = ys.iter().flat_map(|&y| xs.iter().flat_map(move |&x| [x, y])).collect();
        let coords = Tensor::<3>::from_data(burn::tensor::TensorData::new(coords, [h, w, 2]), device);
        self.encode(coords).permute([2, 0, 1])
    }

    /// Encodes points given in pixels of an image of `size` (h, w).
    ///
    /// # Shapes
    /// - coords: `[B, N, 2]` → `[B, N, C]`
    pub fn encode_pixels(&self, coords: Tensor<3>, [h, w]: [usize; 2]) -> Tensor<3> {
        let [b, n, _] = coords.dims();
        let x = coords.clone().slice([0..b, 0..n, 0..1]).div_scalar(w as f64);
        let y = coords.slice([0..b, 0..n, 1..2]).div_scalar(h as f64);
        self.encode(Tensor::cat(vec![x, y], 2))
    }
}

/// Mask prompt downscaling: conv 2×2/2, LN2d, act, conv 2×2/2, LN2d, act, conv 1×1
/// (state-dict `mask_downscaling.{0,1,3,4,6}`).
#[derive(Module, Debug)]
pub struct MaskDownscaling {
    pub conv1: Conv2d,
    pub ln1: LayerNorm2d,
    pub conv2: Conv2d,
    pub ln2: LayerNorm2d,
    pub conv3: Conv2d,
}

impl MaskDownscaling {
    fn new(mask_in_chans: usize, embed_dim: usize, device: &Device) -> Self {
        let conv = |c_in: usize, c_out: usize, k: usize| {
            Conv2dConfig::new([c_in, c_out], [k, k])
                .with_stride([k, k])
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
        let quarter = mask_in_chans / 4;
        Self {
            conv1: conv(1, quarter, 2),
            ln1: LayerNorm2d::new(quarter, device),
            conv2: conv(quarter, mask_in_chans, 2),
            ln2: LayerNorm2d::new(mask_in_chans, device),
            conv3: conv(mask_in_chans, embed_dim, 1),
        }
    }

    /// # Shapes
    /// - x: `[B, 1, 4h, 4w]` → `[B, C, h, w]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let act = Activation::Gelu;
        let x = act.forward(self.ln1.forward(self.conv1.forward(x)));
        let x = act.forward(self.ln2.forward(self.conv2.forward(x)));
        self.conv3.forward(x)
    }
}

/// Embeds point, box and mask prompts for the mask decoder.
#[derive(Module, Debug)]
pub struct PromptEncoder {
    pub pe_layer: PositionEmbeddingRandom,
    /// Foreground/background point kinds and the two box corners: labels 1, 0, 2, 3 → 1, 0, 2, 3.
    pub point_embeddings: Vec<Embedding>,
    pub not_a_point_embed: Embedding,
    pub mask_downscaling: MaskDownscaling,
    pub no_mask_embed: Embedding,
    #[module(skip)]
    pub embed_dim: usize,
    #[module(skip)]
    pub image_embedding_size: [usize; 2],
    #[module(skip)]
    pub input_image_size: [usize; 2],
}

/// Point prompts in the model's input frame (pixels of the 1024² padded image).
#[derive(Debug, Clone)]
pub struct PointPrompt {
    /// `[B, N, 2]` (x, y).
    pub coords: Tensor<3>,
    /// `[B, N]`: 1 foreground, 0 background, -1 padding ("not a point").
    pub labels: Tensor<2>,
}

impl PromptEncoder {
    pub fn new(
        embed_dim: usize,
        image_embedding_size: [usize; 2],
        input_image_size: [usize; 2],
        mask_in_chans: usize,
        device: &Device,
    ) -> Self {
        let embedding = || EmbeddingConfig::new(1, embed_dim).with_initializer(Initializer::Zeros).init(device);
        Self {
            pe_layer: PositionEmbeddingRandom::new(embed_dim / 2, device),
            point_embeddings: (0..4).map(|_| embedding()).collect(),
            not_a_point_embed: embedding(),
            mask_downscaling: MaskDownscaling::new(mask_in_chans, embed_dim, device),
            no_mask_embed: embedding(),
            embed_dim,
            image_embedding_size,
            input_image_size,
        }
    }

    /// The positional encoding of the image embedding grid.
    ///
    /// # Shapes
    /// - → `[1, C, 64, 64]`
    pub fn dense_pe(&self) -> Tensor<4> {
        let device = self.no_mask_embed.weight.val().device();
        self.pe_layer.grid(self.image_embedding_size, &device).unsqueeze()
    }

    fn embed_row(e: &Embedding) -> Tensor<3> {
        e.weight.val().unsqueeze() // [1, 1, C]
    }

    /// # Shapes
    /// - points: `[B, N, 2]`, labels `[B, N]` → `[B, N (+1 when pad), C]`
    fn embed_points(&self, points: PointPrompt, pad: bool) -> Tensor<3> {
        let PointPrompt { coords, labels } = points;
        let [b, _, _] = coords.dims();
        let device = coords.device();
        let coords = coords.add_scalar(0.5); // to the pixel centre
        let (coords, labels) = if pad {
            (
                Tensor::cat(vec![coords, Tensor::zeros([b, 1, 2], &device)], 1),
                Tensor::cat(vec![labels, Tensor::full([b, 1], -1.0, &device)], 1),
            )
        } else {
            (coords, labels)
        };
        let pe = self.pe_layer.encode_pixels(coords, self.input_image_size);
        let kind = |v: f64| labels.clone().equal_elem(v).float().unsqueeze_dim::<3>(2); // [B, N, 1]
        let is_pad = kind(-1.0);
        let pe = pe * is_pad.clone().neg().add_scalar(1.0);
        pe + is_pad * Self::embed_row(&self.not_a_point_embed)
            + kind(0.0) * Self::embed_row(&self.point_embeddings[0])
            + kind(1.0) * Self::embed_row(&self.point_embeddings[1])
    }

    /// # Shapes
    /// - boxes: `[B, 4]` (x0, y0, x1, y1) → `[B, 2, C]`
    fn embed_boxes(&self, boxes: Tensor<2>) -> Tensor<3> {
        let [b, _] = boxes.dims();
        let corners = boxes.add_scalar(0.5).reshape([b, 2, 2]);
        let pe = self.pe_layer.encode_pixels(corners, self.input_image_size);
        let first = pe.clone().slice([0..b, 0..1]) + Self::embed_row(&self.point_embeddings[2]);
        let second = pe.slice([0..b, 1..2]) + Self::embed_row(&self.point_embeddings[3]);
        Tensor::cat(vec![first, second], 1)
    }

    /// The sparse half of [`PromptEncoder::forward`]: point and box embeddings of a batch of `b`.
    ///
    /// # Shapes
    /// - → `[B, N', C]`
    pub fn sparse(&self, points: Option<PointPrompt>, boxes: Option<Tensor<2>>, b: usize) -> Tensor<3> {
        let mut sparse = Vec::new();
        if let Some(points) = points {
            sparse.push(self.embed_points(points, boxes.is_none()));
        }
        if let Some(boxes) = boxes {
            sparse.push(self.embed_boxes(boxes));
        }
        if sparse.is_empty() {
            Tensor::zeros([b, 0, self.embed_dim], &self.no_mask_embed.weight.val().device())
        } else {
            Tensor::cat(sparse, 1)
        }
    }

    /// Embeds the prompts. Points are padded with one "not a point" when no box is given.
    ///
    /// # Shapes
    /// - points: `[B, N, 2]` + `[B, N]`; boxes: `[B, 4]`; masks: `[B, 1, 256, 256]`
    /// - → sparse `[B, N', C]`, dense `[B, C, 64, 64]`
    pub fn forward(
        &self,
        points: Option<PointPrompt>,
        boxes: Option<Tensor<2>>,
        masks: Option<Tensor<4>>,
    ) -> (Tensor<3>, Tensor<4>) {
        let b = points
            .as_ref()
            .map(|p| p.coords.dims()[0])
            .or_else(|| boxes.as_ref().map(|bx| bx.dims()[0]))
            .or_else(|| masks.as_ref().map(|m| m.dims()[0]))
            .unwrap_or(1);
        let sparse = self.sparse(points, boxes, b);
        let [h, w] = self.image_embedding_size;
        let dense = match masks {
            Some(masks) => self.mask_downscaling.forward(masks),
            None => self
                .no_mask_embed
                .weight
                .val()
                .reshape([1, self.embed_dim, 1, 1])
                .expand([b, self.embed_dim, h, w]),
        };
        (sparse, dense)
    }
}
