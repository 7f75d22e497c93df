# Sourced by the lent-GPU training scripts (gpu_ship_v2.sh, gpu_ship_v3.sh), from the repository root: the
# environment they run in, $OUT and $TRAIN_PT, the card and versions in $OUT/device.txt, and $start.
set -uo pipefail
export PYTHONPATH=$PWD/lib PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 ROBERTA_DIFFUSION_DATA=$PWD/.gpu/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; TRAIN_PT=${TRAIN_PT:-$PWD/.gpu/train_blocks.pt}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
start=$(date +%s)
