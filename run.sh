#!/usr/bin/env bash
# Builds segany in release mode and runs it; arguments go to the CLI (`./run.sh --help`).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh run
cargo build --release --locked --bin segany
exec target/release/segany "$@"
