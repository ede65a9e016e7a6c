#!/usr/bin/env python3
"""Writes tests/fixtures/rle/pycocotools.json: masks and what pycocotools makes of them.

Each case: the row-major mask as rows of '0'/'1', pycocotools' compressed counts
(`mask.encode`), the plain run lengths (checked here to re-encode to the same string through
`frPyObjects`), `area` and `toBbox`. tests/rle.rs checks segany's masks.rs against them.

    python3 -m venv /tmp/rlevenv && /tmp/rlevenv/bin/pip install pycocotools
    /tmp/rlevenv/bin/python scripts/make_rle_vectors.py
"""

import json
import pathlib

import numpy as np
from pycocotools import mask as mask_utils

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/rle/pycocotools.json"


def runs_of(m: np.ndarray) -> list[int]:
    """Run lengths in column-major order, starting with 0s."""
    flat = m.flatten(order="F")
    runs, current, run = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(run)
            run, current = 0, v
        run += 1
    runs.append(run)
    return runs


def cases(rng: np.random.Generator):
    yield "single_pixel_on", np.ones((1, 1), np.uint8)
    yield "single_pixel_off", np.zeros((1, 1), np.uint8)
    yield "empty_5x7", np.zeros((5, 7), np.uint8)
    yield "full_6x4", np.ones((6, 4), np.uint8)
    yield "random_7x5", (rng.random((7, 5)) < 0.4).astype(np.uint8)
    yield "random_13x17", (rng.random((13, 17)) < 0.6).astype(np.uint8)
    yy, xx = np.mgrid[0:48, 0:64]
    blob = ((yy - 20) ** 2 + (xx - 30) ** 2 < 15**2) | ((yy > 38) & (xx > 50))
    yield "disc_and_corner_48x64", blob.astype(np.uint8)
    # Long runs need three 5-bit groups and large negative deltas.
    long = np.zeros((3, 1000), np.uint8)
    long[:, 10:900] = 1
    long[1, 950] = 1
    yield "long_runs_3x1000", long
    wrap = np.zeros((3, 2), np.uint8)
    wrap[2, 0] = wrap[0, 1] = 1
    yield "run_wrapping_columns_3x2", wrap


def main():
    rng = np.random.default_rng(20261122)
    out = []
    for name, m in cases(rng):
        h, w = m.shape
        rle = mask_utils.encode(np.asfortranarray(m))
        counts = rle["counts"].decode("ascii")
        runs = runs_of(m)
        again = mask_utils.frPyObjects({"size": [h, w], "counts": runs}, h, w)
        assert again["counts"].decode("ascii") == counts, name
        assert (mask_utils.decode(rle) == m).all(), name
        out.append(
            {
                "name": name,
                "size": [h, w],
                "rows": ["".join(str(int(v)) for v in row) for row in m],
                "counts": counts,
                "runs": runs,
                "area": int(mask_utils.area(rle)),
                "bbox": [int(v) for v in mask_utils.toBbox(rle)],
            }
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {len(out)} cases to {OUT}")


if __name__ == "__main__":
    main()
