#!/usr/bin/env bash
# Builds the page (web/ + www/) into dist/ with trunk, offline; `segany` embeds dist/ (build.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
# wasm-opt comes from npm binaryen (node_modules/.bin), at the version Trunk.toml names.
PATH="$PWD/node_modules/.bin:$PATH" TRUNK_SKIP_VERSION_CHECK=true trunk build --config Trunk.toml
