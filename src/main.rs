//! `segany`: Segment Anything on the command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

/// mimalloc keeps freed tensor buffers for reuse; with the system allocator every large tensor
/// is a fresh `mmap` whose page faults cost ~30% of the encoder's time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The browser page, embedded by `build.rs` from trunk's `dist/`.
mod page {
    include!(concat!(env!("OUT_DIR"), "/page.rs"));
}

use burn::tensor::Device;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use segany_model::{SamConfig, Variant};
use segany_predict::npy::{from_npy, to_npy};
use segany_predict::everything::{self, EverythingInput, EverythingSettings, GeneratedMask};
use segany_predict::masks::Rle;
use segany_predict::{Point, Predictor, Prompt, RgbImage, decode_image};
use serde_json::{Value, json};
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
    /// Segment everything: masks for a grid of point prompts, filtered and de-duplicated as the
    /// reference's SamAutomaticMaskGenerator. Writes DIR/masks.json (COCO RLE) and DIR/overlay.png.
    Everything {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        image: PathBuf,
        #[command(flatten)]
        settings: EverythingArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// One instance mask per detector box (a JSON list of [x0, y0, x1, y1] in image pixels), the
    /// boxes decoded in batches. Writes DIR/masks.json (COCO RLE) and DIR/overlay.png.
    Boxes {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        image: PathBuf,
        /// JSON file: [[x0, y0, x1, y1], ...]
        #[arg(long)]
        boxes: PathBuf,
        /// Boxes decoded in one batch.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
        batch: u16,
        #[arg(long)]
        out: PathBuf,
    },
    /// Object proposals: everything-mode masks ranked by predicted IoU, with their boxes.
    /// Writes DIR/proposals.json.
    Proposals {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        image: PathBuf,
        #[command(flatten)]
        settings: EverythingArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Edge map: Sobel filter on the mask probabilities of everything mode (16×16 points unless
    /// --points-per-side), thinned by non-maximum suppression. Writes DIR/edges.png.
    Edges {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        image: PathBuf,
        #[command(flatten)]
        settings: EverythingArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Serve embeddings, predictions and decoder weights over HTTP (API: see the README).
    Serve(ServeArgs),
}

/// Settings of segment-everything; each defaults to the reference generator's value.
#[derive(clap::Args)]
struct EverythingArgs {
    /// Points along each side of the prompt grid [default: 32]
    #[arg(long)]
    points_per_side: Option<usize>,
    /// Prompts decoded in one batch [default: 64]
    #[arg(long)]
    points_per_batch: Option<usize>,
    /// Keep masks whose predicted IoU is above this [default: 0.88]
    #[arg(long)]
    pred_iou_thresh: Option<f64>,
    /// Keep masks whose stability score is at least this [default: 0.95]
    #[arg(long)]
    stability_score_thresh: Option<f64>,
    /// Logit offset of the stability score [default: 1.0]
    #[arg(long)]
    stability_score_offset: Option<f64>,
    /// Box IoU of duplicates within a crop [default: 0.7]
    #[arg(long)]
    box_nms_thresh: Option<f64>,
    /// Crop layers beyond the whole image; layer i has (2^i)² crops [default: 0]
    #[arg(long)]
    crop_layers: Option<usize>,
    /// Box IoU of duplicates across crops [default: 0.7]
    #[arg(long)]
    crop_nms_thresh: Option<f64>,
    /// Overlap of layer-1 crops as a fraction of the short side [default: 0.3413]
    #[arg(long)]
    crop_overlap_ratio: Option<f64>,
    /// Layer i's grid has points-per-side / FACTOR^i points a side [default: 1]
    #[arg(long)]
    crop_points_downscale: Option<usize>,
    /// Remove islands and holes smaller than this many pixels [default: 0, off]
    #[arg(long)]
    min_mask_region_area: Option<usize>,
}

impl EverythingArgs {
    fn settings(&self, defaults: EverythingSettings) -> Result<EverythingSettings> {
        let d = defaults;
        let s = EverythingSettings {
            points_per_side: self.points_per_side.unwrap_or(d.points_per_side),
            points_per_batch: self.points_per_batch.unwrap_or(d.points_per_batch),
            pred_iou_thresh: self.pred_iou_thresh.unwrap_or(d.pred_iou_thresh),
            stability_score_thresh: self.stability_score_thresh.unwrap_or(d.stability_score_thresh),
            stability_score_offset: self.stability_score_offset.unwrap_or(d.stability_score_offset),
            box_nms_thresh: self.box_nms_thresh.unwrap_or(d.box_nms_thresh),
            crop_n_layers: self.crop_layers.unwrap_or(d.crop_n_layers),
            crop_nms_thresh: self.crop_nms_thresh.unwrap_or(d.crop_nms_thresh),
            crop_overlap_ratio: self.crop_overlap_ratio.unwrap_or(d.crop_overlap_ratio),
            crop_n_points_downscale_factor: self.crop_points_downscale.unwrap_or(d.crop_n_points_downscale_factor),
            min_mask_region_area: self.min_mask_region_area.unwrap_or(d.min_mask_region_area),
        };
        if let Err(e) = s.validate() {
            let flag = match e.field {
                "crop_n_layers" => "crop-layers".to_string(),
                "crop_n_points_downscale_factor" => "crop-points-downscale".to_string(),
                f => f.replace('_', "-"),
            };
            bail!("--{flag} {}", e.message);
        }
        Ok(s)
    }
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

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A progress line on stderr, rewritten in place, at most every 1% and ending with a newline.
fn progress(what: &'static str) -> impl FnMut(usize, usize) {
    let mut shown = usize::MAX;
    move |done, total| {
        let pct = done * 100 / total.max(1);
        if pct != shown {
            shown = pct;
            eprint!("\rsegany: {what}: {done}/{total} prompts ({pct}%)");
            if done >= total {
                eprintln!();
            }
        }
    }
}

/// An object proposal: the mask's box as `[x0, y0, x1, y1]` (exclusive end), score, mask.
fn proposal(m: &GeneratedMask) -> Value {
    let [x, y, w, h] = m.bbox;
    json!({
        "box": [x, y, x + w + 1, y + h + 1],
        "score": m.predicted_iou,
        "stability_score": m.stability_score,
        "area": m.area,
        "segmentation": m.segmentation,
    })
}

/// A distinct colour per index (golden-ratio hues).
fn colour(i: usize) -> [u8; 3] {
    let h = (i as f64 * 0.618_033_988_75).fract() * 6.0;
    let (s, v) = (0.75, 0.95);
    let f = h.fract();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match h as u32 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8]
}

/// Masks in distinct colours over the image, the largest first so that small ones stay visible.
fn write_overlay(path: &Path, image: &RgbImage, masks: &[&Rle]) -> Result<()> {
    let mut px = image.data.clone();
    let mut order: Vec<(usize, u64)> = masks.iter().enumerate().map(|(i, m)| (i, m.area().unwrap_or(0))).collect();
    order.sort_by_key(|&(_, area)| std::cmp::Reverse(area));
    for (i, _) in order {
        let c = colour(i);
        let mask = masks[i].decode()?;
        for (p, &m) in mask.iter().enumerate() {
            if m != 0 {
                for k in 0..3 {
                    px[p * 3 + k] = ((px[p * 3 + k] as u16 * 2 + c[k] as u16 * 3) / 5) as u8;
                }
            }
        }
    }
    image::RgbImage::from_raw(image.width as u32, image.height as u32, px)
        .expect("image size")
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The paper's zero-shot edges: Sobel magnitude of each mask's probability map, the strongest
/// over all masks per pixel, thinned by non-maximum suppression along the gradient, scaled to 0–255.
fn edge_map(masks: &[(GeneratedMask, Option<Vec<u8>>)], [h, w]: [usize; 2]) -> Vec<u8> {
    let mut mag = vec![0f32; h * w];
    let mut dir = vec![0u8; h * w];
    for (m, prob) in masks {
        let Some(prob) = prob else { continue };
        let [cx, cy, cw, ch] = m.crop_box;
        let at = |x: isize, y: isize| prob[y.clamp(0, ch as isize - 1) as usize * cw + x.clamp(0, cw as isize - 1) as usize] as f32 / 255.0;
        for y in 0..ch as isize {
            for x in 0..cw as isize {
                let gx = at(x + 1, y - 1) + 2.0 * at(x + 1, y) + at(x + 1, y + 1) - at(x - 1, y - 1) - 2.0 * at(x - 1, y) - at(x - 1, y + 1);
                let gy = at(x - 1, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1) - at(x - 1, y - 1) - 2.0 * at(x, y - 1) - at(x + 1, y - 1);
                let g = (gx * gx + gy * gy).sqrt();
                let p = (cy + y as usize) * w + cx + x as usize;
                if g > mag[p] {
                    mag[p] = g;
                    // Gradient direction quantised to 0°, 45°, 90°, 135°.
                    let angle = gy.atan2(gx).to_degrees().rem_euclid(180.0);
                    dir[p] = (((angle + 22.5) / 45.0) as u8) % 4;
                }
            }
        }
    }
    let max = mag.iter().fold(0f32, |a, &b| a.max(b)).max(1e-6);
    let mut out = vec![0u8; h * w];
    for y in 0..h {
        for x in 0..w {
            let p = y * w + x;
            let (dx, dy): (isize, isize) = match dir[p] {
                0 => (1, 0),
                1 => (1, 1),
                2 => (0, 1),
                _ => (-1, 1),
            };
            let get = |x: isize, y: isize| {
                if x < 0 || y < 0 || x >= w as isize || y >= h as isize { 0.0 } else { mag[y as usize * w + x as usize] }
            };
            let (xi, yi) = (x as isize, y as isize);
            if mag[p] >= get(xi + dx, yi + dy) && mag[p] >= get(xi - dx, yi - dy) {
                out[p] = (mag[p] / max * 255.0).round() as u8;
            }
        }
    }
    out
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
        Command::Everything { model, image: image_path, settings, out } => {
            let settings = settings.settings(EverythingSettings::default())?;
            let image = read_image(&image_path)?;
            let predictor = predictor(&model)?;
            create_dir(&out)?;
            let start = std::time::Instant::now();
            let masks = everything::generate(&predictor, &image, &settings, &mut progress("segment everything"))?;
            let seconds = start.elapsed().as_secs_f64();
            let json = json!({
                "image": file_name(&image_path),
                "size": [image.height, image.width],
                "settings": settings,
                "masks": masks,
            });
            write(&out.join("masks.json"), serde_json::to_string(&json)?.as_bytes())?;
            let rles: Vec<&Rle> = masks.iter().map(|m| &m.segmentation).collect();
            write_overlay(&out.join("overlay.png"), &image, &rles)?;
            // Timed from the image in memory to the masks (model loading and file writing excluded).
            eprintln!("segany: {} masks in {seconds:.3} s → {}", masks.len(), out.join("masks.json").display());
        }
        Command::Boxes { model, image: image_path, boxes, batch, out } => {
            let text = std::fs::read_to_string(&boxes).with_context(|| format!("cannot read boxes {}", boxes.display()))?;
            let list: Vec<[f64; 4]> = serde_json::from_str(&text)
                .with_context(|| format!("boxes {}: expected a JSON list of [x0, y0, x1, y1]", boxes.display()))?;
            let image = read_image(&image_path)?;
            let mut predictor = predictor(&model)?;
            for (i, b) in list.iter().enumerate() {
                let inside = |x: f64, y: f64| (0.0..=image.width as f64).contains(&x) && (0.0..=image.height as f64).contains(&y);
                if !(inside(b[0], b[1]) && inside(b[2], b[3]) && b[0] <= b[2] && b[1] <= b[3]) {
                    bail!("boxes {}: box {i} {b:?} is not x0 ≤ x1, y0 ≤ y1 inside the {}×{} image", boxes.display(), image.width, image.height);
                }
            }
            predictor.set_image(&image)?;
            let emb = predictor.embedding().expect("just set").clone();
            create_dir(&out)?;
            let size = [image.height, image.width];
            let mut masks = Vec::new();
            let mut report = progress("boxes");
            for (k, chunk) in list.chunks(batch as usize).enumerate() {
                let prompts: Vec<Prompt> =
                    chunk.iter().map(|&b| Prompt { points: vec![], bbox: Some(b), mask_input: None, multimask: false }).collect();
                let p = predictor.predict_batch(&emb, &prompts, false)?;
                for (i, b) in chunk.iter().enumerate() {
                    let logits = segany_predict::geometry::upscale_logits(
                        p.low_res(i, 0),
                        [256, 256],
                        predictor.config().image_size,
                        emb.meta.input_size,
                        size,
                    );
                    let mask: Vec<u8> = logits.iter().map(|&v| (v > 0.0) as u8).collect();
                    masks.push((*b, p.iou_predictions[i], Rle::encode(&mask, size)));
                }
                report(k * batch as usize + chunk.len(), list.len());
            }
            let records: Vec<Value> = masks
                .iter()
                .map(|(b, iou, rle)| {
                    json!({ "box": b, "segmentation": rle, "area": rle.area().expect("encoded"), "bbox": rle.bbox().expect("encoded"), "predicted_iou": iou })
                })
                .collect();
            let json = json!({ "image": file_name(&image_path), "size": size, "masks": records });
            write(&out.join("masks.json"), serde_json::to_string(&json)?.as_bytes())?;
            write_overlay(&out.join("overlay.png"), &image, &masks.iter().map(|m| &m.2).collect::<Vec<_>>())?;
        }
        Command::Proposals { model, image: image_path, settings, out } => {
            let settings = settings.settings(EverythingSettings::default())?;
            let image = read_image(&image_path)?;
            let predictor = predictor(&model)?;
            create_dir(&out)?;
            let mut masks = everything::generate(&predictor, &image, &settings, &mut progress("proposals"))?;
            masks.sort_by(|a, b| b.predicted_iou.total_cmp(&a.predicted_iou));
            let proposals: Vec<Value> = masks.iter().map(proposal).collect();
            let json = json!({ "image": file_name(&image_path), "size": [image.height, image.width], "settings": settings, "proposals": proposals });
            write(&out.join("proposals.json"), serde_json::to_string(&json)?.as_bytes())?;
            eprintln!("segany: {} proposals → {}", proposals.len(), out.join("proposals.json").display());
        }
        Command::Edges { model, image: image_path, settings, out } => {
            // The paper's edge detection prompts a 16×16 grid.
            let settings = settings.settings(EverythingSettings { points_per_side: 16, ..EverythingSettings::default() })?;
            let image = read_image(&image_path)?;
            let predictor = predictor(&model)?;
            create_dir(&out)?;
            let input = EverythingInput { image: Some(&image), embedding: None };
            let masks = everything::generate_with(&predictor, input, &settings, &mut progress("edges"), true)?;
            let edges = edge_map(&masks, [image.height, image.width]);
            image::GrayImage::from_raw(image.width as u32, image.height as u32, edges)
                .expect("edge map size")
                .save(out.join("edges.png"))
                .with_context(|| format!("cannot write {}", out.join("edges.png").display()))?;
            eprintln!("segany: edges of {} masks → {}", masks.len(), out.join("edges.png").display());
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
                static_files: if page::PAGE.is_empty() { segany_server::PLACEHOLDER_PAGE } else { page::PAGE },
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
