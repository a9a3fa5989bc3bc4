"""One settings object per step: its fields and their types.

The values, defaults included, are the step script's block of UPPER_CASE constants: `config.parse_settings`
fills the object from them and the command line, and `Settings.defaults()` reads the same constants from the
script's file (for tests, benches, and adapters saved without settings). So a default lives in one place only,
the line a user edits, and every reader gets a typed object, never a dict of UPPER_CASE keys.
"""
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import ClassVar, Optional

from .config import ROOT, read_script_constants, settings_from_constants

SETTINGS_FILE = "training_config.json"  # beside the adapter: the TrainSettings it was trained with


@dataclass(frozen=True, kw_only=True)
class StepSettings:
    SCRIPT: ClassVar[str] = ""  # the step script whose constants fill it

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
