"""Prints the path of an ONNX export of a checkpoint's decoder or image encoder, exporting it first
unless bench/.cache has it:

- `--part decoder`: the official prompt encoder + mask decoder export (reference.py's, with
  upstream export_onnx_model.py's settings; the model the official web demo runs with
  onnxruntime-web), for bench/page_decode.mjs;
- `--part encoder`: the reference model's own `image_encoder` module, input [1, 3, 1024, 1024]
  normalised and padded → [1, 256, 64, 64], for bench/page_embed.mjs.

    $REF_VENV/bin/python bench/export_onnx.py --part decoder --checkpoint CKPT --model vit_t
"""
import argparse
import importlib
import warnings
from pathlib import Path

import torch

from reference import MODEL_PACKAGES, ONNX_OPSET, export_decoder, onnx_cache_path


def export_encoder(sam: torch.nn.Module, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with torch.no_grad():
        torch.onnx.export(
            sam.image_encoder, (torch.zeros(1, 3, 1024, 1024),), str(tmp),
            input_names=["image"], output_names=["image_embeddings"], opset_version=ONNX_OPSET, dynamo=False,
        )
    tmp.rename(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["decoder", "encoder"], default="decoder")
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--model", default="vit_t", choices=sorted(MODEL_PACKAGES))
    ap.add_argument("--onnx-cache", type=Path, default=Path(__file__).resolve().parent / ".cache")
    args = ap.parse_args()
    path = onnx_cache_path(args.onnx_cache, args.model, args.checkpoint)
    if args.part == "encoder":
        path = path.with_name(path.name.replace("-decoder-", "-encoder-"))
    if not path.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mobile_sam's timm import warnings
            pkg = importlib.import_module(MODEL_PACKAGES[args.model])
            onnx_module = importlib.import_module(f"{MODEL_PACKAGES[args.model]}.utils.onnx")
            sam = pkg.sam_model_registry[args.model](checkpoint=str(args.checkpoint)).eval()
            if args.part == "decoder":
                export_decoder(sam, onnx_module, path)
            else:
                export_encoder(sam, path)
    print(path)


if __name__ == "__main__":
    main()
