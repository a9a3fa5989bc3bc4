"""GPU training throughput: the pipeline's Unsloth path against plain transformers + PEFT + bitsandbytes + TRL.

    source .whl/env.sh; python bench/bench_gpu_training.py [--shapes smollm2-1.7b] [--budget-s 330] [--out DIR]

Same random-init model (bench/random_model.py shapes), same rows, batch and sequence length on both sides:
- unsloth: common.training_gpu.load_unsloth_model + train_unsloth (QLoRA r16 on all linear layers, adamw_8bit,
  bf16) with 02's defaults: BATCH_TOKENS -1 (as many batches as `batch` rows give, each of rows of similar length
  and about the same padded tokens), GRADIENT_CHECKPOINTING "auto" (off where the largest batch's activations fit
  in the free GPU memory). Other --variants, each on the same loaded model: "lean" (GRADIENT_CHECKPOINTING
  "unsloth": the small-card mode; listed first, it makes the compile run, which then also compiles the blocks for
  the no-grad forward of checkpointing), "packed" (the same batches flattened into one row each, attending through
  torch's varlen FlashAttention-2 kernel), "grouped" (BATCH_TOKENS 0: `batch` rows of similar length), "tokens"
  (BATCH_TOKENS = batch x 2048: fewer steps where rows are short), "padded", "padding_free", "grouped-exact".
  Padded variants other than those run the -var datasets only. Path "unsloth-16bit": the same with LOAD_IN_4BIT
  "false" (16-bit LoRA: no dequantization of the base weights). Before the timed runs, one untimed run
  (--compile-steps, the first variant on the first dataset) pays Unsloth's one-time block compile and the
  recompiles for new batch shapes, so that no timed run carries them. "lean" runs --lean-steps only: its peak
  memory comes at the first step (the longest batch comes first).
- baseline: what one would otherwise write: AutoModelForCausalLM + BitsAndBytesConfig NF4 (bf16 compute, double
  quant), attn_implementation="sdpa", peft prepare_model_for_kbit_training + LoraConfig r16 on all linear layers,
  TRL SFTTrainer defaults with gradient_checkpointing=True, padded batches of `batch` rows in random order.
Each path runs in its own process: Unsloth patches transformers on import, and the baseline's process sees none of
the wheels' unsloth / unsloth_zoo / torchao (this PEFT refuses torchao 0.14.1), through a PYTHONPATH of links.

Data: the sample paper's train rows (.gpu/dataset) tokenized by common.tokenizing.tokenize_rows in the chat format
("short": replicated), longer rows of 128..2000 tokens made by joining rows' texts ("long"), and for each the same
tokens cut into rows of one length ("-eq" instead of "-var"); "seq2048": rows of exactly 2048 tokens (for the FLOPs
utilisation at the usual sequence length). tokens/s counts real (non-padding) tokens after the warm-up steps; peak
is torch.cuda.max_memory_allocated over a run. Utilisation against the card's dense bf16 peak (H100 / H200 SXM:
989 TFLOP/s): MFU counts model FLOPs a token (frozen base: forward 2N + input gradients 2N, N the matrix weights
with the LM head; LoRA: 6 x its weights; causal attention 3 x 4 x layers x hidden x (L + 1) / 2), HFU adds what
gradient checkpointing runs again (2N less the head, and the attention forward).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PEAK_FLOPS = 989e12  # H100 / H200 SXM, dense bf16
BATCH = {"smollm2-135m": 8, "smollm2-1.7b": 8, "llama-3.1-8b": 4}
SHAPE_WEIGHT = {"smollm2-135m": 0.5, "smollm2-1.7b": 1.0, "llama-3.1-8b": 1.5}  # share of --budget-s each shape gets
LORA_R = 16
# variant: (02's settings it changes, train_unsloth's batching: None = 02's choice)
VARIANTS = {"default": ({}, None), "lean": ({"gradient_checkpointing": "unsloth"}, None),
            "packed": ({}, "packed"), "grouped": ({"batch_tokens": 0}, "grouped"),
            "grouped-exact": ({"batch_tokens": 0}, "grouped"), "padded": ({"batch_tokens": 0}, "padded"),
            "padding_free": ({"batch_tokens": 0}, "padding_free"), "tokens": ({"batch_tokens": "2048 x batch"}, None)}
ON_EQUAL_ROWS = ("default", "grouped", "tokens", "padding_free")  # the others batch equal rows the same (lean: peak)
EXCLUDED_FROM_BASELINE = ("unsloth", "unsloth_zoo", "unsloth_cli", "unsloth_zoo_downloads", "torchao",
                          "cut_cross_entropy")


# ----------------------------------------------------------------------------------------------- data

def build_datasets(tokenizer_dir, dataset_dir, *, n_rows, seed=0, long_only=False):
    """{name: rows}: short-var/-eq (the paper's rows, replicated) and long-var/-eq (rows joined, 128..2000 tokens)."""
    from transformers import AutoTokenizer
    from common.tokenizing import tokenize_rows
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    records = [json.loads(line) for line in (Path(dataset_dir) / "train.jsonl").read_text().splitlines() if line]
    out = {}
    if not long_only:
        short = tokenize_rows(records, tokenizer, "chat", 2048).rows
        out["short-var"] = [short[i % len(short)] for i in range(n_rows)]
    rng = random.Random(seed)
    out["long-var"] = tokenize_rows(joined_records(records, tokenizer, n_rows=n_rows,
                                                   target_len=lambda: rng.randint(128, 2000)),
                                    tokenizer, "chat", 2048).rows
    for name in list(out):
        out[name.replace("-var", "-eq")] = equal_rows(out[name])
    # rows longer than 2048 tokens, cut at 2048 by tokenize_rows: all exactly 2048 long
    out["seq2048"] = tokenize_rows(joined_records(records, tokenizer, n_rows=n_rows, target_len=lambda: 2100),
                                   tokenizer, "chat", 2048).rows
    return out, tokenizer


def joined_records(records, tokenizer, *, n_rows, target_len):
    """n_rows Alpaca records whose outputs join the paper's rows' outputs up to target_len() tokens."""
    out, k = [], 0
    for _ in range(n_rows):
        target, parts, n_tokens = target_len(), [], 0
        first = records[k % len(records)]
        while n_tokens < target:
            text = records[k % len(records)]["output"]
            k += 1
            parts.append(text)
            n_tokens += len(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids = tokenizer("\n\n".join(parts), add_special_tokens=False)["input_ids"][:target]
        out.append({"instruction": first["instruction"], "input": "", "output": tokenizer.decode(ids)})
    return out


def equal_rows(rows):
    """The same tokens (prompt masks included) cut into len(rows) rows of one length."""
    ids = [t for r in rows for t in r["input_ids"]]
    labels = [t for r in rows for t in r["labels"]]
    width = len(ids) // len(rows)
    return [{"input_ids": ids[i * width:(i + 1) * width], "labels": labels[i * width:(i + 1) * width]}
            for i in range(len(rows))]


def row_stats(rows):
    lengths = [len(r["input_ids"]) for r in rows]
    return {"rows": len(lengths), "mean_len": sum(lengths) / len(lengths), "min_len": min(lengths),
            "max_len": max(lengths), "sq_over_len": sum(x * x for x in lengths) / sum(lengths)}


def flops_per_token(shape, mean_sq_len, checkpointing):
    """(model FLOPs, hardware FLOPs) a real token of QLoRA training costs: frozen base 4N (forward, input
    gradients), LoRA 6 x its weights, causal attention 3 x its forward; checkpointing runs the forward again (2N
    without the LM head, the LoRA and attention forwards). mean_sq_len: sum(L^2) / sum(L) of the rows."""
    from bench.random_model import SHAPES
    c = SHAPES[shape]
    d, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    kv = d // c["num_attention_heads"] * c["num_key_value_heads"]
    layer = 2 * d * d + 2 * d * kv + 3 * d * inter
    head = 49152 * d
    lora = layers * LORA_R * (2 * (d + d) + 2 * (d + kv) + 3 * (d + inter))
    attention_forward = 2 * layers * d * (mean_sq_len + 1)  # 4 x layers x hidden per (query, key) pair, L(L+1)/2
    model = 4 * (layers * layer + head) + 6 * lora + 3 * attention_forward
    recompute = 2 * layers * layer + 2 * lora + attention_forward if checkpointing else 0
    return model, model + recompute


# ----------------------------------------------------------------------------------------------- workers

class Timer:
    """(step, cumulative real tokens, time) at each logged step; tokens/s over the steps after the warm-up."""

    def __init__(self):
        self.marks = []

    def mark(self, step, tokens):
        self.marks.append((step, tokens, time.perf_counter()))

    def rate(self, warmup):
        marks = [m for m in self.marks if m[0] >= warmup]
        (s0, k0, t0), (s1, k1, t1) = marks[0], marks[-1]
        return (k1 - k0) / (t1 - t0), s1 - s0, (k1 - k0) / max(1, s1 - s0)


def run_unsloth(args, datasets):
    import torch
    import unsloth  # noqa: F401  (first: it patches transformers, peft and trl)
    from common.settings import TrainSettings
    from common.training_gpu import load_unsloth_model
    # 02's defaults, with the bench's batch and steps, no evaluation, no checkpoints, 1 epoch
    s = TrainSettings.defaults(batch_size=args.batch, max_steps=args.warmup + args.steps, max_seq_length=2048,
                               learning_rate=2e-4, warmup_steps=2, logging_steps=1, num_epochs=1.0, eval_steps=0,
                               save_steps=0, load_in_4bit="false" if args.worker == "unsloth-16bit" else "true",
                               offload_embedding=args.worker == "unsloth-offload")
    t = time.time()
    model, tokenizer = load_unsloth_model(args.model, s)
    print(f"[{args.worker}] model loaded in {time.time() - t:.0f} s, {torch.cuda.memory_allocated() / 2**30:.2f} GiB "
          f"allocated", flush=True)
    # padding-free last: it switches on packed-attention patches that could stay on for later padded runs
    plan = [(name, variant) for variant in sorted(args.variants, key=lambda v: v in ("padding_free", "packed"))
            for name in args.data if variant in ON_EQUAL_ROWS or name.endswith("-var")]
    if plan and args.compile_steps > 0:
        name, variant = plan[0]
        t = time.time()
        run_variant(model, tokenizer, datasets[name], s, variant=variant, output_dir="/tmp/bench_unsloth_compile",
                    batch=args.batch, max_steps=args.compile_steps)
        print(f"[{args.worker}] compile run ({variant} {name}, {args.compile_steps} steps, untimed): "
              f"{time.time() - t:.0f} s", flush=True)
    for name, variant in plan:
        path = args.worker + ("" if variant == "default" else f"-{variant.replace('_', '-')}")
        if time.time() > args.deadline:
            print(f"[{args.worker}] {path} {name}: skipped (out of time)", flush=True)
            continue
        timer, mfu = Timer(), []
        torch.cuda.empty_cache()
        t = time.time()
        try:
            history = run_variant(
                model, tokenizer, datasets[name], s, variant=variant, output_dir=f"/tmp/bench_unsloth_{name}",
                batch=args.batch, max_steps=args.warmup + (args.lean_steps if variant == "lean" else args.steps),
                on_log=lambda e: "loss" in e and (timer.mark(e["step"], e["tokens"]),
                                                  e["step"] > args.warmup and mfu.append(e.get("train_mfu"))))
        except Exception as error:  # one failing variant leaves the others their runs
            import traceback
            traceback.print_exc()
            print(f"[{args.worker}] {path} {name}: failed ({type(error).__name__}: {str(error)[:300]})", flush=True)
            continue
        rate, steps, per_step = timer.rate(args.warmup)
        last = history[-1]
        mfu = sorted(m for m in mfu if m is not None)
        emit(args, path=path, data=name, rate=rate, steps=steps, per_step=per_step, peak=last["peak_gpu_memory_gib"],
             wall=time.time() - t, checkpointing=last["gradient_checkpointing"].split(" ")[0],
             unsloth_mfu=mfu[len(mfu) // 2] if mfu else None)


def run_variant(model, tokenizer, rows, settings, *, variant, output_dir, batch, max_steps, on_log=None):
    """train_unsloth with one of VARIANTS on 02's settings; "grouped-exact": grouped, padded to the longest row."""
    from common.training_gpu import train_unsloth
    changes, batching = VARIANTS[variant]
    changes = {k: batch * 2048 if v == "2048 x batch" else v for k, v in changes.items()}
    return train_unsloth(model, tokenizer, rows, settings.replace(max_steps=max_steps, **changes),
                         output_dir=output_dir, on_log=on_log, batching=batching,
                         pad_to_multiple_of=None if variant == "grouped-exact" else 64)


def run_baseline(args, datasets):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl import SFTConfig, SFTTrainer
    from datasets import Dataset
    cuda = torch.cuda.is_available()
    t = time.time()
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                               bnb_4bit_use_double_quant=True) if cuda else None
    model = AutoModelForCausalLM.from_pretrained(args.model, quantization_config=quant, dtype=torch.bfloat16,
                                                 attn_implementation="sdpa", device_map={"": 0} if cuda else None)
    model = prepare_model_for_kbit_training(model)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    print(f"[baseline] model loaded in {time.time() - t:.0f} s, "
          f"{torch.cuda.memory_allocated() / 2**30 if cuda else 0:.2f} GiB allocated", flush=True)
    seen = {"tokens": 0}

    def count(module, fargs, kwargs):  # real tokens of each training forward (the batches are padded)
        if module.training and torch.is_grad_enabled():
            seen["tokens"] += int(kwargs["attention_mask"].sum())

    model.register_forward_pre_hook(count, with_kwargs=True)
    for name in args.data:
        if time.time() > args.deadline:
            print(f"[baseline] {name}: skipped (out of time)", flush=True)
            continue
        timer = Timer()

        class Log(TrainerCallback):
            def on_log(self, targs, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    timer.mark(state.global_step, seen["tokens"])

        config = SFTConfig(output_dir=f"/tmp/bench_baseline_{name}", per_device_train_batch_size=args.batch,
                           max_steps=args.warmup + args.steps, logging_steps=1, learning_rate=2e-4,
                           gradient_checkpointing=True, max_length=2048, bf16=cuda, save_strategy="no",
                           report_to="none", use_cpu=not cuda)
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(datasets[name]),
                             processing_class=tokenizer, callbacks=[Log()])
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t = time.time()
        trainer.train()
        rate, steps, per_step = timer.rate(args.warmup)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
        emit(args, path="baseline", data=name, rate=rate, steps=steps, per_step=per_step, peak=peak,
             wall=time.time() - t, checkpointing="true", unsloth_mfu=None)
        del trainer


def emit(args, *, path, data, rate, steps, per_step, peak, wall, checkpointing, unsloth_mfu):
    result = {"shape": args.shape, "path": path, "data": data, "tokens_per_s": rate, "timed_steps": steps,
              "tokens_per_step": per_step, "peak_gib": peak, "run_wall_s": wall, "checkpointing": checkpointing,
              "unsloth_mfu": unsloth_mfu}
    print(f"[{path}] {data}: {rate:.0f} tokens/s, {per_step:.0f} tokens/step over {steps} steps, "
          f"peak {peak:.2f} GiB, checkpointing {checkpointing}, run {wall:.0f} s"
          + (f", Unsloth's MFU {unsloth_mfu:.1%}" if unsloth_mfu else ""), flush=True)
    with open(args.results, "a") as f:
        f.write(json.dumps(result) + "\n")


# ----------------------------------------------------------------------------------------------- driver

def fresh_results_file(out_dir, name):
    """<out_dir>/<name>, emptied: each bench run appends its workers' JSON lines to a file of its own."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).unlink(missing_ok=True)
    return out / name


def baseline_pythonpath():
    """A folder of links to the wheels' site (/tmp/site) without unsloth, unsloth_zoo and torchao."""
    site = Path(os.environ.get("BENCH_WHEEL_SITE", "/tmp/site"))
    target = Path("/tmp/site_base")
    if not target.exists():
        target.mkdir()
        for entry in site.iterdir():
            base = entry.name.split("-")[0].lower()
            if base not in EXCLUDED_FROM_BASELINE and entry.name != "bin":
                (target / entry.name).symlink_to(entry)
    others = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p) != site]
    return os.pathsep.join([str(target)] + others)


def spawn(args, *, worker, shape, model, data_file, names, batch, deadline, results, log):
    """Run one worker (one path on one shape) in its own process; its output goes to `log`, its lines to stdout."""
    env = dict(os.environ)
    if worker == "baseline" and not args.no_isolate:
        env["PYTHONPATH"] = baseline_pythonpath()
    cmd = [sys.executable, __file__, "--worker", worker, "--shape", shape, "--model", model, "--data-file",
           data_file, "--data", ",".join(names), "--batch", str(batch), "--warmup", str(args.warmup),
           "--steps", str(args.steps), "--deadline", str(deadline), "--results", results,
           "--variants", ",".join(args.variants), "--compile-steps", str(args.compile_steps),
           "--lean-steps", str(args.lean_steps)]
    print(f"--- {worker} {shape}: {' '.join(names)}", flush=True)
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                timeout=max(30, deadline - time.time() + 120)).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    if rc != 0:
        print(f"--- {worker} {shape}: rc={rc}; last lines of {log}:")
        print("".join(open(log).readlines()[-25:]))
    else:
        print("".join(line for line in open(log) if line.startswith(f"[{worker}")), end="")


