#!/usr/bin/env bash
# Installs what segany needs on a fresh Debian machine with Rust (rustup). Idempotent.
#   scripts/setup.sh run   — what building and running the product needs
#   scripts/setup.sh test  — what the test suite needs
set -euo pipefail
what="${1:-test}"

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi
# The Rust toolchain of this repository is the one on the machine (see rust-version in Cargo.toml).
cargo fetch --locked >/dev/null
echo "setup ($what): ready"
