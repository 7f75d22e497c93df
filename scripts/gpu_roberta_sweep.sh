#!/usr/bin/env bash
# On the lent GPU (issue 4, session 4): which start takes RobertaForMaskedLM off the unigram plateau at the shipped
# shape (6 x 384, 6 heads, dropout 0.1, canvas 256, prefix 16, continuous ratios, batch 64, lr 1e-3)? Nine short
# runs of the plateau probe at once on one card, held-out loss every 250 steps (cpu_plateau_probe.md has the CPU
# runs it follows up). STEPS (default 1500) sets the length; SET=1 the first nine variants, SET=2 the second
# (after the first showed every RoBERTa's positions collapsing onto one vector, cos = 1.000, within 250 steps).
source "$(dirname "$0")/gpu_preamble.sh"
PROBE=reports/2026-11-28-h200-training/cpu_plateau_probe.py
STEPS=${STEPS:-1500}
probe() {  # NAME KIND LR [VAR=VALUE ...]
  local name=$1 kind=$2 lr=$3; shift 3
  env DEVICE=cuda BATCH=64 PREFIX=16 L=256 DIMS=6,384,6,0.1 RATIOS=continuous "$@" \
    python3 "$PROBE" "$kind" "$lr" "$STEPS" 250 > "$OUT/probe_$name.log" 2>&1 &
}
if [ "${SET:-1}" = 1 ]; then
probe control roberta 0.001
probe lr3e-4-warmup1000 roberta 0.0003 WARMUP=1000
probe lr1e-4-warmup1000 roberta 0.0001 WARMUP=1000
probe bias roberta 0.001 BIAS=unigram
probe spread3 mimetic:0.1:3 0.001 SPREAD=1
probe spread3-lr3e-4-warmup1000 mimetic:0.1:3 0.0003 SPREAD=1 WARMUP=1000
probe spread3-curriculum mimetic:0.1:3 0.001 SPREAD=1 CURRICULUM=64:400
probe spread3-nodropout mimetic:0.1:3 0.001 SPREAD=1 DIMS=6,384,6,0.0
probe modernbert modernbert 0.001
else
H="ZERO_TYPE=1 BIAS=unigram SPREAD=1"  # helpers for every variant of the second set
probe 2x384-local mimetic:0.1:1 0.001 $H DIMS=2,384,6,0.1
probe local-branch0.1 mimetic:0.1:1 0.001 $H BRANCH=0.1
probe local3-branch0.1 mimetic:0.1:3 0.001 $H BRANCH=0.1
probe local-branch0.1-freezebias mimetic:0.1:1 0.001 $H BRANCH=0.1 FREEZE_BIAS=1
probe local-branch0.1-curriculum mimetic:0.1:1 0.001 $H BRANCH=0.1 CURRICULUM=64:500
probe local0.3-branch0.1 mimetic:0.3:1 0.001 $H BRANCH=0.1
probe branch0.1-head0 roberta 0.001 ZERO_TYPE=1 BIAS=unigram BRANCH=0.1 HEAD_GAMMA=0
probe local-branch0.1-lr3e-4 mimetic:0.1:1 0.0003 $H BRANCH=0.1 WARMUP=500
probe local-branch0.1-token5-head0 mimetic:0.1:1 0.001 $H BRANCH=0.1 TOKEN_SCALE=5 HEAD_GAMMA=0
fi
wait
echo "sweep wall time: $(( $(date +%s) - start )) s"
# one file back (the device returns at most eight)
for f in "$OUT"/probe_*.log; do echo "== ${f##*/}"; grep -v Warning "$f" | tail -n 8; done | tee "$OUT/sweep${SET:-1}.txt"
rm "$OUT"/probe_*.log
