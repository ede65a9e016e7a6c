#!/usr/bin/env bash
# Segment-everything benchmark: segany vs the reference SamAutomaticMaskGenerator on CPU, one
# after the other, same image, same settings (the reference's defaults: 32×32 points, batches of
# 64), both timed from the image in memory to the masks (model loading excluded).
#
#   bench/everything.sh [--checkpoint CKPT] [--model vit_t] [--image IMG] [--size 1024]
#                       [--runs 1] [--threads 2] [--points-per-side 32]
#
# Defaults: fixtures-large/vit_t/checkpoint.pth (random full-size MobileSAM from
# scripts/make_fixtures.py), tests/fixtures/images/truck.jpg resized so its long side is --size.
# Writes bench/results/everything-<date>.{json,md}.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

checkpoint="fixtures-large/vit_t/checkpoint.pth"
model="vit_t"
image="tests/fixtures/images/truck.jpg"
size=1024
runs=1
threads=2
pps=32

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --checkpoint) checkpoint="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        --image) image="$2"; shift 2 ;;
        --size) size="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --points-per-side) pps="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for f in "$checkpoint" "$image"; do
    [ -f "$f" ] || { echo "error: $f not found (fixtures: scripts/make_fixtures.py --config $model)" >&2; exit 1; }
done
venv="${SEGANY_REF_VENV:-$HOME/.cache/segany/refvenv}"
py="$venv/bin/python"
[ -x "$py" ] || { echo "error: no reference venv at $venv (scripts/setup_reference_venv.sh)" >&2; exit 1; }

stamp="$(date +%Y-%m-%d-%H%M%S)"
mkdir -p bench/results
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

"$py" - "$image" "$size" "$work/image.png" <<'PY'
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("RGB")
s = int(sys.argv[2]) / max(im.size)
im.resize((round(im.width * s), round(im.height * s)), Image.BILINEAR).save(sys.argv[3])
print(f"== image {sys.argv[1]} resized to {im.width * s:.0f}x{im.height * s:.0f}", file=sys.stderr)
PY

echo "== building segany (release)" >&2
cargo build --release --bin segany >&2

echo "== reference ($model, $threads threads, $runs runs)" >&2
ref_before="$(loadavg)"
"$py" bench/everything_reference.py --checkpoint "$checkpoint" --model "$model" --image "$work/image.png" \
    --runs "$runs" --threads "$threads" --points-per-side "$pps" --out "$work/reference.json"
ref_after="$(loadavg)"

echo "== segany ($threads threads, $runs runs)" >&2
seg_before="$(loadavg)"
times=()
for r in $(seq "$runs"); do
    RAYON_NUM_THREADS="$threads" ./target/release/segany everything --checkpoint "$checkpoint" --model "$model" \
        --image "$work/image.png" --points-per-side "$pps" --out "$work/segany" 2>"$work/segany.log" || { cat "$work/segany.log" >&2; exit 1; }
    line="$(grep -o 'segany: [0-9]* masks in [0-9.]* s' "$work/segany.log")"
    echo "[segany] run $r/$runs: $line" >&2
    times+=("$(echo "$line" | sed 's/.* in \([0-9.]*\) s/\1/')")
    masks="$(echo "$line" | sed 's/segany: \([0-9]*\) masks.*/\1/')"
done
seg_after="$(loadavg)"

"$py" - "$work/reference.json" "$stamp" "$model" "$pps" "$masks" "$ref_before / $ref_after" "$seg_before / $seg_after" "${times[@]}" <<'PY'
import json, statistics, sys, platform
ref = json.load(open(sys.argv[1]))
stamp, model, pps, masks, ref_load, seg_load = sys.argv[2:8]
seg = [float(t) for t in sys.argv[8:]]
h, w = ref["size"]
doc = {"model": model, "image_size": [h, w], "points_per_side": int(pps), "threads": ref["threads"],
       "reference": ref, "segany": {"seconds": seg, "median_s": statistics.median(seg), "masks": int(masks)},
       "load_reference": ref_load, "load_segany": seg_load, "machine": platform.processor() or platform.machine()}
json.dump(doc, open(f"bench/results/everything-{stamp}.json", "w"), indent=1)
ratio = doc["segany"]["median_s"] / ref["median_s"]
md = f"""# Segment everything, {model}, {w}x{h}, {pps}x{pps} points, {ref['threads']} threads ({stamp})

| | segany | PyTorch {ref['torch']} (SamAutomaticMaskGenerator) | segany / PyTorch |
|---|---:|---:|---:|
| generate (median of {len(seg)}) | {doc['segany']['median_s']:.1f} s | {ref['median_s']:.1f} s | {ratio:.2f}× |
| masks | {masks} | {ref['masks']} | |

Load average (1/5/15 min) before / after: reference {ref_load}; segany {seg_load}.
"""
open(f"bench/results/everything-{stamp}.md", "w").write(md)
print(md)
PY
echo "wrote bench/results/everything-$stamp.{json,md}" >&2
