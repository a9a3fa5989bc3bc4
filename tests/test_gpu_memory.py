"""LOAD_IN_4BIT, GRADIENT_CHECKPOINTING and RUNS_SIDE_BY_SIDE: what "auto" decides given a memory figure and a model or a shape, and
the fall-back after an out-of-memory (the GPU side of it: bench/README.md)."""
import pytest

from common.errors import SettingsError
from common.gpu_memory import (FREE_MEMORY_SHARE, PROCESS_BYTES, SIXTEEN_BIT_SHARE, activation_bytes,
                               choose_gradient_checkpointing, choose_load_in_4bit,
                               choose_runs_side_by_side, loaded_checkpointing,
                               train_or_fall_back, decide_load_in_4bit, uses_4bit, weight_bytes_16bit,
                               with_load_in_4bit)

GIB = 2**30
SMOLLM2_1_7B = dict(layers=24, hidden=2048, intermediate=8192)
LLAMA_3_1_8B = dict(layers=32, hidden=4096, intermediate=14336)


def test_auto_loads_a_16bit_base_only_where_it_takes_a_quarter_of_free_memory_at_most():
    eight_b = 2 * 8_030_261_248  # Llama-3.1-8B's weights in 16 bits, 15 GiB
    assert choose_load_in_4bit("auto", weight_bytes=eight_b, free=137 * GIB)[0] is False  # an H200
    assert choose_load_in_4bit("auto", weight_bytes=eight_b, free=78 * GIB)[0] is False  # an 80 GB card
    four, why = choose_load_in_4bit("auto", weight_bytes=eight_b, free=46 * GIB)  # a 48 GB card
    assert four is True and "QLoRA" in why and "15.0 GiB" in why and "46.0 GiB" in why
    assert choose_load_in_4bit("auto", weight_bytes=int(SIXTEEN_BIT_SHARE * 40 * GIB), free=40 * GIB)[0] is False
    assert choose_load_in_4bit("auto", weight_bytes=None, free=137 * GIB) == (
        True, "auto: the 16-bit size of the weights is not known here (a Hub name, or stored quantized): QLoRA")
    assert choose_load_in_4bit("false", weight_bytes=eight_b, free=10 * GIB) == (False, "as set (LOAD_IN_4BIT)")
    assert choose_load_in_4bit("true", weight_bytes=1, free=137 * GIB)[0] is True
    assert uses_4bit(True) and not uses_4bit(False)  # as adapters of older versions recorded it
    with pytest.raises(SettingsError, match="decided before the model loads"):
        uses_4bit("auto")


def test_the_16bit_size_comes_from_the_safetensors_headers(tmp_path):
    from common.models import resolve_model_path
    from common.settings import TrainSettings
    embedded = resolve_model_path("embedded/SmolLM2-135M-Instruct")
    assert 2 * 130e6 < weight_bytes_16bit(embedded) < 2 * 140e6  # SmolLM2-135M: 134.5M weights
    quantized = tmp_path / "bnb"
    quantized.mkdir()
    (quantized / "config.json").write_text('{"quantization_config": {"load_in_4bit": true}}')
    assert weight_bytes_16bit(quantized) is None  # stored in 4 bits: QLoRA as it is
    assert weight_bytes_16bit("someone/not-downloaded-here") is None  # offline: not known
    s = TrainSettings.defaults()
    assert s.load_in_4bit == "auto" and with_load_in_4bit(s, embedded, "cpu") is s  # the CPU trains 32-bit weights
    assert decide_load_in_4bit("true", embedded)[0] is True  # as an adapter recorded it
    assert decide_load_in_4bit(False, embedded)[0] is False


def test_activation_estimate_matches_the_h200_measurements():
    # checkpointing off minus "unsloth", peak GPU memory on the H200 (issue 15): 28.2 - 3.6 and 34.9 - 6.8 GiB
    assert activation_bytes(tokens=8 * 2048, **SMOLLM2_1_7B) == pytest.approx(24.6 * GIB, rel=0.05)
    assert activation_bytes(tokens=4 * 2048, **LLAMA_3_1_8B) == pytest.approx(28.1 * GIB, rel=0.05)


