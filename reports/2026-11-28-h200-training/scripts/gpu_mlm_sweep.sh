#!/usr/bin/env bash
# On the lent GPU: train three MLM variants and the AR baseline at once (same data, steps, batch, optimiser),
# pick the best by held-out ELBO, ship it, and evaluate both shipped models -> eval.json.
set -uo pipefail
export PYTHONPATH=$PWD/lib PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 ROBERTA_DIFFUSION_DATA=$PWD/.gpu/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
STEPS=${STEPS:-3500}; MINUTES=${MINUTES:-6}; TRAIN_PT=${TRAIN_PT:-$PWD/.gpu/train_blocks.pt}
nvidia-smi --query-gpu=name --format=csv,noheader
rm -rf runs/full runs/sweep-*  # a warm machine may hold an older run: never resume across recipes
start=$(date +%s)
variant() {  # name, then KEY=VALUE overrides
  local name=$1; shift
  python3 -m roberta_diffusion.cli finetune --profile full --set "run_name=\"sweep-$name\"" 'objectives=["mlm"]' \
    "train_data=$TRAIN_PT" "max_steps=$STEPS" "max_minutes=$MINUTES" "$@" > "$OUT/train_mlm_$name.log" 2>&1
}
variant a arch=roberta lr=0.001 warmup_steps=500 ratio_mode=levels weighting=none &
variant b arch=roberta lr=0.001 warmup_steps=500 ratio_mode=continuous weighting=elbo &
variant c arch=roberta-prelayernorm lr=0.002 warmup_steps=500 ratio_mode=continuous weighting=elbo &
python3 -m roberta_diffusion.cli finetune --profile full --set 'objectives=["ar"]' \
  "train_data=$TRAIN_PT" "max_steps=$STEPS" "max_minutes=$MINUTES" > "$OUT/train_ar.log" 2>&1 &
wait
echo "training wall time: $(( $(date +%s) - start )) s"
for f in "$OUT"/train_mlm_*.log; do echo "$f: $(tr '\r' '\n' < "$f" | grep -E 'final eval|stopping' | tr '\n' ' ')"; done
best=$(python3 scripts/pick_best_mlm.py runs/sweep-a runs/sweep-b runs/sweep-c | tee "$OUT/sweep.txt" | tail -n 1)
cat "$OUT/sweep.txt"
cp "$OUT/train_mlm_${best##*-}.log" "$OUT/train_mlm.log"
python3 scripts/ship_models.py "$best" "$OUT" mlm || exit 1
python3 scripts/ship_models.py runs/full "$OUT" ar || exit 1
python3 -m roberta_diffusion.cli eval --out weights/roberta-diffusion-small/eval.json ${EVAL_ARGS:-} 2>&1 | tail -n 32
cp weights/roberta-diffusion-small/eval.json weights/gpt2-small-baseline/eval.json
cp weights/roberta-diffusion-small/eval.json "$OUT/eval.json"
echo "total wall time: $(( $(date +%s) - start )) s"
tar czf "$OUT/weights.tgz" weights/roberta-diffusion-small weights/gpt2-small-baseline
split -b 15M "$OUT/weights.tgz" "$OUT/weights.tgz.part-" && rm "$OUT/weights.tgz"
tar czf "$OUT/logs.tgz" -C "$OUT" $(cd "$OUT" && ls train_*.log) && rm "$OUT"/train_*.log
ls -la "$OUT"
