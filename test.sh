#!/usr/bin/env bash
# Runs every test of segany. Installs what the tests need first (idempotent; a no-op when present).
#   1. the page is built (trunk), so the `segany` under test serves it;
#   2. cargo tests: parity with the reference fixtures, CLI, HTTP against the real server;
#   3. the wasm decoder (both builds: plain and relaxed SIMD), and the image encoder on WebGPU
#      (SwiftShader), against the same fixtures in headless Chromium (wasm-bindgen-test);
#   4. the page in headless Chromium (Playwright) against the real `segany serve`, WebGPU included.
# Arguments go to the cargo tests (step 2).
set -euo pipefail
cd "$(dirname "$0")"
# Incremental caches only help edit-compile loops; in a test run they are gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h . | sed 's/^/test.sh: disk: /'
scripts/setup.sh test
scripts/build_page.sh
# --show-output: the full-size parity tests say SKIPPED when their fixtures are absent (as in CI).
cargo test --workspace --locked "$@" -- --show-output
# Each shares its compiled dependencies (web profile, same features) with a worker built above:
# the decoder with the decoder worker's, the WebGPU encoder (web/tests/webgpu.rs) with the
# encoder worker's.
export CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=900
cargo test -p segany-wasm --target wasm32-unknown-unknown --profile web --locked
# Again with the decoder's GEMM on relaxed SIMD: the page's other decoder worker build (the one
# Chromium runs), sharing its compiled dependencies.
cargo test -p segany-wasm --target wasm32-unknown-unknown --profile web --locked --features relaxed-simd
cargo test -p segany-web --target wasm32-unknown-unknown --profile web --features encoder --test webgpu --locked
# The `segany` the cargo tests built (same features; a plain `cargo build` would rebuild burn).
SEGANY_BIN="$PWD/target/debug/segany" node --test tests/browser/
du -sh target | sed 's/^/test.sh: build outputs: /'
