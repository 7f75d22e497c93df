#!/usr/bin/env bash
# On the lent GPU (issue 4, session 4): which start takes RobertaForMaskedLM off the unigram plateau at the shipped
# shape (6 x 384, 6 heads, dropout 0.1, canvas 256, prefix 16, continuous ratios, batch 64, lr 1e-3)? Nine short
# runs of the plateau probe at once on one card, held-out loss every 250 steps (cpu_plateau_probe.md has the CPU
# runs it follows up). STEPS (default 1500) sets the length.
source "$(dirname "$0")/gpu_preamble.sh"
PROBE=reports/2026-11-28-h200-training/cpu_plateau_probe.py
STEPS=${STEPS:-1500}
probe() {  # NAME KIND LR [VAR=VALUE ...]
  local name=$1 kind=$2 lr=$3; shift 3
  env DEVICE=cuda BATCH=64 PREFIX=16 L=256 DIMS=6,384,6,0.1 RATIOS=continuous "$@" \
    python3 "$PROBE" "$kind" "$lr" "$STEPS" 250 > "$OUT/probe_$name.log" 2>&1 &
}
probe control roberta 0.001
probe lr3e-4-warmup1000 roberta 0.0003 WARMUP=1000
probe lr1e-4-warmup1000 roberta 0.0001 WARMUP=1000
probe bias roberta 0.001 BIAS=unigram
probe spread3 mimetic:0.1:3 0.001 SPREAD=1
probe spread3-lr3e-4-warmup1000 mimetic:0.1:3 0.0003 SPREAD=1 WARMUP=1000
probe spread3-curriculum mimetic:0.1:3 0.001 SPREAD=1 CURRICULUM=64:400
probe spread3-nodropout mimetic:0.1:3 0.001 SPREAD=1 DIMS=6,384,6,0.0
probe modernbert modernbert 0.001
wait
echo "sweep wall time: $(( $(date +%s) - start )) s"
for f in "$OUT"/probe_*.log; do echo "== ${f##*/}"; grep -v Warning "$f" | tail -n 8; done
