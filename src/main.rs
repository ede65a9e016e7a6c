//! `segany`: Segment Anything on the command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

/// mimalloc keeps freed tensor buffers for reuse; with the system allocator every large tensor
/// is a fresh `mmap` whose page faults cost ~30% of the encoder's time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::tensor::Device;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use segany_model::{SamConfig, Variant};
use segany_predict::npy::{from_npy, to_npy};
use segany_predict::{Point, Predictor, Prompt, RgbImage, decode_image};
use segany_weights::{Contents, LoadedModel, load_file, save_burnpack};

#[derive(Parser)]
#[command(name = "segany", version, about = "Segment Anything (SAM) in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// Checkpoint: official .pth/.pt, safetensors with official keys, or a burnpack from `segany convert`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Model variant; detected from the checkpoint when omitted.
    #[arg(long, value_parser = parse_variant)]
    model: Option<Variant>,
    /// Model configuration as JSON, for checkpoints of an unreleased configuration (tests, fine-tunes).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Compute an image embedding: writes OUT (f32 [1,256,64,64] .npy) and OUT with a .json
    /// extension (variant, encoder digest, input and original size).
    Embed {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Predict masks for points and/or a box (original-image pixel coordinates).
    Predict {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        image: PathBuf,
        /// X,Y[,LABEL]: LABEL 1 = foreground (default), 0 = background. Repeatable.
        #[arg(long = "point", value_parser = parse_point)]
        points: Vec<Point>,
        /// X0,Y0,X1,Y1
        #[arg(long = "box", value_parser = parse_box)]
        bbox: Option<[f64; 4]>,
        /// Low-resolution logits of an earlier prediction (f32 .npy, [256,256] or [1,256,256]).
        #[arg(long)]
        mask_input: Option<PathBuf>,
        /// Return the decoder's single mask instead of three.
        #[arg(long)]
        single_mask: bool,
        #[arg(long)]
        out: PathBuf,
    },
    /// Convert a checkpoint to burn's own format (burnpack), whole or decoder only, f32 or f16.
    Convert {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        out: PathBuf,
        /// Store weights as f16 (half the size).
        #[arg(long)]
        f16: bool,
        /// Only the prompt encoder and mask decoder: what the browser needs next to an embedding.
        #[arg(long)]
        decoder_only: bool,
    },
    /// Serve embeddings, predictions and decoder weights over HTTP (API: see the README).
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Checkpoint to serve; repeat for several models (the first is the default). Its id is the
    /// variant name (vit_b, …) or, for an unreleased configuration, the file stem.
    #[arg(long = "checkpoint")]
    checkpoints: Vec<PathBuf>,
    /// Model configuration (JSON) of the --checkpoint it follows, for unreleased configurations.
    #[arg(long = "config")]
    configs: Vec<PathBuf>,
    /// Address to listen on; port 0 picks a free port (the real address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Directory for cached embeddings, kept across restarts.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Megabytes of embeddings cached in memory.
    #[arg(long, default_value_t = 256)]
    cache_mb: usize,
    /// Encoder jobs run at once (decoder jobs likewise, separately).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Jobs that may wait for a worker; more get 503 with Retry-After.
    #[arg(long, default_value_t = 4)]
    queue: usize,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 32 << 20)]
    max_body_bytes: usize,
    /// Largest image in pixels (413 beyond), whatever its file size.
    #[arg(long, default_value_t = segany_predict::image_io::MAX_PIXELS)]
    max_pixels: u64,
}

fn parse_variant(s: &str) -> Result<Variant, String> {
    s.parse()
}

fn parse_numbers(s: &str, what: &str) -> Result<Vec<f64>, String> {
    s.split(',')
        .map(|v| {
            let v = v.trim();
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .ok_or_else(|| format!("'{v}' in {what} '{s}' is not a number"))
        })
        .collect()
}

fn parse_point(s: &str) -> Result<Point, String> {
    match parse_numbers(s, "point")?[..] {
        [x, y] => Ok(Point { x, y, label: 1 }),
        [x, y, l] if l == 0.0 || l == 1.0 => Ok(Point { x, y, label: l as i32 }),
        [_, _, l] => Err(format!("label {l} in point '{s}' must be 1 (foreground) or 0 (background)")),
        _ => Err(format!("point '{s}' must be X,Y or X,Y,LABEL")),
    }
}

fn parse_box(s: &str) -> Result<[f64; 4], String> {
    match parse_numbers(s, "box")?[..] {
        [x0, y0, x1, y1] => Ok([x0, y0, x1, y1]),
        _ => Err(format!("box '{s}' must be X0,Y0,X1,Y1")),
    }
}

fn device() -> Device {
    Device::flex()
}

fn read_config(path: &Path) -> Result<SamConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("bad model config {}", path.display()))
}

