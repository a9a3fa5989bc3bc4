"""Load the base model with a trained adapter and generate, formatting prompts exactly as in training."""
import json
from pathlib import Path

from .models import ModelError, resolve_model_path
from .prompts import format_prompt


def read_training_config(adapter_dir):
    """The settings that 02 saved with the adapter (MODEL_NAME, PROMPT_FORMAT ...)."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ModelError(f"No adapter in {adapter_dir}: run 02_fine_tuning.py first, or pass --adapter-dir "
                         f"pointing at the 'adapter' folder it wrote (e.g. outputs/run/adapter).")
    path = adapter_dir / "training_config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def load_model_with_adapter(adapter_dir, model_name=None, device="cpu"):
    """(model, tokenizer, training settings). `model_name` overrides the base recorded with the adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer
    from .models import load_causal_lm

    settings = read_training_config(adapter_dir)
    base_name = model_name or settings.get("MODEL_NAME")
    if not base_name:
        base_name = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["base_model_name_or_path"]
    base_path = resolve_model_path(base_name)
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    tokenizer.padding_side = "left"
    if device == "cuda":
        # The base named by `model_name` or the training settings (not the adapter's recorded path, which Unsloth
        # would use and may remap to a Hub repo), as trained (4-bit or 16-bit), then the adapter with plain PEFT.
        from unsloth import FastLanguageModel
        base, _ = FastLanguageModel.from_pretrained(model_name=base_path, dtype=None,
                                                    max_seq_length=settings.get("MAX_SEQ_LENGTH", 2048),
                                                    load_in_4bit=settings.get("LOAD_IN_4BIT", True))
        try:
            model = PeftModel.from_pretrained(base, str(adapter_dir))
        except (RuntimeError, ValueError, KeyError) as error:
            raise ModelError(f"The adapter in {adapter_dir} does not fit the base model '{base_name}' "
                             f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). Pass the --model-name "
                             f"it was trained on.") from error
        FastLanguageModel.for_inference(model)
        return model, tokenizer, settings
    base = load_causal_lm(base_path, dtype=torch.float32)
    try:
        model = PeftModel.from_pretrained(base, str(adapter_dir))
    except (RuntimeError, ValueError, KeyError) as error:
        raise ModelError(f"The adapter in {adapter_dir} does not fit the base model '{base_name}' "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). Pass the --model-name it "
                         f"was trained on.") from error
    model.eval()
    return model, tokenizer, settings


def generate(model, tokenizer, prompts, prompt_format="chat", max_new_tokens=128, temperature=0.0, top_p=0.9,
             repetition_penalty=1.1, seed=0, streamer=None):
    """Answers to `prompts` (a list of instructions), generated in one batch, stopping at EOS."""
    import torch
    torch.manual_seed(seed)
    texts = [format_prompt(tokenizer, prompt_format, p) for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    sample = temperature > 0
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=sample,
                             temperature=temperature if sample else None, top_p=top_p if sample else None,
                             repetition_penalty=repetition_penalty, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, streamer=streamer)
    new_tokens = out[:, batch["input_ids"].shape[1]:]
    return [tokenizer.decode(t, skip_special_tokens=True).strip() for t in new_tokens]
