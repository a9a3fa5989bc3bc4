"""The knowledge check of 02's CPU recipe (self-replay, plain training loop, check) over several settings and datasets,
each trained from the same base: what the demo's defaults were chosen by. The same loop runs on a CUDA GPU, where a
run of the embedded model takes seconds instead of minutes.

    python bench/sweep_knowledge.py --device cuda --out results \
        --run "old:data/old" --run "new:data/dataset" --run "new-4ep:data/dataset:num_epochs=4,replay_fraction=0.4"

Each --run is NAME:DATASET_DIR[:field=value,...] with TrainSettings fields (02's constants in lower case) as
overrides, `drop=kind+kind` to leave record kinds out, and `lora_a=` to set and freeze each LoRA layer's input
projection A before training (an experiment, not in 02): `paper` (the r input directions where the paper's rows
carry the most energy against the self-replay rows': the top generalized eigenvectors of their second moments),
`quiet` (the r directions where the self-replay rows carry the least), `random` (PEFT's own random A, frozen).
Two more experiments: `layers=4-29` puts LoRA on those layers only; `cooldown=N` trains N more steps on the
self-replay rows alone after the run (at `cooldown_lr`, default a quarter of the learning rate).
More: `loraplus=R` trains every lora_B at R x the learning rate (LoRA+); `soup=N` trains N runs (seeds
seed..seed+N-1) and checks their mean update (02's MEAN_OF_RUNS); `fact_tokens=fact` puts the loss of those record
kinds' answers on their key facts (names, dates, numbers) and closing tokens only; `branch=N` trains one run's first
epoch once, then its second epoch N times (seeds seed..seed+N-1: other batch orders) from there, and checks their mean
update; `answer_first=true` opens each fact record's answer to a question that asks for one fact with that fact;
`replay=FILE` takes the self-replay answers from that replay cache file (e.g. one made on a CPU, or in fp32);
`attention=eager` trains with that attention implementation (the check then runs in the model's own, sdpa);
`tail=F` keeps the mean of the LoRA weights (A and B apart) over the last F of the steps (SWA on one run's path).
`--scales` also takes `iK` / `iKsS`: the update whole but for its intruder dimensions (the tuned weights' top
singular vectors unlike any of the base's, cosine below S, default 0.5), which keep K of their singular value; and
`aXmY`: the attention layers' update at X of itself, the MLP layers' at Y (either left out: 1); `tK`: the update cut
to its K largest singular directions in each layer (of `soup=N`'s mean, rank N x r: the directions the runs share).
Writes sweep.md (a table) and sweep.json (the summaries and each run's answers).
"""
import argparse
import json
import re
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.adapter import lora_layers, lora_update, reset_lora, set_mean_update, update_scaled  # noqa: E402
from common.augment import alias_answers, question_for_fact  # noqa: E402
from common.dataset import load_dataset_dir  # noqa: E402
from common.evaluation import evaluate_knowledge  # noqa: E402
from common.knowledge import PLAIN_QUESTIONS_FILE, facts_worth_asking, read_jsonl, read_questions  # noqa: E402
from common.models import load_causal_lm, load_tokenizer, resolve_model_path  # noqa: E402
from common.replay import mix_replay, replay_records  # noqa: E402
from common.runs import with_mean_of_runs  # noqa: E402
from common.settings import TrainSettings  # noqa: E402
from common.tokenizing import tokenize_rows  # noqa: E402
from common.training import lora_config, total_steps, train_cpu, with_learning_rate  # noqa: E402


# the harness's own options (not 02's), each with how its value is read
EXPERIMENTS = {"drop": lambda value: value.split("+"), "lora_a": str, "layers": str, "cooldown": int,
               "cooldown_lr": float, "loraplus": float, "soup": int, "branch": int,
               "fact_tokens": lambda value: value.split("+"), "answer_first": lambda value: value.lower() == "true",
               "replay": str, "attention": str, "tail": float}
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")  # the LoRA layers a scale "aX" applies to; "mY": the rest


