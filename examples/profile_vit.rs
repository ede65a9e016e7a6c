//! Where the ViT encoder's time goes, op by op (not a test; for optimisation work).
use std::time::Instant;

use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Distribution, Tensor};
use segany_model::Variant;
use segany_model::image_encoder_vit::ImageEncoderViT;

fn sync<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    let _ = t.clone().slice(core::array::from_fn::<_, D, _>(|_| 0..1usize)).into_data();
    t
}

fn time<const D: usize>(name: &str, f: impl Fn() -> Tensor<D>) {
    sync(f());
    let t = Instant::now();
    for _ in 0..3 {
        sync(f());
    }
    println!("{name:40} {:8.1} ms", t.elapsed().as_secs_f64() * 1e3 / 3.0);
}

fn main() {
    let dev = Device::flex();
    let segany_model::EncoderConfig::Vit(cfg) = Variant::VitB.config().encoder else { unreachable!() };
    let vit = ImageEncoderViT::new(&cfg, &dev);
    let x = Tensor::<4>::random([1, 64, 64, 768], Distribution::Normal(0.0, 1.0), &dev);
    let blk_w = &vit.blocks[0];
    let blk_g = &vit.blocks[2];
    time("block windowed", || blk_w.forward(x.clone()));
    time("block global", || blk_g.forward(x.clone()));
    time("norm1", || blk_w.norm1.forward(x.clone()));
    time("attn global", || blk_g.attn.forward(x.clone()));
    time("mlp", || blk_w.mlp.forward(x.clone()));
    time("lin1 768->3072", || blk_w.mlp.lin1.forward(x.clone()));
    let h = Tensor::<4>::random([1, 64, 64, 3072], Distribution::Normal(0.0, 1.0), &dev);
    time("gelu 12.6M", || gelu(h.clone()));
    time("qkv 768->2304", || blk_g.attn.qkv.forward(x.clone()));
    let q = Tensor::<3>::random([12, 4096, 64], Distribution::Normal(0.0, 1.0), &dev);
    time("q@kT [12,4096,4096]", || q.clone().matmul(q.clone().swap_dims(1, 2)));
    let a = Tensor::<3>::random([12, 4096, 4096], Distribution::Normal(0.0, 1.0), &dev);
    time("softmax [12,4096,4096]", || softmax(a.clone(), 2));
    time("a@v", || a.clone().matmul(q.clone()));
    let a5 = a.clone().reshape([12, 64, 64, 64, 64]);
    let rh = Tensor::<5>::random([12, 64, 64, 64, 1], Distribution::Normal(0.0, 1.0), &dev);
    let rw = Tensor::<5>::random([12, 64, 64, 1, 64], Distribution::Normal(0.0, 1.0), &dev);
    time("bias add 5D", || a5.clone() + rh.clone() + rw.clone());
    let t0 = Instant::now();
    let img = Tensor::<4>::random([1, 3, 1024, 1024], Distribution::Normal(0.0, 1.0), &dev);
    sync(vit.forward(img));
    println!("full encoder {:.2} s", t0.elapsed().as_secs_f64());
}

#[allow(dead_code)]
fn fused(dev: &Device) {
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    let q = Tensor::<4>::random([1, 12, 4096, 64], Distribution::Normal(0.0, 1.0), dev);
    let bias = Tensor::<4>::random([1, 12, 4096, 4096], Distribution::Normal(0.0, 1.0), dev);
    time("fused attention + bias", || attention(q.clone(), q.clone(), q.clone(), None, Some(bias.clone()), AttentionModuleOptions::default()));
    time("fused attention no bias", || attention(q.clone(), q.clone(), q.clone(), None, None, AttentionModuleOptions::default()));
    let q2 = Tensor::<4>::random([1, 12, 4096, 192], Distribution::Normal(0.0, 1.0), dev);
    time("fused attention d=192 (augmented)", || attention(q2.clone(), q2.clone(), q.clone(), None, None, AttentionModuleOptions::default()));
}
