"""Which epoch's adapter 02 keeps: the one the knowledge check's own kind of measure rates best, not the training loss.

Before training and at each epoch's end, two losses of the model, in nats per token:
- learning: its loss on fact sentences of the papers, each asked by a validation question (validation_questions.jsonl:
  plain questions in words no training record uses, about other sentences than those the check reports, where the
  paper has questions of its own);
- forgetting: its loss on the base model's own answers to everyday instructions held out of self-replay.
The epoch kept is the one whose drop in the first, less its rise in the second, is largest: what was learned about
the papers, net of what was lost elsewhere. Only the best epoch's trainable weights are held (in memory; for LoRA,
megabytes). Each epoch is measured with the share of its LoRA update that ADAPTER_SCALE will save, and on a CPU at the
training's precision. The measures and the best epoch's weights are kept beside the checkpoints (CHOICE_FILE), so a
resumed run, or 02 run again after a finished one, chooses among every epoch of the run.
"""
import os
from pathlib import Path

from .adapter import update_scaled
from .distributed import is_main_process
from .knowledge import VALIDATION_QUESTIONS_FILE, read_jsonl
from .settings import TrainSettings
from .tokenizing import tokenize_rows
from .training import cpu_training_precision, mean_loss


class EpochChoice:
    """Measures a model at the start and after each epoch (`measure`), keeps the best epoch's weights, and puts
    them back at the end (`keep_best`)."""

    def __init__(self, *, learning_rows: list[dict], forgetting_rows: list[dict], pad_id: int, scale: float = 1.0,
                 saved_to=None, resumed: bool = False):
        """`saved_to`: the file that keeps the measures and the best weights; read back where `resumed`."""
        self.learning_rows, self.forgetting_rows, self.pad_id, self.scale = learning_rows, forgetting_rows, pad_id, scale
        self.start, self.epochs, self.best, self.weights = None, [], None, None
        self.saved_to = Path(saved_to) if saved_to else None
        if resumed and self.saved_to and self.saved_to.exists():  # the epochs the run measured before it stopped
            import torch
            saved = torch.load(self.saved_to)
            self.start, self.epochs = saved["start"], saved["epochs"]
            self.best, self.weights = saved["best"], saved["weights"]

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
            self.epochs = [e for e in self.epochs if e["epoch"] != epoch] + [entry]  # a resumed run may redo one
            if self.best is None or self.best["epoch"] == epoch or score > self.best["epoch_score"]:
                self.best = entry
                self.weights = {name: p.detach().to("cpu", copy=True)
                                for name, p in model.named_parameters() if p.requires_grad}
            self.save()
        return entry

    def save(self) -> None:
        if not (self.saved_to and is_main_process()):
            return
        import torch
        self.saved_to.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.saved_to.with_name(self.saved_to.name + ".tmp")
        torch.save({"start": self.start, "epochs": self.epochs, "best": self.best, "weights": self.weights}, tmp)
        os.replace(tmp, self.saved_to)  # a kill mid-write leaves the last whole one

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


CHOICE_FILE = "epoch_choice.pt"  # in the checkpoints folder: the epochs' measures and the best one's weights


def epoch_choice(model, tokenizer, s: TrainSettings, *, forgetting: list[dict],
                 resumed: bool = False) -> EpochChoice | None:
    """The epoch choice of a run, its start measured on `model` (None where KEEP_BEST_EPOCH is off, or where the
    dataset has no validation questions or there are no held-out everyday answers, as in cpt); where the run is
    `resumed` from a checkpoint, with the epochs it measured before."""
    questions = read_jsonl(Path(s.dataset_dir) / VALIDATION_QUESTIONS_FILE)
    if not (s.keep_best_epoch and questions and forgetting):
        return None
    def rows(records):
        return tokenize_rows(records, tokenizer, s.prompt_format, s.max_seq_length).rows
    choice = EpochChoice(learning_rows=rows(learning_rows(questions)), forgetting_rows=rows(forgetting),
                         pad_id=tokenizer.pad_token_id, scale=s.adapter_scale,
                         saved_to=Path(s.output_dir) / "checkpoints" / CHOICE_FILE, resumed=resumed)
    choice.measure(0, model)
    return choice
