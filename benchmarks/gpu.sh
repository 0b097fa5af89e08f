#!/usr/bin/env bash
# Every GPU figure of issue #5 in one run, on one CUDA GPU, in about five minutes:
#   ms per evaluation at 512 and 1024 px for the naive baseline and each precision mode, with TFLOP/s;
#   500 L-BFGS iterations at 512 px per precision mode, with the fp32-vs-reduced-precision quality;
#   peak GPU memory per size and optimiser against the engine's estimate.
# Uses seeded random VGG19 weights (speed and memory do not depend on the values).  Needs torch and
# torchvision; where they are missing it installs them from wheels in .whl/ (no network) or the index.
#
#   bash benchmarks/gpu.sh                      # prints the figures; GPU_JSON_DIR=DIR also saves JSON
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c "import torch, torchvision" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --target /tmp/nst-site .whl/*.whl
    export PYTHONPATH="/tmp/nst-site${PYTHONPATH:+:$PYTHONPATH}"
  else
    "$PYTHON" -m pip install -q torch torchvision
  fi
fi
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print('GPU:', torch.cuda.get_device_name())"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
json_dir="${GPU_JSON_DIR:-}"

echo "== per evaluation, naive vs engine precision modes"
"$PYTHON" benchmarks/engine_speed.py --random-weights --device cuda --sizes 512 1024 \
  --precisions fp32 tf32 bf16 --evals 0 --repeats 20 ${json_dir:+--json} | tee ${json_dir:+"$json_dir/engine_speed.json"}
echo; echo "== 500 iterations at 512 px per precision mode, quality against fp32"
"$PYTHON" benchmarks/precision_quality.py --random-weights --device cuda --size 512 --iterations 500 \
  --precisions fp32 tf32 bf16 ${json_dir:+--json} | tee ${json_dir:+"$json_dir/precision_quality.json"}
echo; echo "== peak GPU memory against the estimate"
"$PYTHON" benchmarks/memory_use.py --random-weights --device cuda --sizes 256 512 1024 2048 \
  ${json_dir:+--json} | tee ${json_dir:+"$json_dir/memory_use.json"}