def parse_run(text: str) -> tuple[str, str, dict]:
    """NAME:DATASET[:k=v,...] -> (name, dataset, overrides), values typed by the settings' own defaults."""
    name, dataset, *rest = text.split(":")
    defaults = TrainSettings.defaults().as_dict()
    overrides = {}
    for pair in (rest[0].split(",") if rest and rest[0] else []):
        key, value = pair.split("=")
        if key in EXPERIMENTS:
            overrides[key] = EXPERIMENTS[key](value)
        elif isinstance(defaults.get(key), list):
            overrides[key] = value.split("+")
        else:
            kind = type(defaults[key]) if defaults.get(key) is not None else str
            overrides[key] = (value.lower() == "true") if kind is bool else kind(value)
    return name, dataset, overrides


def input_second_moments(model, rows, pad_id) -> dict:
    """Each LoRA layer's E[x x^T] over the real tokens of `rows`, its input x taken with the adapter off."""
    import torch
    from common.tokenizing import pad_batch
    layers = {name: m for name, m in model.named_modules() if hasattr(m, "lora_A")}
    sums = {name: 0.0 for name in layers}
    state = {}
    def keep(name):
        def hook(module, inputs):
            x = inputs[0].detach()[state["mask"]].double()
            sums[name] = sums[name] + x.T @ x
        return hook
    handles = [m.register_forward_pre_hook(keep(name)) for name, m in layers.items()]
    tokens = 0
    with torch.no_grad(), model.disable_adapter():
        for start in range(0, len(rows), 16):
            ids, mask, _ = (t.to(model.device) for t in pad_batch(rows[start:start + 16], pad_id))
            state["mask"], tokens = mask.bool(), tokens + int(mask.sum())
            model(input_ids=ids, attention_mask=mask)
    for handle in handles:
        handle.remove()
    return {name: (layers[name], total / tokens) for name, total in sums.items()}


def set_lora_a(model, how: str, *, paper_rows, general_rows, pad_id, ridge: float = 0.01) -> None:
    """Each LoRA layer's A set by `how` (see the module's text), rows scaled as PEFT's own init, and frozen."""
    import torch
    if how == "random":  # PEFT's own init, only frozen: no moments needed
        for module in model.modules():
            if hasattr(module, "lora_A"):
                module.lora_A["default"].weight.requires_grad_(False)
        return
    general = input_second_moments(model, general_rows, pad_id)
    paper = input_second_moments(model, paper_rows, pad_id) if how == "paper" else {}
    for name, (layer, g) in general.items():
        a = layer.lora_A["default"].weight
        r, d = a.shape
        if how == "paper":  # max a'Pa / a'(P+G)a: energy on the paper's rows, little on everyday ones
            both = g + paper[name][1]
            both = both + ridge * torch.trace(both) / d * torch.eye(d, dtype=both.dtype, device=both.device)
            inverse = torch.linalg.inv(torch.linalg.cholesky(both))
            vectors = (inverse.T @ torch.linalg.eigh(inverse @ paper[name][1] @ inverse.T)[1][:, -r:]).T
        else:  # quiet
            vectors = torch.linalg.eigh(g)[1][:, :r].T
        a.data.copy_((vectors / vectors.norm(dim=1, keepdim=True) * 3 ** -0.5).to(a.dtype))
        a.requires_grad_(False)


@contextmanager
def updates_replaced(model, change):
    """The model, for the duration, with each LoRA layer's update replaced by `change(w0, delta, rank)` -> (new
    update, its rank), from the base weight, the trained update (scaling x B A) and its rank; written exactly as a
    LoRA of the new rank. The trained A and B are put back afterwards."""
    import torch
    trained = {}
    with torch.no_grad():
        for _, m in lora_layers(model):
            a, b, scaling = m.lora_A["default"], m.lora_B["default"], m.scaling["default"]
            delta, rank = change(m.base_layer.weight.float(), scaling * b.weight.float() @ a.weight.float(),
                                 a.weight.shape[0])
            p, sv, q = torch.linalg.svd(delta, full_matrices=False)
            new_a = torch.nn.Linear(a.in_features, rank, bias=False).to(a.weight.device, a.weight.dtype)
            new_b = torch.nn.Linear(rank, b.out_features, bias=False).to(b.weight.device, b.weight.dtype)
            new_a.weight.copy_(q[:rank])
            new_b.weight.copy_(p[:, :rank] * sv[:rank] / scaling)
            trained[m] = (a, b)
            m.lora_A["default"], m.lora_B["default"] = new_a, new_b
    try:
        yield model
    finally:
        for m, (a, b) in trained.items():
            m.lora_A["default"], m.lora_B["default"] = a, b


