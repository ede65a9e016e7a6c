//! The mask decoder: output tokens plus prompt tokens through the two-way transformer, then
//! upscaled image features dotted with per-mask hypernetwork outputs.

use burn::module::Module;
use burn::nn::conv::{ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::common::{Activation, LayerNorm2d, linear};
use crate::config::DecoderConfig;
use crate::transformer::TwoWayTransformer;

/// A plain MLP with ReLU between layers (`MLP` in the reference; keys `layers.N`).
#[derive(Module, Debug)]
pub struct Mlp {
    pub layers: Vec<Linear>,
}

impl Mlp {
    fn new(d_in: usize, hidden: usize, d_out: usize, depth: usize, device: &Device) -> Self {
        let mut dims = vec![d_in];
        dims.extend(std::iter::repeat_n(hidden, depth - 1));
        dims.push(d_out);
        Self { layers: dims.windows(2).map(|d| linear(d[0], d[1], true, device)).collect() }
    }

    pub fn forward<const D: usize>(&self, mut x: Tensor<D>) -> Tensor<D> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

/// Output upscaling: ConvT 2×2/2, LN2d, GELU, ConvT 2×2/2, GELU (state-dict `output_upscaling.{0,1,3}`).
#[derive(Module, Debug)]
pub struct OutputUpscaling {
    pub deconv1: ConvTranspose2d,
    pub ln: LayerNorm2d,
    pub deconv2: ConvTranspose2d,
}

impl OutputUpscaling {
    fn new(dim: usize, device: &Device) -> Self {
        let deconv = |c_in: usize, c_out: usize| {
            ConvTranspose2dConfig::new([c_in, c_out], [2, 2])
                .with_stride([2, 2])
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
        Self { deconv1: deconv(dim, dim / 4), ln: LayerNorm2d::new(dim / 4, device), deconv2: deconv(dim / 4, dim / 8) }
    }

    /// `[B, C, h, w]` → `[B, C/8, 4h, 4w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let act = Activation::Gelu;
        let x = act.forward(self.ln.forward(self.deconv1.forward(x)));
        act.forward(self.deconv2.forward(x))
    }
}

#[derive(Module, Debug)]
pub struct MaskDecoder {
    pub transformer: TwoWayTransformer,
    pub iou_token: Embedding,
    pub mask_tokens: Embedding,
    pub output_upscaling: OutputUpscaling,
    pub output_hypernetworks_mlps: Vec<Mlp>,
    pub iou_prediction_head: Mlp,
    #[module(skip)]
    pub num_mask_tokens: usize,
}

/// Everything the decoder produces for a prompt batch, before multimask selection.
#[derive(Debug, Clone)]
pub struct DecoderOutput {
    /// `[B, 4, 256, 256]` low-resolution logits: single-mask output first, then the three multimask outputs.
    pub masks: Tensor<4>,
    /// `[B, 4]`
    pub iou_pred: Tensor<2>,
}

impl DecoderOutput {
    /// The reference's selection: masks 1..4 for multimask output, mask 0 otherwise.
    pub fn select(self, multimask: bool) -> (Tensor<4>, Tensor<2>) {
        let [b, n, h, w] = self.masks.dims();
        let range = if multimask { 1..n } else { 0..1 };
        (self.masks.slice([0..b, range.clone(), 0..h, 0..w]), self.iou_pred.slice([0..b, range]))
    }
}

impl MaskDecoder {
    pub fn new(cfg: &DecoderConfig, dim: usize, device: &Device) -> Self {
        let num_mask_tokens = cfg.num_multimask_outputs + 1;
        let embedding = |n: usize| EmbeddingConfig::new(n, dim).with_initializer(Initializer::Zeros).init(device);
        Self {
            transformer: TwoWayTransformer::new(cfg.depth, dim, cfg.num_heads, cfg.mlp_dim, device),
            iou_token: embedding(1),
            mask_tokens: embedding(num_mask_tokens),
            output_upscaling: OutputUpscaling::new(dim, device),
            output_hypernetworks_mlps: (0..num_mask_tokens).map(|_| Mlp::new(dim, dim, dim / 8, 3, device)).collect(),
            iou_prediction_head: Mlp::new(dim, cfg.iou_head_hidden_dim, num_mask_tokens, cfg.iou_head_depth, device),
            num_mask_tokens,
        }
    }

    /// Predicts every mask token's mask and IoU.
    ///
    /// # Shapes
    /// - image_embeddings, image_pe: `[1, C, 64, 64]` (shared by the batch)
    /// - sparse: `[B, N, C]`, dense: `[B, C, 64, 64]`
    pub fn forward(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse: Tensor<3>,
        dense: Tensor<4>,
    ) -> DecoderOutput {
        let [b, n_sparse, c] = sparse.dims();
        let output_tokens = Tensor::cat(vec![self.iou_token.weight.val(), self.mask_tokens.weight.val()], 0);
        let n_out = output_tokens.dims()[0];
        let output_tokens = output_tokens.unsqueeze::<3>().expand([b, n_out, c]);
        let tokens = if n_sparse > 0 { Tensor::cat(vec![output_tokens, sparse], 1) } else { output_tokens };

        let [_, _, h, w] = image_embeddings.dims();
        let src = image_embeddings.expand([b, c, h, w]) + dense;
        let pos_src = image_pe.expand([b, c, h, w]);
        let (hs, src) = self.transformer.forward(src, pos_src, tokens);

        let t = self.num_mask_tokens;
        let iou_token_out = hs.clone().slice([0..b, 0..1]).reshape([b, c]);
        let src = src.swap_dims(1, 2).reshape([b, c, h, w]);
        let upscaled = self.output_upscaling.forward(src);
        let hyper_in = Tensor::cat(
            self.output_hypernetworks_mlps
                .iter()
                .enumerate()
                .map(|(i, mlp)| mlp.forward(hs.clone().slice([0..b, 1 + i..2 + i])))
                .collect(),
            1,
        ); // [B, t, C/8]
        let [_, cu, hu, wu] = upscaled.dims();
        let masks = hyper_in.matmul(upscaled.reshape([b, cu, hu * wu])).reshape([b, t, hu, wu]);
        let iou_pred = self.iou_prediction_head.forward(iou_token_out);
        DecoderOutput { masks, iou_pred }
    }
}
