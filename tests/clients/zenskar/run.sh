#!/usr/bin/env bash
# The Zenskar suite: schemathesis against the seed's OpenAPI document and a live Odometer.
# Under tests/clients/run, ODO_BIN and PYTHON are given; run on its own, it builds the binary
# and makes its own virtualenv (under the build directory) with schemathesis from PyPI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../../.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
if [[ -z "${ODO_BIN:-}" ]]; then
    cargo build --workspace --bin odometer
    export ODO_BIN="$target/debug/odometer"
fi
if [[ -z "${PYTHON:-}" ]]; then
    venv="$target/zenskar-venv"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    PYTHON="$venv/bin/python"
fi
exec "$PYTHON" "$here/run.py"
