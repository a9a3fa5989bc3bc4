"""Self-replay: the base model's own answers, generated once by the real embedded model and cached."""
from common.everyday import EVERYDAY_TEST, REPLAY_PROMPTS
from common.replay import mix_replay, replay_cache_file, replay_records
from common.training import inference_dtype


def test_replay_prompts_are_apart_from_the_everyday_test():
    tested = {q["question"].lower() for q in EVERYDAY_TEST}
    assert len(EVERYDAY_TEST) >= 50 and len(REPLAY_PROMPTS) >= 100
    assert not any(p.lower() in tested or any(t in p.lower() for t in tested) for p in REPLAY_PROMPTS)


def test_the_base_models_answers_are_made_once_and_reused(embedded_path, tokenizer, tmp_path, monkeypatch):
    import common.replay as replay
    monkeypatch.setattr(replay, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(replay, "REPLAY_PROMPTS", REPLAY_PROMPTS[:4])
    options = dict(model_name="embedded/SmolLM2-135M-Instruct", model_path=str(embedded_path), tokenizer=tokenizer,
                   prompt_format="chat", device="cpu")
    first = replay_records(**options)
    cache = replay_cache_file("embedded/SmolLM2-135M-Instruct", "chat", device="cpu", dtype=inference_dtype("cpu"),
                              cache_dir=tmp_path)
    assert len(cache.read_text().splitlines()) == 4  # every answer cached; those cut at the limit not replayed
    assert 1 <= len(first) <= 4 and all(r["output"] and r["template"] == "replay" for r in first)
    monkeypatch.setattr(replay, "_generate_answers", lambda *a, **k: (_ for _ in ()).throw(AssertionError("again")))
    assert replay_records(**options) == first  # read from the cache, not generated again


def test_replay_makes_up_the_asked_share_of_the_rows():
    records = [{"instruction": str(i)} for i in range(90)]
    replay = [{"instruction": f"r{i}"} for i in range(4)]
    mixed = mix_replay(records, replay, 0.1)
    assert len(mixed) == 100 and mixed[:90] == records and mixed[90:] == [replay[i % 4] for i in range(10)]
    assert mix_replay(records, replay, 0.0) == records
    in_order = [{"instruction": f"r{i}"} for i in range(100)]
    assert mix_replay(records, in_order, 0.1)[90:] == in_order[:10]  # 10 of 100: the first ten, in REPLAY_PROMPTS' order


def test_the_first_replay_prompts_hold_every_kind_and_the_last_are_quiz_questions():
    from common.everyday import KINDS, MORE_QUIZ
    assert REPLAY_PROMPTS[:len(KINDS)] == [kind[0] for kind in KINDS]  # a small paper's few rows: one of each kind
    assert REPLAY_PROMPTS[-len(MORE_QUIZ):] == MORE_QUIZ and len(set(REPLAY_PROMPTS)) == len(REPLAY_PROMPTS)


def test_held_out_answers_are_never_trained_on():
    from common.replay import hold_out
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(30)]
    kept, held = hold_out(rows)
    assert kept == rows[:25] and held == rows[25:]  # the last rows, those a run needs least


def test_an_answer_cut_at_the_token_limit_is_not_replayed(tokenizer):
    from common.replay import REPLAY_GENERATION, finished
    assert finished("Paris is the capital of France.", tokenizer)
    assert not finished("word " * REPLAY_GENERATION.max_new_tokens, tokenizer)
