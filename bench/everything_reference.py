#!/usr/bin/env python3
"""Reference timing of segment-everything: ``SamAutomaticMaskGenerator.generate`` (default
settings unless given) on CPU, from the image in memory to the masks, model loading excluded.

    python bench/everything_reference.py --checkpoint CKPT --model vit_t --image IMG \\
        [--runs 1] [--threads 2] [--points-per-side 32] --out result.json

``--model vit_t`` uses ``mobile_sam`` (the same generator code as ``segment_anything``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from PIL import Image

PACKAGES = {"vit_b": "segment_anything", "vit_l": "segment_anything", "vit_h": "segment_anything", "vit_t": "mobile_sam"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--model", default="vit_t", choices=sorted(PACKAGES))
    ap.add_argument("--image", required=True)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    pkg = importlib.import_module(PACKAGES[args.model])
    sam = pkg.sam_model_registry[args.model](checkpoint=args.checkpoint)
    sam.eval()
    image = np.array(Image.open(args.image).convert("RGB"))
    gen = pkg.SamAutomaticMaskGenerator(sam, points_per_side=args.points_per_side)
    times, masks = [], None
    for r in range(args.runs):
        t0 = time.perf_counter()
        with torch.no_grad():
            anns = gen.generate(image)
        times.append(time.perf_counter() - t0)
        masks = len(anns)
        print(f"[reference] run {r + 1}/{args.runs}: {times[-1]:.2f} s, {masks} masks", file=sys.stderr, flush=True)
    json.dump({"seconds": times, "median_s": statistics.median(times), "masks": masks,
               "torch": torch.__version__, "threads": args.threads, "size": list(image.shape[:2])},
              open(args.out, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
