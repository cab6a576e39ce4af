#!/usr/bin/env bash
# Fast-turn figures on a fresh H100/H200 machine, full-size random weights (no download), 1024².
#
#   bash bench/gpu.sh --prepare      # here, with network: the wheels the GPU image lacks -> .gpu-wheels/
#   bash bench/gpu.sh                # there (device tool: carry .gpu-wheels), about 8-10 minutes
#
# The GPU image has torch, transformers, peft, safetensors; diffusers and pydantic come as wheels.
# Results: $OUT (or ./gpu-results) holds fast_turns_klein.json, fast_turns_kontext.json,
# attention_*.json and the log. Each step has its own time limit, so one slow step never costs
# the others.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
PKGS="diffusers==0.42.1 pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
      cachetools==8.0.0 importlib-metadata==10.2.0"
if [[ "${1:-}" == "--prepare" ]]; then
  mkdir -p "$WHEELS"
  pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --no-deps -d "$WHEELS" $PKGS
  du -sh "$WHEELS"; exit 0
fi
OUT=${OUT:-gpu-results}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH=$PWD
$PY -c "import diffusers" 2>/dev/null || $PY -m pip install -q --no-index --no-deps --find-links "$WHEELS" $PKGS
$PY -c "import torch, diffusers; print(torch.__version__, diffusers.__version__, torch.cuda.get_device_name())" | tee "$OUT/log"
run() {  # seconds name args...
  local limit=$1 name=$2; shift 2
  echo "== $name" | tee -a "$OUT/log"
  timeout "$limit" $PY bench/engine.py --device cuda "$@" --out "$OUT/$name.json" 2>&1 | grep -v Warning | tail -40 | tee -a "$OUT/log"
}
# klein 4B: 4 steps, edit with 2 references; then Kontext [dev]: 28 steps (the long one)
run 150 fast_turns_klein --fast-turns --compare-models full-klein --images 3
run 420 fast_turns_kontext --fast-turns --compare-models full --images 2
for backend in native _native_flash _native_cudnn flash _flash_3; do  # exact backends; missing kernels fail fast
  run 60 "attention_$backend" --model full-klein --edit --references 2 --images 2 --attention $backend
done
