#!/usr/bin/env bash
# On the lent GPU (issue 4, fourth session): RoBERTa (RobertaForMaskedLM) started with models.plateau_escape_init
# (notebook 02's `plateau_escape`), which left the unigram plateau at the shipped shape in the session's probe sweep
# (reports/2026-11-29-h200-session4/), at three learning rates around the sweep's 3e-4, on the blocks the GPT-2
# baseline saw, 4,000 x 64 x 256 = 65.5M tokens each (time cap MINUTES); pick by held-out ELBO on the Wikipedia
# valid split (never WikiText), ship it, evaluate. The GPT-2 baseline in weights/ is kept as it is.
# EXTRA="k=v ..." overrides every training (a dry run: EXTRA="max_steps=3 size=\"tiny\"").
source "$(dirname "$0")/gpu_preamble.sh"
LRS=${LRS:-0.0003 0.0002 0.0005}  # first call: these three (2e-4 won); second call: LRS="0.0001 0.00015"
runs=()  # escape_lr=null: session 5's profile holds a low rate first; this ran before that
for lr in $LRS; do train_roberta "ship-roberta-escape-lr$lr" plateau_escape=true "lr=$lr" warmup_steps=500 escape_lr=null & runs+=("runs/ship-roberta-escape-lr$lr"); done
wait
ship_best_mlm "${runs[@]}"
