//! The Segment Anything network in burn: image encoders, prompt encoder, two-way transformer and
//! mask decoder. Modules only — weights, geometry and prediction live in other crates.
//!
//! Field names follow the official state-dict keys so that loading needs only a short remap table
//! (see `segany-weights`).

mod common;
mod kernels;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[doc(hidden)]
pub mod wasm_gemm;
pub mod config;
pub mod cpu_decoder;
pub mod image_encoder_vit;
pub mod mask_decoder;
pub mod prompt_encoder;
pub mod tiny_vit;
pub mod transformer;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

pub use common::{LayerNorm2d, gelu};
pub use cpu_decoder::{Alone, AttentionPartial, CpuDecoder, CpuDecoderOutput, DensePrompt, Exchange, ImageContext, Projections, join_bands};
pub use config::{DecoderConfig, EncoderConfig, SamConfig, TinyVitConfig, Variant, VitConfig};
pub use image_encoder_vit::ImageEncoderViT;
pub use tiny_vit::TinyViT;
pub use mask_decoder::{DecoderOutput, MaskDecoder};
pub use prompt_encoder::{PointPrompt, PromptEncoder};

/// Per-channel normalisation of the RGB input, in 0–255 pixel units.
pub const PIXEL_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
pub const PIXEL_STD: [f32; 3] = [58.395, 57.12, 57.375];

/// The heavy part: image → embedding.
#[derive(Module, Debug)]
pub enum ImageEncoder {
    Vit(ImageEncoderViT),
    TinyVit(TinyViT),
}

impl ImageEncoder {
    pub fn new(cfg: &SamConfig, device: &Device) -> Self {
        match &cfg.encoder {
            EncoderConfig::Vit(vit) => ImageEncoder::Vit(ImageEncoderViT::new(vit, device)),
            EncoderConfig::TinyVit(tv) => ImageEncoder::TinyVit(TinyViT::new(tv, device)),
        }
    }

    /// # Shapes
    /// - x: `[B, 3, 1024, 1024]` normalised and padded → `[B, C, 64, 64]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            ImageEncoder::Vit(vit) => vit.forward(x),
            ImageEncoder::TinyVit(tv) => tv.forward(x),
        }
    }
}

/// The light part: prompts + embedding → masks. This is what the browser runs on every click.
#[derive(Module, Debug)]
pub struct SamDecoder {
    pub prompt_encoder: PromptEncoder,
    pub mask_decoder: MaskDecoder,
}

impl SamDecoder {
    pub fn new(cfg: &SamConfig, device: &Device) -> Self {
        let e = cfg.embedding_size();
        Self {
            prompt_encoder: PromptEncoder::new(
                cfg.prompt_embed_dim,
                [e, e],
                [cfg.image_size, cfg.image_size],
                cfg.mask_in_chans,
                device,
            ),
            mask_decoder: MaskDecoder::new(&cfg.decoder, cfg.prompt_embed_dim, device),
        }
    }

    /// Runs the prompt encoder and the mask decoder.
    ///
    /// # Shapes
    /// - embedding: `[1, C, 64, 64]`; prompts batched over B → masks `[B, 4, 256, 256]`, IoU `[B, 4]`
    pub fn forward(
        &self,
        embedding: Tensor<4>,
        points: Option<PointPrompt>,
        boxes: Option<Tensor<2>>,
        masks: Option<Tensor<4>>,
    ) -> DecoderOutput {
        let (sparse, dense) = self.prompt_encoder.forward(points, boxes, masks);
        self.mask_decoder.forward(embedding, self.prompt_encoder.dense_pe(), sparse, dense)
    }
}

/// The whole model, laid out as the official checkpoint (`image_encoder.*`, `prompt_encoder.*`,
/// `mask_decoder.*`).
#[derive(Module, Debug)]
pub struct Sam {
    pub image_encoder: ImageEncoder,
    pub prompt_encoder: PromptEncoder,
    pub mask_decoder: MaskDecoder,
}

impl Sam {
    pub fn new(cfg: &SamConfig, device: &Device) -> Self {
        let SamDecoder { prompt_encoder, mask_decoder } = SamDecoder::new(cfg, device);
        Self { image_encoder: ImageEncoder::new(cfg, device), prompt_encoder, mask_decoder }
    }

    /// Splits into the encoder and the decoder half.
    pub fn split(self) -> (ImageEncoder, SamDecoder) {
        (self.image_encoder, SamDecoder { prompt_encoder: self.prompt_encoder, mask_decoder: self.mask_decoder })
    }
}

/// A model ready to run, with what identifies its weights: what the weights crate loads and the
/// predictor runs.
pub struct SamModel {
    /// `None` for decoder-only weights (the browser's), which need an embedding from elsewhere.
    pub encoder: Option<ImageEncoder>,
    pub decoder: SamDecoder,
    pub config: SamConfig,
    /// The released variant this configuration is, if any.
    pub variant: Option<Variant>,
    /// SHA-256 of the image encoder's weights; an embedding is valid only with a decoder that
    /// carries the same digest.
    pub encoder_digest: String,
}
