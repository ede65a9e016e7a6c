#!/usr/bin/env python3
"""Generate reference fixtures for segany from the official ``segment_anything`` code.

The reference model is built directly from ``segment_anything.modeling`` classes
(no official checkpoint is needed), every parameter and persistent buffer is
re-drawn from a seeded RNG with scales that keep activations O(1), and then the
stock ``SamPredictor`` is run on PNG images exactly as a user would run it. All
inputs and outputs are written as ``.npy`` / ``.json`` / ``.png`` / ``.pth`` so
the Rust port can load the checkpoint and compare every stage.

Usage::

    python scripts/make_fixtures.py --config tiny  --out tests/fixtures/tiny
    python scripts/make_fixtures.py --config vit_b --out fixtures-large/vit_b
    python scripts/make_fixtures.py --config tiny_vit_t --out tests/fixtures/tiny_vit_t
    python scripts/make_fixtures.py --config vit_t --out fixtures-large/vit_t

``tiny_vit_t`` / ``vit_t`` are MobileSAM (``mobile_sam``, TinyViT encoder):
``vit_t`` is exactly ``build_sam_vit_t``; ``tiny_vit_t`` is the same classes
shrunk (see ``build_tiny_vit_t``) with the ``tiny`` decoder, and writes only
image.png, no dense_pe / logits / per-stage decoder tensors. Both also write
``<stem>_encoder_stages.json`` (TinyViT intermediate-tensor summaries).

Run it with the reference venv (``scripts/setup_reference_venv.sh``).

Output layout (``<stem>`` is ``image``, ``image_large`` ...)::

    checkpoint.pth               plain state dict, official key layout
    config.json                  all architecture numbers
    keys.txt                     "<key> <shape>" per state-dict entry
    <stem>.png                   RGB uint8 source image
    <stem>_resized.png           uint8 [h', w', 3]  ResizeLongestSide.apply_image
                                 (lossless PNG: a third of the .npy's size)
    <stem>_input_stats.json      checks of the normalised, padded [1,3,S,S] input
    <stem>_embedding.npy         f32 [1, C, 64, 64] predictor.features
    dense_pe.npy                 f32 [1, C, 64, 64] prompt_encoder.get_dense_pe()
    cases.json                   prompts + sizes + metadata
    case_<name>_masks.npy        uint8 [N, H, W]   (0/1) at original size
    case_<name>_iou.npy          f32 [N]
    case_<name>_low_res.npy      f32 [N, 256, 256]
    case_<name>_logits.npy       f32 [N, H, W]      (tiny only)
    case_<name>_sparse.npy       f32 [1, n, C]      (tiny only)
    case_<name>_dense.npy        f32 [1, C, 64, 64] (tiny; one_point, mask_input)
    case_<name>_tf_{src,tokens,hs,keys}.npy    (tiny; one_point, box_point)
                                 src f32 [B, C, 64, 64], tokens/hs [B, T, C],
                                 keys [B, 64*64, C]; the transformer's pos input is
                                 dense_pe (asserted, not written)
    case_<name>_decoder_all_iou.npy   f32 [1, 4]            (tiny; one_point, box_point)
    case_one_point_decoder_all_masks.npy f32 [1, 4, 256, 256] (tiny)
    case_mask_input_mask_input.npy f32 [1, 256, 256]
    <stem>_encoder_stages.json   (tiny_vit_t, vit_t) TinyViT stage summaries

Shapes: ``N`` = 3 for multimask cases, 1 otherwise; ``H, W`` = original image
size; ``C`` = prompt embedding dim; ``n`` = number of sparse tokens (points,
+1 padding point when there is no box, +2 for a box corner pair); ``T`` =
1 (iou) + 4 (mask) + n tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image
from torch import nn

from segment_anything import SamPredictor
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.utils.transforms import ResizeLongestSide

# MobileSAM (``mobilesam-mirror``). Importing it emits timm deprecation warnings
# and re-registers timm's ``tiny_vit_*`` model names; both are harmless here.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import mobile_sam
    from mobile_sam import SamPredictor as MobileSamPredictor
    from mobile_sam import build_sam_vit_t
    from mobile_sam.modeling import MaskDecoder as MobileMaskDecoder
    from mobile_sam.modeling import PromptEncoder as MobilePromptEncoder
    from mobile_sam.modeling import Sam as MobileSam
    from mobile_sam.modeling import TinyViT
    from mobile_sam.modeling import TwoWayTransformer as MobileTwoWayTransformer
    from mobile_sam.modeling.common import LayerNorm2d as MobileLayerNorm2d
    from mobile_sam.modeling.tiny_vit_sam import Attention as TinyViTAttention
    from mobile_sam.modeling.tiny_vit_sam import LayerNorm2d as TinyViTLayerNorm2d
    from mobile_sam.utils.transforms import ResizeLongestSide as MobileResizeLongestSide

LAYER_NORM_2D_TYPES = (LayerNorm2d, MobileLayerNorm2d, TinyViTLayerNorm2d)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pil_resize_ref  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_IMAGES = Path(os.environ.get("SEGANY_SHARED_IMAGES", "/work/shared/images"))

PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]


# --------------------------------------------------------------------------
# Model configs. A config is a small function returning (model, config dict);
# new variants (e.g. MobileSAM ``vit_t``) only need a new entry in CONFIGS.
# --------------------------------------------------------------------------


def _build_sam(
    *,
    name: str,
    encoder_embed_dim: int,
    encoder_depth: int,
    encoder_num_heads: int,
    encoder_global_attn_indexes: tuple[int, ...],
    prompt_embed_dim: int,
    mask_in_chans: int,
    decoder_depth: int,
    decoder_mlp_dim: int,
    decoder_num_heads: int,
    iou_head_depth: int,
    iou_head_hidden_dim: int,
    num_multimask_outputs: int = 3,
    img_size: int = 1024,
    patch_size: int = 16,
    mlp_ratio: float = 4.0,
    window_size: int = 14,
    rel_pos_zero_init: bool = True,
) -> tuple[Sam, dict[str, Any]]:
    """Build a SAM (ViT image encoder) exactly like ``build_sam._build_sam``.

    The neck's ``out_chans`` is ``prompt_embed_dim``, as in the official code.
    Returns the model in eval mode and a JSON-serialisable config dict.
    """
    image_embedding_size = img_size // patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=3,
            embed_dim=encoder_embed_dim,
            depth=encoder_depth,
            num_heads=encoder_num_heads,
            mlp_ratio=mlp_ratio,
            out_chans=prompt_embed_dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            act_layer=nn.GELU,
            use_abs_pos=True,
            use_rel_pos=True,
            rel_pos_zero_init=rel_pos_zero_init,
            window_size=window_size,
            global_attn_indexes=tuple(encoder_global_attn_indexes),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(image_embedding_size, image_embedding_size),
            input_image_size=(img_size, img_size),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=decoder_depth,
                embedding_dim=prompt_embed_dim,
                mlp_dim=decoder_mlp_dim,
                num_heads=decoder_num_heads,
            ),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
        ),
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
    )
    sam.eval()
    config = {
        "name": name,
        "encoder": {
            "type": "vit",
            "img_size": img_size,
            "patch_size": patch_size,
            "in_chans": 3,
            "embed_dim": encoder_embed_dim,
            "depth": encoder_depth,
            "num_heads": encoder_num_heads,
            "mlp_ratio": mlp_ratio,
            "out_chans": prompt_embed_dim,
            "qkv_bias": True,
            "use_abs_pos": True,
            "use_rel_pos": True,
            "window_size": window_size,
            "global_attn_indexes": list(encoder_global_attn_indexes),
            "layer_norm_eps": 1e-6,
        },
        "prompt_embed_dim": prompt_embed_dim,
        "mask_in_chans": mask_in_chans,
        "image_embedding_size": [image_embedding_size, image_embedding_size],
        "input_image_size": [img_size, img_size],
        "decoder": {
            "transformer_dim": prompt_embed_dim,
            "transformer_depth": decoder_depth,
            "transformer_mlp_dim": decoder_mlp_dim,
            "transformer_num_heads": decoder_num_heads,
            "attention_downsample_rate": 2,
            "layer_norm_eps": 1e-5,  # nn.LayerNorm default in TwoWayTransformer
            "layer_norm2d_eps": 1e-6,  # LayerNorm2d in output_upscaling
            "iou_head_depth": iou_head_depth,
            "iou_head_hidden_dim": iou_head_hidden_dim,
            "num_multimask_outputs": num_multimask_outputs,
        },
        "pixel_mean": PIXEL_MEAN,
        "pixel_std": PIXEL_STD,
        "mask_threshold": float(Sam.mask_threshold),
    }
    return sam, config


def build_tiny() -> tuple[Sam, dict[str, Any]]:
    """Tiny ViT SAM: embed 32, depth 3, 2 heads, global block 1, prompt dim 24."""
    return _build_sam(
        name="tiny",
        encoder_embed_dim=32,
        encoder_depth=3,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        prompt_embed_dim=24,
        mask_in_chans=16,
        decoder_depth=2,
        decoder_mlp_dim=48,
        decoder_num_heads=2,
        iou_head_depth=3,
        iou_head_hidden_dim=32,
        rel_pos_zero_init=False,
    )


def build_vit_b() -> tuple[Sam, dict[str, Any]]:
    """Exactly the architecture of ``build_sam_vit_b`` (no checkpoint)."""
    return _build_sam(
        name="vit_b",
        encoder_embed_dim=768,
        encoder_depth=12,
        encoder_num_heads=12,
        encoder_global_attn_indexes=(2, 5, 8, 11),
        prompt_embed_dim=256,
        mask_in_chans=16,
        decoder_depth=2,
        decoder_mlp_dim=2048,
        decoder_num_heads=8,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )


# --------------------------------------------------------------------------
# MobileSAM (TinyViT image encoder)
# --------------------------------------------------------------------------

# ``build_sam_vit_t``'s TinyViT numbers.
VIT_T_ENCODER = dict(
    embed_dims=[64, 128, 160, 320],
    depths=[2, 2, 6, 2],
    num_heads=[2, 4, 5, 10],
    window_sizes=[7, 7, 14, 7],
    mlp_ratio=4.0,
    mbconv_expand_ratio=4.0,
    local_conv_size=3,
    num_classes=1000,
)


def official_merging_stride(out_dim: int) -> int:
    """``tiny_vit_sam.PatchMerging``: the depthwise conv2 has stride 1 iff
    ``out_dim`` is 320, 448 or 576 (the last stage of the 5m/11m/21m models),
    i.e. the rule keys on the channel count, not on the stage index."""
    return 1 if out_dim in (320, 448, 576) else 2


def tinyvit_geometry(img_size: int, embed_dims: list[int], window_sizes: list[int]) -> dict[str, Any]:
    """Resolutions as ``TinyViT.__init__`` computes them (SAM variant).

    Stem: two stride-2 3x3 convs -> img/4. Layer i's ``input_resolution`` is
    (img/4) // 2**i for i < 3 and (img/4) // 2**2 for i == 3 (the last
    PatchMerging keeps the resolution), so 1024 -> 256, 128, 64, 64.
    """
    p = img_size // 4
    res = [p // (2 ** (i - 1 if i == 3 else i)) for i in range(len(embed_dims))]
    pads, windows = [], []
    for i, r in enumerate(res):
        ws = window_sizes[i]
        pad = (ws - r % ws) % ws
        pads.append(pad if i > 0 else None)
        windows.append((r + pad) // ws if i > 0 else None)
    return {
        "patches_resolution": p,
        "layer_input_resolution": res,
        "window_pad": pads,  # bottom/right zero padding per BasicLayer (None: ConvLayer)
        "windows_per_side": windows,
    }


def _build_mobile_sam(
    *,
    name: str,
    embed_dims: list[int],
    depths: list[int],
    num_heads: list[int],
    window_sizes: list[int],
    prompt_embed_dim: int,
    mask_in_chans: int,
    decoder_depth: int,
    decoder_mlp_dim: int,
    decoder_num_heads: int,
    iou_head_depth: int,
    iou_head_hidden_dim: int,
    num_multimask_outputs: int = 3,
    img_size: int = 1024,
    mlp_ratio: float = 4.0,
    mbconv_expand_ratio: float = 4.0,
    local_conv_size: int = 3,
    num_classes: int = 1000,
    layer_lr_decay: float = 0.8,
    official: bool = False,
) -> tuple[MobileSam, dict[str, Any]]:
    """Build a MobileSAM like ``mobile_sam.build_sam_vit_t``.

    ``official=True`` calls ``build_sam_vit_t()`` itself (the numbers must then
    be VIT_T_ENCODER / 256). Otherwise the same classes are instantiated with
    the given numbers, plus two patches the official code needs for sizes it
    hard-codes:

    * ``TinyViT.neck`` is hard-coded to 256 channels; it is rebuilt with the
      identical structure (Conv1x1 no bias, LayerNorm2d, Conv3x3 pad 1 no bias,
      LayerNorm2d -- same class, eps 1e-6) with ``prompt_embed_dim`` channels.
    * ``PatchMerging`` uses stride 1 only for out_dim in {320, 448, 576}; the
      SAM variant needs stride 1 in the *last* merging (64x64 output, which
      ``forward_features`` hard-codes), so conv2's stride is set per stage.
    """
    assert img_size == 1024, "TinyViT.forward_features hard-codes a 64x64 output"
    image_embedding_size = img_size // 16
    strides = [2] * (len(embed_dims) - 2) + [1]  # merging after layer 0, 1, 2
    official_strides = [official_merging_stride(embed_dims[i + 1]) for i in range(len(embed_dims) - 1)]
    if official:
        assert (embed_dims, depths, num_heads, window_sizes) == (
            VIT_T_ENCODER["embed_dims"], VIT_T_ENCODER["depths"],
            VIT_T_ENCODER["num_heads"], VIT_T_ENCODER["window_sizes"])
        assert prompt_embed_dim == 256 and (decoder_mlp_dim, decoder_num_heads, iou_head_hidden_dim) == (2048, 8, 256)
        assert (mlp_ratio, mbconv_expand_ratio, local_conv_size, num_classes) == (4.0, 4.0, 3, 1000)
        sam = build_sam_vit_t()
    else:
        encoder = TinyViT(
            img_size=img_size,
            in_chans=3,
            num_classes=num_classes,
            embed_dims=list(embed_dims),
            depths=list(depths),
            num_heads=list(num_heads),
            window_sizes=list(window_sizes),
            mlp_ratio=mlp_ratio,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_checkpoint=False,
            mbconv_expand_ratio=mbconv_expand_ratio,
            local_conv_size=local_conv_size,
            layer_lr_decay=layer_lr_decay,
        )
        if prompt_embed_dim != 256:
            c = prompt_embed_dim
            encoder.neck = nn.Sequential(
                nn.Conv2d(embed_dims[-1], c, kernel_size=1, bias=False),
                TinyViTLayerNorm2d(c),
                nn.Conv2d(c, c, kernel_size=3, padding=1, bias=False),
                TinyViTLayerNorm2d(c),
            )
        sam = MobileSam(
            image_encoder=encoder,
            prompt_encoder=MobilePromptEncoder(
                embed_dim=prompt_embed_dim,
                image_embedding_size=(image_embedding_size, image_embedding_size),
                input_image_size=(img_size, img_size),
                mask_in_chans=mask_in_chans,
            ),
            mask_decoder=MobileMaskDecoder(
                num_multimask_outputs=num_multimask_outputs,
                transformer=MobileTwoWayTransformer(
                    depth=decoder_depth,
                    embedding_dim=prompt_embed_dim,
                    mlp_dim=decoder_mlp_dim,
                    num_heads=decoder_num_heads,
                ),
                transformer_dim=prompt_embed_dim,
                iou_head_depth=iou_head_depth,
                iou_head_hidden_dim=iou_head_hidden_dim,
            ),
            pixel_mean=PIXEL_MEAN,
            pixel_std=PIXEL_STD,
        )
    enc = sam.image_encoder
    for i, s_ in enumerate(strides):
        conv = enc.layers[i].downsample.conv2.c
        if conv.stride != (s_, s_):
            conv.stride = (s_, s_)
    assert enc.layers[-1].downsample is None
    assert [enc.layers[i].downsample.conv2.c.stride[0] for i in range(len(strides))] == strides
    sam.eval()
    geom = tinyvit_geometry(img_size, embed_dims, window_sizes)
    config = {
        "name": name,
        "encoder": {
            "type": "tiny_vit",
            "img_size": img_size,
            "in_chans": 3,
            "embed_dims": list(embed_dims),
            "depths": list(depths),
            "num_heads": list(num_heads),
            "window_sizes": list(window_sizes),
            "mlp_ratio": mlp_ratio,
            "mbconv_expand_ratio": mbconv_expand_ratio,
            "local_conv_size": local_conv_size,
            "attn_ratio": 1,
            "num_classes": num_classes,  # size of the unused classifier head (norm_head/head)
            "out_chans": prompt_embed_dim,
            "patch_merging_strides": strides,
            "official_rule_patch_merging_strides": official_strides,
            "neck_patched": (not official) and prompt_embed_dim != 256,
            **geom,
            "batch_norm_eps": 1e-5,
            "layer_norm_eps": 1e-5,  # attn.norm, mlp.norm (nn.LayerNorm default)
            "neck_layer_norm2d_eps": 1e-6,
            "gelu": "exact (erf)",
        },
        "prompt_embed_dim": prompt_embed_dim,
        "mask_in_chans": mask_in_chans,
        "image_embedding_size": [image_embedding_size, image_embedding_size],
        "input_image_size": [img_size, img_size],
        "decoder": {
            "transformer_dim": prompt_embed_dim,
            "transformer_depth": decoder_depth,
            "transformer_mlp_dim": decoder_mlp_dim,
            "transformer_num_heads": decoder_num_heads,
            "attention_downsample_rate": 2,
            "layer_norm_eps": 1e-5,
            "layer_norm2d_eps": 1e-6,
            "iou_head_depth": iou_head_depth,
            "iou_head_hidden_dim": iou_head_hidden_dim,
            "num_multimask_outputs": num_multimask_outputs,
        },
        "pixel_mean": PIXEL_MEAN,
        "pixel_std": PIXEL_STD,
        "mask_threshold": float(MobileSam.mask_threshold),
    }
    return sam, config


def build_tiny_vit_t() -> tuple[MobileSam, dict[str, Any]]:
    """Shrunk MobileSAM: TinyViT dims [8, 16, 24, 32], depths [2, 2, 1, 1]
    (two blocks in the MBConv stage and the first attention stage, so block
    chaining is covered), heads [1, 2, 3, 4] (head dim 8), windows
    [7, 7, 14, 7] (vit_t's); neck/prompt dim 24 and the ``tiny`` decoder
    (depth 2, mlp 48, 2 heads, iou hidden 32, mask_in_chans 16). The unused
    classifier head keeps num_classes=1000 as in build_sam_vit_t."""
    return _build_mobile_sam(
        name="tiny_vit_t",
        embed_dims=[8, 16, 24, 32],
        depths=[2, 2, 1, 1],
        num_heads=[1, 2, 3, 4],
        window_sizes=[7, 7, 14, 7],
        prompt_embed_dim=24,
        mask_in_chans=16,
        decoder_depth=2,
        decoder_mlp_dim=48,
        decoder_num_heads=2,
        iou_head_depth=3,
        iou_head_hidden_dim=32,
    )


def build_vit_t() -> tuple[MobileSam, dict[str, Any]]:
    """Exactly ``mobile_sam.build_sam_vit_t()`` (no checkpoint)."""
    return _build_mobile_sam(
        name="vit_t",
        prompt_embed_dim=256,
        mask_in_chans=16,
        decoder_depth=2,
        decoder_mlp_dim=2048,
        decoder_num_heads=8,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        official=True,
        **{k: v for k, v in VIT_T_ENCODER.items()},
    )


@dataclass
class FixtureSpec:
    """What to generate for one config, besides the model itself."""

    build: Callable[[], tuple[Sam, dict[str, Any]]]
    make_images: Callable[[Path, int], list[str]]  # writes PNGs, returns their file names
    case_image: str = "image.png"
    capture_stages: bool = False  # per-stage tensors via hooks
    save_logits: bool = False  # upscaled logits at original size
    embed_images: Optional[list[str]] = None  # images to embed; None = all
    preprocess_only_images: list[str] = field(default_factory=list)
    mobile: bool = False  # MobileSAM: mobile_sam's SamPredictor / transforms
    save_dense_pe: bool = True
    encoder_stage_stats: bool = False  # <stem>_encoder_stages.json (TinyViT)


# --------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------


def synth_image(width: int, height: int, seed: int, noise_block: Optional[int] = None) -> np.ndarray:
    """Deterministic structured test image.

    A colour gradient with four filled shapes (two ellipses, two rectangles) at
    fixed *relative* positions plus mild uniform integer noise in [-3, 3]. The
    noise is drawn per ``noise_block x noise_block`` tile (default: about 1/300
    of the short side, at least 1 pixel) so large PNGs stay small enough to
    commit.

    Returns:
        uint8 [height, width, 3].
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    u = (xs + 0.5) / width  # pixel centres in [0, 1]
    v = (ys + 0.5) / height
    img = np.stack(
        [40.0 + 150.0 * u, 60.0 + 120.0 * v, 100.0 + 80.0 * (1.0 - 0.5 * (u + v))], axis=-1
    )

    def ellipse(cx, cy, rx, ry):
        return ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 <= 1.0

    def rect(x0, y0, x1, y1):
        return (u >= x0) & (u < x1) & (v >= y0) & (v < y1)

    shapes = [
        (ellipse(0.36, 0.45, 0.20, 0.26), (220, 60, 50)),
        (rect(0.55, 0.08, 0.92, 0.42), (40, 180, 90)),
        (ellipse(0.76, 0.72, 0.15, 0.19), (250, 220, 40)),
        (rect(0.06, 0.66, 0.26, 0.93), (30, 40, 160)),
    ]
    for mask, colour in shapes:
        img[mask] = colour
    if noise_block is None:
        noise_block = max(1, round(min(width, height) / 300))
    rng = np.random.default_rng(seed)
    nb = noise_block
    tiles = rng.integers(-3, 4, size=(-(-height // nb), -(-width // nb), 3))
    noise = np.repeat(np.repeat(tiles, nb, axis=0), nb, axis=1)[:height, :width]
    img = img + noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def save_png(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(path, optimize=True)


def load_rgb(path: Path) -> np.ndarray:
    """Load an image exactly as a SamPredictor user would: uint8 [H, W, 3]."""
    return np.array(Image.open(path).convert("RGB"))


def tiny_images(out: Path, seed: int) -> list[str]:
    """173x117 (upscaled by preprocessing), 1031x683 (downscaled), and a
    40x1100 tall strip (only for the resize pass-order check)."""
    save_png(out / "image.png", synth_image(173, 117, seed))
    save_png(out / "image_large.png", synth_image(1031, 683, seed + 1))
    save_png(out / "image_tall.png", synth_image(40, 1100, seed + 2))
    return ["image.png", "image_large.png", "image_tall.png"]


def tiny_vit_t_images(out: Path, seed: int) -> list[str]:
    """Only ``tiny``'s 173x117 image (identical bytes for the same seed)."""
    save_png(out / "image.png", synth_image(173, 117, seed))
    return ["image.png"]


def vit_b_images(out: Path, seed: int) -> list[str]:
    """A real photo centre-cropped to 1283:851 and resized to 1283x851 (LANCZOS)."""
    del seed
    src = None
    for name in ("dogs.jpg", "truck.jpg", "dog.jpg", "groceries.jpg"):
        if (SHARED_IMAGES / name).exists():
            src = SHARED_IMAGES / name
            break
    if src is None:
        raise FileNotFoundError(f"no source jpg in {SHARED_IMAGES}")
    im = Image.open(src).convert("RGB")
    tw, th = 1283, 851
    w, h = im.size
    if w * th > h * tw:  # too wide: crop width
        cw, ch = round(h * tw / th), h
    else:
        cw, ch = w, round(w * th / tw)
    left, top = (w - cw) // 2, (h - ch) // 2
    im = im.crop((left, top, left + cw, top + ch)).resize((tw, th), Image.LANCZOS)
    save_png(out / "image.png", np.array(im))
    print(f"  image from {src.name}: crop {cw}x{ch}+{left}+{top} -> {tw}x{th}")
    return ["image.png"]


# --------------------------------------------------------------------------
# Randomisation
# --------------------------------------------------------------------------


@torch.no_grad()
def randomize_(sam: Sam) -> list[str]:
    """Re-draw every parameter and persistent buffer from the global torch RNG.

    * Linear / Conv2d weight ~ N(0, 1/sqrt(fan_in)), ConvTranspose2d likewise
      with fan_in = in_channels * prod(kernel) / prod(stride) (= in_channels
      for SAM's k=s=2 upsamplers); every bias ~ N(0, 0.1).
    * LayerNorm / LayerNorm2d weight ~ U(0.5, 1.5), bias ~ N(0, 0.1).
    * Embedding weights ~ N(0, 1).
    * ``pos_embed``, ``rel_pos_h``, ``rel_pos_w`` ~ N(0, 0.5).
    * ``pe_layer.positional_encoding_gaussian_matrix`` (buffer) ~ N(0, 1).
    * BatchNorm2d (TinyViT's Conv2d_BN): weight ~ U(0.5, 1.5), bias ~ N(0, 0.1),
      running_mean ~ N(0, 0.1), running_var ~ U(0.5, 1.5); ``num_batches_tracked``
      is left as constructed.
    * TinyViT ``attention_biases`` ~ N(0, 0.5); the integer
      ``attention_bias_idxs`` buffer (geometry, not persistent) is left alone.

    Modules of the ViT SAM draw in the same order as before MobileSAM support
    was added, so ``tiny`` / ``vit_b`` fixtures are unchanged.

    Returns the state-dict keys that were randomised (in draw order).
    """
    done: list[str] = []

    def bias_(prefix: str, b: Optional[torch.Tensor]) -> None:
        if b is not None:
            b.normal_(0.0, 0.1)
            done.append(f"{prefix}.bias")

    for name, m in sam.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()  # in_features, or in/groups * kh * kw
            m.weight.normal_(0.0, 1.0 / math.sqrt(fan_in))
            done.append(f"{name}.weight")
            bias_(name, m.bias)
        elif isinstance(m, nn.ConvTranspose2d):
            kh, kw = m.kernel_size
            sh, sw = m.stride
            fan_in = m.in_channels * kh * kw / (sh * sw)
            m.weight.normal_(0.0, 1.0 / math.sqrt(fan_in))
            done.append(f"{name}.weight")
            bias_(name, m.bias)
        elif isinstance(m, (nn.LayerNorm,) + LAYER_NORM_2D_TYPES):
            m.weight.uniform_(0.5, 1.5)
            done.append(f"{name}.weight")
            bias_(name, m.bias)
        elif isinstance(m, nn.Embedding):
            m.weight.normal_(0.0, 1.0)
            done.append(f"{name}.weight")
        elif isinstance(m, nn.BatchNorm2d):
            assert m.affine and m.track_running_stats
            m.weight.uniform_(0.5, 1.5)
            done.append(f"{name}.weight")
            bias_(name, m.bias)
            m.running_mean.normal_(0.0, 0.1)
            done.append(f"{name}.running_mean")
            m.running_var.uniform_(0.5, 1.5)
            done.append(f"{name}.running_var")
    for name, p in sam.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("pos_embed", "rel_pos_h", "rel_pos_w", "attention_biases"):
            p.normal_(0.0, 0.5)
            done.append(name)
    for name, b in sam.named_buffers():
        if name.endswith("positional_encoding_gaussian_matrix"):
            b.normal_(0.0, 1.0)
            done.append(name)
    return done


KEEP_AS_CONSTRUCTED = ("num_batches_tracked",)  # integer state-dict buffers


def check_randomized(sam: Sam, before: dict[str, torch.Tensor], done: list[str]) -> None:
    """Assert every float state-dict tensor was randomised and differs from its
    init; integer buffers (``num_batches_tracked``) must be untouched.

    Also checks the non-persistent TinyViT buffers: ``attention_bias_idxs``
    must be the constructed geometry table (idx[p, q] = |dy| * ws + |dx|) and
    the eval-mode cache ``ab`` must equal ``attention_biases[:, idxs]`` (it is
    only refreshed by ``.eval()``, so the caller must re-run it after
    randomising or loading).
    """
    sd = sam.state_dict()
    keep = sorted(k for k in sd if k.rsplit(".", 1)[-1] in KEEP_AS_CONSTRUCTED)
    for k in keep:
        assert not sd[k].is_floating_point() and torch.equal(sd[k], before[k]), k
    missing = sorted(set(sd) - set(done) - set(keep))
    assert not missing, f"state-dict entries not randomised: {missing}"
    assert len(done) == len(set(done)), "some tensor was randomised twice"
    assert not set(done) & set(keep)
    for name, m in sam.named_modules():
        if isinstance(m, TinyViTAttention):
            ws = int(round(math.sqrt(m.attention_bias_idxs.shape[0])))
            yy, xx = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
            yy, xx = yy.reshape(-1), xx.reshape(-1)
            want = (yy[:, None] - yy[None]).abs() * ws + (xx[:, None] - xx[None]).abs()
            assert torch.equal(m.attention_bias_idxs, want), name
            assert m.attention_biases.shape[1] == ws * ws, name
            assert f"{name}.attention_bias_idxs" not in sd and f"{name}.ab" not in sd
            assert torch.equal(m.ab, m.attention_biases[:, m.attention_bias_idxs]), \
                f"{name}.ab is stale: call .eval() after changing attention_biases"
    for k, v in sd.items():
        if k in keep:
            continue
        assert v.is_floating_point(), k
        assert torch.isfinite(v).all(), k
        assert not torch.all(v == 0), f"{k} is all zeros"
        assert not torch.all(v == 1), f"{k} is all ones"
        assert not torch.equal(v, before[k]), f"{k} unchanged by randomisation"
        if v.numel() > 1:
            assert v.std() > 0, f"{k} is constant"


# --------------------------------------------------------------------------
# Prompt cases
# --------------------------------------------------------------------------


def make_cases(width: int, height: int, image: str) -> list[dict[str, Any]]:
    """Prompt cases in original-image pixel coordinates (x, y), relative to size.

    Coordinates mix integer and fractional offsets (.5, .25, .75).
    """

    def pt(fx: float, fy: float, ox: float = 0.0, oy: float = 0.0) -> list[float]:
        return [float(math.floor(fx * width) + ox), float(math.floor(fy * height) + oy)]

    p_main = pt(0.36, 0.45, 0.5, 0.0)  # inside the big ellipse
    box = [
        float(math.floor(0.18 * width)),
        float(math.floor(0.22 * height) + 0.5),
        float(math.floor(0.62 * width) + 0.5),
        float(math.floor(0.78 * height)),
    ]

    def case(name, points=None, labels=None, box=None, mask_input=None, multimask=True):
        return {
            "name": name,
            "points": points,
            "labels": labels,
            "box": box,
            "mask_input": mask_input,
            "multimask": multimask,
            "image": image,
        }

    return [
        case("one_point", [p_main], [1]),
        case("two_points", [p_main, pt(0.78, 0.30, 0.0, 0.5)], [1, 0]),
        case("box", box=box, multimask=False),
        case("box_point", [pt(0.40, 0.52, 0.25, 0.75)], [1], box=box, multimask=False),
        case("mask_input", [p_main], [1], mask_input="case_mask_input_mask_input.npy"),
        case(
            "three_points_single",
            [p_main, pt(0.80, 0.72, 0.5, 0.5), pt(0.10, 0.15)],
            [1, 1, 0],
            multimask=False,
        ),
    ]


class StageCapture:
    """Forward hooks recording intermediate decoder tensors of the next predict().

    Records:
      sparse [B, n, C], dense [B, C, h, w]      prompt_encoder outputs
      tf_src [B, C, h, w], tf_pos [B, C, h, w], tf_tokens [B, T, C]
                                                 transformer inputs
      tf_hs [B, T, C], tf_keys [B, h*w, C]       transformer outputs
      decoder_all_masks [B, 4, 256, 256], decoder_all_iou [B, 4]
                                                 predict_masks() before slicing
    """

    def __init__(self, sam: Sam) -> None:
        self.data: dict[str, np.ndarray] = {}
        self.enabled = False
        dec = sam.mask_decoder
        self._handles = [
            sam.prompt_encoder.register_forward_hook(self._prompt_hook),
            dec.transformer.register_forward_hook(self._tf_hook),
        ]
        orig = dec.predict_masks

        def predict_masks(**kwargs):
            masks, iou = orig(**kwargs)
            self._put("decoder_all_masks", masks)
            self._put("decoder_all_iou", iou)
            return masks, iou

        dec.predict_masks = predict_masks  # instance attribute shadows the method

    def _put(self, key: str, t: torch.Tensor) -> None:
        if self.enabled:
            self.data[key] = t.detach().cpu().numpy().copy()

    def _prompt_hook(self, _m, _inp, out) -> None:
        self._put("sparse", out[0])
        self._put("dense", out[1])

    def _tf_hook(self, _m, inp, out) -> None:
        src, pos, tokens = inp
        self._put("tf_src", src)
        self._put("tf_pos", pos)
        self._put("tf_tokens", tokens)
        self._put("tf_hs", out[0])
        self._put("tf_keys", out[1])


# --------------------------------------------------------------------------
# Output helpers
# --------------------------------------------------------------------------


def save_f32(path: Path, a) -> None:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.ascontiguousarray(np.asarray(a, dtype="<f4"))
    assert np.isfinite(a).all(), path
    np.save(path, a, allow_pickle=False)


def save_u8(path: Path, a) -> None:
    a = np.ascontiguousarray(np.asarray(a).astype("|u1"))
    np.save(path, a, allow_pickle=False)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def input_stats(sam: Sam, resized: np.ndarray) -> dict[str, Any]:
    """Checks of ``sam.preprocess`` on the resized uint8 image.

    The padded [1, 3, S, S] f32 input (S = img_size) is too big to commit, so
    this records sums and a few values at fixed indices (some in the padding,
    which must be exactly 0).
    """
    x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None]  # uint8 [1,3,h',w']
    x = sam.preprocess(x)  # f32 [1, 3, S, S]
    h, w = resized.shape[:2]
    s = x.shape[-1]
    idx = [
        (0, 0, 0, 0),
        (0, 1, 0, 0),
        (0, 2, 0, 0),
        (0, 0, h // 2, w // 2),
        (0, 1, h // 3, (2 * w) // 3),
        (0, 2, (3 * h) // 4, w // 5),
        (0, 0, h - 1, w - 1),
        (0, 2, h - 1, 0),
        (0, 1, 0, w - 1),
        (0, 1, 17, 29),
        (0, 0, min(h, s - 1), 0),  # first padded row (if any)
        (0, 2, 0, min(w, s - 1)),  # first padded column (if any)
        (0, 1, s - 1, s - 1),
    ]
    xd = x.double()
    return {
        "shape": list(x.shape),
        "dtype": "float32",
        "resized_hw": [h, w],
        "sum": float(xd.sum()),
        "mean": float(xd.mean()),
        "abs_sum": float(xd.abs().sum()),
        "channel_sums": [float(v) for v in xd.sum(dim=(0, 2, 3))],
        "padding_is_zero": bool((x[..., h:, :] == 0).all() and (x[..., :, w:] == 0).all()),
        "samples": [{"index": list(i), "value": float(x[i])} for i in idx],
        "formula": "(resized_u8 - pixel_mean) / pixel_std, zero-padded bottom/right to SxS",
    }


class EncoderStageStats:
    """Forward hooks summarising TinyViT's intermediate tensors during set_image.

    The full tensors are too large to commit (e.g. the stem output is
    [1, C0, 256, 256]), so each stage records its shape, sums, moments,
    per-channel sums and values at fixed flat (row-major) indices. Stages:
    ``patch_embed`` [B, C0, 256, 256]; ``layers.0.blocks.j`` (MBConv, NCHW);
    ``layers.i.downsample`` (PatchMerging, [B, N, C] tokens, row-major over
    H x W); ``layers.i.blocks.j`` (TinyViTBlock, [B, N, C]); ``neck``
    [B, out_chans, 64, 64] (= the image embedding).
    """

    def __init__(self, encoder: nn.Module) -> None:
        self.stages: list[dict[str, Any]] = []
        self.enabled = False
        mods = [("patch_embed", encoder.patch_embed)]
        for i, layer in enumerate(encoder.layers):
            mods += [(f"layers.{i}.blocks.{j}", b) for j, b in enumerate(layer.blocks)]
            if layer.downsample is not None:
                mods.append((f"layers.{i}.downsample", layer.downsample))
        mods.append(("neck", encoder.neck))
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in mods]

    def _hook(self, name: str):
        def hook(_m, _inp, out) -> None:
            if self.enabled:
                self.stages.append(self.summary(name, out))

        return hook

    @staticmethod
    def summary(name: str, t: torch.Tensor) -> dict[str, Any]:
        a = t.detach().double().contiguous()
        flat = a.reshape(-1)
        n = flat.numel()
        idx = sorted({0, 1, n - 1, *[(k * n) // 11 + k for k in range(1, 11)]})
        ch_axis = 1 if a.ndim == 4 else a.ndim - 1
        dims = tuple(d for d in range(a.ndim) if d != ch_axis)
        return {
            "name": name,
            "shape": list(a.shape),
            "layout": "NCHW" if a.ndim == 4 else "B,N,C (N = H*W row-major)",
            "sum": float(a.sum()),
            "abs_sum": float(a.abs().sum()),
            "mean": float(a.mean()),
            "std": float(a.std()),
            "min": float(a.min()),
            "max": float(a.max()),
            "channel_axis": ch_axis,
            "channel_sums": [float(v) for v in a.sum(dim=dims)],
            "samples": [{"flat_index": int(i), "value": float(flat[i])} for i in idx if i < n],
        }

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

CONFIGS: dict[str, FixtureSpec] = {
    "tiny": FixtureSpec(
        build=build_tiny,
        make_images=tiny_images,
        capture_stages=True,
        save_logits=True,
        embed_images=["image.png", "image_large.png"],
        preprocess_only_images=["image_tall.png"],
    ),
    "vit_b": FixtureSpec(build=build_vit_b, make_images=vit_b_images),
    # MobileSAM. tiny_vit_t is committed: no per-stage decoder tensors (the
    # decoder is the same code and size as tiny's), no logits, no dense_pe.
    "tiny_vit_t": FixtureSpec(
        build=build_tiny_vit_t,
        make_images=tiny_vit_t_images,
        mobile=True,
        save_dense_pe=False,
        encoder_stage_stats=True,
    ),
    "vit_t": FixtureSpec(
        build=build_vit_t,
        make_images=vit_b_images,
        mobile=True,
        encoder_stage_stats=True,
    ),
}

STAGE_KEYS: dict[str, list[str]] = {
    # case name -> extra per-stage tensors to write (sparse is written for all)
    "one_point": ["dense", "tf_src", "tf_tokens", "tf_hs", "tf_keys",
                  "decoder_all_masks", "decoder_all_iou"],
    # decoder_all_masks only for one_point (1 MB each; box_point's single mask
    # is channel 0 of its own all-masks, already covered by one_point's).
    "box_point": ["tf_src", "tf_tokens", "tf_hs", "tf_keys",
                  "decoder_all_iou"],
    "mask_input": ["dense"],
}


def versions(mobile: bool = False) -> dict[str, str]:
    import PIL
    import torchvision

    try:
        from importlib.metadata import version

        sa = version("segment-anything")
    except Exception:  # pragma: no cover
        sa = "unknown"
    out = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "segment_anything": sa,
    }
    if mobile:
        out["mobile_sam"] = _dist_version("mobilesam-mirror")
        out["timm"] = _dist_version("timm")
    return out


def _dist_version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # pragma: no cover
        return "unknown"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, choices=sorted(CONFIGS))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    spec = CONFIGS[args.config]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(2)
    torch.set_default_dtype(torch.float32)

    # 1-2. model + randomisation ------------------------------------------
    sam, config = spec.build()
    sam = sam.to("cpu").float().eval()
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    done = randomize_(sam)
    # TinyViT's Attention caches attention_biases[:, idxs] in the buffer ``ab``
    # only inside .train(False); without this the cache keeps the zero init.
    sam.eval()
    check_randomized(sam, before, done)
    n_params = sum(p.numel() for p in sam.parameters())
    print(f"[{args.config}] randomised {len(done)} tensors "
          f"({len(sam.state_dict())} state-dict entries, {n_params} parameters)")

    # 3. checkpoint + config ----------------------------------------------
    sd = sam.state_dict()
    torch.save(sd, out / "checkpoint.pth")
    if args.config.startswith("tiny"):
        # The same tensors under the official keys as safetensors: what the wasm tests load
        # from bytes (a .pth can only be read from a file, natively).
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "checkpoint.safetensors"))
    with open(out / "keys.txt", "w") as f:
        for k, v in sd.items():
            print(k, tuple(v.shape), file=f)
    config["seed"] = args.seed
    write_json(out / "config.json", config)
    t_model = time.perf_counter()

    # 4. images -------------------------------------------------------------
    image_names = spec.make_images(out, args.seed)
    predictor = (MobileSamPredictor if spec.mobile else SamPredictor)(sam)
    transform = (MobileResizeLongestSide if spec.mobile else ResizeLongestSide)(
        sam.image_encoder.img_size)
    stage_stats = EncoderStageStats(sam.image_encoder) if spec.encoder_stage_stats else None
    pillow_major = int(__import__("PIL").__version__.split(".")[0])
    images_meta: dict[str, Any] = {}
    embed = spec.embed_images if spec.embed_images is not None else image_names
    current_image: Optional[str] = None  # image whose features the predictor holds
    for name in image_names:
        stem = Path(name).stem
        image = load_rgb(out / name)  # uint8 [H, W, 3]
        H, W = image.shape[:2]
        resized = transform.apply_image(image)  # uint8 [h', w', 3]
        h2, w2 = resized.shape[:2]
        assert (h2, w2) == ResizeLongestSide.get_preprocess_shape(H, W, transform.target_length)
        Image.fromarray(resized).save(out / f"{stem}_resized.png", optimize=True)
        # Cross-check the documented numpy re-implementation of PIL bilinear.
        order13 = pil_resize_ref.vertical_first(H, W, h2, w2)
        ours = pil_resize_ref.pil_bilinear_resize(
            image, h2, w2, "pillow13" if pillow_major >= 13 else "pillow12")
        assert np.array_equal(ours, resized), f"pil_resize_ref mismatch on {name}"
        meta = {
            "original_size": [H, W],
            "input_size": [h2, w2],
            "pillow13_vertical_pass_first": order13,
        }
        if order13:
            # Pillow <= 12 runs the horizontal pass first; keep that result too.
            hv = pil_resize_ref.pil_bilinear_resize(image, h2, w2, "pillow12")
            meta["pillow12_vs_13_differing_values"] = int((hv != resized).sum())
            print(f"  {name}: Pillow12 (h-first) vs Pillow13 (v-first) differ in "
                  f"{meta['pillow12_vs_13_differing_values']} values, max |d| = "
                  f"{int(np.abs(hv.astype(int) - resized.astype(int)).max())}")
        stats = input_stats(sam, resized)
        stats["numpy_pil_reference_match"] = True
        write_json(out / f"{stem}_input_stats.json", stats)
        if name in embed:
            t0 = time.perf_counter()
            if stage_stats is not None:
                stage_stats.stages.clear()
                stage_stats.enabled = True
            predictor.set_image(image)
            if stage_stats is not None:
                stage_stats.enabled = False
                write_json(out / f"{stem}_encoder_stages.json", {
                    "image": name,
                    "note": "TinyViT intermediate tensors of set_image(); see EncoderStageStats",
                    "stages": stage_stats.stages,
                })
                assert stage_stats.stages[-1]["name"] == "neck"
            current_image = name
            feats = predictor.features  # f32 [1, C, 64, 64]
            save_f32(out / f"{stem}_embedding.npy", feats)
            meta["embedding_std"] = float(feats.std())
            meta["embedding_mean"] = float(feats.mean())
            print(f"  {name}: {W}x{H} -> input {w2}x{h2}; embedding {tuple(feats.shape)} "
                  f"mean {feats.mean():.4f} std {feats.std():.4f} "
                  f"({time.perf_counter() - t0:.1f}s)")
            assert float(feats.std()) > 1e-2, "embedding std is tiny"
        images_meta[name] = meta
    t_images = time.perf_counter()

    # 5-6. prompt cases on the case image --------------------------------------
    case_image = load_rgb(out / spec.case_image)
    H, W = case_image.shape[:2]
    if current_image != spec.case_image:  # the ViT-B encoder takes ~1 min on CPU
        predictor.set_image(case_image)
    case_features = predictor.features.detach().clone()
    if spec.save_dense_pe:
        save_f32(out / "dense_pe.npy", sam.prompt_encoder.get_dense_pe())
    capture = StageCapture(sam) if spec.capture_stages else None
    cases = make_cases(W, H, spec.case_image)
    low_res_by_case: dict[str, np.ndarray] = {}
    iou_by_case: dict[str, np.ndarray] = {}
    summary = []
    for case in cases:
        name = case["name"]
        kwargs: dict[str, Any] = {"multimask_output": case["multimask"]}
        if case["points"] is not None:
            kwargs["point_coords"] = np.array(case["points"], dtype=np.float64)
            kwargs["point_labels"] = np.array(case["labels"], dtype=np.int64)
        if case["box"] is not None:
            kwargs["box"] = np.array(case["box"], dtype=np.float64)
        if case["mask_input"] is not None:
            prev = "one_point"
            best = int(np.argmax(iou_by_case[prev]))
            mask_in = low_res_by_case[prev][best][None].astype(np.float32)  # [1, 256, 256]
            save_f32(out / case["mask_input"], mask_in)
            kwargs["mask_input"] = mask_in
            case["mask_input_from"] = {"case": prev, "index": best}
        if capture is not None:
            capture.data.clear()
            capture.enabled = True
        masks, iou, low_res = predictor.predict(**kwargs)  # bool [N,H,W], f32 [N], f32 [N,256,256]
        if capture is not None:
            capture.enabled = False
        n = 3 if case["multimask"] else 1
        assert masks.shape == (n, H, W) and iou.shape == (n,) and low_res.shape == (n, 256, 256)
        assert np.isfinite(iou).all() and np.isfinite(low_res).all()
        low_res_by_case[name], iou_by_case[name] = low_res, iou
        save_u8(out / f"case_{name}_masks.npy", masks)
        save_f32(out / f"case_{name}_iou.npy", iou)
        save_f32(out / f"case_{name}_low_res.npy", low_res)
        files = [f"case_{name}_masks.npy", f"case_{name}_iou.npy", f"case_{name}_low_res.npy"]
        if spec.save_logits:
            logits, iou2, low_res2 = predictor.predict(**kwargs, return_logits=True)
            assert np.array_equal(low_res2, low_res) and np.array_equal(iou2, iou)
            assert np.array_equal(logits > sam.mask_threshold, masks)
            save_f32(out / f"case_{name}_logits.npy", logits)
            files.append(f"case_{name}_logits.npy")
        if capture is not None:
            for key in ["sparse"] + STAGE_KEYS.get(name, []):
                save_f32(out / f"case_{name}_{key}.npy", capture.data[key])
                files.append(f"case_{name}_{key}.npy")
            assert np.array_equal(capture.data["decoder_all_iou"][0][1:] if n == 3
                                  else capture.data["decoder_all_iou"][0][:1], iou)
        case["outputs"] = files
        frac = masks.reshape(n, -1).mean(axis=1)
        summary.append((name, iou, frac))
        print(f"  case {name:20s} iou {np.array2string(iou, precision=3)} "
              f"mask fraction {np.array2string(frac, precision=3)} "
              f"low_res range [{low_res.min():.2f}, {low_res.max():.2f}]")
    t_cases = time.perf_counter()

    nontrivial = sum(int(((f > 0) & (f < 1)).all()) for _, _, f in summary)
    print(f"  {nontrivial}/{len(summary)} cases have masks that are neither all-0 nor all-1")

    checks: dict[str, Any] = {}
    if spec.mobile:
        # Reload checkpoint.pth into a freshly built model (vit_t: the official
        # build_sam_vit_t(), which calls .eval() *before* loading) and re-embed.
        fresh, _ = spec.build()
        fresh.load_state_dict(torch.load(out / "checkpoint.pth", map_location="cpu"), strict=True)
        p2 = MobileSamPredictor(fresh)
        p2.set_image(case_image)
        stale = float((p2.features - case_features).abs().max())
        fresh.eval()  # refreshes the attention-bias caches
        p2.set_image(case_image)
        assert torch.equal(p2.features, case_features), "reloaded checkpoint differs"
        checks = {
            "reloaded_checkpoint_embedding_identical": True,
            "embedding_max_abs_diff_without_eval_after_load": stale,
        }
        print(f"  reload check: identical after .eval(); without .eval() after "
              f"load_state_dict the embedding differs by up to {stale:.3g}")

    write_json(
        out / "cases.json",
        {
            "config": args.config,
            "seed": args.seed,
            "image": spec.case_image,
            "original_size": [H, W],
            "input_size": images_meta[spec.case_image]["input_size"],
            "images": images_meta,
            "mask_threshold": float(sam.mask_threshold),
            "reference_versions": versions(spec.mobile),
            **({"checks": checks} if checks else {}),
            "cases": cases,
        },
    )
    print(f"[{args.config}] model {t_model - t_start:.1f}s, images/embeddings "
          f"{t_images - t_model:.1f}s, cases {t_cases - t_images:.1f}s, "
          f"total {time.perf_counter() - t_start:.1f}s")
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"[{args.config}] wrote {len(list(out.iterdir()))} files, {total / 1e6:.2f} MB to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
