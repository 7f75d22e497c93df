# Sourced by the lent-GPU training scripts (gpu_ship_v2.sh .. v4, gpu_roberta_sweep.sh), from the repository root: the
# environment they run in, $OUT and $TRAIN_PT, the card and versions in $OUT/device.txt, and $start.
set -uo pipefail
export PYTHONPATH=$PWD/lib PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 ROBERTA_DIFFUSION_DATA=$PWD/.gpu/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; TRAIN_PT=${TRAIN_PT:-$PWD/.gpu/train_blocks.pt}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
start=$(date +%s)

# train_roberta NAME [k=v ...]: one RobertaForMaskedLM training through notebook 02 (profile full, 4,000 x 64 x 256
# tokens on $TRAIN_PT, time cap $MINUTES), log in $OUT/train_NAME.log; EXTRA="k=v ..." overrides every training.
train_roberta() {
  local name=$1; shift
  python3 -m roberta_diffusion.cli finetune --profile full --set "run_name=\"$name\"" 'objectives=["mlm"]' \
    "train_data=$TRAIN_PT" "max_minutes=${MINUTES:-6.5}" 'arch="roberta"' batch_size=64 max_steps=4000 \
    'ratio_mode="continuous"' 'weighting="none"' eval_every=1000 save_every=100000 "$@" ${EXTRA:-} > "$OUT/train_$name.log" 2>&1
}

# ship_best_mlm RUN ...: pick the run with the best held-out ELBO (Wikipedia valid, never WikiText), ship it to
# weights/roberta-diffusion-small, evaluate it against the GPT-2 baseline, and pack weights and logs into $OUT.
ship_best_mlm() {
  echo "training wall time: $(( $(date +%s) - start )) s"
  for f in "$OUT"/train_*.log; do echo "== $f"; grep -E "step|loss" "$f" | tail -n 3; done
  local best
  best=$(python3 scripts/pick_best_mlm.py "$@" | tee "$OUT/pick.txt" | tail -n 1)
  cat "$OUT/pick.txt"
  [ -n "$best" ] || { echo "no run finished: nothing shipped"; return 1; }
  cp "$OUT/train_${best##*/}.log" "$OUT/train_mlm.log"
  python3 scripts/ship_models.py "$best" "$OUT" mlm || exit 1
  python3 -m roberta_diffusion.cli eval --out weights/roberta-diffusion-small/eval.json --elbo-samples 4 2>&1 | tail -n 32
  cp weights/roberta-diffusion-small/eval.json weights/gpt2-small-baseline/eval.json
  echo "total wall time: $(( $(date +%s) - start )) s"
  tar czf "$OUT/weights.tgz" weights/roberta-diffusion-small weights/gpt2-small-baseline/eval.json
  split -b 15M "$OUT/weights.tgz" "$OUT/weights.tgz.part-" && rm "$OUT/weights.tgz"
  tar czf "$OUT/logs.tgz" -C "$OUT" $(cd "$OUT" && ls train_*.log) && rm "$OUT"/train_*.log
  ls -la "$OUT"
}
