//! MobileSAM's image encoder: a TinyViT (convolutional stem, an MBConv stage, then windowed
//! attention stages with learned attention biases and a depthwise "local" conv), followed by
//! SAM's neck. Fields are named as the state-dict keys under `image_encoder.`.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, PaddingConfig2d};
use burn::tensor::activation::softmax;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::common::{gelu, linear, to_vec, zeros_param};
use crate::kernels::{Windows, conv3x3_stride2, window_attention};
use crate::image_encoder_vit::Neck;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TinyVitConfig {
    pub img_size: usize,
    pub embed_dims: Vec<usize>,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub window_sizes: Vec<usize>,
    pub mlp_ratio: usize,
    pub mbconv_expand_ratio: usize,
    /// Stride of the PatchMerging after each stage but the last. The reference derives it from the
    /// width (1 when widening to 320, 448 or 576 channels — how MobileSAM keeps 64×64 — else 2);
    /// stated here so a configuration says what it builds.
    pub merge_strides: Vec<usize>,
    /// Width of the classification head the checkpoints carry (unused by SAM, loaded for strictness).
    pub num_classes: usize,
    pub out_chans: usize,
}

impl Default for TinyVitConfig {
    /// MobileSAM's `vit_t`.
    fn default() -> Self {
        Self {
            img_size: 1024,
            embed_dims: vec![64, 128, 160, 320],
            depths: vec![2, 2, 6, 2],
            num_heads: vec![2, 4, 5, 10],
            window_sizes: vec![7, 7, 14, 7],
            mlp_ratio: 4,
            mbconv_expand_ratio: 4,
            merge_strides: vec![2, 2, 1],
            num_classes: 1000,
            out_chans: 256,
        }
    }
}

/// Conv2d without bias followed by inference-mode batch norm (`Conv2d_BN`: keys `c`, `bn`).
#[derive(Module, Debug)]
pub struct Conv2dBn {
    pub c: Conv2d,
    pub bn: BatchNorm2d,
}

impl Conv2dBn {
    fn new(c_in: usize, c_out: usize, k: usize, stride: usize, groups: usize, device: &Device) -> Self {
        let pad = k / 2;
        let c = Conv2dConfig::new([c_in, c_out], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_groups(groups)
            .with_bias(false)
            .with_initializer(Initializer::Zeros)
            .init(device);
        Self { c, bn: BatchNorm2d::new(c_out, device) }
    }

    /// The batch norm folded into the convolution (as the reference's `Conv2d_BN.fuse` does):
    /// `w·s` and bias `β − μ·s` with `s = γ/√(σ²+ε)`, one pass instead of five. The stem's
    /// first, 3-channel convolution runs a direct kernel on the CPU (see `kernels`).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let (scale, shift) = self.bn.scale_shift();
        let c = &self.c;
        let [out, _, _, _] = c.weight.dims();
        let weight = c.weight.val() * scale.reshape([out, 1, 1, 1]);
        let [kh, kw] = c.kernel_size;
        let [b, c_in, h, w] = x.dims();
        if x.device() == Device::flex() && [kh, kw] == [3, 3] && c.stride == [2, 2] && c.groups == 1 && c_in <= 4 {
            let device = x.device();
            let (weight, bias) = (to_vec(weight), to_vec(shift));
            let mut out = Vec::with_capacity(b * out * h.div_ceil(2) * w.div_ceil(2));
            for image in to_vec(x).chunks(c_in * h * w) {
                out.extend_from_slice(&conv3x3_stride2(image, [c_in, h, w], &weight, &bias));
            }
            return Tensor::from_data(TensorData::new(out, [b, bias.len(), h.div_ceil(2), w.div_ceil(2)]), &device);
        }
        let options = ConvOptions::new_with_padding(c.stride, [(kh / 2, kh / 2), (kw / 2, kw / 2)], c.dilation, c.groups);
        conv2d(x, weight, Some(shift), options)
    }
}

/// Batch norm with running statistics, as PyTorch evaluates it (eps 1e-5). Named as PyTorch's
/// state dict (`weight`, `bias`, `running_mean`, `running_var`).
#[derive(Module, Debug)]
pub struct BatchNorm2d {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: Param<Tensor<1>>,
    pub running_var: Param<Tensor<1>>,
}

