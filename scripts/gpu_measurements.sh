#!/usr/bin/env bash
# The GPU measurements for docs/results.md, in stages. Each stage is meant to fit in ten
# minutes on one H100, and it resumes where a killed run of the same stage stopped. On an
# H200 (2026-12-04): tests 170 s; bench 70 s a MixerFlow row; compare 140 s at MINUTES=0.75.
#
#   bash scripts/gpu_measurements.sh STAGE...      STAGE: tests sweep bench compare samples
#
#   tests    the CUDA checks (pytest -m cuda)
#   sweep    training-step time and memory at 32, 64, 128 and 256 px (bf16, eager, batch 16)
#   bench    the campaign's bench: MixerFlow and a matched Glow on CIFAR-10, eager and
#            compiled, fp32 and bf16
#   compare  the campaign's comparison: both models trained MINUTES each on CIFAR-10 in bf16.
#            After LIMIT seconds it is sent SIGTERM: the training checkpoints, and running
#            the stage again resumes it
#   samples  samples at T = 0.7 and 1.0 from both compared models, and the largest pixel
#            error of decode(encode(x)) over 256 test images
#
# Environment: DATA (default data) is the folder with cifar10/{train,test}.npz; WORK
# (default runs/gpu) keeps the run folders between stages; MINUTES (default 5); LIMIT
# (default 540); OVERRIDES, key=value settings for sweep, bench and compare (e.g. a
# smaller train.batch_size on a smaller GPU).
set -euo pipefail
DATA=${DATA:-data}
WORK=${WORK:-runs/gpu}
MINUTES=${MINUTES:-5}
LIMIT=${LIMIT:-540}
export WANDB_MODE=${WANDB_MODE:-disabled} PYTHONUNBUFFERED=1
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-60}  # a progress line a minute in logs
CONFIGS=(--config configs/cifar10_mixerflow.yaml --config configs/cifar10_glow.yaml)
read -r -a OVERRIDES <<< "${OVERRIDES:-}"
mkdir -p "$WORK"

mixerflow() { python3 -m mixerflow.cli "$@"; }

for stage in "$@"; do
  echo "== $stage" >&2
  case $stage in
    tests) python3 -m pytest -m cuda -rs 2>&1 | tee "$WORK/cuda_tests.log" ;;
    sweep) mixerflow bench "${CONFIGS[@]}" --sizes 32,64,128,256 --channels 3 \
             --batch-size 16 --precision bf16 --modes eager --out "$WORK/sweep" "${OVERRIDES[@]}" ;;
    bench) mixerflow campaign --parts bench --out "$WORK/campaign" "${OVERRIDES[@]}" ;;
    compare) timeout -s TERM "$LIMIT" python3 -m mixerflow.cli campaign --parts compare \
               --minutes "$MINUTES" --data-root "$DATA" --out "$WORK/campaign" "${OVERRIDES[@]}" ;;
    samples)
      for run in "$WORK"/campaign/compare/runs/*_seed0; do
        mixerflow sample --checkpoint "$run/checkpoint.pt" --temperature 0.7,1 --n 64 \
          --reconstruct 256 --data-root "$DATA"
      done ;;
    *) echo "error: unknown stage '$stage' (tests, sweep, bench, compare, samples)" >&2
       exit 2 ;;
  esac
done
