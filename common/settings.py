"""One settings object per step: its fields and their types.

The values, defaults included, are the step script's block of UPPER_CASE constants: `config.parse_settings`
fills the object from them and the command line, and `Settings.defaults()` reads the same constants from the
script's file (for tests, benches, and adapters saved without settings). So a default lives in one place only,
the line a user edits, and every reader gets a typed object, never a dict of UPPER_CASE keys.
"""
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, ClassVar, Optional

from .config import ROOT, read_script_constants, settings_from_constants
from .errors import SettingsError
from .prompts import PROMPT_FORMATS

SETTINGS_FILE = "training_config.json"  # beside the adapter: the TrainSettings it was trained with


def at_least(low) -> tuple[str, Callable]:
    return f"at least {low}", lambda value: value >= low


def above(low) -> tuple[str, Callable]:
    return f"above {low}", lambda value: value > low


def from_to(low, high) -> tuple[str, Callable]:
    return f"from {low} to {high}", lambda value: low <= value <= high


def below_one() -> tuple[str, Callable]:
    return "from 0 to below 1", lambda value: 0 <= value < 1


def one_of(*choices) -> tuple[str, Callable]:
    return f"one of {', '.join(choices)}", lambda value: value in choices


def scheduler_name() -> tuple[str, Callable]:
    def known(value):
        from transformers import SchedulerType
        return value in {t.value for t in SchedulerType}
    return "a transformers scheduler name (linear, cosine, constant, constant_with_warmup...)", known


DEVICES = ("auto", "cuda", "cpu")
TRAINING_MODES = ("sft", "cpt")
LOAD_IN_4BITS = ("auto", "true", "false")  # adapters of older versions recorded True / False, also accepted
GRADIENT_CHECKPOINTINGS = ("auto", "unsloth", "true", "false")
RUNS_SIDE_BY_SIDES = ("auto", "true", "false")
AUTO = -1  # MEAN_OF_RUNS and ADAPTER_SCALE: decided by the device (runs.with_mean_of_runs); LEARNING_RATE: by the
# model's size (training.with_learning_rate)


@dataclass(frozen=True, kw_only=True)
class StepSettings:
    SCRIPT: ClassVar[str] = ""  # the step script whose constants fill it
    # field -> (what it must be, the test): a value outside fails here, in one line, not as a traceback mid-run
    LIMITS: ClassVar[dict[str, tuple[str, Callable]]] = {}

    def __post_init__(self):
        for name, (wanted, ok) in self.LIMITS.items():
            value = getattr(self, name)
            if value is not None and not ok(value):
                raise SettingsError(f"{name.upper()} (--{name.replace('_', '-')}) must be {wanted}, not {value!r}.")

    @classmethod
    def defaults(cls, **overrides):
        """The script's constants as they stand in its file, with `overrides` (lower-case field names)."""
        return replace(settings_from_constants(cls, read_script_constants(ROOT / cls.SCRIPT)), **overrides)

    def replace(self, **changes):
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class DatasetSettings(StepSettings):
    """Step 01: PDFs -> markdown -> records -> a train/test dataset."""
    SCRIPT: ClassVar[str] = "01_create_dataset.py"
    LIMITS: ClassVar[dict] = {
        "converter": one_of("auto", "marker", "text"), "chunk_tokens": at_least(32), "chunk_overlap": at_least(0),
        "fact_variants": at_least(0), "test_fraction": below_one(), "qa_per_chunk": at_least(1),
        "qa_judge_min_score": from_to(1, 5), "qa_concurrency": at_least(1), "qa_batch_size": at_least(1),
        "qa_max_tokens": at_least(1), "qa_temperature": at_least(0), "qa_timeout": above(0), "qa_retries": at_least(0)}
    pdf_dir: str
    md_dir: str
    dataset_dir: str
    converter: str
    force: bool
    model_name: str
    chunk_tokens: int
    chunk_overlap: int
    record_kinds: list[str]
    fact_variants: int
    excluded_sections: list[str]
    test_fraction: float
    seed: int
    push_to_hub: bool
    hub_dataset_id: str
    hub_private: bool
    from_jsonl: str
    from_csv: str
    qa_teacher: str
    qa_per_chunk: int
    qa_judge: str
    qa_judge_min_score: float
    qa_concurrency: int
    qa_batch_size: int
    qa_max_tokens: int
    qa_temperature: float
    qa_timeout: float
    qa_retries: int


