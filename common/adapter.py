"""The adapter folder that 02 writes and 03 reads: PEFT weights, the tokenizer, and the TrainSettings it was
trained with (training_config.json), loadable by plain `PeftModel.from_pretrained` too."""
import json
from contextlib import contextmanager
from pathlib import Path

from .distributed import main_process_only, say
from .errors import ModelError
from .settings import SETTINGS_FILE, TrainSettings

ADAPTER_CONFIG = "adapter_config.json"  # written by PEFT


def lora_layers(model) -> list[tuple[str, object]]:
    """(name, module) of every LoRA layer."""
    return [(name, module) for name, module in model.named_modules() if hasattr(module, "lora_A")]


def lora_b_layers(model) -> list:
    """The lora_B linears of every LoRA layer: scaling their weights scales the whole LoRA update."""
    return [linear for _, module in lora_layers(model) for linear in module.lora_B.values()]


def scale_adapter(model, scale: float) -> str:
    """Keep `scale` of the trained LoRA update (each lora_B times `scale`): a point between the base model and the
    tune (WiSE-FT's interpolation of weights), which forgets less of what the base knew for about the same recall
    of the papers (bench/README.md). Says what was done."""
    if scale == 1:
        return "The adapter keeps the LoRA update as trained (ADAPTER_SCALE 1)."
    import torch
    layers = lora_b_layers(model)
    with torch.no_grad():
        for linear in layers:
            linear.weight.mul_(scale)
    return f"The adapter keeps {scale:g} of the trained LoRA update ({len(layers)} layers; ADAPTER_SCALE)."


@contextmanager
def update_scaled(model, scale: float):
    """The model with `scale` of its LoRA update for the duration (as ADAPTER_SCALE will save it), then exactly as
    it was: what the epoch choice measures is what 02 saves."""
    import torch
    layers = lora_b_layers(model) if scale != 1 else []
    kept = [linear.weight.detach().clone() for linear in layers]
    scale_adapter(model, scale)
    try:
        yield model
    finally:
        with torch.no_grad():
            for linear, weight in zip(layers, kept):
                linear.weight.copy_(weight)


def lora_update(model) -> dict:
    """Each LoRA layer's trained A and B (copies in CPU memory): one run's update, for `set_mean_update`."""
    def weight(linears):
        return linears["default"].weight.detach().to("cpu", copy=True)
    return {name: (weight(module.lora_A), weight(module.lora_B)) for name, module in lora_layers(model)}


def reset_lora(model, seed: int) -> None:
    """Every LoRA layer back to PEFT's fresh start (A random from `seed`, B zero): the next run's start."""
    import torch
    torch.manual_seed(seed)
    for _, module in lora_layers(model):
        module.reset_lora_parameters("default", True)


def set_mean_update(model, updates: list[dict]) -> str:
    """Put the mean of several runs' updates into `model`'s LoRA layers, exactly: a LoRA of rank n x r whose A are
    the runs' A stacked and whose B are their B side by side over n (PEFT's "cat" combination), alpha scaled so that
    each layer's scaling stays as trained. Says what was done."""
    import math
    import torch
    n = len(updates)
    config = model.peft_config["default"]
    grow = math.sqrt(n) if config.use_rslora else n  # alpha / r (or / sqrt r) unchanged at rank n x r
    with torch.no_grad():
        for name, module in lora_layers(model):
            old_a, old_b = module.lora_A["default"], module.lora_B["default"]
            a = torch.cat([update[name][0] for update in updates])
            b = torch.cat([update[name][1] for update in updates], dim=1) / n
            new_a = torch.nn.Linear(a.shape[1], a.shape[0], bias=False).to(old_a.weight.device, old_a.weight.dtype)
            new_b = torch.nn.Linear(b.shape[1], b.shape[0], bias=False).to(old_b.weight.device, old_b.weight.dtype)
            new_a.weight.copy_(a)
            new_b.weight.copy_(b)
            module.lora_A["default"], module.lora_B["default"] = new_a, new_b
            module.r["default"] = a.shape[0]
            module.lora_alpha["default"] = module.lora_alpha["default"] * grow
    rank = config.r
    config.r, config.lora_alpha = rank * n, config.lora_alpha * grow
    return f"The adapter keeps the mean LoRA update of {n} runs (MEAN_OF_RUNS), exactly: rank {rank} x {n}."


