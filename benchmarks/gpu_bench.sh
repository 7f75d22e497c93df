#!/usr/bin/env bash
# On the lent GPU: (1, with EVAL=1 and the weights present) issue 4's evaluation with three policies, (2) issue 5's benchmark at roberta-base / gpt2 size (random weights), (3) the same for the shipped
# small models (when present: the device call takes at most 64 MiB of files, so the shipped weights
# only travel without the rest). Results go to $OUT (eval.json, bench-<size>-<card>-<date>.json).
# Knobs: BATCHES, AR_BATCHES, STEPS, POLICIES (e.g. confidence,random; old name STRATEGIES), COMPILE (batch sizes; empty: none),
# SKIP (e.g. train), TRAIN_VARIANTS (e.g. compile-fixed+cudagraphs), TRAIN_BATCH (default 32), VOCAB_MULTIPLE (e.g. 64), REPEATS, TAG (file name suffix).
set -uo pipefail
export PYTHONPATH=$PWD/lib PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
export ROBERTA_DIFFUSION_DATA=$PWD/.gpu/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1 | sed 's/NVIDIA //; s/[^A-Za-z0-9]\+/-/g; s/-$//')
day=$(date +%Y-%m-%d)
start=$(date +%s)
if [ -n "${EVAL:-}" ]; then
  python3 -m workbench.cli eval --policies redraw,random,confidence --elbo-samples 4 \
    --out "$OUT/eval.json" 2>&1 | tail -n 3
  echo "eval: $(( $(date +%s) - start )) s"
fi
python3 -m benchmarks.bench --size base --batch-sizes ${BATCHES:-1,16,64,256} --steps ${STEPS:-10,64} \
  --ar-batch-sizes ${AR_BATCHES:-${BATCHES:-1,16,64,256}} --policies ${POLICIES:-${STRATEGIES:-confidence}} --skip "${SKIP:-}" \
  --train-variants "${TRAIN_VARIANTS:-}" --train-batch ${TRAIN_BATCH:-32} \
  --compile "${COMPILE-1,64}" --vocab-multiple ${VOCAB_MULTIPLE:-1} --repeats ${REPEATS:-3} --out "$OUT/bench-base-$card-$day${TAG:-}.json" 2>&1 | grep -v -i warn
echo "base bench done at $(( $(date +%s) - start )) s"
if [ -f weights/roberta-diffusion-small/config.json ]; then
  python3 -m benchmarks.bench --size shipped --batch-sizes 1,64 --steps 10,64 --skip train \
    --repeats ${REPEATS:-3} --out "$OUT/bench-shipped-$card-$day.json" 2>&1 | grep -v -i warn
fi
echo "total: $(( $(date +%s) - start )) s"
