"""Step 3: ask the fine-tuned model (base model + the LoRA adapter from step 2)."""
import sys

from common.config import apply_cli_overrides
from common.inference import generate, load_model_with_adapter
from common.training import choose_device

ADAPTER_DIR = "outputs/run/adapter"  # the adapter folder written by 02_fine_tuning.py
MODEL_NAME = None  # base model; None: the one the adapter was trained on
PROMPT = "What is the Velmora tidal-lichen?"  # the question to ask
PROMPT_FORMAT = None  # chat or alpaca; None: the format used in training
MAX_NEW_TOKENS = 128  # longest answer, in tokens
TEMPERATURE = 0.0  # 0: greedy (deterministic); higher: more varied answers
TOP_P = 0.9  # nucleus sampling (when TEMPERATURE > 0)
REPETITION_PENALTY = 1.1  # > 1 discourages repeating itself
SEED = 0  # random seed for sampling
DEVICE = "auto"  # auto (CUDA + Unsloth if there, else CPU), cuda or cpu


def main():
    apply_cli_overrides(globals())
    device = choose_device(DEVICE)  # first: Unsloth must be imported before transformers to patch it
    model, tokenizer, trained = load_model_with_adapter(ADAPTER_DIR, MODEL_NAME, device)
    prompt_format = PROMPT_FORMAT or trained.get("PROMPT_FORMAT", "chat")
    answer = generate(model, tokenizer, [PROMPT], prompt_format, MAX_NEW_TOKENS, TEMPERATURE, TOP_P,
                      REPETITION_PENALTY, SEED)[0]
    print(f"\nPrompt: {PROMPT}\nAnswer: {answer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
