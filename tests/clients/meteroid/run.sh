#!/usr/bin/env bash
# The Meteroid dialect driven by Meteroid's own Python SDK (meteroid==0.30.1).
# Needs ODO_BIN (the odometer binary) and PYTHON (a virtualenv with requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/../../.."
"$PYTHON" -m pytest -q tests/clients/meteroid
