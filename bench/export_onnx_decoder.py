"""Prints the path of the official ONNX prompt encoder + mask decoder of a checkpoint (the model the
official web demo runs with onnxruntime-web), exporting it first unless bench/.cache has it.
The export is reference.py's (upstream export_onnx_model.py settings).

    $REF_VENV/bin/python bench/export_onnx_decoder.py --checkpoint CKPT --model vit_t
"""
import argparse
import importlib
import warnings
from pathlib import Path

from reference import MODEL_PACKAGES, export_decoder, onnx_cache_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--model", default="vit_t", choices=sorted(MODEL_PACKAGES))
    ap.add_argument("--onnx-cache", type=Path, default=Path(__file__).resolve().parent / ".cache")
    args = ap.parse_args()
    path = onnx_cache_path(args.onnx_cache, args.model, args.checkpoint)
    if not path.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mobile_sam's timm import warnings
            pkg = importlib.import_module(MODEL_PACKAGES[args.model])
            onnx_module = importlib.import_module(f"{MODEL_PACKAGES[args.model]}.utils.onnx")
        sam = pkg.sam_model_registry[args.model](checkpoint=str(args.checkpoint)).eval()
        export_decoder(sam, onnx_module, path)
    print(path)


if __name__ == "__main__":
    main()
