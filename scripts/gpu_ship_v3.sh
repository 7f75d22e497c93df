#!/usr/bin/env bash
# On the lent GPU (issue 4, third session): RoBERTa (RobertaForMaskedLM, learned absolute positions) started with
# local attention (notebook 02's `locality_init`, models.locality_init), three variants at once on the blocks the
# GPT-2 baseline saw, 4,000 x 64 x 256 = 65.5M tokens each (time cap MINUTES); pick by held-out ELBO on the
# Wikipedia valid split (never WikiText), ship it, evaluate. The GPT-2 baseline in weights/ is kept as it is.
# Result: all three stayed at the unigram loss, and the shipped model was kept (reports/2026-11-28-h200-session3/).
# EXTRA="k=v ..." overrides every training (a dry run: EXTRA="max_steps=3 size=\"tiny\"").
source "$(dirname "$0")/gpu_preamble.sh"
MINUTES=${MINUTES:-6.5}
train() {
  local name=$1; shift
  python3 -m roberta_diffusion.cli finetune --profile full --set "run_name=\"$name\"" 'objectives=["mlm"]' \
    "train_data=$TRAIN_PT" "max_minutes=$MINUTES" 'arch="roberta"' batch_size=64 max_steps=4000 \
    'ratio_mode="continuous"' 'weighting="none"' eval_every=1000 save_every=100000 "$@" ${EXTRA:-} > "$OUT/train_$name.log" 2>&1
}
train ship-roberta-local10 locality_init=0.1 lr=0.001 &
train ship-roberta-local15 locality_init=0.15 lr=0.001 &
train ship-roberta-local10-lr5 locality_init=0.1 lr=0.0005 &
wait
echo "training wall time: $(( $(date +%s) - start )) s"
for f in "$OUT"/train_*.log; do echo "== $f"; grep -E "step|loss" "$f" | tail -n 3; done
best=$(python3 scripts/pick_best_mlm.py runs/ship-roberta-local10 runs/ship-roberta-local15 runs/ship-roberta-local10-lr5 | tee "$OUT/pick.txt" | tail -n 1)
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
