#!/usr/bin/env bash
# Native CPU benchmark: segany vs the official PyTorch SAM and its official ONNX decoder.
#
#   bench/run.sh [--checkpoint CKPT] [--image IMG] [--runs N] [--threads T]
#                [--model vit_b] [--reference-only]
#
# Defaults: fixtures-large/vit_b/{checkpoint.pth,image.png}, 3 runs, 2 threads.
# Steps, strictly one after another so they do not steal each other's cores:
#   1. build `examples/bench.rs` in release mode (so compiling is never timed or overlapped)
#   2. bench/reference.py in the reference venv (PyTorch + onnxruntime figures)
#   3. cargo run --release --example bench (segany figures, one JSON object on stdout)
#   4. bench/report.py: markdown table on stdout, bench/results/native-<date>.{json,md}
#
# The reference venv is $SEGANY_REF_VENV, else /work/refvenv if present, else
# ~/.cache/segany/refvenv (the default of scripts/setup_reference_venv.sh).
# --reference-only skips segany (steps 1 and 3); its column then reads "—".
# Timings are only meaningful on an otherwise idle machine: the load average
# before and after each step is recorded in the results.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

checkpoint="fixtures-large/vit_b/checkpoint.pth"
image="fixtures-large/vit_b/image.png"
model="vit_b"
runs=3
threads=2
reference_only=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --checkpoint) checkpoint="$2"; shift 2 ;;
        --image) image="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --reference-only) reference_only=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

for f in "$checkpoint" "$image"; do
    [ -f "$f" ] || { echo "error: $f not found (fixtures: scripts/make_fixtures.py)" >&2; exit 1; }
done

# --- reference venv --------------------------------------------------------------------
if [ -n "${SEGANY_REF_VENV:-}" ]; then
    venv="$SEGANY_REF_VENV"
elif [ -d /work/refvenv ]; then
    venv=/work/refvenv
else
    venv="$HOME/.cache/segany/refvenv"
fi
py="$venv/bin/python"
if ! [ -x "$py" ] || ! "$py" -c 'import segment_anything, torch, onnxruntime, onnx, PIL, numpy' >/dev/null 2>&1; then
    cat >&2 <<EOF
error: no usable reference venv at $venv
       (needs torch, segment-anything, onnx, onnxruntime; vit_t also mobilesam-mirror, timm).
Create it with:
    SEGANY_REF_VENV=$venv scripts/setup_reference_venv.sh
or point SEGANY_REF_VENV at an existing one.
EOF
    exit 1
fi

if [ "$reference_only" = 0 ] && [ ! -f examples/bench.rs ]; then
    echo "error: examples/bench.rs does not exist yet; use --reference-only to time only the reference" >&2
    exit 1
fi

stamp="$(date +%Y-%m-%d-%H%M%S)"
outdir="bench/results"
mkdir -p "$outdir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
notes=()

# Warn (not wait): on a shared box another build or test run can double the timings.
load1="$(cut -d' ' -f1 /proc/loadavg)"
if awk -v l="$load1" 'BEGIN { exit !(l >= 0.5) }'; then
    echo "warning: 1-minute load average is $load1; timings will be disturbed by other work" >&2
fi

# --- 1. build first, so that step 3 measures a finished binary -------------------------
if [ "$reference_only" = 0 ]; then
    echo "== building examples/bench.rs (release)" >&2
    cargo build --release --example bench >&2
fi

# --- 2. reference ------------------------------------------------------------------------
echo "== reference ($model, $threads threads, $runs runs) with $py" >&2
"$py" bench/reference.py --checkpoint "$checkpoint" --model "$model" --image "$image" \
    --runs "$runs" --threads "$threads" --out "$work/reference.json"

# --- 3. segany ---------------------------------------------------------------------------
report_args=(--reference "$work/reference.json")
if [ "$reference_only" = 0 ]; then
    echo "== segany ($threads threads, $runs runs)" >&2
    before="$(loadavg)"
    # stdout is the JSON result; cargo's and the example's own logging go to stderr.
    cargo run --release --example bench -- \
        --checkpoint "$checkpoint" --image "$image" --runs "$runs" --threads "$threads" \
        >"$work/segany.json"
    notes+=(--note "load average (1/5/15 min) before / after segany: $before / $(loadavg)")
    report_args+=(--segany "$work/segany.json")
fi

# --- 4. report ---------------------------------------------------------------------------
"$py" bench/report.py "${report_args[@]}" "${notes[@]}" \
    --out-json "$outdir/native-$stamp.json" --out-md "$outdir/native-$stamp.md"
echo "wrote $outdir/native-$stamp.json and $outdir/native-$stamp.md" >&2
