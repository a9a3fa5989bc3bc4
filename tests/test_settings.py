import pytest

from common.errors import SettingsError
from common.settings import AnswerSettings, DatasetSettings, TrainSettings, decided_learning_rate


@pytest.mark.parametrize("settings_class, field, bad, message", [
    (TrainSettings, "lora_r", 0, "LORA_R (--lora-r) must be at least 1, not 0."),
    (TrainSettings, "batch_size", 0, "BATCH_SIZE (--batch-size) must be at least 1, not 0."),
    (TrainSettings, "learning_rate", 0.0, "LEARNING_RATE (--learning-rate) must be -1 (auto: by the model's size) "
                                          "or above 0, not 0.0."),
    (TrainSettings, "replay_fraction", 1.0, "REPLAY_FRACTION (--replay-fraction) must be from 0 to below 1, not 1.0."),
    (TrainSettings, "prompt_format", "alpca", "PROMPT_FORMAT (--prompt-format) must be one of chat, alpaca"),
    (TrainSettings, "lr_scheduler_type", "cosin", "LR_SCHEDULER_TYPE (--lr-scheduler-type) must be a transformers"),
    (TrainSettings, "device", "gpu", "DEVICE (--device) must be one of auto, cuda, cpu, not 'gpu'."),
    (TrainSettings, "target_modules", [], "TARGET_MODULES (--target-modules) must be a list of at least one layer"),
    (TrainSettings, "training_mode", "pretrain", "TRAINING_MODE (--training-mode) must be one of sft, cpt, not "),
    (TrainSettings, "load_in_4bit", "yes", "LOAD_IN_4BIT (--load-in-4bit) must be one of auto, true, false, not "),
    (TrainSettings, "gradient_checkpointing", "off", "GRADIENT_CHECKPOINTING (--gradient-checkpointing) must be one "
                                                     "of auto, unsloth, true, false, not 'off'."),
    (TrainSettings, "runs_side_by_side", "yes", "RUNS_SIDE_BY_SIDE (--runs-side-by-side) must be one of auto, true"),
    (TrainSettings, "mean_of_runs", 0, "MEAN_OF_RUNS (--mean-of-runs) must be -1 (auto), 1 (one run, as trained) or "
                                       "more, not 0."),
    (TrainSettings, "adapter_scale", 1.5, "ADAPTER_SCALE (--adapter-scale) must be -1 (auto), or above 0 and at most 1"),
    (TrainSettings, "adapter_scale", 0.0, "ADAPTER_SCALE (--adapter-scale) must be -1 (auto), or above 0 and at most 1"),
    (DatasetSettings, "test_fraction", 1.5, "TEST_FRACTION (--test-fraction) must be from 0 to below 1, not 1.5."),
    (DatasetSettings, "converter", "markr", "CONVERTER (--converter) must be one of auto, marker, text"),
    (AnswerSettings, "top_p", 0.0, "TOP_P (--top-p) must be above 0 and at most 1, not 0.0."),
    (AnswerSettings, "max_new_tokens", 0, "MAX_NEW_TOKENS (--max-new-tokens) must be at least 1, not 0."),
])
def test_a_value_out_of_range_is_named_with_what_it_must_be(settings_class, field, bad, message):
    settings_class.defaults()  # the scripts' own constants pass
    with pytest.raises(SettingsError) as error:
        settings_class.defaults(**{field: bad})
    assert str(error.value).startswith(message)


def test_the_edges_of_each_range_are_allowed():
    TrainSettings.defaults(replay_fraction=0.0, lora_dropout=0.0, warmup_steps=0, batch_tokens=-1, eval_steps=0,
                           save_steps=0, embedding_learning_rate=None, lr_scheduler_type="constant",
                           mean_of_runs=-1, adapter_scale=-1.0, learning_rate=-1.0)
    TrainSettings.defaults(mean_of_runs=1, adapter_scale=1.0, load_in_4bit=True)  # as older adapters saved it
    AnswerSettings.defaults(temperature=0.0, top_p=1.0, prompt_format=None)
    DatasetSettings.defaults(test_fraction=0.0, fact_variants=0, qa_judge_min_score=5.0)


def test_an_undecided_learning_rate_never_reaches_an_optimizer():
    with pytest.raises(SettingsError, match="LEARNING_RATE auto is decided by the model's size before training"):
        decided_learning_rate(TrainSettings.defaults(learning_rate=-1.0))
    assert decided_learning_rate(TrainSettings.defaults(learning_rate=3e-4)) == 3e-4
