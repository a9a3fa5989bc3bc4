"""Which epoch's adapter 02 keeps: the one the knowledge check's own kind of measure rates best, not the training loss.

Before training and at each epoch's end, two losses of the model, in nats per token:
- learning: its loss on fact sentences of the papers, each asked by a validation question (validation_questions.jsonl:
  plain questions in words no training record uses, about other sentences than those the check reports, where the
  paper has questions of its own);
- forgetting: its loss on the base model's own answers to everyday instructions held out of self-replay.
The epoch kept is the one whose drop in the first, less its rise in the second, is largest: what was learned about
the papers, net of what was lost elsewhere. Only the best epoch's trainable weights are held (in memory; for LoRA,
megabytes). Each epoch is measured with the share of its LoRA update that ADAPTER_SCALE will save, and on a CPU at the
training's precision. A resumed run chooses among the epochs it trained itself and the last.
"""
from pathlib import Path

from .adapter import update_scaled
from .knowledge import VALIDATION_QUESTIONS_FILE, read_jsonl
from .settings import TrainSettings
from .tokenizing import tokenize_rows
from .training import cpu_training_precision, mean_loss


class EpochChoice:
    """Measures a model at the start and after each epoch (`measure`), keeps the best epoch's weights, and puts
    them back at the end (`keep_best`)."""

    def __init__(self, *, learning_rows: list[dict], forgetting_rows: list[dict], pad_id: int, scale: float = 1.0):
        self.learning_rows, self.forgetting_rows, self.pad_id, self.scale = learning_rows, forgetting_rows, pad_id, scale
        self.start, self.epochs, self.best, self.weights = None, [], None, None

    def losses(self, model) -> tuple[float, float]:
        with update_scaled(model, self.scale), cpu_training_precision(model):
            return (mean_loss(model, self.learning_rows, self.pad_id),
                    mean_loss(model, self.forgetting_rows, self.pad_id))

    def measure(self, epoch: int, model) -> dict:
        """The epoch's two losses and score (its entry in the training history); epoch 0 is the untrained start."""
        learning, forgetting = self.losses(model)
        if self.start is None:
            self.start = (learning, forgetting)
        score = (self.start[0] - learning) - (forgetting - self.start[1])
        entry = {"epoch": epoch, "learning_loss": learning, "forgetting_loss": forgetting, "epoch_score": score}
        if epoch > 0:
            self.epochs.append(entry)
            if self.best is None or score > self.best["epoch_score"]:
                self.best = entry
                self.weights = {name: p.detach().to("cpu", copy=True)
                                for name, p in model.named_parameters() if p.requires_grad}
        return entry

    def keep_best(self, model) -> str:
        """Put the best epoch's weights back into `model` (when it is not the last); says which was kept and why."""
        if not self.epochs:
            return "No epoch was measured: the adapter is the last step's."
        last = self.epochs[-1]
        if self.best is last:
            return (f"Kept the last epoch ({last['epoch']}): the best balance of learning and forgetting "
                    f"(score {last['epoch_score']:+.3f}).")
        trained = dict(model.named_parameters())
        for name, value in self.weights.items():
            trained[name].data.copy_(value.to(trained[name].device))
        return (f"Kept epoch {self.best['epoch']} of {last['epoch']}: its learning less forgetting "
                f"({self.best['epoch_score']:+.3f}) beat the last epoch's ({last['epoch_score']:+.3f}).")


def learning_rows(questions: list[dict]) -> list[dict]:
    """Validation questions as records: the question, answered by the sentence it was made from."""
    return [{"instruction": q["question"], "input": "", "output": q.get("sentence") or q["answer"]}
            for q in questions]


def epoch_choice(model, tokenizer, s: TrainSettings, *, forgetting: list[dict]) -> EpochChoice | None:
    """The epoch choice of a run, its start measured on `model` (None where KEEP_BEST_EPOCH is off, or where the
    dataset has no validation questions or there are no held-out everyday answers, as in cpt)."""
    questions = read_jsonl(Path(s.dataset_dir) / VALIDATION_QUESTIONS_FILE)
    if not (s.keep_best_epoch and questions and forgetting):
        return None
    def rows(records):
        return tokenize_rows(records, tokenizer, s.prompt_format, s.max_seq_length).rows
    choice = EpochChoice(learning_rows=rows(learning_rows(questions)), forgetting_rows=rows(forgetting),
                         pad_id=tokenizer.pad_token_id, scale=s.adapter_scale)
    choice.measure(0, model)
    return choice