impl BatchNorm2d {
    fn new(c: usize, device: &Device) -> Self {
        Self {
            weight: zeros_param([c], device),
            bias: zeros_param([c], device),
            running_mean: zeros_param([c], device),
            running_var: zeros_param([c], device),
        }
    }

    /// Per-channel `(scale, shift)` with `bn(x) = x·scale + shift`.
    fn scale_shift(&self) -> (Tensor<1>, Tensor<1>) {
        let scale = self.weight.val() / self.running_var.val().add_scalar(1e-5).sqrt();
        let shift = self.bias.val() - self.running_mean.val() * scale.clone();
        (scale, shift)
    }
}

/// The stem: two stride-2 3×3 Conv2d_BN with GELU between (keys `seq.0`, `seq.2`).
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub conv1: Conv2dBn,
    pub conv2: Conv2dBn,
}

/// Inverted residual block: 1×1 expand, 3×3 depthwise, 1×1 project, residual, GELU after each.
#[derive(Module, Debug)]
pub struct MbConv {
    pub conv1: Conv2dBn,
    pub conv2: Conv2dBn,
    pub conv3: Conv2dBn,
}

impl MbConv {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = gelu(self.conv1.forward(x.clone()));
        let y = gelu(self.conv2.forward(y));
        gelu(self.conv3.forward(y) + x)
    }
}

/// 1×1 widen, 3×3 depthwise (stride 2 or 1), 1×1, GELU between.
#[derive(Module, Debug)]
pub struct PatchMerging {
    pub conv1: Conv2dBn,
    pub conv2: Conv2dBn,
    pub conv3: Conv2dBn,
}

impl PatchMerging {
    /// `[B, C, H, W]` → `[B, C', H/s, W/s]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = gelu(self.conv1.forward(x));
        let x = gelu(self.conv2.forward(x));
        self.conv3.forward(x)
    }
}

/// Window attention with a learned bias per head and per (|dy|, |dx|) offset.
#[derive(Module, Debug)]
pub struct Attention {
    pub norm: LayerNorm,
    pub qkv: Linear,
    pub proj: Linear,
    /// `[heads, offsets]`
    pub attention_biases: Param<Tensor<2>>,
    /// `[N·N]` offset index per (query, key) pair of a window; geometry, not a weight.
    #[module(skip)]
    pub bias_idxs: Vec<i64>,
    #[module(skip)]
    pub num_heads: usize,
}

impl Attention {
    fn new(dim: usize, num_heads: usize, window: usize, device: &Device) -> Self {
        // Offsets are numbered in order of first appearance, scanning (query, key) pairs
        // row-major, exactly as the reference builds `attention_bias_idxs`.
        let points: Vec<(i64, i64)> = (0..window as i64).flat_map(|y| (0..window as i64).map(move |x| (y, x))).collect();
        let mut offsets = std::collections::HashMap::new();
        let mut bias_idxs = Vec::with_capacity(points.len() * points.len());
        for p1 in &points {
            for p2 in &points {
                let off = ((p1.0 - p2.0).abs(), (p1.1 - p2.1).abs());
                let n = offsets.len() as i64;
                bias_idxs.push(*offsets.entry(off).or_insert(n));
            }
        }
        Self {
            norm: LayerNormConfig::new(dim).init(device),
            qkv: linear(dim, dim * 3, true, device),
            proj: linear(dim, dim, true, device),
            attention_biases: zeros_param([num_heads, offsets.len()], device),
            bias_idxs,
            num_heads,
        }
    }

