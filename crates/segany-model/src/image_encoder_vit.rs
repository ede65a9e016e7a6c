//! The ViT image encoder of SAM (`ImageEncoderViT`): patch embedding, absolute position
//! embedding, windowed and global blocks with decomposed relative position bias, and a
//! convolutional neck to `[B, out_chans, 64, 64]`.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, PaddingConfig2d};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::common::{Activation, LayerNorm2d, MlpBlock, linear, zeros_param};
use crate::config::VitConfig;

/// The ViT backbone. Fields are named as the state-dict keys under `image_encoder.`.
#[derive(Module, Debug)]
pub struct ImageEncoderViT {
    pub patch_embed: PatchEmbed,
    pub pos_embed: Param<Tensor<4>>,
    pub blocks: Vec<Block>,
    pub neck: Neck,
}

impl ImageEncoderViT {
    pub fn new(cfg: &VitConfig, device: &Device) -> Self {
        let grid = cfg.img_size / cfg.patch_size;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let window = if cfg.global_attn_indexes.contains(&i) { 0 } else { cfg.window_size };
                Block::new(cfg, window, grid, device)
            })
            .collect();
        Self {
            patch_embed: PatchEmbed::new(cfg.patch_size, 3, cfg.embed_dim, device),
            pos_embed: zeros_param([1, grid, grid, cfg.embed_dim], device),
            blocks,
            neck: Neck::new(cfg.embed_dim, cfg.out_chans, device),
        }
    }

    /// # Shapes
    /// - x: `[B, 3, img_size, img_size]` (normalised, padded) → `[B, out_chans, grid, grid]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.patch_embed.forward(x) + self.pos_embed.val();
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.neck.forward(x.permute([0, 3, 1, 2]))
    }
}

#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
}

impl PatchEmbed {
    fn new(patch: usize, in_chans: usize, dim: usize, device: &Device) -> Self {
        let proj = Conv2dConfig::new([in_chans, dim], [patch, patch])
            .with_stride([patch, patch])
            .with_initializer(Initializer::Zeros)
            .init(device);
        Self { proj }
    }

    /// `[B, 3, H, W]` → `[B, H/p, W/p, dim]` (channels last, as the blocks work).
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.proj.forward(x).permute([0, 2, 3, 1])
    }
}

/// The neck: 1×1 conv, LayerNorm2d, 3×3 conv, LayerNorm2d (state-dict keys `neck.0` … `neck.3`,
/// remapped by the weights crate to these names).
#[derive(Module, Debug)]
pub struct Neck {
    pub conv1: Conv2d,
    pub ln1: LayerNorm2d,
    pub conv2: Conv2d,
    pub ln2: LayerNorm2d,
}

