"""Speed of step 01 on 2 CPU cores: PDF -> markdown, markdown -> records, a re-run on an unchanged
folder, and near-duplicate removal on many records.

    python bench/bench_dataset.py                      # the bundled sample and layout fixtures
    python bench/bench_dataset.py --pdf-dir ~/papers   # your own folder of real papers, each once
    python bench/bench_dataset.py --no-convert --dedupe-records 20000

Uses the sample paper and the layout fixtures of tests/fixtures/ (copied round-robin into a temporary
folder) or the PDFs of --pdf-dir, and the embedded model's tokenizer. Prints a markdown table with the
targets; exits 1 if one is missed.
"""
import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TQDM_DISABLE", "1")

from common.config import ROOT  # noqa: E402
from common.pdf import convert_folder  # noqa: E402
from common.dataset import deduplicate, records_from_markdown  # noqa: E402
from common.models import load_tokenizer, resolve_model_path  # noqa: E402
from tests.test_dataset import deduplicate_pairwise  # noqa: E402  (the reference the tests compare with)

CORES = 2  # CPU cores the benchmark may use
COPIES = 60  # PDFs in the conversion benchmark (the sources, copied round-robin)
RERUN_COPIES = 100  # PDFs in the unchanged-folder re-run
REPEAT = 3  # each figure is the fastest of this many runs
MODEL_NAME = "embedded/SmolLM2-135M-Instruct"  # tokenizer that measures chunks
SOURCES = [ROOT / "docs/pdf/sample_paper.pdf", ROOT / "tests/fixtures/two_column.pdf",
           ROOT / "tests/fixtures/appendix.pdf"]


def page_count(path):
    import pypdfium2
    document = pypdfium2.PdfDocument(str(path))
    n = len(document)
    document.close()
    return n


def copy_pdfs(folder, n, sources=SOURCES):
    folder.mkdir(parents=True)
    pages = 0
    for i in range(n):
        source = sources[i % len(sources)]
        shutil.copyfile(source, folder / f"{i:03d}-{source.name}")
        pages += page_count(source)
    return pages


def synthetic_records(n, seed=0):
    """`n` Alpaca rows like step 01's (about 180 words of output each, from a Zipf-like vocabulary),
    of which about 5% repeat an earlier row exactly and 10% repeat one with a word or two changed."""
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(20000)]
    weights = [1 / (i + 1) for i in range(len(vocabulary))]
    rows = []
    for i in range(n):
        draw = rng.random()
        if rows and draw < 0.05:
            rows.append(dict(rng.choice(rows)))
        elif rows and draw < 0.15:
            source = rng.choice(rows)
            words = source["output"].split()
            for _ in range(rng.randint(1, 2)):
                words[rng.randrange(len(words))] = rng.choice(vocabulary)
            rows.append({"instruction": source["instruction"], "input": "", "output": " ".join(words)})
        else:
            words = rng.choices(vocabulary, weights, k=rng.randint(120, 240))
            rows.append({"instruction": f"Summarise the section 'S{i % 400}' of the paper 'P{i % 37}'.",
                         "input": "", "output": " ".join(words)})
    return rows


def timed(function, *args, repeat=1, **kwargs):
    """(result, seconds): the fastest of `repeat` runs, as timeit does (other load only adds time)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return result, best


def bench_conversion(tokenizer, rows, pdf_dir, repeat):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if pdf_dir:
            sources = sorted(p for p in Path(pdf_dir).iterdir() if p.suffix.lower() == ".pdf")
            n, label = len(sources), f"text-layer converter, {len(sources)} PDFs of {pdf_dir}"
        else:
            sources, n, label = SOURCES, COPIES, f"text-layer converter, {COPIES} PDFs"
        pages = copy_pdfs(tmp / "pdf", n, sources)
        results, seconds = timed(convert_folder, tmp / "pdf", tmp / "md", "text", force=True, workers=CORES,
                                 repeat=repeat)
        assert all(r.status == "converted" for r in results), [r for r in results if r.status != "converted"]
        rows.append((f"{label} ({pages} pages)", f"{pages / seconds:.1f} pages/s", ">= 10 pages/s",
                     pages / seconds >= 10))

        chunking = dict(chunk_tokens=256, chunk_overlap=32)
        records_from_markdown(results[:1], tokenizer, **chunking)  # warm the tokenizer up
        records, seconds = timed(records_from_markdown, results, tokenizer, **chunking, repeat=repeat)
        rows.append((f"markdown -> records, {pages} pages ({len(records)} records)",
                     f"{pages / seconds:.0f} pages/s", ">= 500 pages/s", pages / seconds >= 500))

        copy_pdfs(tmp / "pdf100", RERUN_COPIES)
        convert_folder(tmp / "pdf100", tmp / "md100", "text", workers=CORES)
        results, seconds = timed(convert_folder, tmp / "pdf100", tmp / "md100", "text", workers=CORES,
                                 repeat=repeat)
        assert all(r.status == "cached" for r in results)
        rows.append((f"re-run on an unchanged folder of {RERUN_COPIES} PDFs", f"{seconds:.2f} s", "< 5 s",
                     seconds < 5))


def bench_dedupe(rows, n, repeat):
    records = synthetic_records(n)
    kept, seconds = timed(deduplicate, records, repeat=repeat)
    rows.append((f"deduplicate, {n} records ({n - len(kept)} dropped)", f"{seconds:.2f} s", "< 10 s", seconds < 10))
    sample = records[:2000]
    reference, pairwise_seconds = timed(deduplicate_pairwise, sample)
    fast, fast_seconds = timed(deduplicate, sample)
    rows.append((f"same records kept as comparing every pair, 2000 records ({pairwise_seconds:.1f} s pairwise, "
                 f"{fast_seconds:.2f} s indexed)", "yes" if fast == reference else "NO", "yes", fast == reference))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdf-dir", help="convert the PDFs of this folder (each once) instead of the bundled ones")
    parser.add_argument("--no-convert", action="store_true", help="only the deduplication benchmark")
    parser.add_argument("--dedupe-records", type=int, default=20000, help="records for the deduplication benchmark")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="each figure is the fastest of this many runs")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > CORES:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CORES])
    rows = []
    if not args.no_convert:
        bench_conversion(load_tokenizer(resolve_model_path(MODEL_NAME)), rows, args.pdf_dir, args.repeat)
    if args.dedupe_records:
        bench_dedupe(rows, args.dedupe_records, args.repeat)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nStep 01 speed on {cores} CPU cores (fastest of {args.repeat}; load average {load})\n")
    print("| measure | figure | target | met |\n|---|---|---|---|")
    for name, figure, target, met in rows:
        print(f"| {name} | {figure} | {target} | {'yes' if met else 'NO'} |")
    return 0 if all(met for *_, met in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
