"""The adapter folder that 02 writes and 03 reads: PEFT weights, the tokenizer, and the TrainSettings it was
trained with (training_config.json), loadable by plain `PeftModel.from_pretrained` too."""
import json
from pathlib import Path

from .distributed import main_process_only
from .errors import ModelError
from .settings import TrainSettings

ADAPTER_CONFIG = "adapter_config.json"  # written by PEFT


@main_process_only
def save_adapter(model, tokenizer, settings: TrainSettings, history: list[dict]) -> Path:
    """`<output_dir>/adapter`: PEFT adapter + tokenizer + the exact settings used; the log in history.json."""
    adapter_dir = Path(settings.output_dir) / "adapter"
    adapter_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    settings.save(adapter_dir)
    (Path(settings.output_dir) / "history.json").write_text(json.dumps(history, indent=2))
    return adapter_dir


def adapter_settings(adapter_dir) -> TrainSettings:
    """The settings the adapter was trained with; for an adapter made elsewhere, 02's constants and the base
    model that PEFT recorded."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / ADAPTER_CONFIG).exists():
        raise ModelError(f"No adapter in {adapter_dir}: run 02_fine_tuning.py first, or pass --adapter-dir "
                         f"pointing at the 'adapter' folder it wrote (e.g. outputs/run/adapter).")
    peft_base = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    return TrainSettings.load(adapter_dir, model_name=peft_base)


def base_model_name(adapter_dir, model_name: str | None = None) -> str:
    """`model_name`, else the base the adapter was trained on."""
    return model_name or adapter_settings(adapter_dir).model_name


def attach_adapter(base, adapter_dir, base_name: str):
    """PeftModel of `base` + the adapter, or a clear error when the adapter was trained on another model."""
    from peft import PeftModel
    try:
        return PeftModel.from_pretrained(base, str(adapter_dir))
    except (RuntimeError, ValueError, KeyError) as error:
        raise ModelError(f"The adapter in {adapter_dir} does not fit the base model '{base_name}' "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). Pass the --model-name "
                         f"it was trained on.") from error
