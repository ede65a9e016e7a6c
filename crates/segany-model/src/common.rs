//! Small building blocks shared by the encoders and the decoder.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::{relu, softmax};
use burn::tensor::{Device, Tensor, TensorData};

use crate::kernels;

/// A `Linear` whose parameters start at zero: every model here is built to be loaded from a
/// checkpoint, so a random initialisation would only cost time.
pub(crate) fn linear(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(Initializer::Zeros)
        .init(device)
}

pub(crate) fn zeros_param<const D: usize>(shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::zeros(shape, device))
}

/// Activation functions used by the reference (`nn.GELU` is the exact, erf-based one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Gelu,
    Relu,
}

/// GELU, `x · Φ(x)` with the exact (erf) Φ of PyTorch's `nn.GELU()`.
///
/// On the CPU backend the tensor op evaluates `erf` with scalar libm calls, a fifth of the
/// encoder's time; there a fused kernel runs instead (see `kernels`). Other devices keep the
/// tensor op.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if device != Device::flex() {
        return burn::tensor::activation::gelu(x);
    }
    let shape = x.shape();
    let mut values = to_vec(x);
    kernels::gelu_in_place(&mut values);
    Tensor::from_data(TensorData::new(values, shape), &device)
}

/// The values of a float tensor, row-major.
pub(crate) fn to_vec<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 values")
}

impl Activation {
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Gelu => gelu(x),
            Activation::Relu => relu(x),
        }
    }
}

/// Channel-wise layer norm over `[B, C, H, W]` (the reference's `LayerNorm2d`).
///
/// Field names follow the state dict (`weight`, `bias`), unlike burn's `LayerNorm`.
#[derive(Module, Debug)]
pub struct LayerNorm2d {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    #[module(skip)]
    pub eps: f64,
}

impl LayerNorm2d {
    pub fn new(channels: usize, device: &Device) -> Self {
        Self { weight: zeros_param([channels], device), bias: zeros_param([channels], device), eps: 1e-6 }
    }

    /// # Shapes
    /// - x: `[B, C, H, W]` → `[B, C, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, c, _, _] = x.dims();
        let mean = x.clone().mean_dim(1);
        let centred = x - mean;
        let var = centred.clone().square().mean_dim(1);
        let normed = centred / var.add_scalar(self.eps).sqrt();
        normed * self.weight.val().reshape([1, c, 1, 1]) + self.bias.val().reshape([1, c, 1, 1])
    }
}

/// Two linear layers with an activation between them (`MLPBlock`: `lin1`, `lin2`).
#[derive(Module, Debug)]
pub struct MlpBlock {
    pub lin1: Linear,
    pub lin2: Linear,
    #[module(skip)]
    pub act: Activation,
}

impl MlpBlock {
    pub fn new(dim: usize, hidden: usize, act: Activation, device: &Device) -> Self {
        Self { lin1: linear(dim, hidden, true, device), lin2: linear(hidden, dim, true, device), act }
    }

    /// # Shapes
    /// - x: `[..., dim]` → `[..., dim]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.lin2.forward(self.act.forward(self.lin1.forward(x)))
    }
}

/// Scaled dot-product attention, `softmax(q kᵀ · scale) v`.
///
/// # Shapes
/// - q: `[B, H, Nq, C]`, k: `[B, H, Nk, C]`, v: `[B, H, Nk, Cv]` → `[B, H, Nq, Cv]`
pub(crate) fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [_, _, _, c] = q.dims();
    let scale = 1.0 / (c as f64).sqrt();
    let attn = q.mul_scalar(scale).matmul(k.swap_dims(2, 3));
    softmax(attn, 3).matmul(v)
}