@contextmanager
def intruders_scaled(model, *, keep: float, top: int = 10, similarity: float = 0.5):
    """The model, for the duration, with each LoRA layer's update changed so that the tuned weight's intruder
    dimensions (Shuttleworth et al. 2024, "LoRA vs full fine-tuning: an illusion of equivalence") keep `keep` of their
    singular value: of the tuned weight's `top` left singular vectors, those whose largest cosine similarity with
    the base weight's is below `similarity`. Exact, as a LoRA of rank r + the intruders found."""
    import torch
    found = []

    def change(w0, delta, rank):
        u0 = torch.linalg.svd(w0, full_matrices=False).U
        u1, s1, v1 = torch.linalg.svd(w0 + delta, full_matrices=False)
        similar = (u1[:, :top].T @ u0).abs().max(dim=1).values
        intruders = (similar < similarity).nonzero().flatten()
        found.append(len(intruders))
        return delta + (keep - 1) * (u1[:, intruders] * s1[intruders]) @ v1[intruders], rank + len(intruders)

    with updates_replaced(model, change):
        print(f"{sum(found)} intruder dimensions at {keep:g} (cosine below {similarity:g})", flush=True)
        yield model


def truncated(model, rank: int):
    """The model, for the duration, with each LoRA layer's update cut to its `rank` largest singular directions: of
    a mean of runs (rank runs x r), the directions the runs share, without most of what each run drifted alone."""
    return updates_replaced(model, lambda w0, delta, trained_rank: (delta, min(rank, trained_rank)))


@contextmanager
def groups_scaled(model, *, attention: float, mlp: float):
    """The model, for the duration, with the attention layers' LoRA update at `attention` of itself and the MLP
    layers' at `mlp`; then exactly as trained."""
    import torch
    layers = [(name, linear) for name, module in lora_layers(model) for linear in module.lora_B.values()]
    kept = [linear.weight.detach().clone() for _, linear in layers]
    with torch.no_grad():
        for name, linear in layers:
            linear.weight.mul_(attention if name.rsplit(".", 1)[-1] in ATTENTION else mlp)
    try:
        yield model
    finally:
        with torch.no_grad():
            for (_, linear), weight in zip(layers, kept):
                linear.weight.copy_(weight)


@contextmanager
def loraplus_groups(ratio: float):
    """02's optimizer groups, for the duration, with every lora_B weight at `ratio` x the learning rate (LoRA+, Hayou
    et al. 2024: B learns faster than A)."""
    from common import training
    plain = training.optimizer_groups

    def groups(model, s):
        out = plain(model, s)
        b_ids = {id(p) for name, p in model.named_parameters() if "lora_B" in name}
        first = out[0]
        out[0] = {**first, "params": [p for p in first["params"] if id(p) not in b_ids]}
        out.insert(1, {**first, "params": [p for p in first["params"] if id(p) in b_ids],
                       "lr": first["lr"] * ratio})
        return out

    training.optimizer_groups = groups
    try:
        yield
    finally:
        training.optimizer_groups = plain


def scaled(model, scale):
    """The context checking `model` at one entry of --scales: a share of the whole update, `iK[sS]` (intruders),
    `tK` (the update's top K singular directions) or `aXmY` (attention and MLP layers apart)."""
    if isinstance(scale, float):
        return update_scaled(model, scale)  # 02's own scaling, as its epoch choice measures it
    if scale.startswith("t"):  # "t32": the update cut to its 32 largest singular directions
        return truncated(model, int(scale[1:]))
    if scale.startswith("i"):  # "i0.5": the intruder dimensions at that share, the rest of the update whole
        keep, _, similar = scale[1:].partition("s")
        return intruders_scaled(model, keep=float(keep), similarity=float(similar or 0.5))
    parts = dict(re.findall(r"([am])([\d.]+)", scale))
    return groups_scaled(model, attention=float(parts.get("a", 1)), mlp=float(parts.get("m", 1)))