fn load_model(args: &ModelArgs) -> Result<LoadedModel> {
    if !args.checkpoint.is_file() {
        bail!("checkpoint {} does not exist", args.checkpoint.display());
    }
    let config = args.config.as_deref().map(read_config).transpose()?;
    Ok(load_file(&args.checkpoint, config.as_ref(), args.model, &device())?)
}

/// Pairs each `--config` with the `--checkpoint` before it on the command line.
fn model_specs(args: &ServeArgs, matches: &ArgMatches) -> Result<Vec<segany_server::ModelSpec>> {
    let positions = |id: &str| -> Vec<usize> { matches.indices_of(id).map(|i| i.collect()).unwrap_or_default() };
    let (checkpoint_at, config_at) = (positions("checkpoints"), positions("configs"));
    let mut configs: Vec<Option<SamConfig>> = vec![None; args.checkpoints.len()];
    for (path, at) in args.configs.iter().zip(config_at) {
        let Some(owner) = checkpoint_at.iter().rposition(|&c| c < at) else {
            bail!("--config {} comes before any --checkpoint: put it after the checkpoint it describes", path.display());
        };
        if configs[owner].is_some() {
            bail!("two --config options follow --checkpoint {}", args.checkpoints[owner].display());
        }
        configs[owner] = Some(read_config(path)?);
    }
    Ok(args
        .checkpoints
        .iter()
        .zip(configs)
        .map(|(checkpoint, config)| segany_server::ModelSpec { checkpoint: checkpoint.clone(), config })
        .collect())
}

fn predictor(args: &ModelArgs) -> Result<Predictor> {
    let m = load_model(args)?;
    Ok(Predictor::new(m, device()))
}

fn read_image(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    decode_image(&bytes).with_context(|| format!("image {}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<()> {
    match cli.command {
        Command::Embed { model, image, out } => {
            let image = read_image(&image)?;
            let mut predictor = predictor(&model)?;
            let emb = predictor.set_image(&image)?;
            write(&out, &to_npy(&emb.to_vec(), &emb.dims()))?;
            write(&out.with_extension("json"), serde_json::to_string_pretty(&emb.meta)?.as_bytes())?;
        }
        Command::Predict { model, image, points, bbox, mask_input, single_mask, out } => {
            let mask_input = match mask_input {
                Some(path) => {
                    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                    let (values, shape) = from_npy::<f32>(&bytes).with_context(|| format!("mask input {}", path.display()))?;
                    if !matches!(shape[..], [256, 256] | [1, 256, 256]) {
                        bail!("mask input {} has shape {shape:?}, expected [256, 256] or [1, 256, 256]", path.display());
                    }
                    Some(values)
                }
                None => None,
            };
            let prompt = Prompt { points, bbox, mask_input, multimask: !single_mask };
            if prompt.points.is_empty() && prompt.bbox.is_none() && prompt.mask_input.is_none() {
                bail!("nothing to segment: give at least one --point, a --box or a --mask-input");
            }
            let image = read_image(&image)?;
            let mut predictor = predictor(&model)?;
            predictor.set_image(&image)?;
            let prediction = predictor.predict(&prompt)?;
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let [h, w] = prediction.size;
            let mut masks = Vec::new();
            for i in 0..prediction.num_masks {
                let file = format!("mask_{i}.png");
                let pixels = prediction.mask(i).iter().map(|&v| v * 255).collect();
                image::GrayImage::from_raw(w as u32, h as u32, pixels)
                    .expect("mask size")
                    .save(out.join(&file))
                    .with_context(|| format!("cannot write {}", out.join(&file).display()))?;
                masks.push(serde_json::json!({ "file": file, "area": prediction.area(i) }));
            }
            let json = serde_json::json!({ "iou_predictions": prediction.iou_predictions, "masks": masks });
            write(&out.join("prediction.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
            write(&out.join("low_res_logits.npy"), &to_npy(&prediction.low_res_logits, &[prediction.num_masks, 256, 256]))?;
        }
        Command::Convert { model, out, f16, decoder_only } => {
            let loaded = load_model(&model)?;
            let contents = if decoder_only { Contents::DecoderOnly } else { Contents::Full };
            save_burnpack(&loaded, contents, f16, &out)?;
        }
        Command::Serve(args) => {
            let serve_matches = matches.subcommand_matches("serve").expect("the serve subcommand");
            let config = segany_server::ServerConfig {
                addr: args.addr,
                cache_dir: args.cache_dir.clone(),
                memory_cache_bytes: args.cache_mb << 20,
                workers: args.workers as usize,
                queue: args.queue,
                max_body_bytes: args.max_body_bytes,
                max_pixels: args.max_pixels,
                ..segany_server::ServerConfig::new(model_specs(&args, serve_matches)?)
            };
            segany_server::serve(config)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // The matches too: `serve` pairs options by their position on the command line.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
