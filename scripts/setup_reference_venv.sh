#!/usr/bin/env bash
# Create (or reuse) the Python reference environment for segany fixtures.
#
#   scripts/setup_reference_venv.sh            # venv at $SEGANY_REF_VENV or ~/.cache/segany/refvenv
#   SEGANY_REF_VENV=/tmp/rv scripts/setup_reference_venv.sh
#
# Idempotent: if the venv already imports segment_anything (and torch,
# torchvision, PIL, numpy), nothing is installed. Packages come from PyPI via
# pip. Set SEGANY_REF_UNPINNED=1 to install the latest versions instead of the
# pins in requirements-reference.txt, SEGANY_PYTHON to choose the interpreter,
# and e.g. PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (pip's own variables) for a
# CPU-only torch index.
#
# Afterwards:
#   "$SEGANY_REF_VENV/bin/python" scripts/make_fixtures.py --config tiny --out tests/fixtures/tiny
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${SEGANY_REF_VENV:-$HOME/.cache/segany/refvenv}"
python="${SEGANY_PYTHON:-python3}"
req="$here/requirements-reference.txt"

check() {
    [ -x "$venv/bin/python" ] &&
        "$venv/bin/python" -c 'import segment_anything, torch, torchvision, PIL, numpy' >/dev/null 2>&1
}

if check; then
    echo "reference venv ready: $venv"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv at $venv (with $("$python" --version 2>&1))"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi

"$venv/bin/python" -m pip install --upgrade pip
if [ "${SEGANY_REF_UNPINNED:-0}" = "1" ]; then
    # Same package set, unpinned.
    grep -v -e '^#' -e '^\s*$' "$req" | sed 's/[=<>!~].*//' |
        xargs "$venv/bin/python" -m pip install
else
    "$venv/bin/python" -m pip install -r "$req"
fi

check || { echo "error: venv at $venv still cannot import segment_anything" >&2; exit 1; }
echo "reference venv ready: $venv"
