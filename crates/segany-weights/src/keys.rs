//! The one key-remap table between the official state dict and our module paths.
//!
//! Our modules are named as the state-dict keys, except where the reference uses `nn.Sequential`
//! (numbered children, with gaps where an activation sits). burn's own renames (`LayerNorm`
//! weight/bias ↔ gamma/beta, Linear transposition) are done by burn-store's PyTorch adapter.

/// Official prefix → module-path prefix.
const SEQUENTIALS: &[(&str, &str)] = &[
    ("image_encoder.patch_embed.seq.0.", "image_encoder.patch_embed.conv1."), // TinyViT stem
    ("image_encoder.patch_embed.seq.2.", "image_encoder.patch_embed.conv2."),
    ("image_encoder.neck.0.", "image_encoder.neck.conv1."),
    ("image_encoder.neck.1.", "image_encoder.neck.ln1."),
    ("image_encoder.neck.2.", "image_encoder.neck.conv2."),
    ("image_encoder.neck.3.", "image_encoder.neck.ln2."),
    ("prompt_encoder.mask_downscaling.0.", "prompt_encoder.mask_downscaling.conv1."),
    ("prompt_encoder.mask_downscaling.1.", "prompt_encoder.mask_downscaling.ln1."),
    ("prompt_encoder.mask_downscaling.3.", "prompt_encoder.mask_downscaling.conv2."),
    ("prompt_encoder.mask_downscaling.4.", "prompt_encoder.mask_downscaling.ln2."),
    ("prompt_encoder.mask_downscaling.6.", "prompt_encoder.mask_downscaling.conv3."),
    ("mask_decoder.output_upscaling.0.", "mask_decoder.output_upscaling.deconv1."),
    ("mask_decoder.output_upscaling.1.", "mask_decoder.output_upscaling.ln."),
    ("mask_decoder.output_upscaling.3.", "mask_decoder.output_upscaling.deconv2."),
];

/// Keys in checkpoints that inference does not use and our modules do not have: batch norm's
/// training-step counters (TinyViT).
pub fn is_training_only(official: &str) -> bool {
    official.ends_with(".num_batches_tracked")
}

/// The module path for an official checkpoint key.
pub fn module_path(official: &str) -> String {
    for (from, to) in SEQUENTIALS {
        if let Some(rest) = official.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    official.to_string()
}

/// The official checkpoint key for a module path (for error messages): undoes the table, burn's
/// LayerNorm renames and enum variant segments.
pub fn official_key(path: &str) -> String {
    let segments: Vec<&str> = path
        .split('.')
        .enumerate()
        .filter(|(i, s)| !(*i > 0 && s.chars().next().is_some_and(|c| c.is_ascii_uppercase())))
        .map(|(_, s)| s)
        .collect();
    let mut key = segments.join(".");
    for (from, to) in SEQUENTIALS {
        if let Some(rest) = key.strip_prefix(to) {
            key = format!("{from}{rest}");
            break;
        }
    }
    if let Some(stem) = key.strip_suffix(".gamma") {
        key = format!("{stem}.weight");
    } else if let Some(stem) = key.strip_suffix(".beta") {
        key = format!("{stem}.bias");
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_round_trip() {
        for key in [
            "image_encoder.neck.0.weight",
            "prompt_encoder.mask_downscaling.6.bias",
            "mask_decoder.output_upscaling.1.weight",
            "image_encoder.blocks.3.attn.rel_pos_h",
        ] {
            assert_eq!(official_key(&module_path(key)), key);
        }
        assert_eq!(module_path("image_encoder.neck.2.weight"), "image_encoder.neck.conv2.weight");
    }

    #[test]
    fn burn_names_map_back_to_official_keys() {
        assert_eq!(official_key("image_encoder.Vit.blocks.0.norm1.gamma"), "image_encoder.blocks.0.norm1.weight");
        assert_eq!(official_key("mask_decoder.transformer.norm_final_attn.beta"), "mask_decoder.transformer.norm_final_attn.bias");
    }
}