@dataclass(frozen=True, kw_only=True)
class TrainSettings(StepSettings):
    """Step 02: a LoRA adapter trained on the dataset; saved beside it as training_config.json."""
    SCRIPT: ClassVar[str] = "02_fine_tuning.py"
    LIMITS: ClassVar[dict] = {
        "prompt_format": one_of(*PROMPT_FORMATS), "replay_fraction": below_one(), "max_seq_length": at_least(16),
        "lora_r": at_least(1), "lora_alpha": above(0), "lora_dropout": below_one(),
        "learning_rate": ("-1 (auto: by the model's size) or above 0", lambda v: v == AUTO or v > 0),
        "embedding_learning_rate": above(0), "weight_decay": at_least(0), "lr_scheduler_type": scheduler_name(),
        "warmup_steps": at_least(0), "batch_size": at_least(1), "batch_tokens": at_least(-1),
        "gradient_accumulation_steps": at_least(1), "num_epochs": above(0), "logging_steps": at_least(1),
        "eval_steps": at_least(0), "save_steps": at_least(0), "save_total_limit": at_least(1),
        "target_modules": ("a list of at least one layer name", bool), "device": one_of(*DEVICES),
        "training_mode": one_of(*TRAINING_MODES), "gradient_checkpointing": one_of(*GRADIENT_CHECKPOINTINGS),
        "load_in_4bit": (f"one of {', '.join(LOAD_IN_4BITS)}", lambda v: v in LOAD_IN_4BITS or isinstance(v, bool)),
        "runs_side_by_side": one_of(*RUNS_SIDE_BY_SIDES),
        "mean_of_runs": ("-1 (auto), 1 (one run, as trained) or more", lambda v: v == AUTO or v >= 1),
        "adapter_scale": ("-1 (auto), or above 0 and at most 1 (1: the update as trained)",
                          lambda v: v == AUTO or 0 < v <= 1)}
    dataset_dir: str
    output_dir: str
    model_name: str
    training_mode: str
    init_adapter: Optional[str]
    prompt_format: str
    train_on_responses_only: bool
    replay_fraction: float
    max_seq_length: int
    load_in_4bit: str
    offload_embedding: bool
    gradient_checkpointing: str
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: list[str]
    use_rslora: bool
    learning_rate: float
    embedding_learning_rate: Optional[float]
    weight_decay: float
    lr_scheduler_type: str
    warmup_steps: int
    batch_size: int
    batch_tokens: int
    gradient_accumulation_steps: int
    num_epochs: float
    max_steps: int
    logging_steps: int
    eval_steps: int
    save_steps: int
    save_total_limit: int
    adapter_scale: float
    mean_of_runs: int
    runs_side_by_side: str
    keep_best_epoch: bool
    evaluate: bool
    report_to: str
    push_to_hub: bool
    hub_model_id: Optional[str]
    resume: bool
    seed: int
    device: str

    def save(self, folder) -> Path:
        path = Path(folder) / SETTINGS_FILE
        path.write_text(json.dumps(self.as_dict(), indent=2))
        return path

    @classmethod
    def load(cls, folder, **fallback):
        """The settings saved in `folder`, typed; fields it lacks (an adapter from an older version or made
        elsewhere: then `fallback`, e.g. its base model) come from 02's constants."""
        path = Path(folder) / SETTINGS_FILE
        saved = {**fallback, **{k.lower(): v for k, v in json.loads(path.read_text()).items()}} if path.exists() \
            else fallback
        known = {f.name for f in fields(cls)}
        return cls.defaults(**{k: v for k, v in saved.items() if k in known})


def decided_learning_rate(s: TrainSettings) -> float:
    """s.learning_rate where it is decided: AUTO reaching an optimizer would train with a rate of -1."""
    if s.learning_rate == AUTO:
        raise SettingsError("LEARNING_RATE auto is decided by the model's size before training "
                            "(training.with_learning_rate).")
    return s.learning_rate


@dataclass(frozen=True, kw_only=True)
class Generation:
    """How answers are sampled; travels together from 03's settings (or the knowledge check) to generate()."""
    max_new_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float
    seed: int


@dataclass(frozen=True, kw_only=True)
class AnswerSettings(Generation, StepSettings):
    """Step 03: answer with the tuned model, compare it with the base, evaluate it, export it; its sampling
    settings are Generation's fields."""
    SCRIPT: ClassVar[str] = "03_using_the_model.py"
    LIMITS: ClassVar[dict] = {
        "max_new_tokens": at_least(1), "temperature": at_least(0), "top_p": ("above 0 and at most 1",
                                                                            lambda value: 0 < value <= 1),
        "repetition_penalty": above(0), "batch_size": at_least(1), "prompt_format": one_of(*PROMPT_FORMATS),
        "merge_dtype": one_of("bfloat16", "float16", "float32"), "device": one_of(*DEVICES)}
    adapter_dir: str
    model_name: Optional[str]
    prompt: Optional[str]
    prompts_file: Optional[str]
    answers_file: Optional[str]
    compare: bool
    compare_file: Optional[str]
    prompt_format: Optional[str]
    batch_size: int
    device: str
    merge_to: Optional[str]
    merge_dtype: str
    gguf_to: Optional[str]
    gguf_quant: str
    push_to_hub: bool
    hub_model_id: Optional[str]
    evaluate: bool
    dataset_dir: str

    def generation(self) -> Generation:
        """The sampling settings alone (the fields it has from Generation)."""
        return Generation(**{f.name: getattr(self, f.name) for f in fields(Generation)})
