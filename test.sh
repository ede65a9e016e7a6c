#!/usr/bin/env bash
# Runs every test of segany. Installs what the tests need first (idempotent; a no-op when present).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh test
# --show-output: the full-size parity tests say SKIPPED when their fixtures are absent (as in CI).
cargo test --workspace --locked "$@" -- --show-output
