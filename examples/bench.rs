//! Times segany natively, for `bench/run.sh` (which times the PyTorch and onnxruntime references
//! in the same run). Prints one JSON object: median seconds to embed, median milliseconds to
//! predict one point with three masks, and the checkpoint load time.
//!
//! `cargo run --release --example bench -- --checkpoint CKPT --image IMG [--runs N] [--threads T]`

use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::tensor::Device;
use segany_predict::{Point, Predictor, Prompt, decode_image};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let checkpoint = arg("--checkpoint").expect("--checkpoint");
    let image = arg("--image").expect("--image");
    let runs: usize = arg("--runs").map_or(3, |v| v.parse().unwrap());
    let threads: Option<usize> = arg("--threads").map(|v| v.parse().unwrap());
    if let Some(t) = threads {
        // flex runs its kernels on rayon's global pool; set before the pool starts.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", t.to_string()) };
    }

    let device = Device::flex();
    let t = Instant::now();
    let m = segany_weights::load_file(checkpoint.as_ref(), None, None, &device).expect("checkpoint");
    let load_s = t.elapsed().as_secs_f64();
    let variant = m.variant.map(|v| v.name());
    let mut predictor = Predictor::new(m, device);
    let img = decode_image(&std::fs::read(&image).expect("image")).expect("image");

    // Warm-up, then timed runs; `to_vec` reads the embedding back, so the work is done.
    predictor.set_image(&img).unwrap().to_vec();
    let embed: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            predictor.set_image(&img).unwrap().to_vec();
            t.elapsed().as_secs_f64()
        })
        .collect();

    let prompt = Prompt {
        points: vec![Point { x: img.width as f64 / 2.0, y: img.height as f64 / 2.0, label: 1 }],
        ..Prompt::default()
    };
    predictor.predict(&prompt).unwrap();
    let predict: Vec<f64> = (0..20.max(runs))
        .map(|_| {
            let t = Instant::now();
            predictor.predict(&prompt).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();

    println!(
        "{}",
        serde_json::json!({
            "variant": variant,
            "embed_s": median(embed.clone()),
            "embed_runs_s": embed,
            "predict_ms": median(predict),
            "load_s": load_s,
            "threads": threads,
        })
    );
}
