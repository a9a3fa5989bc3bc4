#!/usr/bin/env bash
# What the model learns, by setting: 02 on the real embedded model (SmolLM2-135M-Instruct) with each setting given as
# NAME:OPTIONS, each with two seeds (the spread between seeds is the noise), side by side on one GPU. Without
# arguments: 02's defaults against BATCH_SIZE rows a batch (--batch-tokens 0).
# On the GPU machine, as the second of ../shared/gpu/README.md's two calls (carry .gguf/b, .gguf/join.sh, .gpu):
#   source .gguf/join.sh; bash bench/gpu_knowledge_check.sh                        (logs and eval.md under $OUT)
#   source .gguf/join.sh; SEEDS="11 5" bash bench/gpu_knowledge_check.sh "default:" "one_run:--mean-of-runs 1"
OUT=${OUT:-/tmp/knowledge_check_out}
DATASET=${DATASET:-.gpu/dataset}
SEEDS=${SEEDS:-42 7}
[ $# -gt 0 ] || set -- "default:" "rows:--batch-tokens 0"
mkdir -p "$OUT"
python -c "from common.models import prepare_embedded_model; prepare_embedded_model()" || exit 1

run() {  # run NAME SEED [02 options...]
  local name=$1 seed=$2; shift 2
  python 02_fine_tuning.py --dataset-dir "$DATASET" --output-dir "/tmp/kc_$name" --seed "$seed" "$@" \
    > "$OUT/$name.log" 2>&1  # resumes where a cut-off call left it, while the machine is held
  echo "=== $name: rc=$?"
}
names=()
for setting in "$@"; do
  for seed in $SEEDS; do
    name="${setting%%:*}_s$seed"; names+=("$name")
    run "$name" "$seed" ${setting#*:} &
  done
done
wait

for name in "${names[@]}"; do
  echo "--- $name"
  grep -E "MEAN_OF_RUNS|GPU training|Knowledge check|Error" "$OUT/$name.log" | cut -c1-400
  grep -E "optimizer steps|effective batch|gradient checkpointing|FLOPs" "/tmp/kc_$name/report.md"
  cp "/tmp/kc_$name/eval.md" "$OUT/eval_$name.md" 2>/dev/null
done
