#!/usr/bin/env bash
# On the lent GPU (issue 4, second session): four trainings at once on the same blocks — the GPT-2 baseline,
# two rotary-position masked LMs (ModernBERT, parameter-matched) and RoBERTa with twice the updates (batch 32) —
# for 4,000 x 64 x 256 = 65.5M tokens each (time cap MINUTES); pick the MLM by held-out ELBO, ship both, evaluate.
# EXTRA="k=v ..." overrides every training (a dry run: EXTRA="max_steps=3 size=\"tiny\"").
# (The call that shipped the models also ran reports/2026-11-28-h200-session2/gpu_graph_smoke.py beside it.)
source "$(dirname "$0")/gpu_preamble.sh"
MINUTES=${MINUTES:-7}
# The profile's settings changed since this ran (session 5: RoBERTa recipe); these pins restore the ones it used.
PINNED='plateau_escape=false lr=0.001 warmup_steps=200 escape_lr=null escape_steps=0'
train() {
  local name=$1 objective=$2; shift 2
  python3 -m roberta_diffusion.cli finetune --profile full --set "run_name=\"$name\"" "objectives=[\"$objective\"]" \
    "train_data=$TRAIN_PT" "max_minutes=$MINUTES" eval_every=1000 save_every=100000 $PINNED "$@" ${EXTRA:-} > "$OUT/train_$name.log" 2>&1
}
train ship-ar ar batch_size=64 max_steps=4000 &
train ship-modernbert-elbo mlm arch='"modernbert"' batch_size=64 max_steps=4000 ratio_mode='"continuous"' weighting='"elbo"' &
train ship-modernbert-flat mlm arch='"modernbert"' batch_size=64 max_steps=4000 ratio_mode='"continuous"' weighting='"none"' &
train ship-roberta mlm arch='"roberta"' batch_size=32 max_steps=8000 ratio_mode='"continuous"' weighting='"none"' &
wait
echo "training wall time: $(( $(date +%s) - start )) s"
for f in "$OUT"/train_*.log; do echo "== $f"; grep -E "step|loss" "$f" | tail -n 3; done
best=$(python3 scripts/pick_best_mlm.py runs/ship-modernbert-elbo runs/ship-modernbert-flat runs/ship-roberta | tee "$OUT/pick.txt" | tail -n 1)
cat "$OUT/pick.txt"
cp "$OUT/train_${best##*/}.log" "$OUT/train_mlm.log"; cp "$OUT/train_ship-ar.log" "$OUT/train_ar.log"
python3 scripts/ship_models.py "$best" "$OUT" mlm && python3 scripts/ship_models.py runs/ship-ar "$OUT" ar || exit 1
python3 -m roberta_diffusion.cli eval --out weights/roberta-diffusion-small/eval.json --elbo-samples 4 2>&1 | tail -n 32
cp weights/roberta-diffusion-small/eval.json weights/gpt2-small-baseline/eval.json
echo "total wall time: $(( $(date +%s) - start )) s"
tar czf "$OUT/weights.tgz" weights/roberta-diffusion-small weights/gpt2-small-baseline
split -b 15M "$OUT/weights.tgz" "$OUT/weights.tgz.part-" && rm "$OUT/weights.tgz"
tar czf "$OUT/logs.tgz" -C "$OUT" $(cd "$OUT" && ls train_*.log) && rm "$OUT"/train_*.log
ls -la "$OUT"
