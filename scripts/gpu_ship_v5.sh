#!/usr/bin/env bash
# On the lent GPU (issue 4, fifth session): RoBERTa (RobertaForMaskedLM) with plateau_escape_init and a two-phase
# learning rate: warm up to 2e-4 (the only rate at which session 4's run left the unigram plateau early), hold it
# until ESCAPE_STEPS, then ramp to a higher peak and decay (notebook 02's escape_lr / escape_steps). Several runs
# at once on the GPT-2 baseline's blocks, 4,000 x 64 x 256 = 65.5M tokens each (time cap MINUTES); pick by held-out
# ELBO on the Wikipedia valid split (never WikiText), ship it, evaluate. The GPT-2 baseline in weights/ is kept.
# RUNS="ESCAPE_STEPS:PEAK_LR ..." picks the runs; EXTRA="k=v ..." overrides every training (a dry run:
# EXTRA="max_steps=3 size=\"tiny\"" RUNS="2:0.001").
source "$(dirname "$0")/gpu_preamble.sh"
# the call that trained the shipped model (1000:0.0015 won); the session's other calls: "1500:0.0006 1500:0.001
# 1000:0.0006 1200:0.0008" and "700:0.0015 850:0.0015 850:0.002 1000:0.00125" (reports/2026-11-29-h200-session5/)
RUNS=${RUNS:-1000:0.001 1000:0.0015 1200:0.0015 1200:0.002}
runs=()
for run in $RUNS; do
  escape=${run%%:*} peak=${run##*:}
  name="ship-roberta-escape$escape-peak$peak"
  # plateau_escape, escape_lr 2e-4 and warm-up 500 come from profile full, which holds this recipe
  train_roberta "$name" "escape_steps=$escape" "lr=$peak" &
  runs+=("runs/$name")
done
wait
ship_best_mlm "${runs[@]}"
