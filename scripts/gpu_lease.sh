#!/usr/bin/env bash
# A short GPU lease in two calls, as the first H200 run (docs/results.md) was made.
#
#   bash scripts/gpu_lease.sh prepare [TRAIN_IMAGES]   here, before the lease: copies nflows
#        (the device image lacks it) to .whl/site and CIFAR-10 (the whole test split and the
#        first TRAIN_IMAGES, default 11000, training images: 64 MiB travel a call) to .gpudata
#   bash scripts/gpu_lease.sh tests-bench               on the device (carry .whl and .gpudata):
#        the CUDA tests, then the campaign's bench, into $OUT as they go
#   bash scripts/gpu_lease.sh compare                   on the device: the campaign's comparison
#        for MINUTES (default 0.75) per model on the carried CIFAR-10
#
# Limits (seconds): TESTS_S (190) and BENCH_S (300) for tests-bench, LIMIT (200) for compare.
set -uo pipefail
stage=${1:-}
if [[ $stage == prepare ]]; then
  set -e
  nflows=$(python -c "import nflows, os; print(os.path.dirname(nflows.__file__))")
  mkdir -p .whl/site .gpudata/cifar10
  rm -rf .whl/site/nflows && cp -r "$nflows" .whl/site/
  find .whl/site -name __pycache__ -prune -exec rm -rf {} +
  src=${DATA:-../shared/data}/cifar10
  cp "$src/test.npz" .gpudata/cifar10/
  python - "$src/train.npz" "${2:-11000}" <<'EOF'
import sys
import numpy as np
data = np.load(sys.argv[1])
n = int(sys.argv[2])
np.savez_compressed(".gpudata/cifar10/train.npz", data=data["data"][:n], labels=data["labels"][:n])
EOF
  grep -qx "/.gpudata/" .git/info/exclude 2>/dev/null || echo "/.gpudata/" >> .git/info/exclude
  du -sh .whl .gpudata
  exit 0
fi
if [[ $stage != tests-bench && $stage != compare ]]; then
  echo "error: unknown stage '$stage' (prepare, tests-bench, compare)" >&2; exit 2
fi
[[ -n ${OUT:-} ]] || { echo "error: $stage runs on the device, where OUT is set" >&2; exit 2; }
export PYTHONPATH=$PWD/.whl/site:$PWD PYTHONUNBUFFERED=1 WANDB_MODE=disabled
start=$(date +%s)
at() { echo "[$(( $(date +%s) - start )) s] $*"; }
case $stage in
  tests-bench)
    export PYTEST_ADDOPTS="-p no:cacheprovider"
    python3 -c "import pytest_timeout" 2>/dev/null && PYTEST_ADDOPTS+=" --timeout=150"
    { nvidia-smi; python3 -c "import torch, triton; print(torch.__version__, triton.__version__,
torch.cuda.get_device_name())"; } > "$OUT/env.txt" 2>&1
    WORK=/tmp/gpu timeout -k 10 "${TESTS_S:-190}" bash scripts/gpu_measurements.sh tests \
      > "$OUT/tests.log" 2>&1
    at "tests rc=$?" >> "$OUT/tests.log"
    # the campaign's report folder straight under $OUT: its rows come back even if cut short
    WORK=$OUT timeout -k 10 "${BENCH_S:-300}" bash scripts/gpu_measurements.sh bench \
      > "$OUT/bench.log" 2>&1
    at "bench rc=$?" >> "$OUT/bench.log" ;;
  compare)
    WORK=/tmp/gpu2 DATA=.gpudata MINUTES=${MINUTES:-0.75} LIMIT=${LIMIT:-200} \
      OVERRIDES="data.val_size=1000" bash scripts/gpu_measurements.sh compare \
      > "$OUT/compare.log" 2>&1
    at "compare rc=$?" >> "$OUT/compare.log"
    for f in report.md report.json bpd_vs_time.png samples_mixerflow.png samples_glow.png; do
      cp "/tmp/gpu2/campaign/compare/$f" "$OUT/" 2>/dev/null
    done ;;
esac
