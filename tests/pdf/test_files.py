import re
from pathlib import Path

import pytest

from common.pdf import ConversionError, convert_text_layer
from tests.conftest import SAMPLE_PDF
from tests.fixtures.make_fixtures import APPENDIX, APPENDIX_TABLE, RUNNING_HEAD, TWO_COLUMN, TWO_COLUMN_TITLE

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_sample_headings_become_markdown_levels(sample_markdown):
    assert re.search(r"^# Growth, Zonation and Salt Tolerance", sample_markdown, re.M)
    assert re.search(r"^## 2 Study Site and Methods$", sample_markdown, re.M)
    assert re.search(r"^### 2\.1 Kesterhaven Intertidal Station$", sample_markdown, re.M)
    assert re.search(r"^## References$", sample_markdown, re.M)


def test_running_headers_and_page_numbers_are_dropped(sample_markdown):
    assert "Page 3 of 7" not in sample_markdown
    assert "Vansk, Amundry and Okafor-Hale" not in sample_markdown  # the running header
    assert sample_markdown.count("<!-- page ") == 7


def test_paragraphs_are_reflowed_across_lines_and_pages(sample_markdown):
    assert "botanist Edvard Quillon, who collected the type specimens" in sample_markdown
    assert "Thallus K-17 is therefore older than the station itself." in sample_markdown


def test_table_and_numbered_equations_survive(sample_markdown):
    assert "| Tidal zone | Emersion (h/day) | Cover (%) | Growth (mm/yr) |" in sample_markdown
    assert "| Mid intertidal | 6.5 | 63 | 4.9 |" in sample_markdown
    assert re.search(r"^G = a \* E \* exp\(-E / E_c\)\s+\(2\)$", sample_markdown, re.M)


def _expect_failure(path, reason_part, advice_part):
    with pytest.raises(ConversionError) as info:
        convert_text_layer(path)
    assert reason_part in info.value.reason and advice_part in info.value.advice


def test_empty_file(tmp_path):
    (tmp_path / "empty.pdf").write_bytes(b"")
    _expect_failure(tmp_path / "empty.pdf", "empty file", "download it again")


def test_text_file_named_pdf(tmp_path):
    (tmp_path / "notes.pdf").write_text("These are my notes, not a PDF.\n")
    _expect_failure(tmp_path / "notes.pdf", "not a PDF", "real PDF")


