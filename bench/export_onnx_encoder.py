"""Prints the path of an ONNX export of a checkpoint's image encoder (the reference model's own
`image_encoder` module, input [1, 3, 1024, 1024] normalised and padded → [1, 256, 64, 64]), for
onnxruntime-web in bench/page_embed.mjs, exporting it first unless bench/.cache has it.

    $REF_VENV/bin/python bench/export_onnx_encoder.py --checkpoint CKPT --model vit_t
"""
import argparse
import importlib
import warnings
from pathlib import Path

import torch

from reference import MODEL_PACKAGES, ONNX_OPSET, onnx_cache_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--model", default="vit_t", choices=sorted(MODEL_PACKAGES))
    ap.add_argument("--onnx-cache", type=Path, default=Path(__file__).resolve().parent / ".cache")
    args = ap.parse_args()
    decoder_path = onnx_cache_path(args.onnx_cache, args.model, args.checkpoint)
    path = decoder_path.with_name(decoder_path.name.replace("-decoder-", "-encoder-"))
    if not path.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mobile_sam's timm import warnings
            pkg = importlib.import_module(MODEL_PACKAGES[args.model])
            sam = pkg.sam_model_registry[args.model](checkpoint=str(args.checkpoint)).eval()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with torch.no_grad():
                torch.onnx.export(
                    sam.image_encoder, (torch.zeros(1, 3, 1024, 1024),), str(tmp),
                    input_names=["image"], output_names=["image_embeddings"],
                    opset_version=ONNX_OPSET, dynamo=False,
                )
            tmp.rename(path)
    print(path)


if __name__ == "__main__":
    main()
