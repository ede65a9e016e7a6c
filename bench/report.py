#!/usr/bin/env python3
"""Merge the reference timings (bench/reference.py) with segany's (examples/bench.rs).

Writes one JSON file with both raw result sets and a markdown file with the comparison
table, and prints the markdown. Ratios are segany / other, so lower is better for segany.

    python bench/report.py --reference ref.json [--segany segany.json] \
        --out-json results/native-DATE.json --out-md results/native-DATE.md

Only needs the standard library, so any python3 can run it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

NA = "—"


def load_segany(path: Path) -> dict[str, Any]:
    """The Rust example prints a single JSON object on stdout.

    Be strict about it being JSON, but tolerate stray lines before it (a library that logs to
    stdout) by falling back to the last line that parses as an object.
    """
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        for line in reversed(text.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
    raise SystemExit(f"error: no JSON object in segany output {path}:\n{text[-2000:]}")


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return NA
    # Three significant figures are more than the run-to-run noise on a shared 2-core box.
    return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"


def ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den == 0:
        return NA
    return f"{num / den:.2f}×"


def ort_thread_counts(ref: dict[str, Any]) -> list[int]:
    counts = []
    for key in ref:
        m = re.fullmatch(r"ort_decoder_ms_(\d+)t", key)
        if m:
            counts.append(int(m.group(1)))
    return sorted(counts)


def build_markdown(ref: dict[str, Any], seg: dict[str, Any] | None, date: str, notes: list[str]) -> str:
    ort_threads = ort_thread_counts(ref)
    # The "segany / ORT" ratio compares against the fewest-thread ORT run (1 thread by default),
    # the configuration most commonly quoted for the ONNX decoder.
    ort_base = ort_threads[0] if ort_threads else None

    seg_embed = seg.get("embed_s") if seg else None
    seg_predict = seg.get("predict_ms") if seg else None
    model = ref.get("model", "?")

    header = ["", "segany", "PyTorch"]
    header += [f"onnxruntime {n} thread{'s' if n != 1 else ''}" for n in ort_threads]
    header += ["segany / PyTorch"]
    if ort_base is not None:
        header += [f"segany / ORT-{ort_base}t"]

    # The ONNX export covers only the prompt encoder + mask decoder, so it has no embed figure.
    embed_row = [f"embed ({model})", fmt(seg_embed, "s"), fmt(ref.get("torch_embed_s"), "s")]
    embed_row += [NA for _ in ort_threads]
    embed_row += [ratio(seg_embed, ref.get("torch_embed_s"))]
    if ort_base is not None:
        embed_row += [NA]

    predict_row = ["predict (1 point, 3 masks)", fmt(seg_predict, "ms"), fmt(ref.get("torch_predict_ms"), "ms")]
    predict_row += [fmt(ref.get(f"ort_decoder_ms_{n}t"), "ms") for n in ort_threads]
    predict_row += [ratio(seg_predict, ref.get("torch_predict_ms"))]
    if ort_base is not None:
        predict_row += [ratio(seg_predict, ref.get(f"ort_decoder_ms_{ort_base}t"))]

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    lines = [
        f"# segany vs reference — {model}, CPU, {date}",
        "",
        row(header),
        row(["---"] + ["---:"] * (len(header) - 1)),
        row(embed_row),
        row(predict_row),
        "",
        "Medians; ratios are segany / other (lower is better for segany).",
        "",
    ]

    versions = ref.get("versions", {})
    ctx = [
        f"- CPU: {ref.get('cpu_model', '?')} ({ref.get('cpu_count', '?')} logical cores)",
        f"- image: `{ref.get('image')}` ({ref['image_size_hw'][1]}×{ref['image_size_hw'][0]}), "
        f"point {ref.get('point')}",
        f"- checkpoint: `{ref.get('checkpoint')}`",
        f"- PyTorch: torch {versions.get('torch')}, {ref.get('threads')} threads; "
        f"embed {ref.get('runs')} runs after {ref.get('warmup')} warm-up, "
        f"predict {ref.get('predict_runs')} runs after {ref.get('predict_warmup')} warm-up; "
        f"load {fmt(ref.get('torch_load_s'), 's')}",
    ]
    if ort_threads:
        ctx.append(
            f"- onnxruntime {versions.get('onnxruntime')}: official `SamOnnxModel` export "
            f"(opset {ref.get('onnx_opset')}, return_single_mask=False, returns 4 masks at "
            f"original size), inter_op 1, ORT_ENABLE_ALL, {ref.get('predict_runs')} runs"
        )
    if seg:
        extra = {k: v for k, v in seg.items() if k not in ("embed_s", "predict_ms")}
        ctx.append(f"- segany: {json.dumps(extra)}")
    else:
        ctx.append("- segany: not run")
    def load(v: list[float] | None) -> str:
        return " ".join(f"{x:.2f}" for x in v) if v else "?"

    ctx.append(
        f"- load average (1/5/15 min) before / after reference: "
        f"{load(ref.get('loadavg_before'))} / {load(ref.get('loadavg_after'))}"
    )
    # Medians are the headline; the fastest runs show how much of the spread is disturbance.
    fastest = [f"PyTorch embed {fmt(ref.get('torch_embed_min_s'), 's')}",
               f"PyTorch predict {fmt(ref.get('torch_predict_min_ms'), 'ms')}"]
    fastest += [f"ORT {n}t {fmt(ref.get(f'ort_decoder_min_ms_{n}t'), 'ms')}" for n in ort_threads]
    ctx.append("- fastest reference runs: " + ", ".join(fastest))
    ctx += [f"- {note}" for note in notes]
    sanity = ref.get("ort_vs_torch")
    if sanity:
        line = (
            f"- ORT vs PyTorch outputs: low-res logits max |Δ| {sanity['low_res_max_abs_diff']:.2g}, "
            f"IoU max |Δ| {sanity['iou_max_abs_diff']:.2g}, full-size mask agreement "
            f"{sanity['mask_agreement']:.4f}"
        )
        if sanity["mask_agreement"] < 0.999:
            # Known upstream bug, fixed on GitHub after the PyPI 1.0 release: the export traces
            # int(prepadded_size) as a constant, so the crop keeps the dummy orig_im_size's
            # aspect ratio. Costs the same compute, so timings are unaffected.
            line += (
                " — the export baked in the dummy orig_im_size aspect ratio "
                "(segment-anything 1.0 from PyPI, upstream issue #56); timing is unaffected"
            )
        ctx.append(line)
    return "\n".join(lines + ctx) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="bench/reference.py output")
    ap.add_argument("--segany", type=Path, help="stdout of `cargo run --example bench` (omit if not run)")
    ap.add_argument("--note", action="append", default=[],
                    help="extra line for the markdown context list (repeatable)")
    ap.add_argument("--out-json", type=Path, required=True)
    ap.add_argument("--out-md", type=Path, required=True)
    args = ap.parse_args()

    ref = json.loads(args.reference.read_text())
    seg = load_segany(args.segany) if args.segany else None
    date = time.strftime("%Y-%m-%d %H:%M:%S %Z")

    md = build_markdown(ref, seg, date, args.note)
    merged = {"date": date, "notes": args.note, "segany": seg, "reference": ref}

    for p in (args.out_json, args.out_md):
        p.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(merged, indent=2) + "\n")
    args.out_md.write_text(md)
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
