"""GPU generation throughput with a LoRA adapter: the pipeline's Unsloth path against plain transformers + PEFT.

    source .whl/env.sh; python bench/bench_gpu_inference.py [--shape smollm2-1.7b] [--batch-sizes 1,32] [--out DIR]

One random-init model of a real shape (bench/random_model.py) and one LoRA adapter (r16 on all linear layers, made
here with random nonzero A and B, saved as 02 saves one), then, each in its own process:
- unsloth: common.inference.load_model_with_adapter(device="cuda"), what 03 runs on a GPU: Unsloth 4-bit base,
  the adapter through PEFT, FastLanguageModel.for_inference, decode steps replayed as CUDA graphs
  (UNSLOTH_DECODE_CUDA_GRAPHS=1, which load_model_with_adapter sets unless it is set already).
  "unsloth-eager": the same model and process with UNSLOTH_DECODE_CUDA_GRAPHS=0 (Unsloth's eager decode step).
- transformers-4bit: AutoModelForCausalLM + BitsAndBytesConfig NF4 (bf16 compute, double quant), sdpa,
  PeftModel.from_pretrained, eval: the same quantized model without Unsloth.
- transformers-bf16: the same with a bf16 base (no quantization), for reference.
The plain processes see none of the wheels' unsloth / unsloth_zoo / torchao (as in bench_gpu_training.py).

Prompts: the dataset's closed-book questions (.gpu/dataset/questions.jsonl) in the chat format
(common.prompts.format_prompt), left padding, greedy, repetition_penalty 1.1 (as 03), min_new_tokens =
max_new_tokens so that every row makes exactly max_new_tokens new tokens (EOS ignored). Batch size b runs
ceil(--rows-per-size / b) batches of b different prompts after one warm-up batch; tokens/s = new tokens / time.
Check: the first 16 new tokens of each prompt at batch 1 against the same prompt in the largest batch (left padding
must not change a greedy answer much; 4-bit kernels differ a little between batch shapes).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def prompts_from(dataset_dir, n):
    rows = [json.loads(line) for line in (Path(dataset_dir) / "questions.jsonl").read_text().splitlines() if line]
    return [rows[i % len(rows)]["question"] for i in range(n)]


def make_adapter(args):
    """A PEFT LoRA adapter with nonzero weights on the random model, saved like 02 saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16)
    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(base, config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)  # LoRA B starts at zero: make the adapter change the output
    model.save_pretrained(args.adapter)
    AutoTokenizer.from_pretrained(args.model).save_pretrained(args.adapter)
    (Path(args.adapter) / "training_config.json").write_text(json.dumps(
        {"MODEL_NAME": args.model, "LOAD_IN_4BIT": "true", "MAX_SEQ_LENGTH": 2048, "PROMPT_FORMAT": "chat"}))
    print(f"[adapter] saved to {args.adapter}", flush=True)


def load(args):
    import torch
    if args.worker == "unsloth":
        import unsloth  # noqa: F401  (first)
        from common.inference import load_model_with_adapter
        model, tokenizer, _ = load_model_with_adapter(args.adapter, device="cuda")
        return model, tokenizer
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    quant = None
    if args.worker == "transformers-4bit":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                                   bnb_4bit_use_double_quant=True)
    base = AutoModelForCausalLM.from_pretrained(args.model, quantization_config=quant, dtype=torch.bfloat16,
                                                attn_implementation="sdpa", device_map={"": 0})
    model = PeftModel.from_pretrained(base, args.adapter).eval()
    return model, AutoTokenizer.from_pretrained(args.adapter)


def run_worker(args):
    from common.prompts import format_prompt
    t = time.time()
    model, tokenizer = load(args)
    print(f"[{args.worker}] loaded in {time.time() - t:.0f} s ({type(model).__name__})", flush=True)
    modes = [("unsloth-eager", "0"), ("unsloth", "1")] if args.worker == "unsloth" else [(args.worker, None)]
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    outputs = {}
    for label, graphs in modes:
        if graphs is not None:
            os.environ["UNSLOTH_DECODE_CUDA_GRAPHS"] = graphs  # read by Unsloth at each generate() call
        outputs[label] = measure(args, label, model, tokenizer, [format_prompt(tokenizer, "chat", q) for q in
                                 prompts_from(args.dataset_dir, max(max(sizes), args.rows_per_size))], sizes)
    if len(outputs) == 2:
        (a, x), (b, y) = outputs.items()
        rows = [(u, v) for size in x if size in y for u, v in zip(x[size], y[size])]
        same = sum(u == v for u, v in rows)
        print(f"[{args.worker}] {a} vs {b}: {same}/{len(rows)} rows with the same first 16 new tokens", flush=True)


