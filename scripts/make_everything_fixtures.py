#!/usr/bin/env python3
"""Reference fixtures for segany's automatic mask generation ("segment everything").

Runs the stock ``segment_anything.SamAutomaticMaskGenerator`` with the committed tiny random
checkpoint (``tests/fixtures/tiny/checkpoint.pth``, rebuilt with ``make_fixtures.build_tiny``)
and writes what it returns, plus the pieces it is built from, so that ``tests/everything.rs``
can compare segany's generator with the reference's.

Usage::

    ~/.cache/segany/refvenv/bin/python scripts/make_everything_fixtures.py \\
        [--tiny tests/fixtures/tiny] [--out tests/fixtures/tiny/everything]

Needs ``opencv-python-headless`` (the reference's ``min_mask_region_area`` uses cv2) and
``pycocotools`` (``output_mode="coco_rle"``) in the reference venv.

A random model never predicts a localised object: its masks are noise spread over the whole
image, so every box is nearly the whole image (or crop) and NMS at the default 0.7 leaves one
mask. The cases therefore choose settings under which many masks survive each stage:

- ``noise_many``: ``image.png`` (173x117), one crop layer (4 crops, their masks all fall to
  the crop-edge filter), NMS thresholds 1.0 (nothing suppressed) so that dozens of masks reach
  the output and small-region removal (holes and islands, ``min_mask_region_area`` 16) changes
  most of them.
- ``small_crops``: a 64x48 piece of it with ``crop_overlap_ratio`` 0.8, so that crops reach
  within 20 px of the image edges and their masks survive the crop-edge filter; NMS at 0.95
  within and across crops then makes real decisions.

Output (``--out``)::

    small.png          the 64x48 image of ``small_crops``
    cases.json         {"cases": [{"name", "image", "settings", "masks": [reference records]}],
                        "nms": [{"boxes", "scores", "iou_threshold", "keep"}],
                        "crop_boxes": [{"size", "n_layers", "overlap_ratio", "boxes", "layers"}],
                        "regions": {"area_thresh", "holes_changed", "islands_changed"}}
    regions_masks.npy      u8 [N, H, W] random 0/1 masks (several densities)
    regions_holes.npy      u8 [N, H, W] remove_small_regions(mask, area_thresh, "holes")
    regions_islands.npy    u8 [N, H, W] remove_small_regions(mask, area_thresh, "islands")

Each reference record is what ``generate`` returns with ``output_mode="coco_rle"``:
segmentation (pycocotools RLE, counts string), area, bbox (XYWH from the inclusive XYXY box, so
width = x1 - x0), predicted_iou, point_coords, stability_score, crop_box (XYWH).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import build_tiny, load_rgb, save_u8  # noqa: E402

from segment_anything import SamAutomaticMaskGenerator  # noqa: E402
from segment_anything.utils.amg import generate_crop_boxes, remove_small_regions  # noqa: E402
from torchvision.ops.boxes import batched_nms  # noqa: E402

SEED = 7

CASES = [
    {
        "name": "noise_many",
        "image": "../image.png",
        "settings": {
            "points_per_side": 8,
            "points_per_batch": 20,
            "pred_iou_thresh": 0.1,
            "stability_score_thresh": 0.3,
            "stability_score_offset": 0.05,
            "box_nms_thresh": 1.0,
            "crop_n_layers": 1,
            "crop_nms_thresh": 1.0,
            "crop_overlap_ratio": 512 / 1500,
            "crop_n_points_downscale_factor": 2,
            "min_mask_region_area": 16,
        },
    },
    {
        "name": "small_crops",
        "image": "small.png",
        "settings": {
            "points_per_side": 8,
            "points_per_batch": 64,
            "pred_iou_thresh": 0.3,
            "stability_score_thresh": 0.5,
            "stability_score_offset": 0.05,
            "box_nms_thresh": 0.95,
            "crop_n_layers": 1,
            "crop_nms_thresh": 0.95,
            "crop_overlap_ratio": 0.8,
            "crop_n_points_downscale_factor": 1,
            "min_mask_region_area": 8,
        },
    },
]


def nms_cases(rng: np.random.Generator) -> list[dict]:
    """torchvision's batched_nms with one category, as the generator calls it: random integer
    boxes (some empty, some equal), random scores with ties."""
    out = []
    for n, thresh in [(40, 0.7), (40, 0.3), (25, 0.95)]:
        x0 = rng.integers(0, 50, n)
        y0 = rng.integers(0, 50, n)
        w = rng.integers(0, 40, n)
        h = rng.integers(0, 40, n)
        boxes = np.stack([x0, y0, x0 + w, y0 + h], 1)
        boxes[5] = boxes[3]  # identical boxes
        scores = rng.integers(0, 6, n).astype(np.float32) / 5  # many ties
        keep = batched_nms(torch.as_tensor(boxes).float(), torch.as_tensor(scores), torch.zeros(n), thresh)
        out.append({"boxes": boxes.tolist(), "scores": scores.tolist(), "iou_threshold": thresh, "keep": keep.tolist()})
    return out


def crop_box_cases() -> list[dict]:
    out = []
    for size, layers, ratio in [((117, 173), 1, 512 / 1500), ((48, 64), 1, 0.8), ((683, 1031), 2, 512 / 1500),
                                ((1200, 1800), 3, 0.25), ((101, 99), 2, 0.5)]:
        boxes, idx = generate_crop_boxes(size, layers, ratio)
        out.append({"size": list(size), "n_layers": layers, "overlap_ratio": ratio, "boxes": boxes, "layers": idx})
    return out


def region_cases(rng: np.random.Generator, out: Path, area_thresh: int) -> dict:
    masks, holes, islands, hc, ic = [], [], [], [], []
    for density in [0.1, 0.3, 0.45, 0.55, 0.7, 0.9, 0.02]:
        # Blocky noise: components of many sizes, touching the border or not.
        small = rng.random((13, 17)) < density
        m = np.kron(small, np.ones((3, 3), dtype=bool))[:37, :49]
        flips = rng.random(m.shape) < 0.04
        m = m ^ flips
        a, ca = remove_small_regions(m, area_thresh, "holes")
        b, cb = remove_small_regions(m, area_thresh, "islands")
        masks.append(m)
        holes.append(a)
        islands.append(b)
        hc.append(bool(ca))
        ic.append(bool(cb))
    save_u8(out / "regions_masks.npy", np.stack(masks))
    save_u8(out / "regions_holes.npy", np.stack(holes))
    save_u8(out / "regions_islands.npy", np.stack(islands))
    return {"area_thresh": area_thresh, "holes_changed": hc, "islands_changed": ic}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", type=Path, default=Path("tests/fixtures/tiny"))
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/tiny/everything"))
    args = ap.parse_args()
    torch.manual_seed(SEED)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    sam, _ = build_tiny()
    sam.load_state_dict(torch.load(args.tiny / "checkpoint.pth", map_location="cpu"), strict=True)
    sam.eval()
    image = load_rgb(args.tiny / "image.png")
    Image.fromarray(np.ascontiguousarray(image[30:78, 40:104])).save(out / "small.png")

    cases = []
    for case in CASES:
        img = load_rgb(out / case["image"])
        gen = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **case["settings"])
        anns = gen.generate(img)
        assert len(anns) > 1, f"{case['name']}: only {len(anns)} masks survive"
        for a in anns:
            a["bbox"] = [float(v) for v in a["bbox"]]
            a["crop_box"] = [float(v) for v in a["crop_box"]]
            a["point_coords"] = [[float(v) for v in p] for p in a["point_coords"]]
        crops = sorted({tuple(a["crop_box"]) for a in anns})
        print(f"  {case['name']}: {img.shape[1]}x{img.shape[0]}, {len(anns)} masks from crops {crops}")
        cases.append({**case, "masks": anns})

    rng = np.random.default_rng(SEED)
    doc = {
        "note": "written by scripts/make_everything_fixtures.py; records as SamAutomaticMaskGenerator returns them",
        "cases": cases,
        "nms": nms_cases(rng),
        "crop_boxes": crop_box_cases(),
        "regions": region_cases(rng, out, area_thresh=12),
    }
    (out / "cases.json").write_text(json.dumps(doc, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {len(list(out.iterdir()))} files, {total / 1e3:.0f} kB to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
