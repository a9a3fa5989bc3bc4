"""CPU training throughput: the pipeline's train_cpu against a plain PyTorch loop, same model, same batch.

    python bench/bench_cpu_training.py [--steps 4] [--batch-size 8]

Both sides train the embedded model with the same LoRA layers on the same batch of real rows from the
sample paper; tokens/s counts real (non-padding) tokens. The baseline is the loop a person would write
by hand: forward, backward, AdamW step, zero_grad. It is run in fp32 and with bf16 autocast (the precision
train_cpu picks where it measures faster on the CPU: training.cpu_supports_bf16), and the ratio is against
train_cpu's own precision.
"""
import argparse
import sys
import time
from pathlib import Path

import torch
from peft import get_peft_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common.models import load_causal_lm, load_tokenizer, prepare_embedded_model  # noqa: E402
from common.pdf import convert_text_layer  # noqa: E402
from common.chunking import chunk_markdown  # noqa: E402
from common.dataset import records_from_chunk  # noqa: E402
from common.settings import TrainSettings  # noqa: E402
from common.tokenizing import pad_batch, tokenize_rows  # noqa: E402
from common.training import cpu_autocast_speedup, cpu_supports_bf16, lora_config, train_cpu  # noqa: E402


def sample_rows(tokenizer, n):
    markdown = convert_text_layer(Path(__file__).resolve().parent.parent / "docs/pdf/sample_paper.pdf")
    count = lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    chunks = chunk_markdown(markdown, count, chunk_tokens=256, chunk_overlap=32)
    records = [r for c in chunks for r in records_from_chunk(c, "sample.pdf")]
    return tokenize_rows(records[:n], tokenizer, "chat", 1024).rows


def fresh_model(path, settings):
    torch.manual_seed(0)
    return get_peft_model(load_causal_lm(path), lora_config(settings))


def plain_loop(model, rows, pad_id, *, steps, bf16):
    ids, mask, labels = pad_batch(rows, pad_id)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()  # step 0 warms up
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return int(mask.sum()) * steps / (time.perf_counter() - start)


def pipeline_loop(model, rows, pad_id, *, steps, settings, bf16):
    times = []
    def on_log(entry):
        times.append((entry["step"], entry["tokens"], time.perf_counter()))
    train_cpu(model, rows, pad_id, settings.replace(max_steps=steps + 1), on_log=on_log, bf16=bf16)
    (_, tokens0, t0), (_, tokens1, t1) = times[0], times[-1]  # from the end of step 1 (warm-up) to the end
    return (tokens1 - tokens0) / (t1 - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    path = str(prepare_embedded_model())
    tokenizer = load_tokenizer(path)
    rows = sample_rows(tokenizer, args.batch_size)
    # the plain loop's optimizer: AdamW at 2e-4, no warm-up, no decay, no eval or checkpoints
    settings = TrainSettings.defaults(batch_size=args.batch_size, batch_tokens=0, learning_rate=2e-4, warmup_steps=0,
                                      logging_steps=1, weight_decay=0.0, gradient_accumulation_steps=1, eval_steps=0,
                                      save_steps=0)
    bf16 = cpu_supports_bf16()
    n_tokens = sum(len(r["input_ids"]) for r in rows)
    print(f"CPU threads: {torch.get_num_threads()}, bf16 autocast: {bf16} (measured {cpu_autocast_speedup():.2f}x "
          f"fp32), batch: {len(rows)} rows, {n_tokens} real tokens, {args.steps} timed steps each")
    results = {"plain loop, fp32": plain_loop(fresh_model(path, settings), rows, tokenizer.pad_token_id,
                                              steps=args.steps, bf16=False)}
    # both measured: train_cpu autocasts to bf16 where that measured faster (cpu_supports_bf16)
    results["plain loop, bf16 autocast"] = plain_loop(fresh_model(path, settings), rows, tokenizer.pad_token_id,
                                                      steps=args.steps, bf16=True)
    results["pipeline train_cpu"] = pipeline_loop(fresh_model(path, settings), rows, tokenizer.pad_token_id,
                                                  steps=args.steps, settings=settings, bf16=bf16)
    same_precision = results["plain loop, bf16 autocast" if bf16 else "plain loop, fp32"]
    print("\n| loop | tokens/s | ratio to the same-precision plain loop |\n|---|---|---|")
    for name, rate in results.items():
        print(f"| {name} | {rate:.1f} | {rate / same_precision:.2f} |")
    print(f"\npipeline / plain loop (same precision): {results['pipeline train_cpu'] / same_precision:.2f}x; "
          f"pipeline / plain fp32 loop: {results['pipeline train_cpu'] / results['plain loop, fp32']:.2f}x")


if __name__ == "__main__":
    main()
