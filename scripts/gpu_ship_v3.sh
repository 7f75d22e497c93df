#!/usr/bin/env bash
# On the lent GPU (issue 4, third session): RoBERTa (RobertaForMaskedLM, learned absolute positions) started with
# local attention (notebook 02's `locality_init`, models.locality_init), three variants at once on the blocks the
# GPT-2 baseline saw, 4,000 x 64 x 256 = 65.5M tokens each (time cap MINUTES); pick by held-out ELBO on the
# Wikipedia valid split (never WikiText), ship it, evaluate. The GPT-2 baseline in weights/ is kept as it is.
# Result: all three stayed at the unigram loss, and the shipped model was kept (reports/2026-11-28-h200-session3/).
# EXTRA="k=v ..." overrides every training (a dry run: EXTRA="max_steps=3 size=\"tiny\"").
source "$(dirname "$0")/gpu_preamble.sh"
# The profile's settings changed since this ran (session 5: RoBERTa recipe); these pins restore the ones it used.
PINNED='plateau_escape=false warmup_steps=200 escape_lr=null escape_steps=0'
train_roberta ship-roberta-local10 locality_init=0.1 lr=0.001 $PINNED &
train_roberta ship-roberta-local15 locality_init=0.15 lr=0.001 $PINNED &
train_roberta ship-roberta-local10-lr5 locality_init=0.1 lr=0.0005 $PINNED &
wait
ship_best_mlm runs/ship-roberta-local10 runs/ship-roberta-local15 runs/ship-roberta-local10-lr5
