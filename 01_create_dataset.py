"""Step 1: turn a folder of PDF papers into an Alpaca-style Hugging Face dataset.

PDFs -> markdown (marker, or the fast text-layer converter offline) -> chunks by section, measured
with the training model's tokenizer -> several instruction records per chunk -> train/test split by
section -> saved locally (and pushed to the Hub if asked). Rows of your own (--from-jsonl, --from-csv)
join the PDF records, or replace them when the PDF folder is empty.
"""
import sys

from common.byod import load_byod, print_byod_summary
from common.config import hf_token, parse_settings
from common.dataset import (build_dataset_dict, check_record_kinds, check_train_records, deduplicate, entity_records,
                            keep_kinds, push_dataset, records_from_markdown, save_dataset, split_by_section)
from common.errors import PipelineError
from common.knowledge import (plain_questions, questions_from_records, without_question_wordings,
                              write_plain_questions, write_questions)
from common.models import load_tokenizer, resolve_model_path
from common.pdf import convert_folder, has_pdfs, print_conversion_summary
from common.settings import DatasetSettings
from common.teacher import teacher_records

PDF_DIR = "docs/pdf"  # folder of input PDFs
MD_DIR = "docs/md"  # folder for the converted markdown (and the conversion cache and report)
DATASET_DIR = "data/dataset"  # where the DatasetDict, JSONL files and dataset card are saved
CONVERTER = "auto"  # auto (text layer; marker on a CUDA GPU or for pages without one), marker or text
FORCE = False  # convert every PDF again, ignoring the cache
MODEL_NAME = "embedded/SmolLM2-135M-Instruct"  # tokenizer that measures chunks: use the model you will train
CHUNK_TOKENS = 256  # largest chunk, in tokens of MODEL_NAME's tokenizer
CHUNK_OVERLAP = 32  # tokens repeated from the end of one chunk at the start of the next (same section)
RECORD_KINDS = ["section_summary", "title_abstract", "fact", "entity", "shuffled"]  # also: key_facts, continuation
FACT_VARIANTS = 5  # records per fact-bearing sentence: questions asking for its facts, then its topic in other words
EXCLUDED_SECTIONS = ["References", "Bibliography", "Acknowledg", "Funding", "Affiliation"]  # sections kept out of the records
TEST_FRACTION = 0.1  # share of sections held out as the test split
SEED = 42  # seed of the train/test split
PUSH_TO_HUB = False  # also push the dataset to the Hugging Face Hub (private), after saving it locally
HUB_DATASET_ID = ""  # the Hub dataset repo, e.g. your-name/my-papers
HUB_PRIVATE = True  # make the pushed dataset private
FROM_JSONL = ""  # also use your own rows: a JSONL file of Alpaca rows or ShareGPT conversations
FROM_CSV = ""  # the same from a CSV file (conversations as a JSON string in its cell)
QA_TEACHER = ""  # LLM writing question/answer pairs per chunk: "" (off), a model or folder here, or openai:MODEL@URL
QA_PER_CHUNK = 3  # pairs asked per chunk (a fact, a why/how, a short summary), each checked against the chunk
QA_JUDGE = ""  # optional judge that scores each kept pair with its chunk in view: "", a model, or openai:MODEL@URL
QA_JUDGE_MIN_SCORE = 4.0  # pairs the judge scores below this (1 to 5) are rejected
QA_CONCURRENCY = 4  # requests in flight at once to a teacher server
QA_BATCH_SIZE = 16  # chunks per generation batch for a teacher run here
QA_MAX_TOKENS = 512  # longest teacher reply, in tokens
QA_TEMPERATURE = 0.5  # the teacher's sampling temperature (a malformed reply is asked again)
QA_TIMEOUT = 120.0  # seconds one request to a teacher server may take
QA_RETRIES = 2  # times a timeout, rate limit, server error or malformed reply is asked again, with back-off


def main():
    s = parse_settings(DatasetSettings, globals())
    check_record_kinds(s.record_kinds)
    own = [(path, fmt) for path, fmt in ((s.from_jsonl, "jsonl"), (s.from_csv, "csv")) if path]
    records, failed = [], False
    if has_pdfs(s.pdf_dir) or not own:
        results = convert_folder(s.pdf_dir, s.md_dir, converter=s.converter, force=s.force)
        failed = print_conversion_summary(results, s.md_dir)
        tokenizer = load_tokenizer(resolve_model_path(s.model_name))
        records = records_from_markdown(results, tokenizer, chunk_tokens=s.chunk_tokens, chunk_overlap=s.chunk_overlap,
                                        fact_variants=s.fact_variants, excluded_sections=s.excluded_sections)
    for path, fmt in own:
        rows, problems = load_byod(path, fmt)
        print_byod_summary(path, rows, problems)
        records += rows
    records += teacher_records(records, s)  # before the split: each pair goes with its chunk's section
    if not records:
        why = "could be converted (see above)" if has_pdfs(s.pdf_dir) else \
            "(nor in its subfolders): put your papers there or pass --pdf-dir"
        sys.exit(f"No records: no PDF in {s.pdf_dir} {why}.")
    train, test = split_by_section(deduplicate(records), s.test_fraction, s.seed)
    train += entity_records(train)  # after the split: a test section's sentences never reach training
    cloze_questions = questions_from_records(train)  # from the sections' text, whichever kinds are kept
    train, test = keep_kinds(train, s.record_kinds), keep_kinds(test, s.record_kinds)
    check_train_records(train, test, s.record_kinds)
    train = without_question_wordings(train, plain_questions(train, s.pdf_dir))  # the check asks in other words
    save_dataset(build_dataset_dict(train, test), s.dataset_dir, meta={**s.as_dict(), "tokenizer": s.model_name})
    cloze = write_questions(s.dataset_dir, cloze_questions)
    plain = write_plain_questions(s.dataset_dir, train=train, pdf_dir=s.pdf_dir)
    print(f"Saved {len(train)} train and {len(test)} test records to {s.dataset_dir}; knowledge-check questions: "
          f"{cloze.name}, {plain.name}")
    if s.push_to_hub:
        try:
            push_dataset(s.dataset_dir, s.hub_dataset_id, hf_token(), private=s.hub_private)
            print(f"Pushed to the Hub: {s.hub_dataset_id} (private={s.hub_private})")
        except PipelineError as error:  # the saved dataset stays; the exit code says the push failed
            print(error)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PipelineError as error:  # each says what to do
        sys.exit(f"Error: {error}")
