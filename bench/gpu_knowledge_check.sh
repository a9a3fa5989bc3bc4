#!/usr/bin/env bash
# What the model learns, by batching: 02 on the real embedded model (SmolLM2-135M-Instruct, QLoRA) with its defaults
# (BATCH_TOKENS -1: balanced token batches, GRADIENT_CHECKPOINTING auto) against BATCH_SIZE rows a batch
# (--batch-tokens 0), each with two seeds (the spread between seeds is the noise), side by side on one GPU.
# On the GPU machine, as the second of ../shared/gpu/README.md's two calls (carry .gguf/b, .gguf/join.sh, .gpu):
#   source .gguf/join.sh; bash bench/gpu_knowledge_check.sh        (logs and eval.md files under $OUT)
OUT=${OUT:-/tmp/knowledge_check_out}
DATASET=${DATASET:-.gpu/dataset}
mkdir -p "$OUT"
python -c "from common.models import prepare_embedded_model; prepare_embedded_model()" || exit 1

run() {  # run NAME SEED [02 options...]
  local name=$1 seed=$2; shift 2
  python 02_fine_tuning.py --dataset-dir "$DATASET" --output-dir "/tmp/kc_$name" --no-resume --seed "$seed" "$@" \
    > "$OUT/$name.log" 2>&1
  echo "=== $name: rc=$?"
}
run default_s42 42 & run default_s7 7 & run rows_s42 42 --batch-tokens 0 & run rows_s7 7 --batch-tokens 0 & wait

for name in default_s42 default_s7 rows_s42 rows_s7; do
  echo "--- $name"
  grep -E "GPU training|Knowledge check|Error" "$OUT/$name.log" | cut -c1-400
  grep -E "optimizer steps|effective batch|gradient checkpointing|FLOPs" "/tmp/kc_$name/report.md"
  cp "/tmp/kc_$name/eval.md" "$OUT/eval_$name.md" 2>/dev/null
done
