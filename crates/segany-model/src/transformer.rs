//! The two-way transformer of the mask decoder: prompt tokens and image tokens attend to each
//! other in turn.

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Tensor};

use crate::common::{Activation, MlpBlock, attention, linear};

/// Attention with an optional down-projection of the embedding size (`downsample_rate`).
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    #[module(skip)]
    pub num_heads: usize,
}

impl Attention {
    pub fn new(dim: usize, num_heads: usize, downsample_rate: usize, device: &Device) -> Self {
        let internal = dim / downsample_rate;
        assert!(internal.is_multiple_of(num_heads), "num_heads must divide the internal dimension");
        Self {
            q_proj: linear(dim, internal, true, device),
            k_proj: linear(dim, internal, true, device),
            v_proj: linear(dim, internal, true, device),
            out_proj: linear(internal, dim, true, device),
            num_heads,
        }
    }

    /// `[B, N, C]` → `[B, heads, N, C/heads]`
    fn separate_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, n, c] = x.dims();
        x.reshape([b, n, self.num_heads, c / self.num_heads]).swap_dims(1, 2)
    }

    /// # Shapes
    /// - q: `[B, Nq, C]`, k: `[B, Nk, C]`, v: `[B, Nk, C]` → `[B, Nq, C]`
    pub fn forward(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let q = self.separate_heads(self.q_proj.forward(q));
        let k = self.separate_heads(self.k_proj.forward(k));
        let v = self.separate_heads(self.v_proj.forward(v));
        let out = attention(q, k, v);
        let [b, h, n, c] = out.dims();
        self.out_proj.forward(out.swap_dims(1, 2).reshape([b, n, h * c]))
    }
}

/// Self-attention of the tokens, cross-attention tokens → image, MLP, cross-attention image → tokens.
#[derive(Module, Debug)]
pub struct TwoWayAttentionBlock {
    pub self_attn: Attention,
    pub norm1: LayerNorm,
    pub cross_attn_token_to_image: Attention,
    pub norm2: LayerNorm,
    pub mlp: MlpBlock,
    pub norm3: LayerNorm,
    pub norm4: LayerNorm,
    pub cross_attn_image_to_token: Attention,
    #[module(skip)]
    pub skip_first_layer_pe: bool,
}

impl TwoWayAttentionBlock {
    fn new(dim: usize, heads: usize, mlp_dim: usize, downsample: usize, skip_pe: bool, device: &Device) -> Self {
        let norm = || LayerNormConfig::new(dim).init(device);
        Self {
            self_attn: Attention::new(dim, heads, 1, device),
            norm1: norm(),
            cross_attn_token_to_image: Attention::new(dim, heads, downsample, device),
            norm2: norm(),
            mlp: MlpBlock::new(dim, mlp_dim, Activation::Relu, device),
            norm3: norm(),
            norm4: norm(),
            cross_attn_image_to_token: Attention::new(dim, heads, downsample, device),
            skip_first_layer_pe: skip_pe,
        }
    }

    /// # Shapes
    /// - queries, query_pe: `[B, Nq, C]`; keys, key_pe: `[B, Nk, C]` → (queries, keys)
    pub fn forward(
        &self,
        queries: Tensor<3>,
        keys: Tensor<3>,
        query_pe: Tensor<3>,
        key_pe: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries.clone(), queries.clone(), queries)
        } else {
            let q = queries.clone() + query_pe.clone();
            queries.clone() + self.self_attn.forward(q.clone(), q, queries)
        };
        let queries = self.norm1.forward(queries);

        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe;
        let queries = queries + self.cross_attn_token_to_image.forward(q, k.clone(), keys.clone());
        let queries = self.norm2.forward(queries);

        let queries = queries.clone() + self.mlp.forward(queries);
        let queries = self.norm3.forward(queries);

        let q = queries.clone() + query_pe;
        let keys = keys + self.cross_attn_image_to_token.forward(k, q, queries.clone());
        let keys = self.norm4.forward(keys);
        (queries, keys)
    }
}

#[derive(Module, Debug)]
pub struct TwoWayTransformer {
    pub layers: Vec<TwoWayAttentionBlock>,
    pub final_attn_token_to_image: Attention,
    pub norm_final_attn: LayerNorm,
}

impl TwoWayTransformer {
    pub fn new(depth: usize, dim: usize, heads: usize, mlp_dim: usize, device: &Device) -> Self {
        const DOWNSAMPLE: usize = 2;
        Self {
            layers: (0..depth)
                .map(|i| TwoWayAttentionBlock::new(dim, heads, mlp_dim, DOWNSAMPLE, i == 0, device))
                .collect(),
            final_attn_token_to_image: Attention::new(dim, heads, DOWNSAMPLE, device),
            norm_final_attn: LayerNormConfig::new(dim).init(device),
        }
    }

    /// # Shapes
    /// - image_embedding, image_pe: `[B, C, h, w]`; point_embedding: `[B, T, C]`
    /// - → (tokens `[B, T, C]`, image tokens `[B, h·w, C]`)
    pub fn forward(
        &self,
        image_embedding: Tensor<4>,
        image_pe: Tensor<4>,
        point_embedding: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let flatten = |x: Tensor<4>| {
            let [b, c, h, w] = x.dims();
            x.reshape([b, c, h * w]).swap_dims(1, 2)
        };
        let image_embedding = flatten(image_embedding);
        let image_pe = flatten(image_pe);
        let mut queries = point_embedding.clone();
        let mut keys = image_embedding;
        for layer in &self.layers {
            (queries, keys) = layer.forward(queries, keys, point_embedding.clone(), image_pe.clone());
        }
        let q = queries.clone() + point_embedding;
        let k = keys.clone() + image_pe;
        let queries = queries + self.final_attn_token_to_image.forward(q, k, keys.clone());
        (self.norm_final_attn.forward(queries), keys)
    }
}