    /// # Shapes
    /// - x: `[B, N, C]` (one window per batch item) → `[B, N, C]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, c] = x.dims();
        let heads = self.num_heads;
        let kd = c / heads;
        // The reference splits q, k, v inside each head's slice of the projection.
        let qkv = self.qkv.forward(self.norm.forward(x)).reshape([b, n, heads, 3 * kd]).swap_dims(1, 2);
        let q = qkv.clone().slice([0..b, 0..heads, 0..n, 0..kd]);
        let k = qkv.clone().slice([0..b, 0..heads, 0..n, kd..2 * kd]);
        let v = qkv.slice([0..b, 0..heads, 0..n, 2 * kd..3 * kd]);
        let device = q.device();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(self.bias_idxs.clone(), [n * n]), &device);
        let bias = self.attention_biases.val().select(1, idx).reshape([1, heads, n, n]);
        let attn = q.matmul(k.swap_dims(2, 3)).mul_scalar((kd as f64).powf(-0.5)) + bias;
        let out = softmax(attn, 3).matmul(v).swap_dims(1, 2).reshape([b, n, c]);
        self.proj.forward(out)
    }

    /// The block's whole windowed attention on the CPU: LayerNorm and the projections as tensor
    /// ops, partition, attention and reverse partition in one fused kernel, which also skips the
    /// padding tokens' projections (they all equal the projection of `LayerNorm(0)`).
    ///
    /// # Shapes
    /// - x: `[B, H·W, C]` → `[B, H·W, C]`
    pub fn forward_grid_cpu(&self, x: Tensor<3>, grid: [usize; 2], window: usize) -> Tensor<3> {
        let [b, l, c] = x.dims();
        let device = x.device();
        let heads = self.num_heads;
        let qkv = to_vec(self.qkv.forward(self.norm.forward(x)));
        let pad = to_vec(self.qkv.forward(self.norm.forward(Tensor::<3>::zeros([1, 1, c], &device))));
        let offsets = to_vec(self.attention_biases.val());
        let per_head = offsets.len() / heads;
        let bias: Vec<f32> = (0..heads)
            .flat_map(|h| self.bias_idxs.iter().map(move |&i| (h, i as usize)))
            .map(|(h, i)| offsets[h * per_head + i])
            .collect();
        let geo = Windows { grid, size: window, heads, head_dim: c / heads };
        let per_image = l * 3 * c;
        let mut out = Vec::with_capacity(b * l * c);
        for image in qkv.chunks(per_image) {
            out.extend_from_slice(&window_attention(image, &pad, &bias, geo));
        }
        self.proj.forward(Tensor::from_data(TensorData::new(out, [b, l, c]), &device))
    }
}

/// LayerNorm, fc1, GELU, fc2 (TinyViT's `Mlp` normalises its own input).
#[derive(Module, Debug)]
pub struct Mlp {
    pub norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
}

#[derive(Module, Debug)]
pub struct TinyVitBlock {
    pub attn: Attention,
    pub mlp: Mlp,
    pub local_conv: Conv2dBn,
    #[module(skip)]
    pub window_size: usize,
}

impl TinyVitBlock {
    /// # Shapes
    /// - x: `[B, H·W, C]` → `[B, H·W, C]`
    pub fn forward(&self, x: Tensor<3>, [h, w]: [usize; 2]) -> Tensor<3> {
        let [b, l, c] = x.dims();
        let ws = self.window_size;
        let attn = if x.device() == Device::flex() {
            self.attn.forward_grid_cpu(x.clone(), [h, w], ws)
        } else if h == ws && w == ws {
            self.attn.forward(x.clone())
        } else {
            let (pb, pr) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
            let mut grid = x.clone().reshape([b, h, w, c]);
            if pb > 0 || pr > 0 {
                grid = grid.pad([(0, 0), (0, pb), (0, pr), (0, 0)], burn::tensor::ops::PadMode::Constant(0.0));
            }
            let (ph, pw) = (h + pb, w + pr);
            let (nh, nw) = (ph / ws, pw / ws);
            let windows = grid
                .reshape([b, nh, ws, nw, ws, c])
                .swap_dims(2, 3)
                .reshape([b * nh * nw, ws * ws, c]);
            let out = self
                .attn
                .forward(windows)
                .reshape([b, nh, nw, ws, ws, c])
                .swap_dims(2, 3)
                .reshape([b, ph, pw, c]);
            let out = if pb > 0 || pr > 0 { out.slice([0..b, 0..h, 0..w, 0..c]) } else { out };
            out.reshape([b, l, c])
        };
        let x = x + attn;
        let x = self.local_conv.forward(x.swap_dims(1, 2).reshape([b, c, h, w])).reshape([b, c, l]).swap_dims(1, 2);
        let m = &self.mlp;
        x.clone() + m.fc2.forward(gelu(m.fc1.forward(m.norm.forward(x))))
    }
}

/// Stage 0 (MBConv blocks) or a later stage (TinyViT blocks), each optionally followed by a
/// PatchMerging (`downsample`).
#[derive(Module, Debug)]
pub enum Stage {
    Conv(ConvStage),
    Attention(AttentionStage),
}

#[derive(Module, Debug)]
pub struct ConvStage {
    pub blocks: Vec<MbConv>,
    pub downsample: Option<PatchMerging>,
}

