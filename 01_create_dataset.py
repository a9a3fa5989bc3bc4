"""Step 1: turn a folder of PDF papers into an Alpaca-style Hugging Face dataset.

PDFs -> markdown (marker, or the fast text-layer converter offline) -> chunks by section, measured
with the training model's tokenizer -> several instruction records per chunk -> train/test split by
section -> saved locally (and pushed to the Hub if asked). Rows of your own (--from-jsonl, --from-csv)
join the PDF records, or replace them when the PDF folder is empty.
"""
import sys

from common.byod import ByodError, load_byod, print_byod_summary
from common.config import apply_cli_overrides, hf_token
from common.convert import convert_folder, has_pdfs, print_conversion_summary
from common.dataset import (build_dataset_dict, deduplicate, push_dataset, records_from_markdown, save_dataset,
                            split_by_section)
from common.knowledge import questions_from_records, write_questions
from common.models import load_tokenizer, resolve_model_path

PDF_DIR = "docs/pdf"  # folder of input PDFs
MD_DIR = "docs/md"  # folder for the converted markdown (and the conversion cache and report)
DATASET_DIR = "data/dataset"  # where the DatasetDict, JSONL files and dataset card are saved
CONVERTER = "auto"  # auto (marker if its models are reachable, else text), marker or text
FORCE = False  # convert every PDF again, ignoring the cache
MODEL_NAME = "embedded/SmolLM2-135M-Instruct"  # tokenizer that measures chunks: use the model you will train
CHUNK_TOKENS = 256  # largest chunk, in tokens of MODEL_NAME's tokenizer
CHUNK_OVERLAP = 32  # tokens repeated from the end of one chunk at the start of the next (same section)
TEST_FRACTION = 0.1  # share of sections held out as the test split
SEED = 42  # seed of the train/test split
PUSH_TO_HUB = False  # also push the dataset to the Hugging Face Hub (private), after saving it locally
HUB_DATASET_ID = ""  # the Hub dataset repo, e.g. your-name/my-papers
HUB_PRIVATE = True  # make the pushed dataset private
FROM_JSONL = ""  # also use your own rows: a JSONL file of Alpaca rows or ShareGPT conversations
FROM_CSV = ""  # the same from a CSV file (conversations as a JSON string in its cell)


def main():
    settings = apply_cli_overrides(globals())
    own = [(path, fmt) for path, fmt in ((FROM_JSONL, "jsonl"), (FROM_CSV, "csv")) if path]
    records, failed = [], False
    if has_pdfs(PDF_DIR) or not own:
        results = convert_folder(PDF_DIR, MD_DIR, CONVERTER, FORCE)
        failed = print_conversion_summary(results, MD_DIR)
        tokenizer = load_tokenizer(resolve_model_path(MODEL_NAME))
        records = records_from_markdown(results, tokenizer, CHUNK_TOKENS, CHUNK_OVERLAP)
    for path, fmt in own:
        try:
            rows, problems = load_byod(path, fmt)
        except ByodError as error:
            sys.exit(str(error))
        print_byod_summary(path, rows, problems)
        records += rows
    if not records:
        sys.exit(f"No records: no PDF in {PDF_DIR} could be converted (see above).")
    train, test = split_by_section(deduplicate(records), TEST_FRACTION, SEED)
    dataset = build_dataset_dict(train, test)
    save_dataset(dataset, DATASET_DIR, meta={**settings, "tokenizer": MODEL_NAME})
    questions = write_questions(DATASET_DIR, questions_from_records(train))
    print(f"Saved {len(train)} train and {len(test)} test records to {DATASET_DIR}; closed-book questions: {questions}")
    if PUSH_TO_HUB:
        error = push_dataset(DATASET_DIR, HUB_DATASET_ID, hf_token(), HUB_PRIVATE)
        print(error or f"Pushed to the Hub: {HUB_DATASET_ID} (private={HUB_PRIVATE})")
        failed = failed or bool(error)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
