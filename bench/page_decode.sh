#!/usr/bin/env bash
# Per-click decode in the page vs onnxruntime-web (official ONNX decoder), same headless Chromium.
#   bench/page_decode.sh [--checkpoint CKPT] [--model vit_t] [--image IMG] [--clicks N]
# Defaults: the full-size random MobileSAM checkpoint fixtures-large/vit_t/checkpoint.pth
# (scripts/make_fixtures.py --large vit_t) and its image. Needs the reference venv for the export.
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint=fixtures-large/vit_t/checkpoint.pth model=vit_t rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --checkpoint) checkpoint="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    *) rest+=("$1"); shift ;;
  esac
done
venv="${SEGANY_REF_VENV:-$HOME/.cache/segany/refvenv}"
(cd bench/web && npm install --no-audit --no-fund --loglevel=error >/dev/null)
onnx=$(cd bench && "$venv/bin/python" export_onnx.py --part decoder --checkpoint "../$checkpoint" --model "$model" 2>/dev/null)
scripts/build_page.sh >/dev/null 2>&1
cargo build --release --locked --bin segany 2>/dev/null
exec node bench/page_decode.mjs --checkpoint "$checkpoint" --onnx "$onnx" "${rest[@]}"
