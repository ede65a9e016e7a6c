#!/usr/bin/env bash
# Runs every test of segany. Installs what the tests need first (idempotent; a no-op when present).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh test
cargo test --workspace --locked "$@"
