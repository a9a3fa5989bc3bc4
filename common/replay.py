"""Self-replay: the base model's own answers to everyday instructions (everyday.REPLAY_PROMPTS, distinct from the
knowledge check's everyday questions), mixed into training as a share of the rows, so that the tune keeps the
general behaviour it had. Generated once per model, on the device in use and in its inference dtype, and cached."""
import hashlib
import json
import os
from pathlib import Path

from .config import ROOT
from .distributed import say
from .everyday import REPLAY_PROMPTS
from .settings import Generation
from .training import inference_dtype

REPLAY_GENERATION = Generation(max_new_tokens=96, temperature=0.0, top_p=1.0, repetition_penalty=1.1, seed=0)
CACHE_DIR = ROOT / ".cache" / "replay"
TEMPLATE = "replay"


def replay_cache_file(model_name: str, prompt_format: str, *, device: str, dtype, cache_dir=None) -> Path:
    """The cache of the base model's answers as generated on `device` in `dtype` (greedy answers differ between
    bf16 and fp32, and between a CPU's kernels and a GPU's)."""
    precision = f"{device}-{str(dtype).removeprefix('torch.')}"
    key = json.dumps([model_name, prompt_format, REPLAY_PROMPTS, REPLAY_GENERATION.__dict__, precision])
    slug = Path(model_name.rstrip("/")).name.replace(" ", "_")
    return Path(cache_dir or CACHE_DIR) / f"{slug}-{precision}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"


def _generate_answers(model_path: str, tokenizer, prompt_format: str, device: str, dtype) -> list[str]:
    """The base model's greedy answers to REPLAY_PROMPTS, by plain transformers on `device` in `dtype`."""
    import torch
    from .inference import generate_batched
    from .models import load_causal_lm
    model = load_causal_lm(model_path, dtype=dtype, device=device).eval()
    try:
        return generate_batched(model, tokenizer, REPLAY_PROMPTS, batch_size=64, prompt_format=prompt_format,
                                generation=REPLAY_GENERATION)
    finally:
        del model
        if device == "cuda":
            torch.cuda.empty_cache()


def replay_records(*, model_name: str, model_path: str, tokenizer, prompt_format: str, device: str,
                   cache_file=None) -> list[dict]:
    """Records of the base model's own answers to REPLAY_PROMPTS, from the cache or generated now (once), in
    training.inference_dtype(device). `cache_file`: read (or make) that file instead, e.g. answers made elsewhere."""
    dtype = inference_dtype(device)
    cache = Path(cache_file) if cache_file else replay_cache_file(model_name, prompt_format, device=device, dtype=dtype)
    if cache.exists():
        answers = [json.loads(line)["output"] for line in cache.read_text(encoding="utf-8").splitlines()]
    else:
        say(f"Self-replay: the base model answers {len(REPLAY_PROMPTS)} everyday instructions once, in "
            f"{str(dtype).removeprefix('torch.')} (cached in {cache.parent})...")
        answers = _generate_answers(model_path, tokenizer, prompt_format, device, dtype)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps({"instruction": p, "output": a}, ensure_ascii=False) + "\n"
                               for p, a in zip(REPLAY_PROMPTS, answers)), encoding="utf-8")
        os.replace(tmp, cache)
    return [{"instruction": p, "input": "", "output": a, "template": TEMPLATE}
            for p, a in zip(REPLAY_PROMPTS, answers) if a.strip() and finished(a, tokenizer)]


def finished(answer: str, tokenizer) -> bool:
    """The answer ended before the token limit: one cut off would teach the tune to stop mid-sentence."""
    return len(tokenizer(answer, add_special_tokens=False)["input_ids"]) < REPLAY_GENERATION.max_new_tokens - 2


def mix_replay(records: list[dict], replay: list[dict], fraction: float) -> list[dict]:
    """`records` plus replay rows making up `fraction` of the result: the first rows of `replay` (its order is
    REPLAY_PROMPTS', every kind early on) where fewer are wanted, each row as often as the others where more are."""
    if fraction <= 0 or not replay:
        return list(records)
    wanted = round(len(records) * fraction / (1 - fraction))
    return list(records) + [replay[i % len(replay)] for i in range(wanted)]


def hold_out(replay: list[dict], share: float = 1 / 6) -> tuple[list[dict], list[dict]]:
    """(rows to train on, the last `share` of them kept out): the kept-out answers measure forgetting at each epoch.
    The last rows are the ones a run needs least (mix_replay takes the first)."""
    cut = len(replay) - int(len(replay) * share)
    return replay[:cut], replay[cut:]
