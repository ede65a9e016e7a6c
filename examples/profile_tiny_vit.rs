//! Where MobileSAM's TinyViT encoder spends its time, stage by stage and op by op (not a test; for
//! optimisation work, next to `bench/`'s PyTorch figures).
//!
//! `cargo run --release --example profile_tiny_vit -- CHECKPOINT [--threads T]`

use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::tensor::{Device, Distribution, Tensor};
use segany_model::ImageEncoder;
use segany_model::tiny_vit::Stage;

fn sync<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    let _ = t.clone().slice(core::array::from_fn::<_, D, _>(|_| 0..1usize)).into_data();
    t
}

fn time<const D: usize>(name: &str, f: impl Fn() -> Tensor<D>) -> Tensor<D> {
    let out = sync(f());
    let runs = 3;
    let t = Instant::now();
    for _ in 0..runs {
        sync(f());
    }
    println!("{name:40} {:8.1} ms", t.elapsed().as_secs_f64() * 1e3 / runs as f64);
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let checkpoint = args.get(1).expect("usage: profile_tiny_vit CHECKPOINT [--threads T]");
    if let Some(i) = args.iter().position(|a| a == "--threads") {
        // SAFETY: set before any thread starts.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", &args[i + 1]) };
    }
    let dev = Device::flex();
    let model = segany_weights::load_file(checkpoint.as_ref(), None, None, &dev).expect("checkpoint");
    let Some(ImageEncoder::TinyVit(tv)) = model.encoder else { panic!("not a TinyViT checkpoint") };
    let x = Tensor::<4>::random([1, 3, 1024, 1024], Distribution::Normal(0.0, 1.0), &dev);

    let total = Instant::now();
    sync(tv.forward(x.clone()));
    println!("{:40} {:8.1} ms (first run)", "encoder", total.elapsed().as_secs_f64() * 1e3);
    time("encoder", || tv.forward(x.clone()));

    let pe = &tv.patch_embed;
    time("patch_embed.conv1 (3->C/2, s2)", || pe.conv1.forward(x.clone()));
    let c1 = pe.conv1.forward(x.clone());
    time("patch_embed gelu", || segany_model::gelu(c1.clone()));
    time("patch_embed.conv2 (s2)", || pe.conv2.forward(c1.clone()));
    let mut y = time("patch_embed", || pe.conv2.forward(segany_model::gelu(pe.conv1.forward(x.clone()))));
    for (i, stage) in tv.layers.iter().enumerate() {
        y = match stage {
            Stage::Conv(s) => {
                let b0 = &s.blocks[0];
                time(&format!("layer{i} mbconv.conv1 (1x1)"), || b0.conv1.forward(y.clone()));
                let h = b0.conv1.forward(y.clone());
                time(&format!("layer{i} gelu {:?}", h.dims()), || segany_model::gelu(h.clone()));
                time(&format!("layer{i} mbconv.conv2 (dw3x3)"), || b0.conv2.forward(h.clone()));
                time(&format!("layer{i} mbconv.conv3 (1x1)"), || b0.conv3.forward(h.clone()));
                let out = time(&format!("layer{i} blocks"), || s.blocks.iter().fold(y.clone(), |x, b| b.forward(x)));
                match &s.downsample {
                    Some(m) => time(&format!("layer{i} downsample"), || m.forward(out.clone())),
                    None => out,
                }
            }
            Stage::Attention(s) => {
                let [b, c, h, w] = y.dims();
                let tokens = y.clone().reshape([b, c, h * w]).swap_dims(1, 2);
                let blk = &s.blocks[0];
                let n = tokens.clone();
                time(&format!("layer{i} block0 [{h}x{w}x{c}]"), || blk.forward(n.clone(), [h, w]));
                let ws = blk.window_size;
                time(&format!("layer{i}   attention (cpu, ws {ws})"), || blk.attn.forward_grid_cpu(n.clone(), [h, w], ws));
                time(&format!("layer{i}   attn.qkv"), || blk.attn.qkv.forward(n.clone()));
                time(&format!("layer{i}   mlp.norm"), || blk.mlp.norm.forward(n.clone()));
                time(&format!("layer{i}   mlp.fc1"), || blk.mlp.fc1.forward(n.clone()));
                let hid = blk.mlp.fc1.forward(n.clone());
                time(&format!("layer{i}   mlp gelu"), || segany_model::gelu(hid.clone()));
                time(&format!("layer{i}   mlp.fc2"), || blk.mlp.fc2.forward(hid.clone()));
                let grid = n.clone().swap_dims(1, 2).reshape([b, c, h, w]);
                time(&format!("layer{i}   local_conv"), || blk.local_conv.forward(grid.clone()));
                let tok = time(&format!("layer{i} blocks"), || s.blocks.iter().fold(tokens.clone(), |t, blk| blk.forward(t, [h, w])));
                let grid = tok.swap_dims(1, 2).reshape([b, c, h, w]);
                match &s.downsample {
                    Some(m) => time(&format!("layer{i} downsample"), || m.forward(grid.clone())),
                    None => grid,
                }
            }
        };
    }
    time("neck", || tv.neck.forward(y.clone()));
    time("neck.conv1", || tv.neck.conv1.forward(y.clone()));
    let n1 = tv.neck.conv1.forward(y.clone());
    time("neck.ln1", || tv.neck.ln1.forward(n1.clone()));
    time("neck.conv2", || tv.neck.conv2.forward(n1.clone()));
}