def measure(args, label, model, tokenizer, texts, sizes):
    """Measures each batch size; returns {batch size: the first 16 new tokens of each prompt answered}."""
    import torch
    tokenizer.padding_side = "left"
    n_new = args.max_new_tokens
    firsts = {}

    def generate(batch, new_tokens):
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to("cuda")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 repetition_penalty=1.1, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
        return out[:, enc["input_ids"].shape[1]:]

    for size in sizes:
        if time.time() > args.deadline:
            print(f"[{args.worker}] {label} batch {size}: skipped (out of time)", flush=True)
            continue
        generate(texts[:size], 8)  # warm-up: kernels, caches, compiles
        batches = math.ceil((args.rows_per_size if size == 1 else size) / size)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        new, outputs = 0, []
        for b in range(batches):
            rows = [texts[(b * size + i) % len(texts)] for i in range(size)]
            out = generate(rows, n_new)
            new += out.numel()
            outputs.append(out.tolist())
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
        firsts[size] = [row[:16] for out in outputs for row in out]  # in prompt order
        result = {"path": label, "batch": size, "batches": batches, "new_tokens": new, "wall_s": wall,
                  "tokens_per_s": new / wall, "ms_per_step": 1000 * wall / (batches * n_new),
                  "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
        print(f"[{args.worker}] {label} batch {size}: {new} new tokens in {wall:.2f} s = {new / wall:,.0f} tokens/s, "
              f"{result['ms_per_step']:.1f} ms per decoding step, peak {result['peak_gib']:.2f} GiB", flush=True)
        with open(args.results, "a") as f:
            f.write(json.dumps(result) + "\n")
    if len(firsts) > 1:
        small, large = firsts[min(firsts)], firsts[max(firsts)]
        same = sum(a == b for x, y in zip(small, large) for a, b in zip(x, y))
        total = sum(min(len(x), len(y)) for x, y in zip(small, large))
        print(f"[{args.worker}] {label} check: batch {min(firsts)} vs batch {max(firsts)}, first 16 new tokens of "
              f"{len(small)} prompts: {same}/{total} equal; prompt 0: {small[0][:8]} vs {large[0][:8]}", flush=True)
        print(f"[{args.worker}] {label} prompt 0 at batch {max(firsts)}: {tokenizer.decode(large[0])!r}",
              flush=True)
    return firsts


def table(results):
    by = {(r["path"], r["batch"]): r for r in results}
    base = {b: r["tokens_per_s"] for (p, b), r in by.items() if p == "transformers-4bit"}
    one = {p: r["tokens_per_s"] for (p, b), r in by.items() if b == 1}
    lines = ["| path | batch | new tokens | tokens/s | ms/step | peak GiB | vs batch 1 | vs transformers-4bit |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        vs1 = f"{r['tokens_per_s'] / one[r['path']]:.1f}x" if r["path"] in one else "-"
        vsb = f"{r['tokens_per_s'] / base[r['batch']]:.2f}x" if r["batch"] in base else "-"
        lines.append(f"| {r['path']} | {r['batch']} | {r['new_tokens']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['ms_per_step']:.1f} | {r['peak_gib']:.2f} | {vs1} | {vsb} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="smollm2-1.7b")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--rows-per-size", type=int, default=2, help="prompts answered one at a time at batch 1 "
                                                               "(a larger batch answers one batch)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--paths", default="unsloth,transformers-4bit,transformers-bf16", help="in run order")
    p.add_argument("--budget-s", type=float, default=200, help="no new measurement starts past this")
    p.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    p.add_argument("--dataset-dir", default=".gpu/dataset")
    p.add_argument("--tokenizer", default=".gpu/tokenizer")
    p.add_argument("--worker", choices=["adapter", "unsloth", "transformers-4bit", "transformers-bf16"])
    p.add_argument("--model"), p.add_argument("--adapter"), p.add_argument("--results")
    p.add_argument("--deadline", type=float)
    args = p.parse_args()
    if args.worker == "adapter":
        make_adapter(args)
        return 0
    if args.worker:
        run_worker(args)
        return 0

    from bench.bench_gpu_training import baseline_pythonpath, fresh_results_file
    start = time.time()
    results_file = fresh_results_file(args.out, "inference.jsonl")
    out = results_file.parent
    model, adapter = f"/tmp/rand-{args.shape}", f"/tmp/bench_adapter_{args.shape}"
    if not (Path(model) / "config.json").exists():
        subprocess.run([sys.executable, str(ROOT / "bench/random_model.py"), "--shape", args.shape, "--tokenizer",
                        args.tokenizer, "--out", model], check=True, cwd=ROOT)
    plain_env = {**os.environ, "PYTHONPATH": baseline_pythonpath()}
    common = ["--model", model, "--adapter", adapter, "--results", str(results_file)]
    if not (Path(adapter) / "adapter_config.json").exists():
        subprocess.run([sys.executable, __file__, "--worker", "adapter", *common], env=plain_env, check=True, cwd=ROOT)
    for path in args.paths.split(","):
        if time.time() > start + args.budget_s:
            print(f"--- {path}: skipped (out of time)", flush=True)
            continue
        cmd = [sys.executable, __file__, "--worker", path, *common, "--batch-sizes", args.batch_sizes,
               "--rows-per-size", str(args.rows_per_size), "--max-new-tokens", str(args.max_new_tokens),
               "--dataset-dir", args.dataset_dir, "--deadline", str(start + args.budget_s)]
        print(f"--- {path}", flush=True)
        log = out / f"inference_{path}.log"
        with open(log, "w") as f:
            try:
                rc = subprocess.run(cmd, env=os.environ if path == "unsloth" else plain_env, stdout=f,
                                    stderr=subprocess.STDOUT, cwd=ROOT,
                                    timeout=max(30, start + args.budget_s - time.time() + 90)).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        lines = open(log).readlines()
        print("".join(line for line in lines if line.startswith(f"[{path}]")), end="")
        if rc != 0:
            print(f"--- {path}: rc={rc}; last lines of {log}:\n" + "".join(lines[-25:]))
    results = [json.loads(line) for line in results_file.read_text().splitlines()] if results_file.exists() else []
    text = table(results)
    (out / "inference_table.md").write_text(text + "\n")
    print(f"\n{args.shape}, LoRA r16 on all linear layers, {args.max_new_tokens} new tokens a row, greedy; "
          f"total {time.time() - start:.0f} s\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
