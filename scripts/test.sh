#!/usr/bin/env bash
# Install anogen-aug with its test extras into ./.venv (once) and run the default test suite.
# torch/torchvision are pinned to the releases preinstalled on this project's machines; any torch>=2.4 works.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[dev]"
ruff check .
ruff format --check .
python -m pytest -q "$@"