#[derive(Module, Debug)]
pub struct AttentionStage {
    pub blocks: Vec<TinyVitBlock>,
    pub downsample: Option<PatchMerging>,
}

#[derive(Module, Debug)]
pub struct TinyViT {
    pub patch_embed: PatchEmbed,
    pub layers: Vec<Stage>,
    /// Classification head of the ImageNet TinyViT: in every checkpoint, unused by SAM.
    pub norm_head: LayerNorm,
    pub head: Linear,
    pub neck: Neck,
    #[module(skip)]
    pub resolutions: Vec<usize>,
}

impl TinyViT {
    pub fn new(cfg: &TinyVitConfig, device: &Device) -> Self {
        let d = &cfg.embed_dims;
        let n = d.len();
        let mut res = cfg.img_size / 4;
        let mut resolutions = Vec::with_capacity(n);
        let mut layers = Vec::with_capacity(n);
        for i in 0..n {
            resolutions.push(res);
            let downsample = (i + 1 < n).then(|| {
                let (dim, out) = (d[i], d[i + 1]);
                let stride = cfg.merge_strides[i];
                res /= stride;
                PatchMerging {
                    conv1: Conv2dBn::new(dim, out, 1, 1, 1, device),
                    conv2: Conv2dBn::new(out, out, 3, stride, out, device),
                    conv3: Conv2dBn::new(out, out, 1, 1, 1, device),
                }
            });
            let dim = d[i];
            layers.push(if i == 0 {
                let hidden = dim * cfg.mbconv_expand_ratio;
                Stage::Conv(ConvStage {
                    blocks: (0..cfg.depths[i])
                        .map(|_| MbConv {
                            conv1: Conv2dBn::new(dim, hidden, 1, 1, 1, device),
                            conv2: Conv2dBn::new(hidden, hidden, 3, 1, hidden, device),
                            conv3: Conv2dBn::new(hidden, dim, 1, 1, 1, device),
                        })
                        .collect(),
                    downsample,
                })
            } else {
                Stage::Attention(AttentionStage {
                    blocks: (0..cfg.depths[i])
                        .map(|_| TinyVitBlock {
                            attn: Attention::new(dim, cfg.num_heads[i], cfg.window_sizes[i], device),
                            mlp: Mlp {
                                norm: LayerNormConfig::new(dim).init(device),
                                fc1: linear(dim, dim * cfg.mlp_ratio, true, device),
                                fc2: linear(dim * cfg.mlp_ratio, dim, true, device),
                            },
                            local_conv: Conv2dBn::new(dim, dim, 3, 1, dim, device),
                            window_size: cfg.window_sizes[i],
                        })
                        .collect(),
                    downsample,
                })
            });
        }
        let last = d[n - 1];
        Self {
            patch_embed: PatchEmbed {
                conv1: Conv2dBn::new(3, d[0] / 2, 3, 2, 1, device),
                conv2: Conv2dBn::new(d[0] / 2, d[0], 3, 2, 1, device),
            },
            layers,
            norm_head: LayerNormConfig::new(last).init(device),
            head: linear(last, cfg.num_classes, true, device),
            neck: Neck::new(last, cfg.out_chans, device),
            resolutions,
        }
    }

    /// # Shapes
    /// - x: `[B, 3, 1024, 1024]` → `[B, out_chans, 64, 64]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.patch_embed.conv2.forward(gelu(self.patch_embed.conv1.forward(x)));
        let mut x = x; // [B, C, H, W] between stages
        for (stage, &r) in self.layers.iter().zip(&self.resolutions) {
            x = match stage {
                Stage::Conv(s) => {
                    let x = s.blocks.iter().fold(x, |x, blk| blk.forward(x));
                    s.downsample.as_ref().map_or(x.clone(), |m| m.forward(x))
                }
                Stage::Attention(s) => {
                    let [b, c, h, w] = x.dims();
                    debug_assert_eq!([h, w], [r, r]);
                    let tokens = x.reshape([b, c, h * w]).swap_dims(1, 2);
                    let tokens = s.blocks.iter().fold(tokens, |t, blk| blk.forward(t, [h, w]));
                    let grid = tokens.swap_dims(1, 2).reshape([b, c, h, w]);
                    s.downsample.as_ref().map_or(grid.clone(), |m| m.forward(grid))
                }
            };
        }
        self.neck.forward(x)
    }
}
