//! Checkpoint formats for segany.
//!
//! - the official PyTorch `.pth`/`.pt` state dicts, read directly (native only);
//! - safetensors with the official key names (native and wasm, from bytes);
//! - burn's own burnpack, written by `segany convert` (f32 or f16, whole model or decoder only),
//!   carrying the model configuration and the encoder digest in its metadata.
//!
//! Loading is strict: every checkpoint tensor must be used, every model parameter set, every shape
//! right; a [`WeightsError`] names the offending key as it is spelt in the official checkpoint.

mod detect;
mod error;
mod keys;

use std::collections::BTreeMap;

use burn::module::Module;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter};
use burn::tensor::{DType, Device};
use segany_model::{ImageEncoder, Sam, SamConfig, SamDecoder, SamModel, Variant};
use sha2::{Digest, Sha256};

pub use detect::detect_config;
pub use error::WeightsError;
pub use keys::{is_training_only, module_path, official_key};

/// Tensors as stored in a checkpoint, by official key.
pub type TensorMap = BTreeMap<String, PackTensor>;

/// The container a checkpoint was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pytorch,
    Safetensors,
    Burnpack,
}

impl Format {
    /// Guesses the format from the first bytes of a file.
    pub fn sniff(head: &[u8]) -> Option<Format> {
        match head {
            [b'P', b'K', ..] | [0x80, ..] => Some(Format::Pytorch), // zip archive or legacy pickle
            [b'N', b'R', b'U', b'B', ..] => Some(Format::Burnpack), // burnpack's magic, little-endian
            h if h.len() >= 9 && h[8] == b'{' => Some(Format::Safetensors), // u64 header length, then JSON
            _ => None,
        }
    }
}

/// What a burnpack file produced by `segany convert` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    /// Image encoder, prompt encoder and mask decoder.
    Full,
    /// Prompt encoder and mask decoder only (what the browser downloads).
    DecoderOnly,
}

/// A model loaded from a checkpoint (see [`SamModel`]).
pub type LoadedModel = SamModel;

/// Metadata keys of our burnpack files.
mod meta {
    pub const CONFIG: &str = "segany.config";
    pub const DIGEST: &str = "segany.encoder_digest";
    pub const CONTENTS: &str = "segany.contents";
}

/// Loads a checkpoint file of any supported format. The configuration is detected from the
/// tensors' keys and shapes (or read from burnpack metadata) unless `config` is given; a detected
/// variant must equal `expect` when that is given.
#[cfg(not(target_family = "wasm"))]
pub fn load_file(
    path: &std::path::Path,
    config: Option<&SamConfig>,
    expect: Option<Variant>,
    device: &Device,
) -> Result<LoadedModel, WeightsError> {
    use std::io::Read;
    let display = path.display().to_string();
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| WeightsError::Io { path: display.clone(), message: e.to_string() })?;
    match Format::sniff(&head[..n]) {
        Some(Format::Pytorch) => load_pytorch(path, config, expect, device),
        Some(_) => {
            let bytes = std::fs::read(path).map_err(|e| WeightsError::Io { path: display, message: e.to_string() })?;
            load_bytes(bytes, config, expect, device)
        }
        None => Err(WeightsError::Format {
            source: display,
            message: "not a PyTorch checkpoint, safetensors or burnpack file".into(),
        }),
    }
}

#[cfg(all(not(target_family = "wasm"), feature = "pytorch"))]
fn load_pytorch(
    path: &std::path::Path,
    config: Option<&SamConfig>,
    expect: Option<Variant>,
    device: &Device,
) -> Result<LoadedModel, WeightsError> {
    from_official_tensors(read_pytorch(path)?, config, expect, device)
}

/// Reads the tensors of a PyTorch checkpoint (a plain state dict, as the official files are).
#[cfg(all(not(target_family = "wasm"), feature = "pytorch"))]
pub fn read_pytorch(path: &std::path::Path) -> Result<TensorMap, WeightsError> {
    use burn::store::{ModuleStore, PytorchStore};
    let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
    Ok(store
        .get_all_tensors()
        .map_err(|e| WeightsError::Format { source: path.display().to_string(), message: e.to_string() })?
        .clone())
}

#[cfg(all(not(target_family = "wasm"), not(feature = "pytorch")))]
fn load_pytorch(
    path: &std::path::Path,
    _: Option<&SamConfig>,
    _: Option<Variant>,
    _: &Device,
) -> Result<LoadedModel, WeightsError> {
    Err(WeightsError::Format {
        source: path.display().to_string(),
        message: "this build reads no PyTorch checkpoints; convert it with `segany convert`".into(),
    })
}

