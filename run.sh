#!/usr/bin/env bash
# Builds segany (the page included) in release mode and runs it.
#   ./run.sh                        — serves the page and API on http://127.0.0.1:8080 with every
#                                     official checkpoint in models/ (sam_vit_*.pth, mobile_sam.pt)
#   ./run.sh predict --checkpoint … — any CLI command (`./run.sh --help`)
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh run
scripts/build_page.sh
cargo build --release --locked --bin segany
if [ $# -gt 0 ]; then
  exec target/release/segany "$@"
fi
args=()
for f in models/mobile_sam.pt models/sam_vit_b_01ec64.pth models/sam_vit_l_0b3195.pth models/sam_vit_h_4b8939.pth \
         models/*.pth models/*.pt models/*.safetensors models/*.bpk; do
  [ -f "$f" ] || continue
  case " ${args[*]-} " in *" $f "*) continue ;; esac
  args+=(--checkpoint "$f")
done
if [ ${#args[@]} = 0 ]; then
  cat >&2 <<'MSG'
run.sh: no checkpoint in models/. Put an official one there (mobile_sam.pt, sam_vit_b_01ec64.pth, ...).
        Serving the tiny RANDOM test checkpoint instead, so that the page can be tried: its masks are noise.
MSG
  args=(--checkpoint tests/fixtures/tiny/checkpoint.pth --config tests/fixtures/tiny/sam_config.json)
fi
exec target/release/segany serve "${args[@]}" --cache-dir "${SEGANY_CACHE_DIR:-$HOME/.cache/segany/embeddings}" \
  --addr "${SEGANY_ADDR:-127.0.0.1:8080}"
