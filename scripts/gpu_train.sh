#!/usr/bin/env bash
# On a lent machine with GPUs, from the repository root (inputs from scripts/prepare_gpu_inputs.sh in .gpu/):
#   bash scripts/gpu_train.sh probe   # short 1- and N-GPU runs of the masked LM -> $OUT/scaling.json
#   bash scripts/gpu_train.sh train   # the OBJECTIVES of $PROFILE on N GPUs into runs/$RUN: the masked LM for
#                                     # MLM_MINUTES (max_steps from the probe's speed), then GPT-2 for AR_STEPS
#   bash scripts/gpu_train.sh wait S  # up to S seconds for `train` (started in the background) to end; the held-out
#                                     # scores so far, and the run's logs into $OUT
#   bash scripts/gpu_train.sh ablate NAME...  # variants of benchmarks/ablations.txt, one per GPU at a time, EXTRA
#                                     # settings for all -> $OUT/ablations-<names>.json and their histories
#   bash scripts/gpu_train.sh judge   # the independent judge (profile judge) on one GPU, shipped into .gpu/judge and
#                                     # packed into $OUT (weights/ stays as it came: the pair's folders may be absent)
#   bash scripts/gpu_train.sh distill # SDTT rounds (profile distill): the student of each round teaches the next,
#                                     # ROUNDS="32 16 8" its step counts, from the shipped masked LM (run at twice the first)
#   bash scripts/gpu_train.sh ship    # the best checkpoints of OBJECTIVES into weights/, eval.json, packed into $OUT
# AR_STEPS: GPT-2's steps (6,000 x 256 blocks: about 30 epochs, past where its held-out loss stops falling);
# GPUS: processes (default: every GPU); OBJECTIVES: "mlm ar" (default) or one of them; RUN: the run name (default
# $PROFILE); EXTRA: more `key=value` settings for both objectives, e.g. EXTRA="lr=0.0008 max_minutes=18".
set -uo pipefail
export PYTHONPATH=$PWD/lib:${PYTHONPATH:-} PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 ROBERTA_DIFFUSION_DATA=$PWD/.gpu/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" runs/logs
PROFILE=${PROFILE:-converge}; GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}; RUN=${RUN:-$PROFILE}; OBJECTIVES=${OBJECTIVES:-mlm ar}
read -r -a EXTRA <<< "${EXTRA:-}"
TRAIN=(train_data=\"$PWD/.gpu/train_blocks.pt\")
finetune() { python3 -m workbench.cli finetune --profile "$PROFILE" "$@"; }

record_device() {  # the card's facts: GPU, memory, driver, torch and transformers, into $OUT/device.txt
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
}

steps_for() {  # steps_for HISTORY MINUTES: steps that fill MINUTES at the probe's steady speed
  python3 - "$1" "$2" <<'PY'
import json, statistics, sys
h = json.load(open(sys.argv[1])); speed = statistics.median(h["speed"][1:] or h["speed"])
print(int(float(sys.argv[2]) * 60 * speed / (256 * 256)))
PY
}

case ${1:-} in
probe)
  record_device
  short=(max_steps=600 eval_every=150 save_every=100000 warmup_steps=100)
  finetune --num-processes 1 --set run_name=\"probe-1\" 'objectives=["mlm"]' "${TRAIN[@]}" "${short[@]}" > "$OUT/probe-1.log" 2>&1
  finetune --num-processes "$GPUS" --set run_name=\"probe-$GPUS\" 'objectives=["mlm"]' "${TRAIN[@]}" "${short[@]}" > "$OUT/probe-$GPUS.log" 2>&1
  tail -n 3 "$OUT"/probe-*.log
  python3 -m benchmarks.scaling runs/probe-1/mlm "runs/probe-$GPUS/mlm" --out "$OUT/scaling.json"
  ;;
train)
  mlm_steps=$(steps_for "runs/probe-$GPUS/mlm/history.json" "${MLM_MINUTES:-12}")
  ar_steps=${AR_STEPS:-6000}
  rm -f runs/logs/TRAINED runs/logs/FAILED
  for objective in $OBJECTIVES; do
    steps=$mlm_steps; [ "$objective" = ar ] && steps=$ar_steps
    echo "$objective: $steps steps on $GPUS GPUs"
    finetune --num-processes "$GPUS" --set run_name=\"$RUN\" "objectives=[\"$objective\"]" "${TRAIN[@]}" max_steps=$steps \
      "${EXTRA[@]}" > "runs/logs/train_$objective.log" 2>&1 || { echo "$objective" > runs/logs/FAILED; exit 1; }
  done
  echo done > runs/logs/TRAINED
  ;;
wait)
  until [ -e runs/logs/TRAINED ] || [ -e runs/logs/FAILED ] || [ "$SECONDS" -ge "${2:-540}" ]; do sleep 5; done
  ls runs/logs; tail -c 600 runs/logs/train_*.log
  # a run in progress lives in its staging folder (runs.staged_run) until it finishes: read its newest checkpoint
  python3 - "$RUN" <<'PY'