/// Loads a safetensors (official key names) or burnpack checkpoint from memory. Works in wasm.
pub fn load_bytes(
    bytes: Vec<u8>,
    config: Option<&SamConfig>,
    expect: Option<Variant>,
    device: &Device,
) -> Result<LoadedModel, WeightsError> {
    match Format::sniff(&bytes) {
        Some(Format::Safetensors) => {
            use burn::store::{ModuleStore, SafetensorsStore};
            let mut store = SafetensorsStore::from_bytes(Some(bytes));
            let tensors = store
                .get_all_tensors()
                .map_err(|e| WeightsError::Format { source: "safetensors".into(), message: e.to_string() })?
                .clone();
            from_official_tensors(tensors, config, expect, device)
        }
        Some(Format::Burnpack) => load_burnpack(bytes, expect, device),
        Some(Format::Pytorch) => Err(WeightsError::Format {
            source: "bytes".into(),
            message: "PyTorch checkpoints are read from files only; convert to safetensors or burnpack".into(),
        }),
        None => Err(WeightsError::Format {
            source: "bytes".into(),
            message: "not a safetensors or burnpack checkpoint".into(),
        }),
    }
}

/// Builds the model from tensors named as in the official checkpoint.
pub fn from_official_tensors(
    tensors: TensorMap,
    config: Option<&SamConfig>,
    expect: Option<Variant>,
    device: &Device,
) -> Result<LoadedModel, WeightsError> {
    let (config, variant) = match config {
        Some(c) => (c.clone(), Variant::ALL.into_iter().find(|v| v.config() == *c)),
        None => {
            let detected = detect_config(&tensors)?;
            (detected.config, detected.variant)
        }
    };
    if let (Some(expected), found) = (expect, variant)
        && Some(expected) != found
    {
        return Err(WeightsError::VariantMismatch {
            requested: expected.name().into(),
            found: found.map_or("an unreleased configuration".into(), |v| v.name().into()),
        });
    }
    let renamed = tensors
        .into_values()
        .filter(|t| !is_training_only(&t.name))
        .map(|mut t| {
            t.name = module_path(&t.name);
            t
        })
        .collect();
    // The digest reads the weights back synchronously, which a GPU device cannot do in a browser:
    // load on the CPU, hash there, then move to the device.
    let host = Device::flex();
    let mut sam = Sam::new(&config, &host);
    apply_strict(&mut sam, renamed, Some(Box::new(PyTorchToBurnAdapter)), Paths::Official)?;
    let (encoder, decoder) = sam.split();
    let encoder_digest = encoder_digest(&encoder);
    let (encoder, decoder) =
        if *device == host { (encoder, decoder) } else { (encoder.to_device(device), decoder.to_device(device)) };
    Ok(LoadedModel { encoder: Some(encoder), decoder, config, variant, encoder_digest })
}

fn load_burnpack(bytes: Vec<u8>, expect: Option<Variant>, device: &Device) -> Result<LoadedModel, WeightsError> {
    use burn::store::burn_pack::Reader;
    let format_err = |message: String| WeightsError::Format { source: "burnpack".into(), message };
    let reader = Reader::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes)).map_err(|e| format_err(e.to_string()))?;
    let metadata = reader.metadata().clone();
    let get = |key: &str| {
        metadata
            .get(key)
            .cloned()
            .ok_or_else(|| format_err(format!("metadata '{key}' is missing: not written by `segany convert`")))
    };
    let config: SamConfig =
        serde_json::from_str(&get(meta::CONFIG)?).map_err(|e| format_err(format!("bad config metadata: {e}")))?;
    let encoder_digest = get(meta::DIGEST)?;
    let contents = match get(meta::CONTENTS)?.as_str() {
        "full" => Contents::Full,
        "decoder" => Contents::DecoderOnly,
        other => return Err(format_err(format!("unknown contents '{other}'"))),
    };
    let variant = Variant::ALL.into_iter().find(|v| v.config() == config);
    if let Some(expected) = expect
        && Some(expected) != variant
    {
        return Err(WeightsError::VariantMismatch {
            requested: expected.name().into(),
            found: variant.map_or("an unreleased configuration".into(), |v| v.name().into()),
        });
    }
    let tensors = reader.into_tensors().map_err(|e| format_err(e.to_string()))?;
    let to_f32: Option<Box<dyn ModuleAdapter>> = Some(Box::new(FloatCastAdapter::to(DType::F32)));
    let (encoder, decoder) = match contents {
        Contents::Full => {
            let mut sam = Sam::new(&config, device);
            apply_strict(&mut sam, tensors, to_f32, Paths::Burn)?;
            let (e, d) = sam.split();
            (Some(e), d)
        }
        Contents::DecoderOnly => {
            let mut decoder = SamDecoder::new(&config, device);
            apply_strict(&mut decoder, tensors, to_f32, Paths::Burn)?;
            (None, decoder)
        }
    };
    Ok(LoadedModel { encoder, decoder, config, variant, encoder_digest })
}

