#!/usr/bin/env bash
# One-command set-up on a fresh machine: creates .venv in the repository root and installs
# torch, detectron2 (patched PyPI sdist, see INSTALL.md), the other dependencies and this
# package in editable mode. Re-runnable: finished steps are skipped by pip / the installers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade "pip>=23" "setuptools>=69,<81" wheel
"$VPY" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VPY" -m pip install -q -r requirements.txt
"$VPY" tools/install_detectron2.py
# Compiled multi-scale deformable-attention kernel (optional; the pure-PyTorch path is the fallback).
"$VPY" -m pip install -q --no-build-isolation torch-ms-deform-attn==0.1.1 \
  || echo "[setup_env] torch-ms-deform-attn did not build; the pure-PyTorch path will be used"
# Optional Detic labeler (stage 1): detic-fast + centernet2 + the CLIP tokenizer, --no-deps because
# their declared requirements (mmcv, fasttext, nltk, lvis, opencv-python, ...) are not imported at
# inference; what they do import comes with setup.py's "detic" extra (ftfy, regex). See INSTALL.md.
"$VPY" -m pip install -q --no-deps detic-fast==1.0.post20230203 centernet2==1.0.post20221121 clip-anytorch==2.6.0
"$VPY" -m pip install -q --no-deps --no-build-isolation -e .
"$VPY" -c "import torch, detectron2, part_distillation; print('torch', torch.__version__, '| detectron2', detectron2.__version__, '| part_distillation ok')"
# Manual-evaluation tool (tools/manual_eval.py): setup.py's "manual_eval" extra (FastAPI, uvicorn,
# httpx, statsmodels, Selenium), and Debian's chromium + chromium-driver for its browser test
# (a browser cannot be downloaded at run time). apt-get update runs only when the install needs it.
"$VPY" -m pip install -q --no-build-isolation -e ".[manual_eval]"
if ! dpkg -s chromium chromium-driver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium chromium-driver </dev/null >/dev/null 2>&1 \
      || { apt-get update -qq </dev/null && apt-get install -y -qq chromium chromium-driver </dev/null; } \
      || { echo "[setup_env] chromium / chromium-driver did not install"; [ -z "${CI:-}" ] || exit 1; }
  else
    echo "[setup_env] chromium + chromium-driver missing (as root: apt-get install chromium chromium-driver);" \
         "the manual-evaluation browser test will skip"
  fi
fi
