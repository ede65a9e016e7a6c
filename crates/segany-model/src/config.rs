//! The one table of model variants, and the configuration structs they expand to.

use serde::{Deserialize, Serialize};

pub use crate::tiny_vit::TinyVitConfig;

/// The released SAM models. `vit_t` is MobileSAM (TinyViT encoder, SAM's decoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    VitB,
    VitL,
    VitH,
    VitT,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::VitB, Variant::VitL, Variant::VitH, Variant::VitT];

    pub fn name(self) -> &'static str {
        match self {
            Variant::VitB => "vit_b",
            Variant::VitL => "vit_l",
            Variant::VitH => "vit_h",
            Variant::VitT => "vit_t",
        }
    }

    /// The official checkpoint file of this variant.
    pub fn checkpoint_file(self) -> &'static str {
        match self {
            Variant::VitB => "sam_vit_b_01ec64.pth",
            Variant::VitL => "sam_vit_l_0b3195.pth",
            Variant::VitH => "sam_vit_h_4b8939.pth",
            Variant::VitT => "mobile_sam.pt",
        }
    }

    /// The full configuration. The variants differ only in the encoder; numbers from the paper's release.
    pub fn config(self) -> SamConfig {
        //                          embed_dim, depth, heads, global attention blocks
        let (embed_dim, depth, num_heads, global): (usize, usize, usize, [usize; 4]) = match self {
            Variant::VitB => (768, 12, 12, [2, 5, 8, 11]),
            Variant::VitL => (1024, 24, 16, [5, 11, 17, 23]),
            Variant::VitH => (1280, 32, 16, [7, 15, 23, 31]),
            // MobileSAM: TinyViT-5M widths [64, 128, 160, 320], depths [2, 2, 6, 2] (TinyVitConfig::default).
            Variant::VitT => {
                return SamConfig { encoder: EncoderConfig::TinyVit(TinyVitConfig::default()), ..SamConfig::default() };
            }
        };
        SamConfig {
            encoder: EncoderConfig::Vit(VitConfig {
                embed_dim,
                depth,
                num_heads,
                global_attn_indexes: global.to_vec(),
                ..VitConfig::default()
            }),
            ..SamConfig::default()
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| format!("unknown model '{s}' (expected one of vit_b, vit_l, vit_h, vit_t)"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub img_size: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: usize,
    pub out_chans: usize,
    pub window_size: usize,
    pub global_attn_indexes: Vec<usize>,
}

impl Default for VitConfig {
    fn default() -> Self {
        Self {
            img_size: 1024,
            patch_size: 16,
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            mlp_ratio: 4,
            out_chans: 256,
            window_size: 14,
            global_attn_indexes: vec![2, 5, 8, 11],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EncoderConfig {
    Vit(VitConfig),
    TinyVit(TinyVitConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    pub depth: usize,
    pub mlp_dim: usize,
    pub num_heads: usize,
    pub iou_head_depth: usize,
    pub iou_head_hidden_dim: usize,
    pub num_multimask_outputs: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self { depth: 2, mlp_dim: 2048, num_heads: 8, iou_head_depth: 3, iou_head_hidden_dim: 256, num_multimask_outputs: 3 }
    }
}

/// Everything needed to build a model. Test fixtures use small ones; users get [`Variant::config`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamConfig {
    pub encoder: EncoderConfig,
    /// Width of prompt tokens and of the image embedding (the encoder's `out_chans`).
    pub prompt_embed_dim: usize,
    pub image_size: usize,
    pub mask_in_chans: usize,
    pub decoder: DecoderConfig,
}

impl Default for SamConfig {
    fn default() -> Self {
        Self {
            encoder: EncoderConfig::Vit(VitConfig::default()),
            prompt_embed_dim: 256,
            image_size: 1024,
            mask_in_chans: 16,
            decoder: DecoderConfig::default(),
        }
    }
}

impl SamConfig {
    /// Side of the square image embedding grid (64 for every released model).
    pub fn embedding_size(&self) -> usize {
        self.image_size / 16
    }
}