def fact_tokens_only(row: dict, record: dict, tokenizer, prompt_format: str) -> dict:
    """`row` with the loss on its answer's key facts (names, dates, numbers with units: knowledge.key_facts) and its
    closing tokens only: the rest of the paper's wording is context, not a target."""
    from common.knowledge import key_facts
    from common.prompts import format_example
    _, completion = format_example(tokenizer, prompt_format, instruction=record["instruction"],
                                   input_text=record.get("input", ""), output=record["output"])
    spans = [(m.start(), m.end()) for fact in set(key_facts(record["output"]))
             for m in re.finditer(re.escape(fact), completion)]
    end = completion.find(record["output"]) + len(record["output"])
    offsets = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    labels = list(row["labels"])
    start = next(i for i, label in enumerate(labels) if label != -100)  # the prompt is masked already
    for i, (a, b) in enumerate(offsets):
        if start + i < len(labels) and a < end and not any(a < y and x < b for x, y in spans):
            labels[start + i] = -100
    return {**row, "labels": labels}


def answer_first(record: dict) -> dict:
    """A fact record whose question asks for one fact (augment.question_for_fact, alias_answers), answered with
    that fact first, then the sentence: "In what year was the station founded?" -> "1987. The station was ..."."""
    if record["template"] != "fact":
        return record
    sentence, question = record["output"], record["instruction"]
    answers = {question_for_fact(sentence, f): f for f in facts_worth_asking(sentence, record["title"])}
    fact = {**answers, **dict(alias_answers(sentence))}.get(question)
    return {**record, "output": f"{fact[:1].upper() + fact[1:]}. {sentence}"} if fact else record


def train_with_tail_mean(model, rows, pad_id, s, share: float):
    """train_cpu, then each LoRA weight set to its mean over the steps in the last `share` of the run."""
    import torch
    steps = total_steps([len(r["input_ids"]) for r in rows], s)
    first = steps - max(1, round(share * steps)) + 1
    params = [p for name, p in model.named_parameters() if "lora_" in name and p.requires_grad]
    sums, count = [torch.zeros_like(p, dtype=torch.float32) for p in params], [0]

    def add(entry):
        if "loss" in entry and entry["step"] >= first:
            with torch.no_grad():
                for total, p in zip(sums, params):
                    total += p.float()
            count[0] += 1
    history = train_cpu(model, rows, pad_id, s.replace(logging_steps=1), on_log=add)  # on_log at every step
    with torch.no_grad():
        for total, p in zip(sums, params):
            p.copy_(total / count[0])
    return history, count[0]