impl Neck {
    pub fn new(dim: usize, out: usize, device: &Device) -> Self {
        let conv = |k: usize, c_in: usize, pad: usize| {
            Conv2dConfig::new([c_in, out], [k, k])
                .with_bias(false)
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
        Self {
            conv1: conv(1, dim, 0),
            ln1: LayerNorm2d::new(out, device),
            conv2: conv(3, out, 1),
            ln2: LayerNorm2d::new(out, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.ln1.forward(self.conv1.forward(x));
        self.ln2.forward(self.conv2.forward(x))
    }
}

/// A transformer block; `window_size == 0` means global attention.
#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: MlpBlock,
    #[module(skip)]
    pub window_size: usize,
}

impl Block {
    fn new(cfg: &VitConfig, window_size: usize, grid: usize, device: &Device) -> Self {
        let norm = || LayerNormConfig::new(cfg.embed_dim).with_epsilon(1e-6).init(device);
        let attn_size = if window_size == 0 { grid } else { window_size };
        Self {
            norm1: norm(),
            attn: Attention::new(cfg.embed_dim, cfg.num_heads, attn_size, device),
            norm2: norm(),
            mlp: MlpBlock::new(cfg.embed_dim, cfg.embed_dim * cfg.mlp_ratio, Activation::Gelu, device),
            window_size,
        }
    }

    /// # Shapes
    /// - x: `[B, H, W, C]` → `[B, H, W, C]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = x.clone();
        let x = self.norm1.forward(x);
        let x = if self.window_size > 0 {
            let [_, h, w, _] = x.dims();
            let (windows, padded) = window_partition(x, self.window_size);
            window_unpartition(self.attn.forward(windows), self.window_size, padded, [h, w])
        } else {
            self.attn.forward(x)
        };
        let x = shortcut + x;
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// Elements of attention scores computed at once (64 M = 256 MB of f32).
const SCORE_BUDGET: usize = 64 << 20;

/// Multi-head attention with decomposed relative position bias (`rel_pos_h`, `rel_pos_w`).
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    pub rel_pos_h: Param<Tensor<2>>,
    pub rel_pos_w: Param<Tensor<2>>,
    #[module(skip)]
    pub num_heads: usize,
}

impl Attention {
    fn new(dim: usize, num_heads: usize, input_size: usize, device: &Device) -> Self {
        let head_dim = dim / num_heads;
        Self {
            qkv: linear(dim, dim * 3, true, device),
            proj: linear(dim, dim, true, device),
            rel_pos_h: zeros_param([2 * input_size - 1, head_dim], device),
            rel_pos_w: zeros_param([2 * input_size - 1, head_dim], device),
            num_heads,
        }
    }

    /// # Shapes
    /// - x: `[B, H, W, C]` → `[B, H, W, C]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, w, c] = x.dims();
        let heads = self.num_heads;
        let hd = c / heads;
        let n = h * w;
        // [B, N, 3, heads, hd] → [3, B*heads, N, hd]
        let qkv = self.qkv.forward(x).reshape([b, n, 3, heads, hd]).permute([2, 0, 3, 1, 4]);
        let qkv = qkv.reshape([3, b * heads, n, hd]);
        let q = qkv.clone().slice([0..1]).reshape([b * heads, n, hd]);
        let k = qkv.clone().slice([1..2]).reshape([b * heads, n, hd]);
        let v = qkv.slice([2..3]).reshape([b * heads, n, hd]);

        // Global blocks would hold a [B·heads, 4096, 4096] score tensor (0.8 GB for vit_b, 1 GB for
        // vit_h) several times over; a few heads at a time keep the peak near SCORE_BUDGET.
        let per_item = n * n;
        let chunk = (SCORE_BUDGET / per_item).clamp(1, b * heads);
        let outs: Vec<Tensor<3>> = (0..b * heads)
            .step_by(chunk)
            .map(|start| {
                let end = (start + chunk).min(b * heads);
                let pick = |t: &Tensor<3>| t.clone().slice([start..end, 0..n, 0..hd]);
                self.attend(pick(&q), pick(&k), pick(&v), [h, w])
            })
            .collect();
        let out = if outs.len() == 1 { outs.into_iter().next().unwrap() } else { Tensor::cat(outs, 0) };
        let out = out.reshape([b, heads, h, w, hd]).permute([0, 2, 3, 1, 4]).reshape([b, h, w, c]);
        self.proj.forward(out)
    }

    /// Attention of one group of heads.
    ///
    /// # Shapes
    /// - q, k, v: `[B', N, hd]` → `[B', N, hd]`
    fn attend(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, size: [usize; 2]) -> Tensor<3> {
        let [_, _, hd] = q.dims();
        let scale = (hd as f64).powf(-0.5);
        let attn = q.clone().mul_scalar(scale).matmul(k.swap_dims(1, 2));
        let attn = self.add_decomposed_rel_pos(attn, q, size);
        softmax(attn, 2).matmul(v)
    }

    /// Adds `rel_h[q, kh(k)] + rel_w[q, kw(k)]` to the attention logits, where
    /// `rel_h = q · Rh[qh, kh]` and `rel_w = q · Rw[qw, kw]` (the reference's
    /// `add_decomposed_rel_pos`, for equal query and key sizes).
    ///
    /// # Shapes
    /// - attn: `[B', N, N]`, q: `[B', N, hd]` with `N = h·w` → `[B', N, N]`
    fn add_decomposed_rel_pos(&self, attn: Tensor<3>, q: Tensor<3>, [h, w]: [usize; 2]) -> Tensor<3> {
        let [bh, n, hd] = q.dims();
        let rh = relative_positions(self.rel_pos_h.val(), h); // [h, h, hd]
        let rw = relative_positions(self.rel_pos_w.val(), w); // [w, w, hd]
        let r_q = q.reshape([bh, h, w, hd]);
        // einsum("bhwc,hkc->bhwk"): batch over the query row.
        let rel_h = r_q
            .clone()
            .permute([1, 0, 2, 3])
            .reshape([h, bh * w, hd])
            .matmul(rh.swap_dims(1, 2))
            .reshape([h, bh, w, h])
            .permute([1, 0, 2, 3]);
        // einsum("bhwc,wkc->bhwk"): batch over the query column.
        let rel_w = r_q
            .permute([2, 0, 1, 3])
            .reshape([w, bh * h, hd])
            .matmul(rw.swap_dims(1, 2))
            .reshape([w, bh, h, w])
            .permute([1, 2, 0, 3]);
        let attn = attn.reshape([bh, h, w, h, w])
            + rel_h.reshape([bh, h, w, h, 1])
            + rel_w.reshape([bh, h, w, 1, w]);
        attn.reshape([bh, n, n])
    }
}

/// Gathers the relative-position table into `[size, size, C]` with entry `[i, j] = rel_pos[i - j + size - 1]`
/// (the reference's `get_rel_pos` when query and key sizes are equal and the table needs no resizing).
fn relative_positions(rel_pos: Tensor<2>, size: usize) -> Tensor<3> {
    let [len, c] = rel_pos.dims();
    assert_eq!(len, 2 * size - 1, "relative position table of length {len} for size {size}");
    let idx: Vec<i64> = (0..size)
        .flat_map(|i| (0..size).map(move |j| (i + size - 1 - j) as i64))
        .collect();
    let device = rel_pos.device();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [size * size]), &device);
    rel_pos.select(0, idx).reshape([size, size, c])
}

/// Splits `[B, H, W, C]` into non-overlapping windows, padding H and W with zeros to a multiple of
/// the window. Returns `[B·nW, ws, ws, C]` and the padded size.
fn window_partition(x: Tensor<4>, ws: usize) -> (Tensor<4>, [usize; 2]) {
    let [b, h, w, c] = x.dims();
    let (ph, pw) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
    let x = if ph > 0 || pw > 0 {
        x.pad([(0, 0), (0, ph), (0, pw), (0, 0)], burn::tensor::ops::PadMode::Constant(0.0))
    } else {
        x
    };
    let (hp, wp) = (h + ph, w + pw);
    let windows = x
        .reshape([b, hp / ws, ws, wp / ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b * (hp / ws) * (wp / ws), ws, ws, c]);
    (windows, [hp, wp])
}

/// Inverse of [`window_partition`], dropping the padding.
fn window_unpartition(windows: Tensor<4>, ws: usize, [hp, wp]: [usize; 2], [h, w]: [usize; 2]) -> Tensor<4> {
    let [nw, _, _, c] = windows.dims();
    let b = nw / ((hp / ws) * (wp / ws));
    let x = windows
        .reshape([b, hp / ws, wp / ws, ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b, hp, wp, c]);
    if hp > h || wp > w { x.slice([0..b, 0..h, 0..w, 0..c]) } else { x }
}
