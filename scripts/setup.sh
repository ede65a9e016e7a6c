#!/usr/bin/env bash
# Installs what segany needs on a fresh Debian machine with Rust (rustup). Idempotent: each step
# checks first and does nothing when its tool is already there at the right version.
#   scripts/setup.sh run   — what building and running the product needs (the page included)
#   scripts/setup.sh test  — that, plus what the test suite needs (Chromium, chromedriver)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-test}"

# Versions the page's build is verified with (see DESIGN.md): trunk newer than 0.21.14 needs a
# newer rustc; wasm-bindgen-cli must equal the `wasm-bindgen` crate pinned in Cargo.lock.
TRUNK_VERSION=0.21.14
WASM_BINDGEN_VERSION=$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)

say() { echo "setup: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} = 0 ] && return
  say "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi

# Node runs wasm-opt (npm binaryen: Debian's is too old and breaks the app) and the browser tests.
command -v npm >/dev/null || apt_install nodejs npm
if [ "$what" = test ]; then
  apt_install chromium chromium-driver
fi

rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || {
  say "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
}

if [ "$(trunk --version 2>/dev/null)" != "trunk $TRUNK_VERSION" ]; then
  say "cargo install trunk $TRUNK_VERSION"
  cargo install trunk --version "$TRUNK_VERSION" --locked --quiet
fi
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ] ||
   ! command -v wasm-bindgen-test-runner >/dev/null; then
  # Not --locked: the CLI's own lock file pins crates that no longer build with this toolchain.
  say "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force --quiet
fi

# npm packages (binaryen's wasm-opt, playwright-core), reinstalled only when the lock file changes.
stamp=node_modules/.segany-lock-sha256
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" >"$stamp"
fi

cargo fetch --locked >/dev/null
echo "setup ($what): ready"
