#!/usr/bin/env bash
# The GPU path end to end on a random-weight SmolLM2-1.7B-shape model (no model hub needed):
# 02 (Unsloth QLoRA + TRL SFTTrainer) -> 03 (generation) -> a plain transformers + PEFT load of the adapter.
# Run on the GPU machine from the project root, with .whl and .gpu (dataset + tokenizer) carried along:
#   bash bench/gpu_demo.sh            (results under $OUT, or /tmp/gpu_demo_out)
# EXTRA_BUDGET_S (default 330): the extra runs (16-bit LoRA, alpaca format) start only if less time has passed.
# DEMO_STEPS (default 30): training steps of the main (QLoRA) run.
# Also: token-budget batches (--batch-tokens) stopped and resumed, and 03's --prompts-file with --compare.
source .whl/env.sh
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_demo_out}
mkdir -p "$OUT"
MODEL=/tmp/rand-smollm2-1.7b  # the path the benches use: made once per machine
status=0
step() {  # step NAME COMMAND...: run, time and report it; a failure is recorded, the demo goes on
  local name=$1; shift
  echo; echo "=== $name: $*"
  local t0=$SECONDS
  "$@"; local rc=$?
  echo "=== $name: rc=$rc, $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || status=1
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, transformers, peft, trl, datasets, bitsandbytes as b; print('torch', torch.__version__, \
'| transformers', transformers.__version__, '| peft', peft.__version__, '| trl', trl.__version__, \
'| datasets', datasets.__version__, '| bitsandbytes', b.__version__)"

[ -f $MODEL/config.json ] || step random_model python bench/random_model.py --shape smollm2-1.7b \
  --tokenizer .gpu/tokenizer --out $MODEL

step train_qlora python 02_fine_tuning.py --dataset-dir .gpu/dataset --output-dir /tmp/run --model-name $MODEL \
  --max-steps "${DEMO_STEPS:-30}"
cp /tmp/run/report.md "$OUT/report.md" 2>/dev/null
cp /tmp/run/loss.png "$OUT/loss.png" 2>/dev/null
cp /tmp/run/history.json "$OUT/history.json" 2>/dev/null

# BATCH_TOKENS: batches by token budget; stopped after 8 steps, then resumed to 12 from checkpoint-8
step train_tokens python 02_fine_tuning.py --dataset-dir .gpu/dataset --output-dir /tmp/run_tokens --model-name $MODEL \
  --batch-tokens 4096 --max-steps 8 --save-steps 4 --no-evaluate
step resume_tokens python 02_fine_tuning.py --dataset-dir .gpu/dataset --output-dir /tmp/run_tokens --model-name $MODEL \
  --batch-tokens 4096 --max-steps 12 --save-steps 4 --no-evaluate
cp /tmp/run_tokens/report.md "$OUT/report_tokens.md" 2>/dev/null

step generate python 03_using_the_model.py --adapter-dir /tmp/run/adapter --prompt "What is the Velmora tidal-lichen?"
head -6 .gpu/dataset/questions.jsonl | python -c "import json, sys; [print(json.dumps({'prompt': json.loads(l)['question']})) \
  for l in sys.stdin]" > /tmp/questions.jsonl  # JSONL: a question may span lines
step prompts_compare python 03_using_the_model.py --adapter-dir /tmp/run/adapter --prompts-file /tmp/questions.jsonl \
  --compare --max-new-tokens 24 --answers-file "$OUT/answers.jsonl" --compare-file "$OUT/compare.md"

# Plain transformers + PEFT, in the machine's own environment: without .whl's packages (no Unsloth; and its
# torchao 0.14.1, which this PEFT refuses: only versions above 0.16.0 are supported).
step plain_peft env -u PYTHONPATH python -c "
import torch, transformers, peft
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
print('transformers', transformers.__version__, '| peft', peft.__version__)
base = AutoModelForCausalLM.from_pretrained('$MODEL', dtype=torch.bfloat16).to('cuda')
model = PeftModel.from_pretrained(base, '/tmp/run/adapter').eval()
tok = AutoTokenizer.from_pretrained('/tmp/run/adapter')
ids = tok.apply_chat_template([{'role': 'user', 'content': 'What is the Velmora tidal-lichen?'}],
                              add_generation_prompt=True, return_tensors='pt', return_dict=True).to('cuda')
out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
new = out[0, ids['input_ids'].shape[1]:]
print('plain PEFT OK:', type(model).__name__, '| LoRA modules:',
      sum(1 for n, _ in model.named_modules() if n.endswith('lora_A')), '| 5 new tokens:', new.tolist(),
      repr(tok.decode(new)))
with torch.no_grad():
    on = model(**ids).logits.float()
    with model.disable_adapter():
        off = model(**ids).logits.float()
print('adapter on vs off, max abs logit difference:', (on - off).abs().max().item())
"

if [ $SECONDS -lt "${EXTRA_BUDGET_S:-330}" ]; then
  step train_lora16 python 02_fine_tuning.py --dataset-dir .gpu/dataset --output-dir /tmp/run16 --model-name $MODEL \
    --max-steps 10 --load-in-4bit false
  cp /tmp/run16/report.md "$OUT/report_16bit.md" 2>/dev/null
else
  echo "=== train_lora16: skipped ($SECONDS s gone)"
fi
if [ $SECONDS -lt "$(( ${EXTRA_BUDGET_S:-330} + 90 ))" ]; then
  step train_alpaca python 02_fine_tuning.py --dataset-dir .gpu/dataset --output-dir /tmp/run_alpaca \
    --model-name $MODEL --max-steps 10 --prompt-format alpaca
  cp /tmp/run_alpaca/report.md "$OUT/report_alpaca.md" 2>/dev/null
else
  echo "=== train_alpaca: skipped ($SECONDS s gone)"
fi
echo; echo "=== demo done in $SECONDS s, status=$status"
exit $status