/// How tensor names spell module paths.
#[derive(PartialEq)]
enum Paths {
    /// As the reference's state dict: no enum variant segments (`image_encoder.blocks…`).
    Official,
    /// As burn writes them, enum variants included (`image_encoder.Vit.blocks…`).
    Burn,
}

/// Applies tensors to a module; anything left over, missing or mis-shaped is an error naming the key.
fn apply_strict<M: Module>(
    module: &mut M,
    tensors: Vec<PackTensor>,
    adapter: Option<Box<dyn ModuleAdapter>>,
    paths: Paths,
) -> Result<(), WeightsError> {
    let result = module.apply(tensors, None, adapter, paths == Paths::Official);
    if let Some(err) = result.errors.first() {
        use burn::store::ApplyError;
        return Err(match err {
            ApplyError::ShapeMismatch { path, expected, found } => WeightsError::ShapeMismatch {
                key: official_key(path),
                expected: expected.to_vec(),
                found: found.to_vec(),
            },
            other => WeightsError::Format { source: "checkpoint".into(), message: other.to_string() },
        });
    }
    if let Some((path, _)) = result.missing.first() {
        return Err(WeightsError::MissingKey {
            key: official_key(path),
            unexpected: result.unused.first().map(|u| official_key(u)),
        });
    }
    if let Some(path) = result.unused.first() {
        return Err(WeightsError::UnexpectedKey { key: official_key(path) });
    }
    Ok(())
}

/// SHA-256 over the image encoder's weights, in a fixed order: for each tensor (sorted by name)
/// its official key, its shape and its values as little-endian f32.
pub fn encoder_digest(encoder: &ImageEncoder) -> String {
    let mut tensors = encoder.collect(None, None, true);
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut hasher = Sha256::new();
    for t in tensors {
        hasher.update(official_key(&format!("image_encoder.{}", t.name)).as_bytes());
        for d in t.shape.iter() {
            hasher.update((*d as u64).to_le_bytes());
        }
        let bytes = if t.dtype == DType::F32 {
            t.to_bytes().expect("encoder tensor bytes").to_vec()
        } else {
            let data = burn::tensor::TensorData::from_bytes_vec(
                t.to_bytes().expect("encoder tensor bytes").to_vec(),
                t.shape.clone(),
                t.dtype,
            );
            data.convert::<f32>().into_bytes().to_vec()
        };
        hasher.update(&bytes);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a burnpack file: the whole model, or only the decoder half (prompt encoder + mask
/// decoder, for the browser), in f32 or f16.
#[cfg(not(target_family = "wasm"))]
pub fn save_burnpack(
    model: &LoadedModel,
    contents: Contents,
    half: bool,
    path: &std::path::Path,
) -> Result<(), WeightsError> {
    use burn::store::BurnpackStore;
    let mut store = BurnpackStore::from_file(path)
        .auto_extension(false)
        .overwrite(true)
        .metadata(meta::CONFIG, serde_json::to_string(&model.config).expect("config serialises"))
        .metadata(meta::DIGEST, model.encoder_digest.clone())
        .metadata(meta::CONTENTS, if contents == Contents::Full { "full" } else { "decoder" });
    if half {
        store = store.with_to_adapter(FloatCastAdapter::to(DType::F16));
    }
    let io = |e: burn::store::burn_pack::Error| WeightsError::Io { path: path.display().to_string(), message: e.to_string() };
    match contents {
        Contents::Full => {
            let encoder = model.encoder.as_ref().ok_or_else(|| WeightsError::Format {
                source: path.display().to_string(),
                message: "a decoder-only model cannot be saved as a full model".into(),
            })?;
            let sam = Sam {
                image_encoder: encoder.clone(),
                prompt_encoder: model.decoder.prompt_encoder.clone(),
                mask_decoder: model.decoder.mask_decoder.clone(),
            };
            sam.save_into(&mut store).map_err(io)
        }
        Contents::DecoderOnly => model.decoder.save_into(&mut store).map_err(io),
    }
}
