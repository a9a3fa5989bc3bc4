"""Shared fixtures: the real sample paper and the real embedded model, prepared once per test session."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")
SAMPLE_PDF = ROOT / "docs" / "pdf" / "sample_paper.pdf"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU with Unsloth (skipped elsewhere)")


def pytest_collection_modifyitems(config, items):
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def embedded_path():
    from common.models import prepare_embedded_model
    return prepare_embedded_model()


@pytest.fixture(scope="session")
def tokenizer(embedded_path):
    from common.models import load_tokenizer
    return load_tokenizer(str(embedded_path))


@pytest.fixture(scope="session")
def sample_markdown():
    from common.pdf import convert_text_layer
    return convert_text_layer(SAMPLE_PDF)


@pytest.fixture(scope="session")
def sample_dataset_dir(tmp_path_factory, tokenizer):
    """The dataset that step 01's logic builds from the sample paper."""
    from common.pdf import convert_folder
    from common.dataset import (build_dataset_dict, deduplicate, entity_records, keep_kinds, records_from_markdown,
                                save_dataset, split_by_section)
    from common.settings import DatasetSettings
    s = DatasetSettings.defaults()
    base = tmp_path_factory.mktemp("sample")
    pdf_dir = base / "pdf"
    pdf_dir.mkdir()
    (pdf_dir / SAMPLE_PDF.name).write_bytes(SAMPLE_PDF.read_bytes())
    results = convert_folder(pdf_dir, base / "md", converter="text")
    records = records_from_markdown(results, tokenizer, chunk_tokens=256, chunk_overlap=32,
                                    fact_variants=s.fact_variants, excluded_sections=s.excluded_sections)
    train, test = split_by_section(deduplicate(records), 0.1, 42)
    train += entity_records(train)
    train, test = keep_kinds(train, s.record_kinds), keep_kinds(test, s.record_kinds)
    return save_dataset(build_dataset_dict(train, test), base / "dataset", {"tokenizer": "embedded"})
