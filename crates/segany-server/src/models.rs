//! The models a server holds: loaded once at start, each with its id, its encoder digest and its
//! decoder weights for the browser, serialised once. The whole model for the browser's WebGPU
//! encoder is serialised on its first request only (it is as large as the checkpoint).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use segany_model::{SamConfig, Variant};
use segany_predict::Predictor;
use segany_predict::wire::Dtype;
use segany_weights::{Contents, load_file, save_burnpack};
use sha2::{Digest, Sha256};

/// A checkpoint to serve, and the configuration to build it with when it is not a released variant.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub checkpoint: PathBuf,
    pub config: Option<SamConfig>,
}

/// A burnpack served to the page: the decoder (prompt encoder and mask decoder), or the whole model.
pub struct WeightsFile {
    /// Shared, not copied, by each response.
    pub bytes: axum::body::Bytes,
    /// SHA-256 (hex) of `bytes`: the `ETag`.
    pub sha256: String,
}

pub struct Model {
    /// The variant name for a released variant, else the checkpoint's file stem.
    pub id: String,
    pub checkpoint: PathBuf,
    /// The configuration it was built with when it is not a released variant.
    pub config: Option<SamConfig>,
    pub variant: Option<Variant>,
    pub encoder_digest: String,
    /// `[1, C, 64, 64]`
    pub embedding_shape: [usize; 4],
    pub predictor: Predictor,
    pub decoder_f16: WeightsFile,
    pub decoder_f32: WeightsFile,
    /// The whole model as a burnpack (f16, f32), made when first asked for.
    full: [tokio::sync::OnceCell<Arc<WeightsFile>>; 2],
}

impl Model {
    pub fn decoder(&self, dtype: Dtype) -> &WeightsFile {
        match dtype {
            Dtype::F16 => &self.decoder_f16,
            Dtype::F32 => &self.decoder_f32,
        }
    }

    /// The whole model (image encoder included) as a burnpack, for clients that compute
    /// embeddings themselves (the page's WebGPU encoder). Serialised on the first request by
    /// reading the checkpoint again, so that a server nobody asks this of holds no second copy.
    pub async fn full_weights(&self, dtype: Dtype) -> Result<Arc<WeightsFile>> {
        let cell = &self.full[usize::from(dtype == Dtype::F32)];
        cell.get_or_try_init(|| async {
            let (path, config, digest) = (self.checkpoint.clone(), self.config.clone(), self.encoder_digest.clone());
            tokio::task::spawn_blocking(move || {
                let device = Device::flex();
                let loaded = load_file(&path, config.as_ref(), None, &device)
                    .with_context(|| format!("cannot load checkpoint {}", path.display()))?;
                if loaded.encoder_digest != digest {
                    bail!("checkpoint {} changed on disk since the server started: restart it", path.display());
                }
                burnpack(&loaded, Contents::Full, dtype == Dtype::F16).map(Arc::new)
            })
            .await
            .context("serialising the model panicked")?
        })
        .await
        .cloned()
    }
}

/// Keeps ids usable in URLs, query strings and cache paths.
fn sanitise(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

/// Loads every checkpoint; two with the same id are an error naming both.
pub fn load_all(specs: &[ModelSpec], device: &Device) -> Result<Vec<Model>> {
    let mut models: Vec<Model> = Vec::new();
    for spec in specs {
        let model = load(spec, device)?;
        if let Some(other) = models.iter().find(|m| m.id == model.id) {
            bail!(
                "{} and {} would both be served as model '{}': give one of them another file name",
                other.checkpoint.display(),
                spec.checkpoint.display(),
                model.id
            );
        }
        models.push(model);
    }
    Ok(models)
}

fn load(spec: &ModelSpec, device: &Device) -> Result<Model> {
    let path = &spec.checkpoint;
    if !path.is_file() {
        bail!("checkpoint {} does not exist", path.display());
    }
    let loaded = load_file(path, spec.config.as_ref(), None, device)
        .with_context(|| format!("cannot load checkpoint {}", path.display()))?;
    let id = match loaded.variant {
        Some(v) => v.name().to_string(),
        None => sanitise(&path.file_stem().unwrap_or_default().to_string_lossy()),
    };
    let decoder_f16 = burnpack(&loaded, Contents::DecoderOnly, true)?;
    let decoder_f32 = burnpack(&loaded, Contents::DecoderOnly, false)?;
    let e = loaded.config.embedding_size();
    let embedding_shape = [1, loaded.config.prompt_embed_dim, e, e];
    let variant = loaded.variant;
    let encoder_digest = loaded.encoder_digest.clone();
    Ok(Model {
        id,
        checkpoint: path.clone(),
        config: spec.config.clone(),
        variant,
        encoder_digest,
        embedding_shape,
        predictor: Predictor::new(loaded, device.clone()),
        decoder_f16,
        decoder_f32,
        full: Default::default(),
    })
}

/// A burnpack, as `segany convert [--decoder-only] [--f16]` writes it.
fn burnpack(model: &segany_model::SamModel, contents: Contents, half: bool) -> Result<WeightsFile> {
    let tmp = TempFile::new("model.bpk");
    save_burnpack(model, contents, half, &tmp.0).context("cannot serialise the weights")?;
    let bytes = std::fs::read(&tmp.0).with_context(|| format!("cannot read back {}", tmp.0.display()))?;
    let sha256 = hex(&Sha256::digest(&bytes));
    Ok(WeightsFile { bytes: bytes.into(), sha256 })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!("segany-{}-{n}-{name}", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_to_url_safe_characters() {
        assert_eq!(sanitise("my model (v2).final"), "my_model__v2_.final");
        assert_eq!(sanitise("vit_b-ft"), "vit_b-ft");
    }
}
