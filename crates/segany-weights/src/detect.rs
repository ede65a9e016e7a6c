//! Variant detection from a checkpoint's keys and shapes.

use segany_model::{EncoderConfig, SamConfig, Variant};

use crate::{TensorMap, WeightsError};

pub struct Detected {
    pub config: SamConfig,
    pub variant: Option<Variant>,
}

fn shape<'a>(tensors: &'a TensorMap, key: &str) -> Result<&'a [usize], WeightsError> {
    tensors
        .get(key)
        .map(|t| &t.shape[..])
        .ok_or_else(|| WeightsError::MissingKey { key: key.to_string(), unexpected: None })
}

/// Finds the released variant a checkpoint is, from the shapes of its encoder.
pub fn detect_config(tensors: &TensorMap) -> Result<Detected, WeightsError> {
    const PATCH: &str = "image_encoder.patch_embed.proj.weight";
    const STEM: &str = "image_encoder.patch_embed.seq.0.c.weight";
    if tensors.contains_key(STEM) {
        return detect_tiny_vit(tensors);
    }
    let Some(patch) = tensors.get(PATCH) else {
        let sample: Vec<&str> = tensors.keys().take(3).map(String::as_str).collect();
        return Err(WeightsError::NotSam {
            reason: if tensors.is_empty() {
                "it holds no tensors".into()
            } else {
                format!("it has no '{PATCH}' (its keys start with {sample:?})")
            },
        });
    };
    let embed_dim = patch.shape[0];
    let depth = (0..)
        .take_while(|i| tensors.contains_key(&format!("image_encoder.blocks.{i}.norm1.weight")))
        .count();
    let found = Variant::ALL.into_iter().find(|v| match v.config().encoder {
        EncoderConfig::Vit(vit) => vit.embed_dim == embed_dim && vit.depth == depth,
        EncoderConfig::TinyVit(_) => false,
    });
    let Some(variant) = found else {
        return Err(WeightsError::UnknownVariant {
            reason: format!("ViT encoder of width {embed_dim} and depth {depth} is none of vit_b, vit_l, vit_h"),
        });
    };
    check_decoder(tensors, variant)
}

/// MobileSAM: a TinyViT stem. Its stage widths and depths must be vit_t's.
fn detect_tiny_vit(tensors: &TensorMap) -> Result<Detected, WeightsError> {
    let width = |i: usize| -> Option<usize> {
        let key = if i == 0 {
            "image_encoder.layers.0.blocks.0.conv1.c.weight".to_string()
        } else {
            format!("image_encoder.layers.{i}.blocks.0.attn.norm.weight")
        };
        tensors.get(&key).map(|t| if i == 0 { t.shape[1] } else { t.shape[0] })
    };
    let dims: Vec<usize> = (0..).map_while(width).collect();
    let depths: Vec<usize> = (0..dims.len())
        .map(|i| (0..).take_while(|b| tensors.keys().any(|k| k.starts_with(&format!("image_encoder.layers.{i}.blocks.{b}.")))).count())
        .collect();
    let EncoderConfig::TinyVit(vit_t) = Variant::VitT.config().encoder else { unreachable!() };
    if dims != vit_t.embed_dims || depths != vit_t.depths {
        return Err(WeightsError::UnknownVariant {
            reason: format!("TinyViT encoder of widths {dims:?} and depths {depths:?} is not vit_t"),
        });
    }
    check_decoder(tensors, Variant::VitT)
}

fn check_decoder(tensors: &TensorMap, variant: Variant) -> Result<Detected, WeightsError> {
    // The decoder is the same for every release; check its width so a mismatch is named early.
    let config = variant.config();
    let no_mask = shape(tensors, "prompt_encoder.no_mask_embed.weight")?;
    if no_mask != [1, config.prompt_embed_dim] {
        return Err(WeightsError::ShapeMismatch {
            key: "prompt_encoder.no_mask_embed.weight".into(),
            expected: vec![1, config.prompt_embed_dim],
            found: no_mask.to_vec(),
        });
    }
    Ok(Detected { config, variant: Some(variant) })
}