def test_auto_turns_checkpointing_off_only_where_the_largest_batch_fits():
    activations = activation_bytes(tokens=4 * 2048, **LLAMA_3_1_8B)  # ~29 GiB
    h200, l4 = 132 * GIB, 17 * GIB  # free after loading the 4-bit model
    mode, why = choose_gradient_checkpointing("auto", activations=activations, free=h200)
    assert mode == "false" and "29.0 GiB" in why and "132.0 GiB" in why
    assert choose_gradient_checkpointing("auto", activations=activations, free=l4)[0] == "unsloth"
    # the margin: off only up to FREE_MEMORY_SHARE of the free memory
    assert choose_gradient_checkpointing("auto", activations=activations,
                                         free=int(activations / FREE_MEMORY_SHARE) - 1)[0] == "unsloth"


def test_a_set_mode_is_kept():  # an unknown one is refused by TrainSettings (tests/test_settings.py)
    for mode in ("unsloth", "true", "false"):
        assert choose_gradient_checkpointing(mode, activations=10**12, free=1) == \
            (mode, "as set (GRADIENT_CHECKPOINTING)")
    assert [loaded_checkpointing(m) for m in ("auto", "unsloth", "true", "false")] == \
        ["unsloth", "unsloth", True, False]


def test_auto_trains_the_runs_side_by_side_only_on_a_gpu_with_room_for_them_all():
    embedded = dict(run_bytes=int(0.3 * GIB), activations=int(0.2 * GIB))  # SmolLM2-135M, 16-bit, the demo's rows
    together, why = choose_runs_side_by_side("auto", runs=3, device="cuda", free=130 * GIB, **embedded)
    assert together and "3 runs need ~3.2 GiB more" in why and "130.0 GiB" in why
    eight_b = dict(run_bytes=16 * GIB, activations=activation_bytes(tokens=4 * 512, **LLAMA_3_1_8B))  # 16-bit 8B
    assert choose_runs_side_by_side("auto", runs=3, device="cuda", free=120 * GIB, **eight_b)[0]  # an H200
    assert not choose_runs_side_by_side("auto", runs=3, device="cuda", free=60 * GIB, **eight_b)[0]  # an 80 GB card
    long_rows = {**eight_b, "activations": activation_bytes(tokens=4 * 2048, **LLAMA_3_1_8B)}
    assert not choose_runs_side_by_side("auto", runs=3, device="cuda", free=120 * GIB, **long_rows)[0]
    # the margin: the other runs and this one's activations in FREE_MEMORY_SHARE of the free memory
    need = 2 * (embedded["run_bytes"] + embedded["activations"] + PROCESS_BYTES) + embedded["activations"]
    assert not choose_runs_side_by_side("auto", runs=3, device="cuda", free=int(need / FREE_MEMORY_SHARE) - 1,
                                        **embedded)[0]
    assert choose_runs_side_by_side("auto", runs=3, device="cuda", free=int(need / FREE_MEMORY_SHARE) + 1,
                                    **embedded)[0]
    cpu = choose_runs_side_by_side("auto", runs=3, device="cpu", free=0, run_bytes=0, activations=0)
    assert cpu == (False, "one after the other (auto: on the CPU each run takes every core)")
    assert not choose_runs_side_by_side("auto", runs=1, device="cuda", free=130 * GIB, **embedded)[0]
    assert choose_runs_side_by_side("true", runs=2, device="cpu", free=0, run_bytes=0, activations=0)[0]
    assert not choose_runs_side_by_side("false", runs=3, device="cuda", free=130 * GIB, **embedded)[0]


def test_out_of_memory_without_checkpointing_falls_back_and_goes_on():
    tries = []

    def train(mode):
        tries.append(mode)
        if mode == "false":
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return "trained"

    assert train_or_fall_back(train, "false", fallback="unsloth") == ("trained", "unsloth")
    assert tries == ["false", "unsloth"]
    with pytest.raises(RuntimeError, match="out of memory"):  # no fall-back asked for (a set mode): it fails
        train_or_fall_back(train, "false", fallback=None)
    assert train_or_fall_back(train, "unsloth", fallback=None) == ("trained", "unsloth")


def test_other_errors_are_not_taken_for_out_of_memory():
    def train(mode):
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        train_or_fall_back(train, "false", fallback="unsloth")
