#!/usr/bin/env bash
# The Lago client suite: lago-python-client 1.55.0 against a freshly started Odometer.
set -euo pipefail
cd "$(dirname "$0")/../../.."
"$PYTHON" -m pytest -q tests/clients/lago
