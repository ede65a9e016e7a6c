//! Times the image encoder on burn's wgpu runtime natively (Vulkan: a real GPU, or Mesa's
//! lavapipe on the CPU), with the same encoder on the CPU (flex) in the same run, and checks the
//! two embeddings agree. `bench/webgpu.sh` builds and runs it. Prints one JSON object.
//!
//! `cargo run --release --features bench-wgpu --example bench_wgpu -- --checkpoint CKPT --image IMG [--config CFG.json] [--runs N]`

use std::time::Instant;

use burn::tensor::Device;
use segany_predict::{Predictor, decode_image};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Seconds per embedding, first (shader compilation included) and the following `runs`; each
/// reads the whole embedding back, so the GPU's work is done when the clock stops.
fn time(predictor: &Predictor, image: &segany_predict::RgbImage, runs: usize) -> (f64, Vec<f64>, Vec<f32>) {
    let t = Instant::now();
    let first = predictor.embed(image).unwrap().to_vec();
    let first_s = t.elapsed().as_secs_f64();
    let times = (0..runs)
        .map(|_| {
            let t = Instant::now();
            predictor.embed(image).unwrap().to_vec();
            t.elapsed().as_secs_f64()
        })
        .collect();
    (first_s, times, first)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let checkpoint = arg("--checkpoint").expect("--checkpoint");
    let image = decode_image(&std::fs::read(arg("--image").expect("--image")).expect("image")).expect("image");
    let config = arg("--config").map(|c| serde_json::from_slice(&std::fs::read(c).expect("config")).expect("config JSON"));
    let runs: usize = arg("--runs").map_or(3, |v| v.parse().unwrap());

    let gpu = Device::wgpu_options().init().expect("a wgpu adapter (Vulkan)");
    let load = |device: &Device| {
        let m = segany_weights::load_file(checkpoint.as_ref(), config.as_ref(), None, device).expect("checkpoint");
        Predictor::new(m, device.clone())
    };
    let (gpu_first, gpu_times, gpu_emb) = time(&load(&gpu), &image, runs);
    let (cpu_first, cpu_times, cpu_emb) = time(&load(&Device::flex()), &image, runs);
    let scale = cpu_emb.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = gpu_emb.iter().zip(&cpu_emb).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let out = serde_json::json!({
        "runs": runs,
        "wgpu_first_s": gpu_first,
        "wgpu_embed_s": median(gpu_times.clone()),
        "wgpu_embed_all_s": gpu_times,
        "cpu_first_s": cpu_first,
        "cpu_embed_s": median(cpu_times.clone()),
        "cpu_embed_all_s": cpu_times,
        "max_abs_diff": worst,
        "max_abs_cpu": scale,
    });
    println!("{out}");
}
