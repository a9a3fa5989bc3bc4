#!/usr/bin/env bash
# MEAN_OF_RUNS side by side against one after the other: 02 on the real embedded model with its defaults (3 runs,
# RUNS_SIDE_BY_SIDE auto) and its knowledge check, then with --runs-side-by-side false (no check); every line of
# both logs stamped with the time, the card's memory and utilisation every 3 s (gpu.txt). On the GPU machine, as the
# second of ../shared/gpu/README.md's two calls (carry .gguf/b, .gguf/join.sh, .gpu):
#   source .gguf/join.sh; bash bench/gpu_runs_side_by_side.sh                              (logs under $OUT)
OUT=${OUT:-/tmp/side_by_side_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
stamp() { while IFS= read -r l; do echo "$(date +%s) $l"; done; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "from common.models import prepare_embedded_model; prepare_embedded_model()" >/dev/null 2>&1 || exit 4
(while true; do echo "$(date +%s) $(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader)" >> $OUT/gpu.txt; sleep 3; done) &
mon=$!
python 02_fine_tuning.py --dataset-dir .gpu/dataset --output-dir /tmp/t_side 2>&1 | stamp > $OUT/side.log
echo "side done"
python 02_fine_tuning.py --dataset-dir .gpu/dataset --output-dir /tmp/t_seq --runs-side-by-side false --no-evaluate 2>&1 | stamp > $OUT/seq.log
echo "seq done"
kill $mon
cp /tmp/t_side/eval.md /tmp/t_side/report.md $OUT/ 2>/dev/null; cp /tmp/t_side/run-2/train.log $OUT/run2.log 2>/dev/null
for f in side seq; do echo "== $f"; grep -E "MEAN_OF_RUNS|Runs |Run [0-9]|GPU training|Knowledge check|Adapter saved|keeps the mean|Error|Traceback" $OUT/$f.log | cut -c1-330; done
sort -t' ' -k2 -n $OUT/gpu.txt | tail -2
