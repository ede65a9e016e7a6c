//! Where one click's time goes in the decoder (not a test; for optimisation work).
use std::time::Instant;

// As the segany binary: fresh buffers from the system allocator page-fault on every call.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use segany_model::{PointPrompt, SamDecoder, Variant};

fn main() {
    let dev = Device::flex();
    let cfg = Variant::VitB.config();
    let dec = SamDecoder::new(&cfg, &dev);
    let emb = Tensor::<4>::random([1, 256, 64, 64], Distribution::Normal(0.0, 1.0), &dev);
    let pe = dec.prompt_encoder.dense_pe();
    let point = || PointPrompt {
        coords: Tensor::from_data(TensorData::new(vec![500.0f32, 300.0], [1, 1, 2]), &dev),
        labels: Tensor::from_data(TensorData::new(vec![1.0f32], [1, 1]), &dev),
    };
    let time = |name: &str, f: &dyn Fn() -> Vec<f32>| {
        f();
        let t = Instant::now();
        for _ in 0..10 {
            f();
        }
        println!("{name:30} {:7.1} ms", t.elapsed().as_secs_f64() * 100.0);
    };
    let (sparse, dense) = dec.prompt_encoder.forward(Some(point()), None, None);
    time("prompt encoder", &|| {
        let (s, _) = dec.prompt_encoder.forward(Some(point()), None, None);
        s.into_data().try_to_vec::<f32>().unwrap()
    });
    let md = &dec.mask_decoder;
    time("whole mask decoder", &|| {
        md.forward(emb.clone(), pe.clone(), sparse.clone(), dense.clone()).masks.into_data().try_to_vec::<f32>().unwrap()
    });
    let tokens = Tensor::cat(vec![md.iou_token.weight.val(), md.mask_tokens.weight.val()], 0).unsqueeze::<3>();
    let tokens = Tensor::cat(vec![tokens, sparse.clone()], 1);
    let src = emb.clone() + dense.clone();
    time("two-way transformer", &|| {
        let (hs, _) = md.transformer.forward(src.clone(), pe.clone(), tokens.clone());
        hs.into_data().try_to_vec::<f32>().unwrap()
    });
    let keys = Tensor::<4>::random([1, 256, 64, 64], Distribution::Normal(0.0, 1.0), &dev);
    time("output upscaling", &|| md.output_upscaling.forward(keys.clone()).into_data().try_to_vec::<f32>().unwrap());
    let up = &md.output_upscaling;
    time("  deconv1 (burn ConvTranspose2d)", &|| up.deconv1.forward(keys.clone()).into_data().try_to_vec::<f32>().unwrap());
    let d1 = up.deconv1.forward(keys.clone());
    time("  layer norm 2d 64x128x128", &|| up.ln.forward(d1.clone()).into_data().try_to_vec::<f32>().unwrap());
    time("  gelu 64x128x128", &|| burn::tensor::activation::gelu(d1.clone()).into_data().try_to_vec::<f32>().unwrap());
    let d1g = burn::tensor::activation::gelu(up.ln.forward(d1.clone()));
    time("  deconv2 (burn ConvTranspose2d)", &|| up.deconv2.forward(d1g.clone()).into_data().try_to_vec::<f32>().unwrap());
    let x = Tensor::<3>::random([1, 4096, 256], Distribution::Normal(0.0, 1.0), &dev);
    let a = &md.transformer.layers[0].cross_attn_token_to_image;
    time("k_proj 4096x256->128", &|| a.k_proj.forward(x.clone()).into_data().try_to_vec::<f32>().unwrap());
    // The fused CPU decoder (what the predictor runs): per image, then per click.
    let cpu = segany_model::CpuDecoder::new(&dec, &pe);
    let emb_values = emb.clone().into_data().try_to_vec::<f32>().unwrap();
    time("cpu decoder: prepare (per image)", &|| {
        let _ = cpu.prepare(&emb_values);
        Vec::new()
    });
    let ctx = cpu.prepare(&emb_values);
    let mask = vec![0.25f32; 256 * 256];
    for (points, with_mask) in [(1, false), (1, true), (5, true), (10, true), (20, true)] {
        let sparse: Vec<f32> = (0..(points + 1) * 256).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let dense = if with_mask { segany_model::DensePrompt::Mask(&mask) } else { segany_model::DensePrompt::NoMask };
        let name = format!("cpu decoder: {points} point(s){}", if with_mask { " + mask" } else { "" });
        time(&name, &|| cpu.decode(&ctx, &sparse, dense, 1..4).masks);
    }
    let lowres = vec![0.5f32; 3 * 256 * 256];
    time("postprocess 3 masks 1283x851", &|| {
        (0..3)
            .flat_map(|i| segany_predict::geometry::upscale_logits(&lowres[i * 65536..(i + 1) * 65536], [256, 256], 1024, [679, 1024], [851, 1283]))
            .collect()
    });
}
