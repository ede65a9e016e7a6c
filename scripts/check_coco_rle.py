#!/usr/bin/env python3
"""Checks a segany masks.json (everything, boxes) with pycocotools: every segmentation decodes,
its size is the image's, and its area and box agree with the record's ``area`` and ``bbox``.

    python scripts/check_coco_rle.py OUT/masks.json

``bbox`` of everything-mode records follows SamAutomaticMaskGenerator (the inclusive box of the
decoded mask, so width = x_max - x_min, one less than pycocotools' toBbox); records with a ``box`` field (``segany
boxes``) carry pycocotools' own box. Exits 1 on the first mismatch.
"""

import json
import sys

import numpy as np
from pycocotools import mask as mask_utils


def main(path: str) -> int:
    doc = json.load(open(path))
    h, w = doc["size"]
    for i, m in enumerate(doc["masks"]):
        rle = m["segmentation"]
        if list(rle["size"]) != [h, w]:
            print(f"mask {i}: size {rle['size']} is not the image's {[h, w]}")
            return 1
        coco = {"size": rle["size"], "counts": rle["counts"].encode()}
        decoded = mask_utils.decode(coco)
        area = int(decoded.sum())
        if "box" in m:
            box = [int(v) for v in mask_utils.toBbox(coco)]
        elif area > 0:
            ys, xs = np.nonzero(decoded)
            box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())]
        else:
            box = [0, 0, 0, 0]
        if area != m["area"] or int(mask_utils.area(coco)) != area or box != [int(v) for v in m["bbox"]]:
            print(f"mask {i}: pycocotools area {area} box {box}, record area {m['area']} bbox {m['bbox']}")
            return 1
    print(f"ok: {len(doc['masks'])} masks decode with pycocotools to their area and bbox")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