def run_one(name: str, dataset_dir: str, overrides: dict, *, device: str, scales=None) -> list[dict]:
    """Train one adapter the CPU recipe's way on `device` and return its knowledge check, one per LoRA scale
    (`scales` of the trained update; None: the settings' ADAPTER_SCALE, as 02 saves it)."""
    import torch
    from peft import get_peft_model
    experiment = {key: overrides.pop(key) for key in EXPERIMENTS if key in overrides}
    drop, lora_a, layers = experiment.get("drop", []), experiment.get("lora_a"), experiment.get("layers")
    cooldown, cooldown_lr = experiment.get("cooldown", 0), experiment.get("cooldown_lr")
    loraplus, soup, branch = experiment.get("loraplus"), experiment.get("soup", 1), experiment.get("branch", 1)
    fact_kinds, replay_file = experiment.get("fact_tokens", []), experiment.get("replay")
    s = TrainSettings.defaults(dataset_dir=dataset_dir, evaluate=False, save_steps=0, eval_steps=0, **overrides)
    model_path = resolve_model_path(s.model_name)
    s = with_learning_rate(s, model_path)[0]  # auto: by the model's size, as 02 decides it
    tokenizer = load_tokenizer(model_path)
    dataset = load_dataset_dir(dataset_dir)
    records = [r for r in dataset["train"] if r["template"] not in drop]
    if experiment.get("answer_first"):
        records = [answer_first(r) for r in records]
        print(f"answer_first: {sum(r['output'] != o['output'] for r, o in zip(records, dataset['train']))} records",
              flush=True)
    replay = replay_records(model_name=s.model_name, model_path=model_path, tokenizer=tokenizer,
                            prompt_format=s.prompt_format, device=device,
                            cache_file=replay_file) if s.replay_fraction > 0 else []
    mixed = mix_replay(records, replay, s.replay_fraction)
    train = tokenize_rows(mixed, tokenizer, s.prompt_format, s.max_seq_length)
    if fact_kinds:  # the loss on the key facts only, in these record kinds' answers
        train.rows[:] = [fact_tokens_only(row, r, tokenizer, s.prompt_format) if r["template"] in fact_kinds else row
                         for row, r in zip(train.rows, mixed)]
    test = tokenize_rows(dataset["test"], tokenizer, s.prompt_format, s.max_seq_length)
    torch.manual_seed(s.seed)
    config = lora_config(s)
    if layers:  # LoRA on these layers only, e.g. 4-29
        first, last = (int(x) for x in layers.split("-"))
        config.layers_to_transform = list(range(first, last + 1))
    model = get_peft_model(load_causal_lm(model_path, device=device), config)
    general = tokenize_rows(replay, tokenizer, s.prompt_format, s.max_seq_length).rows if lora_a or cooldown else []
    if lora_a:
        set_lora_a(model, lora_a, pad_id=tokenizer.pad_token_id, general_rows=general,
                   paper_rows=tokenize_rows(records, tokenizer, s.prompt_format, s.max_seq_length).rows)
    if experiment.get("attention"):  # training only: put back before the check
        model.set_attn_implementation(experiment["attention"])
    start = time.time()
    with loraplus_groups(loraplus) if loraplus else nullcontext():
        if branch > 1:  # the first epoch once, checkpointed, then the second epoch from there in other orders
            epoch = total_steps([len(r["input_ids"]) for r in train.rows], s.replace(num_epochs=1.0))
            tmp = tempfile.mkdtemp()
            history = train_cpu(model, train.rows, tokenizer.pad_token_id, s.replace(save_steps=epoch),
                                output_dir=tmp)
            updates = [lora_update(model)]
            for k in range(1, branch):
                train_cpu(model, train.rows, tokenizer.pad_token_id, s.replace(seed=s.seed + k),
                          resume_from=f"{tmp}/checkpoints/checkpoint-{epoch}")
                updates.append(lora_update(model))
        elif experiment.get("tail"):  # the mean of the weights over the last steps of the run's own path
            history, snapshots = train_with_tail_mean(model, train.rows, tokenizer.pad_token_id, s, experiment["tail"])
            print(f"tail: the mean of {snapshots} steps' LoRA weights", flush=True)
            updates = [lora_update(model)]
        else:
            history = train_cpu(model, train.rows, tokenizer.pad_token_id, s)
            updates = [lora_update(model)]
        for k in range(1, soup):  # more runs from other seeds, then their mean update, as 02's MEAN_OF_RUNS
            reset_lora(model, s.seed + k)
            train_cpu(model, train.rows, tokenizer.pad_token_id, s.replace(seed=s.seed + k))
            updates.append(lora_update(model))
    if soup > 1 or branch > 1:
        print(set_mean_update(model, updates), flush=True)
    if cooldown:  # then a few steps on the self-replay rows alone
        history += train_cpu(model, general, tokenizer.pad_token_id,
                             s.replace(max_steps=cooldown, warmup_steps=0,
                                       learning_rate=cooldown_lr or s.learning_rate / 4))
    train_s = time.time() - start
    if experiment.get("attention"):
        model.set_attn_implementation("sdpa")
    plain = [q for q in read_jsonl(Path(dataset_dir) / PLAIN_QUESTIONS_FILE) if q.get("trained", True)]
    steps = [h for h in history if "loss" in h]
    out = []
    as_saved = with_mean_of_runs(s.replace(mean_of_runs=max(soup, branch)), device)[0].adapter_scale  # as 02 would
    for scale in scales or [as_saved]:
        with scaled(model, scale):
            results = evaluate_knowledge(model, tokenizer, test_rows=test.rows, questions=read_questions(dataset_dir),
                                         plain_questions=plain, prompt_format=s.prompt_format)
        base, tuned, kept = results["base"], results["tuned"], results["forgetting"]
        out.append({"name": name if scale == 1.0 else f"{name}@{scale}", "dataset": dataset_dir,
                    "overrides": overrides | experiment | ({"scale": scale} if scale != 1.0 else {}),
                    "rows": len(train.rows), "tokens": sum(len(r["input_ids"]) for r in train.rows),
                    "steps": len(steps), "train_s": round(train_s, 1),
                    "final_loss": steps[-1]["loss"] if steps else None,
                    "question_recall": [base["question_recall"], tuned["question_recall"]],
                    "cloze_recall": [base["closed_book"], tuned["closed_book"]],
                    "kept": [kept["kept"], kept["known_by_base"]], "right_tuned": kept["right_tuned"],
                    "own_answer_loss": [kept["own_answer_loss_base"], kept["own_answer_loss_tuned"]],
                    "perplexity": [base["test_perplexity"], tuned["test_perplexity"]],
                    "plain": [{"q": q["question"], "tuned": a, "base": b} for q, a, b in
                              zip(plain, tuned["plain_answers"], base["plain_answers"])],
                    "everyday": [{"q": q, "tuned": t, "base": b} for q, t, b in
                                 zip(kept["questions"], tuned["everyday"], base["everyday"])]})
    return out