def test_truncated_pdf(tmp_path):
    data = SAMPLE_PDF.read_bytes()
    (tmp_path / "cut.pdf").write_bytes(data[: len(data) // 2])
    _expect_failure(tmp_path / "cut.pdf", "truncated", "download it again")


def test_corrupted_pdf(tmp_path):
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 20 + b"\n%%EOF\n")
    _expect_failure(tmp_path / "bad.pdf", "corrupted", "download it again")


def test_image_only_pdf(tmp_path):
    import pypdfium2
    document = pypdfium2.PdfDocument.new()
    document.new_page(612, 792)
    document.new_page(612, 792)
    document.save(str(tmp_path / "scan.pdf"))
    _expect_failure(tmp_path / "scan.pdf", "image-only", "OCR")


def test_the_scanned_page_of_a_text_pdf_is_found_and_its_text_pages_converted():
    from common.pdf import pages_without_text
    from tests.fixtures.make_fixtures import SCANNED_TEXT_PAGES
    assert pages_without_text(FIXTURES / "scanned_page.pdf") == ([3], 4)
    assert pages_without_text(SAMPLE_PDF) == ([], 7)
    markdown = convert_text_layer(FIXTURES / "scanned_page.pdf")
    assert all(p in markdown for sections in SCANNED_TEXT_PAGES for _, paragraphs in sections for p in paragraphs)


def test_another_converters_pages_are_put_in_after_their_marks():
    from common.pdf.files import page_text_chars, splice_pages, split_pages
    text = "<!-- page 1 -->\n\n# Title\n\nText.\n\n<!-- page 2 -->\n\n<!-- page 3 -->\n\nMore.\n"
    ocr = split_pages("<!-- page 2 -->\n\nRead from the scan.\n")
    assert splice_pages(text, ocr) == ("<!-- page 1 -->\n\n# Title\n\nText.\n\n<!-- page 2 -->\n\nRead from "
                                       "the scan.\n\n<!-- page 3 -->\n\nMore.\n")
    assert page_text_chars(text) == {1: 11, 2: 0, 3: 5}  # spaces not counted


def test_encrypted_pdf(tmp_path):
    pikepdf = pytest.importorskip("pikepdf")
    with pikepdf.open(SAMPLE_PDF) as pdf:
        pdf.save(tmp_path / "locked.pdf", encryption=pikepdf.Encryption(owner="o", user="secret"))
    _expect_failure(tmp_path / "locked.pdf", "encrypted", "qpdf --password=PASSWORD --decrypt")


# ---------------------------------------------------------------- harder layouts (tests/fixtures/make_fixtures.py)


@pytest.fixture(scope="module")
def two_column_markdown():
    return convert_text_layer(FIXTURES / "two_column.pdf")


@pytest.fixture(scope="module")
def appendix_markdown():
    return convert_text_layer(FIXTURES / "appendix.pdf")


def test_two_columns_are_read_left_then_right_with_whole_paragraphs(two_column_markdown):
    blocks = two_column_markdown.strip().split("\n\n")
    expected = []
    for heading, paragraphs in TWO_COLUMN:
        expected += ["## " + heading] + paragraphs  # each paragraph whole, one block, in the order written
    positions = [blocks.index(text) for text in expected]
    assert positions == sorted(positions)
    assert blocks[1] == "# " + TWO_COLUMN_TITLE
    assert RUNNING_HEAD not in two_column_markdown


def test_hyphenated_line_ends_are_joined(two_column_markdown, appendix_markdown):
    from pdftext.extraction import dictionary_output
    lines = ["".join(s["text"] for s in line["spans"]).strip() for page in dictionary_output(
        str(FIXTURES / "two_column.pdf")) for block in page["blocks"] for line in block["lines"]]
    assert sum(line[-1:] == "-" and line[-2:-1].isalpha() for line in lines) >= 5  # the fixture hyphenates
    for markdown in (two_column_markdown, appendix_markdown):
        assert not re.search(r"[a-z]- [a-z]", markdown)
    assert "callipers over twelve consecutive summers" in two_column_markdown


def test_table_of_aligned_columns(appendix_markdown):
    rows = ["| " + " | ".join(row) + " |" for row in APPENDIX_TABLE]
    assert "\n".join([rows[0], "|---|---|---|---|"] + rows[1:]) in appendix_markdown


def test_appendix_after_the_references_is_kept(appendix_markdown):
    from common.chunking import chunk_markdown, clean_markdown
    cleaned = clean_markdown(appendix_markdown)
    assert "Harrow" not in cleaned and "Lindqvist" not in cleaned
    for heading, paragraphs in APPENDIX:
        assert "## " + heading in cleaned
        assert all(p in cleaned.strip().split("\n\n") for p in paragraphs)
    chunks = chunk_markdown(appendix_markdown, lambda t: len(t.split()), chunk_tokens=120, chunk_overlap=0)
    assert {(c.section, c.page) for c in chunks} >= {("Appendix A Survey Protocol", 1),
                                                     ("Appendix B Additional Results", 1),
                                                     ("Appendix B Additional Results", 2)}


REAL = FIXTURES / "real"


@pytest.fixture(scope="module")
def lme4_markdown():
    return convert_text_layer(REAL / "lme4_jss_pages_7-10.pdf")


def test_real_pages_table_with_wrapped_cells(lme4_markdown):
    assert "| Formula | Alternative | Meaning |\n|---|---|---|\n| (1 \\| g) | 1 + (1 \\| g) | Random intercept with " \
           "fixed mean. |" in lme4_markdown
    assert "| Λi | qi × qi | Term-wise relative covariance factor |" in lme4_markdown


def test_real_pages_code_headings_and_no_running_heads(lme4_markdown):
    assert "```\n> fm2 <- lmer(Reaction ~ Days + (Days || Subject), sleepstudy)\n```" in lme4_markdown
    assert "[1,] 1 . .\n[2,] 1 . .\n" in lme4_markdown
    assert "### 2.3. Algebraic and computational account of mixed-model formulas" in lme4_markdown
    assert "Linear Mixed Models with lme4" not in lme4_markdown and "Douglas Bates" not in lme4_markdown
    headings = re.findall(r"^#+ (.*)$", lme4_markdown, re.M)
    assert all(len(re.findall(r"[^\W\d_]", h)) >= 3 for h in headings)  # no math fragments as headings


def test_real_pages_paragraph_runs_on_past_a_footnote_and_a_page_break(lme4_markdown):
    assert ("the 0/1 values in the first column of Ji and similarly for the subsequent blocks"
            in " ".join(lme4_markdown.split()))
