#!/usr/bin/env python3
"""Reference timings for segany: the official PyTorch SAM and its official ONNX decoder, on CPU.

Measures, in one process:

* ``torch_embed_s``      ``SamPredictor.set_image(image)`` (preprocessing + image encoder), seconds
* ``torch_predict_ms``   ``SamPredictor.predict`` with one foreground point, ``multimask_output=True``
* ``ort_decoder_ms_<n>t`` the decoder exported with ``SamOnnxModel`` exactly like upstream
                         ``scripts/export_onnx_model.py`` (opset 17, ``return_single_mask=False``),
                         run by onnxruntime with ``intra_op_num_threads=n``

All figures are medians over ``--runs`` / ``--predict-runs`` timed runs that follow untimed
warm-up runs; every individual timing is kept in the output too.

Usage (reference venv, see ``scripts/setup_reference_venv.sh``)::

    python bench/reference.py --checkpoint fixtures-large/vit_b/checkpoint.pth --model vit_b \
        --image fixtures-large/vit_b/image.png --runs 3 --threads 2 --out results.json

``--model vit_t`` (MobileSAM) uses the ``mobile_sam`` package, which mirrors the
``segment_anything`` API (registry, predictor, ``utils.onnx.SamOnnxModel``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

# Which package provides each model type. Both packages expose the same API.
MODEL_PACKAGES = {
    "vit_h": "segment_anything",
    "vit_l": "segment_anything",
    "vit_b": "segment_anything",
    "vit_t": "mobile_sam",
}

# Upstream export defaults (scripts/export_onnx_model.py in facebookresearch/segment-anything).
ONNX_OPSET = 17


def log(msg: str) -> None:
    # Progress goes to stderr so a caller capturing stdout still sees where a
    # multi-minute run is; the results themselves only go to --out.
    print(f"[reference] {msg}", file=sys.stderr, flush=True)


def time_calls(fn: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    """Wall-clock seconds of ``runs`` calls of ``fn``, after ``warmup`` untimed calls.

    The warm-up absorbs one-off costs (allocator growth, oneDNN/ORT kernel selection,
    lazy initialisation) that a long-lived application pays only once.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def loadavg() -> list[float] | None:
    # Other work on the machine (e.g. a parallel cargo build) skews timings; record it.
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def onnx_cache_path(cache_dir: Path, model: str, checkpoint: Path) -> Path:
    """Cache file name keyed on everything that changes the exported graph.

    Export takes a while and is not what we measure, so reuse it; but never reuse an export
    of a different checkpoint (path, size and mtime stand in for its content), model type,
    opset or torch version.
    """
    st = checkpoint.stat()
    key = "|".join(
        [str(checkpoint.resolve()), str(st.st_size), str(st.st_mtime_ns), model,
         str(ONNX_OPSET), torch.__version__]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / f"{model}-decoder-opset{ONNX_OPSET}-{digest}.onnx"


def export_decoder(sam: torch.nn.Module, onnx_module: Any, out: Path) -> list[str]:
    """Export the prompt encoder + mask decoder as upstream ``export_onnx_model.py`` does.

    Returns the (deduplicated) warnings raised during export: upstream silences them, we
    keep them so that surprises (deprecations, tracer warnings) get reported.
    """
    onnx_model = onnx_module.SamOnnxModel(model=sam, return_single_mask=False)

    dynamic_axes = {
        "point_coords": {1: "num_points"},
        "point_labels": {1: "num_points"},
    }
    embed_dim = sam.prompt_encoder.embed_dim
    embed_size = sam.prompt_encoder.image_embedding_size
    mask_input_size = [4 * x for x in embed_size]
    # Fixed seed only so that repeated exports are byte-identical; values are irrelevant.
    gen = torch.Generator().manual_seed(0)
    dummy_inputs = {
        "image_embeddings": torch.randn(1, embed_dim, *embed_size, dtype=torch.float, generator=gen),
        "point_coords": torch.randint(low=0, high=1024, size=(1, 5, 2), dtype=torch.float, generator=gen),
        "point_labels": torch.randint(low=0, high=4, size=(1, 5), dtype=torch.float, generator=gen),
        "mask_input": torch.randn(1, 1, *mask_input_size, dtype=torch.float, generator=gen),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
    }
    _ = onnx_model(**dummy_inputs)
    output_names = ["masks", "iou_predictions", "low_res_masks"]

    kwargs: dict[str, Any] = {}
    # torch >= 2.9 defaults to the dynamo exporter (needs onnxscript, translates dynamic_axes
    # differently). Upstream's script predates it and uses the TorchScript exporter, so ask
    # for that explicitly wherever the switch exists.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.onnx.export(
                onnx_model,
                tuple(dummy_inputs.values()),
                str(tmp),
                export_params=True,
                verbose=False,
                opset_version=ONNX_OPSET,
                do_constant_folding=True,
                input_names=list(dummy_inputs.keys()),
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                **kwargs,
            )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    # Atomic publish: an interrupted export must not leave a truncated cache entry.
    tmp.replace(out)

    seen: dict[str, None] = {}
    for w in caught:
        first_line = str(w.message).strip().splitlines()[0] if str(w.message).strip() else ""
        seen.setdefault(f"{w.category.__name__}: {first_line}", None)
    return list(seen)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--model", default="vit_b", choices=sorted(MODEL_PACKAGES))
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=3, help="timed set_image runs (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed set_image runs first (default 1)")
    ap.add_argument("--predict-runs", type=int, default=50,
                    help="timed runs for torch predict and each ORT configuration (default 50)")
    ap.add_argument("--predict-warmup", type=int, default=3,
                    help="untimed predict / ORT runs first (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--ort-threads", default="1,2",
                    help="comma-separated ORT intra-op thread counts (default 1,2)")
    ap.add_argument("--onnx-cache", type=Path, default=Path(__file__).resolve().parent / ".cache",
                    help="directory for the exported decoder (default bench/.cache)")
    ap.add_argument("--skip-ort", action="store_true", help="only time PyTorch")
    ap.add_argument("--out", type=Path, required=True, help="JSON results file")
    args = ap.parse_args()

    if args.runs < 1 or args.predict_runs < 1:
        ap.error("--runs and --predict-runs must be >= 1")
    ort_threads = [int(x) for x in args.ort_threads.split(",") if x.strip()]

    t_start = time.perf_counter()
    load_before = loadavg()

    torch.set_num_threads(args.threads)
    pkg_name = MODEL_PACKAGES[args.model]
    with warnings.catch_warnings():
        # mobile_sam's import trips timm's deprecation and registry-overwrite warnings;
        # they are about that package's imports, not about anything measured here.
        warnings.simplefilter("ignore")
        pkg = importlib.import_module(pkg_name)

    image = np.array(Image.open(args.image).convert("RGB"))
    h, w = image.shape[:2]
    # One foreground click at the exact centre (width / 2, height / 2, unrounded), the same
    # point examples/bench.rs uses.
    point = np.array([[w / 2, h / 2]], dtype=np.float64)
    label = np.array([1])

    t0 = time.perf_counter()
    sam = pkg.sam_model_registry[args.model](checkpoint=str(args.checkpoint))
    sam.to("cpu").eval()
    load_s = time.perf_counter() - t0
    log(f"loaded {args.model} from {args.checkpoint} in {load_s:.2f}s ({pkg_name}, {args.threads} threads)")

    predictor = pkg.SamPredictor(sam)

    # --- image embedding -------------------------------------------------------------
    log(f"set_image: {args.warmup} warm-up + {args.runs} timed runs on {w}x{h}")
    embed_times = time_calls(lambda: predictor.set_image(image), args.runs, args.warmup)
    log("set_image runs (s): " + ", ".join(f"{t:.3f}" for t in embed_times))

    # --- PyTorch predict ---------------------------------------------------------------
    def torch_predict():
        return predictor.predict(point_coords=point, point_labels=label, multimask_output=True)

    predict_times = time_calls(torch_predict, args.predict_runs, args.predict_warmup)
    log(f"torch predict median {statistics.median(predict_times) * 1e3:.2f} ms")
    torch_masks, torch_iou, torch_low_res = torch_predict()

    results: dict[str, Any] = {
        "model": args.model,
        "package": pkg_name,
        "checkpoint": str(args.checkpoint),
        "image": str(args.image),
        "image_size_hw": [h, w],
        "point": point.tolist(),
        "threads": args.threads,
        "torch_interop_threads": torch.get_num_interop_threads(),
        "runs": args.runs,
        "warmup": args.warmup,
        "predict_runs": args.predict_runs,
        "predict_warmup": args.predict_warmup,
        "torch_load_s": load_s,
        "torch_embed_s": statistics.median(embed_times),
        "torch_embed_runs_s": embed_times,
        # Fastest run: on a shared machine the least disturbed one, a floor for the median.
        "torch_embed_min_s": min(embed_times),
        "torch_predict_ms": statistics.median(predict_times) * 1e3,
        "torch_predict_runs_ms": [t * 1e3 for t in predict_times],
        "torch_predict_min_ms": min(predict_times) * 1e3,
    }

    # --- official ONNX decoder under onnxruntime ------------------------------------------
    if not args.skip_ort:
        import onnxruntime as ort

        onnx_module = importlib.import_module(f"{pkg_name}.utils.onnx")
        onnx_path = onnx_cache_path(args.onnx_cache, args.model, args.checkpoint)
        if onnx_path.exists():
            log(f"reusing exported decoder {onnx_path}")
            export_warnings = None  # not re-exported, so nothing observed
            export_s = None
        else:
            log(f"exporting decoder to {onnx_path}")
            t0 = time.perf_counter()
            export_warnings = export_decoder(sam, onnx_module, onnx_path)
            export_s = time.perf_counter() - t0
            for msg in export_warnings:
                log(f"export warning: {msg}")

        # Inputs exactly as the official onnx_model_example notebook builds them: the click
        # plus a (0, 0) padding point labelled -1 (there is no box), coordinates mapped to
        # the 1024-long-side frame, no mask prompt.
        embedding = predictor.get_image_embedding().cpu().numpy()
        onnx_coord = np.concatenate([point, np.array([[0.0, 0.0]])], axis=0)[None, :, :]
        onnx_label = np.concatenate([label, np.array([-1])], axis=0)[None, :].astype(np.float32)
        onnx_coord = predictor.transform.apply_coords(onnx_coord, image.shape[:2]).astype(np.float32)
        mask_in_hw = [4 * x for x in sam.prompt_encoder.image_embedding_size]
        ort_inputs = {
            "image_embeddings": embedding,
            "point_coords": onnx_coord,
            "point_labels": onnx_label,
            "mask_input": np.zeros((1, 1, *mask_in_hw), dtype=np.float32),
            "has_mask_input": np.zeros(1, dtype=np.float32),
            "orig_im_size": np.array(image.shape[:2], dtype=np.float32),
        }

        results.update({
            "onnx_path": str(onnx_path),
            "onnx_opset": ONNX_OPSET,
            "onnx_export_s": export_s,
            "onnx_export_warnings": export_warnings,
        })
        for n in ort_threads:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = n
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(str(onnx_path), sess_options=opts,
                                        providers=["CPUExecutionProvider"])
            times = time_calls(lambda: sess.run(None, ort_inputs), args.predict_runs, args.predict_warmup)
            results[f"ort_decoder_ms_{n}t"] = statistics.median(times) * 1e3
            results[f"ort_decoder_runs_ms_{n}t"] = [t * 1e3 for t in times]
            results[f"ort_decoder_min_ms_{n}t"] = min(times) * 1e3
            log(f"ORT {n} thread(s) median {results[f'ort_decoder_ms_{n}t']:.2f} ms")

        # Sanity check that ORT computes what predict() computes, so the two columns are
        # comparable. SamOnnxModel returns all 4 mask tokens; predict(multimask) keeps 1..3.
        ort_masks, ort_iou, ort_low_res = sess.run(None, ort_inputs)
        results["ort_vs_torch"] = {
            "low_res_max_abs_diff": float(np.abs(ort_low_res[0, 1:] - torch_low_res).max()),
            "iou_max_abs_diff": float(np.abs(ort_iou[0, 1:] - torch_iou).max()),
            "mask_agreement": float(((ort_masks[0, 1:] > sam.mask_threshold) == torch_masks).mean()),
            "ort_masks_shape": list(ort_masks.shape),
            "torch_masks_shape": list(torch_masks.shape),
        }
        log(f"ORT vs torch: {results['ort_vs_torch']}")

    results["versions"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": dist_version("onnxruntime", "onnxruntime-gpu"),
        "onnx": dist_version("onnx"),
        "numpy": np.__version__,
        pkg_name: dist_version(pkg_name, pkg_name.replace("_", "-"), "mobilesam-mirror"),
    }
    results["cpu_model"] = cpu_model()
    results["cpu_count"] = os.cpu_count()
    results["loadavg_before"] = load_before
    results["loadavg_after"] = loadavg()
    results["total_wall_s"] = time.perf_counter() - t_start
    results["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {args.out} ({results['total_wall_s']:.1f}s total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
