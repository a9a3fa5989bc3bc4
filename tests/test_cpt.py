"""Continued pretraining: the chunks' text from the real sample dataset, packed, every token trained."""
import pytest
from peft import get_peft_model

from common.cpt import (check_packed, chunk_texts, embedding_learning_rate, pack_texts,
                        packed_text_splits)
from common.dataset import load_dataset_dir
from common.errors import FormattingError
from common.models import load_causal_lm
from common.settings import TrainSettings
from common.training import lora_config, mean_loss, train_cpu


def test_chunk_texts_are_each_chunks_text_once_and_nothing_else(sample_dataset_dir):
    train = list(load_dataset_dir(sample_dataset_dir)["train"])
    texts = chunk_texts(train)
    chunks = {r["chunk_id"]: r["output"] for r in train if r["template"] in ("section_summary", "title_abstract")}
    assert texts == list(dict.fromkeys(chunks.values())) and len(texts) == len(chunks) > 5
    others = {r["output"] for r in train if r["template"] in ("fact", "entity", "key_facts", "continuation")}
    assert not others & set(texts)  # fact, entity, key-fact and continuation rows are not the papers' text
    assert chunk_texts(train + train) == texts  # a chunk twice is packed once


def test_packed_rows_are_full_train_every_token_and_end_each_text_with_eos(tokenizer):
    texts = ["The Velmora tidal-lichen grows at 34 g/kg salinity.", "Ilse Marrow founded the station in 1987.",
             "Short."]
    data = pack_texts(texts, tokenizer, max_seq_length=8)
    stream = [t for row in data.rows for t in row["input_ids"]]
    assert all(row["labels"] == row["input_ids"] for row in data.rows)  # loss on every token, no prompt, no pad
    assert [len(row["input_ids"]) for row in data.rows[:-1]] == [8] * (len(data.rows) - 1)
    assert 0 < len(data.rows[-1]["input_ids"]) <= 8 and data.longest == 8
    assert stream.count(tokenizer.eos_token_id) == 3 and stream[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(stream) == tokenizer.eos_token.join(texts) + tokenizer.eos_token  # no chat template
    check_packed(data)


def test_splits_pack_train_and_test_text_and_no_text_is_refused(sample_dataset_dir, tokenizer, capsys):
    train, test = packed_text_splits(load_dataset_dir(sample_dataset_dir), tokenizer, 256)
    assert train.rows and test.rows and "no self-replay" in capsys.readouterr().out
    with pytest.raises(FormattingError, match="--training-mode sft"):
        check_packed(pack_texts(chunk_texts([{"template": "fact", "output": "x", "chunk_id": "c"}]), tokenizer, 64))


def test_embedding_learning_rate_settings():
    s = TrainSettings.defaults(learning_rate=1e-3, embedding_learning_rate=None)
    assert embedding_learning_rate(s) is None  # embeddings not trained
    with_embeddings = s.replace(target_modules=[*s.target_modules, "embed_tokens", "lm_head"])
    assert embedding_learning_rate(with_embeddings) == pytest.approx(1e-4)  # Unsloth's recipe: a tenth
    assert embedding_learning_rate(with_embeddings.replace(embedding_learning_rate=5e-5)) == 5e-5


def test_a_few_cpu_steps_on_packed_text_lower_its_loss(embedded_path, tokenizer):
    texts = ["Kesterhaven Intertidal Station was founded by Ilse Marrow in 1987 on the northern shore.",
             "The Velmora tidal-lichen has its salinity optimum at 34 g/kg and tolerates 61 hours of drought."]
    rows = pack_texts(texts, tokenizer, max_seq_length=32).rows
    settings = TrainSettings.defaults(batch_size=2, batch_tokens=0, max_steps=3, learning_rate=2e-3, warmup_steps=0,
                                      seed=0, eval_steps=0)
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(settings))
    before = mean_loss(model, rows, tokenizer.pad_token_id)
    history = train_cpu(model, rows, tokenizer.pad_token_id, settings, eval_rows=rows)
    assert history[-1]["eval_loss"] < 0.8 * before, (before, history[-1]["eval_loss"])
    assert history[-2]["tokens"] == 3 * sum(len(r["input_ids"]) for r in rows)  # every row's tokens, each step
