#!/usr/bin/env bash
# On the lent GPU: two more MLM variants with more optimiser steps for the same 57.3M tokens as the AR baseline
# (smaller batches: the masked LM's unigram plateau is counted in updates), pick by ELBO, ship, evaluate.
set -uo pipefail
export PYTHONPATH=$PWD/lib PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 ROBERTA_DIFFUSION_DATA=$PWD/.gpu/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; TRAIN_PT=${TRAIN_PT:-$PWD/.gpu/train_blocks.pt}; MINUTES=${MINUTES:-4.3}
rm -rf runs/sweep-*
start=$(date +%s)
variant() {
  local name=$1; shift
  python3 -m roberta_diffusion.cli finetune --profile full --set "run_name=\"sweep-$name\"" 'objectives=["mlm"]' \
    "train_data=$TRAIN_PT" "max_minutes=$MINUTES" eval_every=2000 save_every=100000 "$@" > "$OUT/train_mlm_$name.log" 2>&1
}
variant e arch=roberta batch_size=16 max_steps=14000 lr=0.0005 warmup_steps=500 ratio_mode=levels weighting=none &
variant f arch=roberta-prelayernorm batch_size=32 max_steps=7000 lr=0.001 warmup_steps=500 ratio_mode=levels weighting=none &
wait
echo "training wall time: $(( $(date +%s) - start )) s"
best=$(python3 scripts/pick_best_mlm.py runs/sweep-e runs/sweep-f | tee "$OUT/sweep.txt" | tail -n 1)
cat "$OUT/sweep.txt"
cp "$OUT/train_mlm_${best##*-}.log" "$OUT/train_mlm.log"
python3 scripts/ship_models.py "$best" "$OUT" mlm || exit 1
python3 -m roberta_diffusion.cli eval --out weights/roberta-diffusion-small/eval.json --elbo-samples 4 2>&1 | tail -n 32
cp weights/roberta-diffusion-small/eval.json "$OUT/eval.json"
echo "total wall time: $(( $(date +%s) - start )) s"
tar czf "$OUT/mlm.tgz" weights/roberta-diffusion-small && split -b 15M "$OUT/mlm.tgz" "$OUT/mlm.tgz.part-" && rm "$OUT/mlm.tgz"
tar czf "$OUT/logs.tgz" -C "$OUT" $(cd "$OUT" && ls train_*.log) && rm "$OUT"/train_*.log
ls -la "$OUT"