def table(rows: list[dict]) -> str:
    lines = ["| run | settings | rows x epochs -> steps | train s | question recall | cloze recall | everyday kept | "
             "own-answer loss | held-out ppl |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        settings = ", ".join(f"{k}={'+'.join(v) if isinstance(v, list) else v}" for k, v in r["overrides"].items())
        lines.append(f"| {r['name']} | {settings or 'defaults'} | {r['rows']} -> {r['steps']} | {r['train_s']} | "
                     f"{r['question_recall'][0]:.0%} -> {r['question_recall'][1]:.0%} | "
                     f"{r['cloze_recall'][0]:.0%} -> {r['cloze_recall'][1]:.0%} | {r['kept'][0]}/{r['kept'][1]} "
                     f"({r['kept'][0] / max(1, r['kept'][1]):.0%}; {r['right_tuned']} right) | {r['own_answer_loss'][0]:.2f} -> "
                     f"{r['own_answer_loss'][1]:.2f} | {r['perplexity'][0]:.1f} -> {r['perplexity'][1]:.1f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="NAME:DATASET_DIR[:field=value,...]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--scales", default="", help="shares of the trained LoRA update to check each adapter at, e.g. "
                        "1,0.8,0.6, i0.5 / i0s0.75 for the intruder dimensions only, t32 for the update's top 32 "
                        "singular directions (default: ADAPTER_SCALE)")
    parser.add_argument("--budget-s", type=float, default=1e9, help="start no new run after this many seconds")
    args = parser.parse_args()
    out, start, rows = Path(args.out), time.time(), []
    out.mkdir(parents=True, exist_ok=True)
    for spec in args.run:
        if time.time() - start > args.budget_s:
            print(f"budget spent: skipped {spec}", flush=True)
            continue
        name, dataset, overrides = parse_run(spec)
        new = run_one(name, dataset, overrides, device=args.device,
                      scales=[x if x[0] in "iamt" else float(x) for x in args.scales.split(",")]
                      if args.scales else None)
        rows += new
        print("\n".join(table(new).splitlines()[2:]), flush=True)
        (out / "sweep.md").write_text(table(rows))
        (out / "sweep.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
