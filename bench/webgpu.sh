#!/usr/bin/env bash
# The MobileSAM encoder on WebGPU / wgpu, timed against the CPU in the same run:
#   1. natively on burn's wgpu runtime (Vulkan: the machine's GPU, else Mesa's lavapipe, installed
#      here when no Vulkan driver is) against burn on the CPU (examples/bench_wgpu.rs);
#   2. in the page, in headless Chromium's WebGPU (SwiftShader without a GPU) against the same
#      server's native embedding (bench/page_embed.mjs).
#
#   bench/webgpu.sh [--checkpoint CKPT] [--config CFG.json] [--image IMG] [--runs N] [--native-only] [--page-only]
#
# Defaults: the full-size random MobileSAM checkpoint fixtures-large/vit_t/checkpoint.pth
# (scripts/make_fixtures.py --large vit_t) and its image. Results: bench/results/webgpu-*.json
# and page-embed-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint=fixtures-large/vit_t/checkpoint.pth image=fixtures-large/vit_t/image.png runs=3 config=() native=1 page=1
while [ $# -gt 0 ]; do
  case "$1" in
    --checkpoint) checkpoint="$2"; shift 2 ;;
    --image) image="$2"; shift 2 ;;
    --config) config=(--config "$2"); shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --native-only) page=0; shift ;;
    --page-only) native=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%S)
if [ "$native" = 1 ]; then
  if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
    echo "webgpu.sh: no Vulkan driver; installing Mesa's (lavapipe)" >&2
    apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
  fi
  cargo build --release --locked --features bench-wgpu --example bench_wgpu 2>&1 | tail -1 >&2
  out="bench/results/webgpu-native-$stamp.json"
  ./target/release/examples/bench_wgpu --checkpoint "$checkpoint" --image "$image" "${config[@]}" --runs "$runs" | tee "$out"
  echo "webgpu.sh: $out" >&2
fi
if [ "$page" = 1 ]; then
  # onnxruntime-web on the reference's encoder export, when the reference venv is there.
  onnx=()
  venv="${SEGANY_REF_VENV:-$HOME/.cache/segany/refvenv}"
  if [ -x "$venv/bin/python" ] && [ ${#config[@]} = 0 ]; then
    (cd bench/web && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    onnx=(--onnx "$(cd bench && "$venv/bin/python" export_onnx.py --part encoder --checkpoint "../$checkpoint" --model vit_t 2>/dev/null)")
  fi
  scripts/build_page.sh >/dev/null 2>&1
  cargo build --release --locked --bin segany 2>&1 | tail -1 >&2
  node bench/page_embed.mjs --checkpoint "$checkpoint" --image "$image" "${config[@]}" "${onnx[@]}" --runs "$runs"
fi