def saved_adapter_scale(adapter_dir) -> float:
    """The ADAPTER_SCALE an adapter of 02 was saved with; 1 for one saved before it existed or made elsewhere."""
    path = Path(adapter_dir) / SETTINGS_FILE
    saved = {k.lower(): v for k, v in json.loads(path.read_text()).items()} if path.exists() else {}
    return float(saved.get("adapter_scale", 1.0))


def restore_trained_update(model, adapter_dir) -> str | None:
    """INIT_ADAPTER's LoRA update back to all of what was trained (each lora_B divided by the scale it was saved
    with), so that training goes on from it and ADAPTER_SCALE applies once to the whole update, not twice to the
    earlier run's part (cpt, then sft). Says what was done, or None where it was saved as trained."""
    scale = saved_adapter_scale(adapter_dir)
    if scale == 1:
        return None
    scale_adapter(model, 1 / scale)
    return (f"INIT_ADAPTER {adapter_dir} kept {scale:g} of its trained update: training goes on from all of it "
            f"(ADAPTER_SCALE applies once, at the end).")


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


def found_adapter_dir(adapter_dir) -> str:
    """The adapter folder meant: `adapter_dir` itself, or the `adapter` folder in it where it is 02's OUTPUT_DIR
    (outputs/run rather than outputs/run/adapter); said so when it is the latter."""
    inside = Path(adapter_dir) / "adapter"
    if not (Path(adapter_dir) / ADAPTER_CONFIG).exists() and (inside / ADAPTER_CONFIG).exists():
        print(f"Using the adapter in {inside} ({adapter_dir} is 02's output folder).")
        return str(inside)
    return str(adapter_dir)


def adapter_settings(adapter_dir) -> TrainSettings:
    """The settings the adapter was trained with; for an adapter made elsewhere, 02's constants and the base
    model that PEFT recorded."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / ADAPTER_CONFIG).exists():
        raise ModelError(f"No adapter in {adapter_dir}: run 02_fine_tuning.py first, or pass --adapter-dir "
                         f"pointing at the 'adapter' folder it wrote (e.g. outputs/run/adapter).")
    peft_base = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    return TrainSettings.load(adapter_dir, model_name=peft_base)


def with_init_adapter(s: TrainSettings, model_path: str) -> TrainSettings:
    """`s` with INIT_ADAPTER's LoRA shape (rank, alpha, dropout, rsLoRA, modules), since that adapter goes on
    training as it is (e.g. cpt, then sft); an adapter trained on another base model is refused."""
    if not s.init_adapter:
        return s
    trained_on = adapter_settings(s.init_adapter).model_name
    if trained_on not in (s.model_name, str(model_path)):
        raise ModelError(f"INIT_ADAPTER {s.init_adapter} was trained on {trained_on}, not on MODEL_NAME "
                         f"{s.model_name}: pass --model-name {trained_on}, or another --init-adapter.")
    config = json.loads((Path(s.init_adapter) / ADAPTER_CONFIG).read_text())
    targets = config["target_modules"]  # a list, or one regular expression
    whole = {name.rsplit(".", 1)[-1] for name in config.get("modules_to_save") or []}  # Unsloth: model.embed_tokens
    modules = sorted([targets] if isinstance(targets, str) else targets) + sorted(whole)
    shape = {"lora_r": config["r"], "lora_alpha": config["lora_alpha"], "lora_dropout": config["lora_dropout"],
             "use_rslora": config.get("use_rslora", False),
             "target_modules": s.target_modules if set(modules) == set(s.target_modules) else modules}
    if any(getattr(s, name) != value for name, value in shape.items()):
        say(f"INIT_ADAPTER {s.init_adapter}: training goes on with its LoRA shape (r {shape['lora_r']}, alpha "
            f"{shape['lora_alpha']}, dropout {shape['lora_dropout']}, on {', '.join(modules)}), not the LORA_* / "
            f"TARGET_MODULES settings.")
    return s.replace(**shape)


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