def table(results, stats):
    """One row per run; vs baseline: tokens/s and peak memory against the baseline on the same shape and data;
    var/eq: a -var run's tokens/s against the same path's run on the -eq rows (the same tokens, equal rows)."""
    base = {(r["shape"], r["data"]): r for r in results if r["path"] == "baseline"}
    rate = {(r["shape"], r["path"], r["data"]): r["tokens_per_s"] for r in results}
    lines = ["| shape | path | data | rows x mean len (min-max) | tokens/s | peak GiB | checkpointing | MFU | HFU "
             "| vs baseline | peak vs baseline | var/eq |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        st = stats[(r["shape"], r["data"])]
        model, hardware = flops_per_token(r["shape"], st["sq_over_len"], r["checkpointing"] != "false")
        b = base.get((r["shape"], r["data"]))
        ratio = f"{r['tokens_per_s'] / b['tokens_per_s']:.2f}x" if b else "-"
        memory = f"{r['peak_gib'] / b['peak_gib']:.2f}x" if b else "-"
        eq = rate.get((r["shape"], r["path"], r["data"].replace("-var", "-eq"))) if r["data"].endswith("-var") else None
        var_eq = f"{r['tokens_per_s'] / eq:.2f}" if eq else "-"
        lines.append(f"| {r['shape']} | {r['path']} | {r['data']} | {st['rows']} x {st['mean_len']:.0f} "
                     f"({st['min_len']}-{st['max_len']}) | {r['tokens_per_s']:,.0f} | {r['peak_gib']:.2f} | "
                     f"{r['checkpointing']} | {100 * r['tokens_per_s'] * model / PEAK_FLOPS:.1f}% | "
                     f"{100 * r['tokens_per_s'] * hardware / PEAK_FLOPS:.1f}% | {ratio} | {memory} | {var_eq} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="smollm2-1.7b", help="comma-separated bench/random_model.py shapes")
    p.add_argument("--data", default="long-var,long-eq,seq2048,short-var,short-eq",
                   help="datasets, in run order (the 8B shape runs long-* and seq2048 only)")
    p.add_argument("--variants", default="lean,default,packed,grouped",
                   help="unsloth variants (VARIANTS, see above); packed and padding_free run last")
    p.add_argument("--compile-steps", type=int, default=10, help="steps of the untimed first unsloth run (0: none)")
    p.add_argument("--lean-steps", type=int, default=3, help="timed steps of the lean variant (peak memory)")
    p.add_argument("--baseline-share", type=float, default=0.35,
                   help="share of a shape's time given to the baseline, which runs first")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--budget-s", type=float, default=330, help="no new run starts past this many seconds")
    p.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    p.add_argument("--dataset-dir", default=".gpu/dataset")
    p.add_argument("--tokenizer", default=".gpu/tokenizer")
    p.add_argument("--paths", default="baseline,unsloth", help="in run order")
    p.add_argument("--baseline-data", help="the baseline's datasets (default: --data)")
    p.add_argument("--no-isolate", action="store_true", help="baseline without the PYTHONPATH of links")
    # worker arguments
    p.add_argument("--worker", choices=["unsloth", "unsloth-offload", "unsloth-16bit", "baseline"])
    p.add_argument("--shape"), p.add_argument("--model"), p.add_argument("--data-file"), p.add_argument("--results")
    p.add_argument("--batch", type=int), p.add_argument("--deadline", type=float)
    args = p.parse_args()

    args.variants = args.variants.split(",")
    if args.worker:
        args.data = args.data.split(",")
        datasets = json.loads(Path(args.data_file).read_text())
        (run_baseline if args.worker == "baseline" else run_unsloth)(args, datasets)
        return 0

    start = time.time()
    results_file = fresh_results_file(args.out, "results.jsonl")
    out = results_file.parent
    stats = {}
    paths = args.paths.split(",")
    shapes = args.shapes.split(",")
    for k, shape in enumerate(shapes):
        batch = BATCH[shape]
        names = [n for n in args.data.split(",") if shape != "llama-3.1-8b" or not n.startswith("short")]
        # 4x the rows a batch of `batch` rows needs: token-budget batches take more rows per step
        datasets, _ = build_datasets(args.tokenizer, args.dataset_dir,
                                     n_rows=4 * batch * (args.warmup + args.steps),
                                     long_only=not any(n.startswith("short") for n in names))
        for name in names:
            stats[(shape, name)] = row_stats(datasets[name])
            print(f"{shape} {name}: {stats[(shape, name)]}", flush=True)
        data_file = f"/tmp/bench_data_{shape}.json"
        Path(data_file).write_text(json.dumps({n: datasets[n] for n in names}))
        model = f"/tmp/rand-{shape}"
        if not (Path(model) / "config.json").exists():
            t = time.time()
            subprocess.run([sys.executable, str(ROOT / "bench/random_model.py"), "--shape", shape, "--tokenizer",
                            args.tokenizer, "--out", model], check=True, cwd=ROOT)
            print(f"random {shape} model made in {time.time() - t:.0f} s", flush=True)
        # this shape's time: its share of what is left, by SHAPE_WEIGHT
        left = (start + args.budget_s - time.time()) * SHAPE_WEIGHT[shape] / sum(SHAPE_WEIGHT[x] for x in shapes[k:])
        shape_end = time.time() + left
        for i, worker in enumerate(paths):
            share = args.baseline_share if worker == "baseline" else 1 / len(paths)
            deadline = time.time() + left * share if i < len(paths) - 1 else shape_end
            run_names = [n for n in (args.baseline_data or args.data).split(",") if n in names] \
                if worker == "baseline" else names
            spawn(args, worker=worker, shape=shape, model=model, data_file=data_file, names=run_names, batch=batch,
                  deadline=deadline, results=str(results_file), log=str(out / f"{worker}_{shape}.log"))
    results = [json.loads(line) for line in results_file.read_text().splitlines()] if results_file.exists() else []
    text = table(results, stats)
    (out / "table.md").write_text(text + "\n")
    print(f"\nwarm-up {args.warmup} steps, timed {args.steps} steps; total {time.time() - start:.0f} s\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
