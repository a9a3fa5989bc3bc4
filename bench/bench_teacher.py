"""Teacher pairs per second with a teacher run here: batched generation against one chunk at a time.

    source .whl/env.sh; python bench/bench_teacher.py [--shapes smollm2-135m,smollm2-1.7b] [--batch-sizes 1,16,64]

What 01 runs with QA_TEACHER set to a model (common.teacher: load_local_teacher, Unsloth's fast generation on a
CUDA GPU, else transformers; local_replies, i.e. common.inference.generate_batched, QA_BATCH_SIZE chunks a batch) on
a randomly initialised model of a real shape (bench/random_model.py): its replies are noise, so this measures speed
only. The prompts are 01's teacher prompts (common.teacher.teacher_prompt, QA_PER_CHUNK pairs each) for the chunks of
the sample dataset (.gpu/dataset/train.jsonl). Every reply is made exactly --max-tokens long (min_new_tokens: a random
model stops nowhere in particular), the length of a reply holding QA_PER_CHUNK short pairs; pairs/s = chunks/s x
QA_PER_CHUNK is then what a teacher writing replies of that length gives, before the check against the chunk.
Batch 1 answers --one-at-a-time chunks, a batch of b answers max(b, --chunks) chunks; each after a short warm-up batch.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def chunks_from(dataset_dir, n):
    rows = [json.loads(line) for line in (Path(dataset_dir) / "train.jsonl").read_text().splitlines() if line]
    chunks = [r for r in rows if r["template"] in ("section_summary", "title_abstract")]
    return [{**chunks[i % len(chunks)], "chunk_id": f"c{i}"} for i in range(n)]


def measure(model, tokenizer, prompts, *, batch, max_tokens, per_chunk):
    import torch
    from common.teacher import Asking, local_replies
    asking = Asking(max_tokens=max_tokens, temperature=0.0, concurrency=1, batch_size=batch, timeout=0, retries=0)
    model.generation_config.min_new_tokens = 8
    warm_up = Asking(**{**vars(asking), "max_tokens": 8})
    list(local_replies(model, tokenizer, dict(list(prompts.items())[:batch]), warm_up))
    model.generation_config.min_new_tokens = max_tokens
    gpu = torch.cuda.is_available()  # (the CPU too, for a quick try of this script)
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    replies = list(local_replies(model, tokenizer, prompts, asking))
    if gpu:
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return {"batch": batch, "chunks": len(replies), "wall_s": round(wall, 2), "chunks_per_s": len(replies) / wall,
            "pairs_per_s": per_chunk * len(replies) / wall, "new_tokens_per_s": len(replies) * max_tokens / wall,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else 0.0}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="smollm2-135m,smollm2-1.7b")
    p.add_argument("--batch-sizes", default="1,16,64")
    p.add_argument("--chunks", type=int, default=64, help="chunks answered at each batch size above 1")
    p.add_argument("--one-at-a-time", type=int, default=4, help="chunks answered at batch 1")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--per-chunk", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=200, help="no new measurement starts past this")
    p.add_argument("--dataset-dir", default=".gpu/dataset")
    p.add_argument("--tokenizer", default=".gpu/tokenizer")
    p.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = p.parse_args()
    start = time.time()
    from common.config import set_environment_defaults
    set_environment_defaults()
    from common.models import unsloth_available  # imports Unsloth first, where it can run
    print(f"Unsloth: {unsloth_available()}", flush=True)
    from common.teacher import load_local_teacher, teacher_prompt
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for shape in args.shapes.split(","):
        folder = f"/tmp/rand-{shape}"
        if not (Path(folder) / "config.json").exists():
            subprocess.run([sys.executable, str(ROOT / "bench/random_model.py"), "--shape", shape, "--tokenizer",
                            args.tokenizer, "--out", folder], check=True, cwd=ROOT)
        model, tokenizer = load_local_teacher(folder)
        print(f"[{shape}] loaded ({type(model).__name__}) at {time.time() - start:.0f} s", flush=True)
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            if time.time() - start > args.budget_s:
                print(f"[{shape}] batch {batch}: skipped (out of time)", flush=True)
                continue
            n = args.one_at_a_time if batch == 1 else max(batch, args.chunks)
            prompts = {c["chunk_id"]: teacher_prompt(c, args.per_chunk) for c in chunks_from(args.dataset_dir, n)}
            result = {"shape": shape, **measure(model, tokenizer, prompts, batch=batch, max_tokens=args.max_tokens,
                                                per_chunk=args.per_chunk)}
            one = next((r for r in results if r["shape"] == shape and r["batch"] == 1), None)
            result["vs_one_at_a_time"] = result["pairs_per_s"] / one["pairs_per_s"] if one else 1.0
            results.append(result)
            print(f"[{shape}] batch {batch}: {result['chunks']} chunks in {result['wall_s']} s = "
                  f"{result['pairs_per_s']:.2f} pairs/s ({result['new_tokens_per_s']:,.0f} new tokens/s, "
                  f"{result['vs_one_at_a_time']:.1f}x one at a time), peak {result['peak_gib']:.2f} GiB", flush=True)
            (out / "teacher.json").write_text(json.dumps(results, indent=2))
        load_local_teacher.cache_clear()
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