import json, math, pathlib, sys
run = sys.argv[1]
for objective in sorted({p.name for p in pathlib.Path("runs").glob(f"{run}/*")} | {p.name for p in pathlib.Path("runs").glob(f".staging/{run}/{run}/*")}):
    states = sorted(pathlib.Path("runs").glob(f".staging/{run}/{run}/{objective}/checkpoints/step-*/state.json"),
                    key=lambda p: int(p.parent.name.split("-")[1]))
    done = pathlib.Path("runs") / run / objective / "history.json"
    source = states[-1] if states else done if done.exists() else None
    if source is not None:
        h = json.loads(source.read_text()); h = h.get("history", h)
        print(source, [(s, e, round(math.exp(b), 2)) for s, e, b in zip(h["eval_step"], h["eval_epoch"], h["eval_bound"])], h["speed"][-3:])
PY
  cp runs/logs/train_*.log "$OUT"/ 2>/dev/null; [ -e runs/logs/FAILED ] && exit 1; true
  ;;
ablate)
  shift; names=$(IFS=-; echo "$*")
  record_device  # and beside each run: its summary (MFU, card) may be redone on another machine
  for name in "$@"; do mkdir -p "runs/ablate-$name" && cp "$OUT/device.txt" "runs/ablate-$name/"; done
  python3 -m benchmarks.ablate "$@" --gpus "$GPUS" --profile "$PROFILE" --out "$OUT/ablations-$names.json" \
    --set "${TRAIN[@]}" "${EXTRA[@]}"
  status=$?
  files=(); for name in "$@"; do files+=(runs/ablate-$name/mlm/history.json runs/ablate-$name/mlm/config.json
                                         runs/ablate-$name/command.txt runs/ablate-$name/device.txt runs/logs/ablate-$name.log); done
  tar czf "$OUT/ablate-$names.tgz" --ignore-failed-read "${files[@]}"
  exit $status
  ;;
judge)
  record_device
  finetune --num-processes 1 --set run_name=\"judge\" "${TRAIN[@]}" "${EXTRA[@]}" > runs/logs/train_judge.log 2>&1 \
    || { tail -n 30 runs/logs/train_judge.log; exit 1; }
  tail -n 4 runs/logs/train_judge.log
  cp "$OUT/device.txt" runs/judge/ && echo "roberta-diffusion finetune --profile $PROFILE --num-processes 1" > runs/judge/command.txt
  python3 scripts/ship_models.py runs/judge runs/logs judge || exit 1
  mkdir -p .gpu/judge && cp -r weights/judge/. .gpu/judge/
  tar czf "$OUT/judge.tgz" weights/judge runs/judge/ar/history.json runs/judge/ar/config.json
  split -b 15M "$OUT/judge.tgz" "$OUT/judge.tgz.part-" && rm "$OUT/judge.tgz"
  cp runs/logs/train_judge.log "$OUT/"; ls -la "$OUT"
  ;;
distill)
  teacher=${TEACHER:-weights/roberta-diffusion-small}  # a lent machine without weights/ gets it unpacked elsewhere
  for steps in ${ROUNDS:-32 16 8}; do
    echo "round: a student of $steps steps from $teacher"
    finetune --num-processes "$GPUS" --set run_name=\"distill-$steps\" teacher=\"$teacher\" distill_steps=$steps \
      "${TRAIN[@]}" "${EXTRA[@]}" > "runs/logs/distill-$steps.log" 2>&1 || { tail -n 30 "runs/logs/distill-$steps.log"; exit 1; }
    teacher=runs/distill-$steps/mlm/model
  done
  tar czf "$OUT/distill.tgz" runs/distill-*/mlm/history.json runs/distill-*/mlm/config.json runs/logs/distill-*.log
  ;;
ship)
  for objective in $OBJECTIVES; do cp "runs/logs/train_$objective.log" "runs/$RUN/"; done
  python3 scripts/ship_models.py "runs/$RUN" "runs/$RUN" $OBJECTIVES || exit 1
  python3 -m workbench.cli eval --out weights/roberta-diffusion-small/eval.json --elbo-samples 8 \
    --policies "${POLICIES:-random,confidence,entropy,margin,redraw}" --steps 10,32,64 2>&1 | tail -n 40
  cp weights/roberta-diffusion-small/eval.json weights/gpt2-small-baseline/eval.json
  tar czf "$OUT/weights.tgz" weights/roberta-diffusion-small weights/gpt2-small-baseline
  split -b 15M "$OUT/weights.tgz" "$OUT/weights.tgz.part-" && rm "$OUT/weights.tgz"
  tar czf "$OUT/runs.tgz" "runs/$RUN"/*/history.json "runs/$RUN"/*/config.json "runs/$RUN"/*.log runs/probe-*/*/history.json runs/probe-*/*/config.json
  ls -la "$OUT"
  ;;
*) echo "usage: bash scripts/gpu_train.sh probe|train|wait|ablate|judge|distill|ship" >&2; exit 2 ;;
esac
