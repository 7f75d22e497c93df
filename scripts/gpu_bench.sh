#!/usr/bin/env bash
# On the lent GPU (issue 5): the benchmark at roberta-base / gpt2 size (random weights) and with the shipped
# small models, written to $OUT/bench-<size>-<card>-<date>.json (copy them to benchmarks/results/).
set -uo pipefail
export PYTHONPATH=$PWD/lib PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1 | sed 's/NVIDIA //; s/[^A-Za-z0-9]\+/-/g; s/-$//')
day=$(date +%Y-%m-%d)
start=$(date +%s)
python3 -m roberta_diffusion.cli bench --size base --batch-sizes ${BATCHES:-1,16,64,256} --steps 10,64 \
  --compile ${COMPILE:-1,64} --repeats ${REPEATS:-5} --out "$OUT/bench-base-$card-$day.json" 2>&1 | grep -v Warning
echo "base bench: $(( $(date +%s) - start )) s"
if [ -f weights/roberta-diffusion-small/config.json ]; then
  python3 -m roberta_diffusion.cli bench --size shipped --batch-sizes 1,64 --steps 10,64 --skip train \
    --repeats ${REPEATS:-5} --out "$OUT/bench-shipped-$card-$day.json" 2>&1 | grep -v Warning
fi
echo "total: $(( $(date +%s) - start )) s"
