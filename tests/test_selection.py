"""The epoch 02 keeps: measured by real losses of the embedded model, the best epoch's weights put back."""
import torch

from common.selection import EpochChoice, learning_rows
from common.tokenizing import tokenize_rows


def _model(embedded_path):
    from peft import LoraConfig, get_peft_model
    from common.models import load_causal_lm
    return get_peft_model(load_causal_lm(str(embedded_path)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                         task_type="CAUSAL_LM"))


def _trained(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_the_best_epoch_is_kept_and_its_weights_put_back(embedded_path, tokenizer):
    facts = learning_rows([{"question": "In what year was the station at Kesterhaven founded?",
                            "sentence": "Kesterhaven Intertidal Station was founded in 1987 by Ilse Marrow."}])
    everyday = [{"instruction": "What is the capital of France?", "input": "", "output": "The capital is Paris."}]
    rows = {name: tokenize_rows(records, tokenizer, "chat", 256).rows
            for name, records in (("facts", facts), ("everyday", everyday))}
    model = _model(embedded_path)
    choice = EpochChoice(learning_rows=rows["facts"], forgetting_rows=rows["everyday"], pad_id=tokenizer.pad_token_id)
    start = choice.measure(0, model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    from common.tokenizing import pad_batch
    for _ in range(4):  # "epoch 1": a few real steps on the fact
        ids, mask, labels = pad_batch(rows["facts"], tokenizer.pad_token_id)
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    first = choice.measure(1, model)
    after_first = _trained(model)
    assert first["learning_loss"] < start["learning_loss"] and first["epoch_score"] > 0
    with torch.no_grad():  # "epoch 2": weights wrecked, so it learned less and forgot more
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    second = choice.measure(2, model)
    assert second["epoch_score"] < first["epoch_score"]
    said = choice.keep_best(model)
    assert "Kept epoch 1 of 2" in said
    assert all(torch.equal(p, after_first[n]) for n, p in model.named_parameters() if p.requires_grad)
    assert abs(choice.losses(model)[0] - first["learning_loss"]) < 1e-4


def test_the_last_epoch_is_kept_when_it_is_the_best(embedded_path, tokenizer):
    rows = tokenize_rows([{"instruction": "Q?", "input": "", "output": "An answer."}], tokenizer, "chat", 64).rows
    model = _model(embedded_path)
    choice = EpochChoice(learning_rows=rows, forgetting_rows=rows, pad_id=tokenizer.pad_token_id)
    choice.measure(0, model)
    choice.measure(1, model)
    before = _trained(model)
    assert choice.keep_best(model).startswith("Kept the last epoch (1)")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_epochs_are_measured_at_the_share_of_the_update_that_is_saved(embedded_path, tokenizer):
    from common.adapter import scale_adapter
    rows = tokenize_rows([{"instruction": "Q?", "input": "", "output": "An answer."}], tokenizer, "chat", 64).rows
    model = _model(embedded_path)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)  # a trained-looking update
    before = _trained(model)
    scaled = EpochChoice(learning_rows=rows, forgetting_rows=rows, pad_id=tokenizer.pad_token_id, scale=0.5)
    as_trained = EpochChoice(learning_rows=rows, forgetting_rows=rows, pad_id=tokenizer.pad_token_id)
    at_half, whole = scaled.losses(model), as_trained.losses(model)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)  # put back exactly
    assert at_half != whole
    scale_adapter(model, 0.5)  # the adapter as 02 saves it
    assert abs(as_trained.losses(model)[0] - at_half[0]) < 1e-5


def test_a_resumed_run_still_chooses_among_the_epochs_it_measured_before(embedded_path, tokenizer, tmp_path):
    rows = tokenize_rows([{"instruction": "When was the station founded?", "input": "",
                           "output": "It was founded in 1987 by Ilse Marrow."}], tokenizer, "chat", 64).rows
    model = _model(embedded_path)
    saved = tmp_path / "checkpoints" / "epoch_choice.pt"
    first_part = EpochChoice(learning_rows=rows, forgetting_rows=rows, pad_id=tokenizer.pad_token_id, saved_to=saved)
    first_part.measure(0, model)
    first_part.measure(1, model)  # epoch 1: the untrained LoRA, as good as the start
    best = _trained(model)
    with torch.no_grad():  # epoch 2 wrecks the weights; then the process is killed, and 02 is run again
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    first_part.measure(2, model)
    resumed = EpochChoice(learning_rows=rows, forgetting_rows=rows, pad_id=tokenizer.pad_token_id, saved_to=saved,
                          resumed=True)
    resumed.measure(0, model)
    assert [e["epoch"] for e in resumed.epochs] == [1, 2]
    assert resumed.keep_best(model).startswith("Kept epoch 1 of 2")  # not "the last step's": epoch 1 was measured
    assert all(torch.equal(p, best[n]) for n, p in model.named_parameters() if p.requires_grad)
    fresh = EpochChoice(learning_rows=rows, forgetting_rows=rows, pad_id=tokenizer.pad_token_id, saved_to=saved)
    assert fresh.epochs == [] and fresh.keep_best(model).startswith("No epoch")  # a fresh start reads nothing back
