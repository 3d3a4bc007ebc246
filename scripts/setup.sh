#!/usr/bin/env bash
# Set up (or update) .venv for nbody explorer.
#   scripts/setup.sh          the tool: PyTorch, the engine, the explorer
#   scripts/setup.sh --test   also the test tools and, as root, Debian's Chromium for browser tests
# PyTorch: where no NVIDIA GPU is visible the CPU build is installed (small, no CUDA download);
# with a GPU, the default PyPI build (CUDA). An existing torch in .venv is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
PY="${PYTHON:-python3}"

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${pip[@]}" "torch==${TORCH_VERSION}"
  else
    "${pip[@]}" --retries 1 --timeout 20 "torch==${TORCH_VERSION}" \
      --extra-index-url https://download.pytorch.org/whl/cpu
  fi
fi

if [ "${1:-}" = "--test" ]; then
  "${pip[@]}" -e ".[test]"
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "setup: browser tests need Debian's chromium: sudo apt-get install chromium" >&2
    fi
  fi
else
  "${pip[@]}" -e .
fi
