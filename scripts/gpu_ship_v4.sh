#!/usr/bin/env bash
# On the lent GPU (issue 4, fourth session): RoBERTa (RobertaForMaskedLM) started with models.plateau_escape_init
# (notebook 02's `plateau_escape`), which left the unigram plateau at the shipped shape in the session's probe sweep
# (reports/2026-11-29-h200-session4/), at three learning rates around the sweep's 3e-4, on the blocks the GPT-2
# baseline saw, 4,000 x 64 x 256 = 65.5M tokens each (time cap MINUTES); pick by held-out ELBO on the Wikipedia
# valid split (never WikiText), ship it, evaluate. The GPT-2 baseline in weights/ is kept as it is.
# EXTRA="k=v ..." overrides every training (a dry run: EXTRA="max_steps=3 size=\"tiny\"").
source "$(dirname "$0")/gpu_preamble.sh"
MINUTES=${MINUTES:-6.5}
train() {
  local name=$1; shift
  python3 -m roberta_diffusion.cli finetune --profile full --set "run_name=\"$name\"" 'objectives=["mlm"]' \
    "train_data=$TRAIN_PT" "max_minutes=$MINUTES" 'arch="roberta"' batch_size=64 max_steps=4000 \
    'ratio_mode="continuous"' 'weighting="none"' eval_every=1000 save_every=100000 "$@" ${EXTRA:-} > "$OUT/train_$name.log" 2>&1
}
LRS=${LRS:-0.0003 0.0002 0.0005}  # first call: these three (2e-4 won); second call: LRS="0.0001 0.00015"
runs=()
for lr in $LRS; do train "ship-roberta-escape-lr$lr" plateau_escape=true "lr=$lr" warmup_steps=500 & runs+=("runs/ship-roberta-escape-lr$lr"); done
wait
echo "training wall time: $(( $(date +%s) - start )) s"
for f in "$OUT"/train_*.log; do echo "== $f"; grep -E "step|loss" "$f" | tail -n 3; done
best=$(python3 scripts/pick_best_mlm.py "${runs[@]}" | tee "$OUT/pick.txt" | tail -n 1)
cat "$OUT/pick.txt"
cp "$OUT/train_${best##*/}.log" "$OUT/train_mlm.log"
python3 scripts/ship_models.py "$best" "$OUT" mlm || exit 1
python3 -m roberta_diffusion.cli eval --out weights/roberta-diffusion-small/eval.json --elbo-samples 4 2>&1 | tail -n 32
cp weights/roberta-diffusion-small/eval.json weights/gpt2-small-baseline/eval.json
echo "total wall time: $(( $(date +%s) - start )) s"
tar czf "$OUT/weights.tgz" weights/roberta-diffusion-small weights/gpt2-small-baseline/eval.json
split -b 15M "$OUT/weights.tgz" "$OUT/weights.tgz.part-" && rm "$OUT/weights.tgz"
tar czf "$OUT/logs.tgz" -C "$OUT" $(cd "$OUT" && ls train_*.log) && rm "$OUT"/train_*.log
ls -la "$OUT"
