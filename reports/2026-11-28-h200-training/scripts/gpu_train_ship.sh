#!/usr/bin/env bash
# On the lent GPU: train both small models concurrently with notebook 02's code (profile `full`), ship them to
# weights/ (bf16) and write eval.json. Inputs carried in .gpu/ (pre-tokenised train blocks, held-out texts).
set -uo pipefail
export PYTHONPATH=$PWD/lib PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true
export ROBERTA_DIFFUSION_DATA=$PWD/.gpu/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
STEPS=${STEPS:-4000}; MINUTES=${MINUTES:-6.5}; PROFILE=${PROFILE:-full}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
start=$(date +%s)
for obj in mlm ar; do
  python3 -m roberta_diffusion.cli finetune --profile "$PROFILE" --set "objectives=[\"$obj\"]" \
    "train_data=${TRAIN_PT:-$PWD/.gpu/train_blocks.pt}" "max_steps=$STEPS" "max_minutes=$MINUTES" > "$OUT/train_$obj.log" 2>&1 &
done
wait
echo "training wall time: $(( $(date +%s) - start )) s"
tail -n 4 "$OUT"/train_*.log
python3 scripts/ship_models.py "runs/$PROFILE" "$OUT" || exit 1
python3 -m roberta_diffusion.cli eval --out weights/roberta-diffusion-small/eval.json ${EVAL_ARGS:-} 2>&1 | tail -n 40
cp weights/roberta-diffusion-small/eval.json weights/gpt2-small-baseline/eval.json
echo "total wall time: $(( $(date +%s) - start )) s"
tar czf "$OUT/weights.tgz" weights/roberta-diffusion-small weights/gpt2-small-baseline
split -b 15M "$OUT/weights.tgz" "$OUT/weights.tgz.part-" && rm "$OUT/weights.tgz"
ls -la "$OUT"
