#!/usr/bin/env bash
# One-time set-up in .venv: torch (a CPU build unless there is an NVIDIA GPU), then this package with its dev extra.
# Re-running is cheap: what is installed stays.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if compgen -G "/opt/wheels/torch-2.13.0+cpu-*.whl" >/dev/null; then
    "${PIP[@]}" --find-links /opt/wheels "torch==2.13.0"          # this workplace: a CPU wheel on disk
  elif command -v nvidia-smi >/dev/null 2>&1; then
    "${PIP[@]}" torch                                            # a GPU machine: the default CUDA build
  else
    "${PIP[@]}" torch --index-url https://download.pytorch.org/whl/cpu   # any CPU machine: no multi-GB CUDA download
  fi
fi
"${PIP[@]}" -e ".[dev]"
# JupyterLab in .venv reads labconfig/ under .venv/etc/jupyter: this one makes a double-clicked .py (the notebooks'
# py:percent sources) open as a notebook through jupytext, as README says
mkdir -p .venv/etc/jupyter/labconfig
cp .jupyter/labconfig/default_setting_overrides.json .venv/etc/jupyter/labconfig/
echo "set-up done: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "| transformers", transformers.__version__)')"
