import json
import os
from pathlib import Path

import pytest

from common.pdf import REPORT_NAME, convert_folder, marker_available, print_conversion_summary
from common.pdf import folder as folder_module
from tests.conftest import SAMPLE_PDF
from tests.fixtures.make_fixtures import SCANNED_TEXT_PAGES

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SCANNED = FIXTURES / "scanned_page.pdf"  # four pages, the third a scan (an image, no text layer)


def _folder(tmp_path):
    pdf_dir = tmp_path / "pdf"
    pdf_dir.mkdir()
    (pdf_dir / "paper.pdf").write_bytes(SAMPLE_PDF.read_bytes())
    return pdf_dir


def test_bad_files_are_reported_and_never_stop_the_others(tmp_path):
    pdf_dir = _folder(tmp_path)
    (pdf_dir / "empty.pdf").write_bytes(b"")
    (pdf_dir / "readme.pdf").write_text("not a pdf")
    (pdf_dir / "moved.pdf").symlink_to(tmp_path / "no-longer-here.pdf")
    (pdf_dir / "folder.pdf").mkdir()
    results = {r.pdf: r for r in convert_folder(pdf_dir, tmp_path / "md", converter="text", workers=2)}
    assert results["paper.pdf"].status == "converted"
    assert (tmp_path / "md" / "paper.md").read_text().startswith("<!-- page 1 -->")
    assert results["empty.pdf"].status == "failed" and results["readme.pdf"].status == "failed"
    assert results["moved.pdf"].status == "failed" and "cannot be read" in results["moved.pdf"].reason
    report = json.loads((tmp_path / "md" / REPORT_NAME).read_text())
    assert {r["pdf"]: r["status"] for r in report} == {"empty.pdf": "failed", "paper.pdf": "converted",
                                                       "readme.pdf": "failed", "moved.pdf": "failed"}
    assert all(r["advice"] for r in report if r["status"] == "failed")


def test_a_second_copy_of_a_paper_is_skipped_and_named_even_in_other_bytes(tmp_path, capsys):
    import io

    import pypdfium2
    pdf_dir = _folder(tmp_path)
    (pdf_dir / "paper (1).pdf").write_bytes(SAMPLE_PDF.read_bytes())  # the same file downloaded twice
    resaved = io.BytesIO()
    pypdfium2.PdfDocument(SAMPLE_PDF).save(resaved)  # the same paper in other bytes
    assert resaved.getvalue() != SAMPLE_PDF.read_bytes()
    (pdf_dir / "resaved.pdf").write_bytes(resaved.getvalue())
    results = {r.pdf: r for r in convert_folder(pdf_dir, tmp_path / "md", converter="text", workers=1)}
    assert results["paper.pdf"].status == "converted"  # the shortest name is the one used
    for copy in ("paper (1).pdf", "resaved.pdf"):
        assert results[copy].status == "duplicate" and results[copy].reason == "the same text as paper.pdf"
    assert not print_conversion_summary(results.values(), tmp_path / "md")  # not a failure: the paper is used once
    out = capsys.readouterr().out
    assert "SKIPPED paper (1).pdf: the same text as paper.pdf" in out and "2 duplicate" in out


def test_pdfs_in_subfolders_are_read_with_their_paths_and_hidden_folders_left_out(tmp_path):
    pdf_dir = tmp_path / "pdf"
    for place, pdf in (("topic/paper.pdf", SAMPLE_PDF), ("zotero/ABCD1234/paper.pdf", FIXTURES / "appendix.pdf"),
                       (".trash/old.pdf", SAMPLE_PDF)):
        (pdf_dir / place).parent.mkdir(parents=True, exist_ok=True)
        (pdf_dir / place).write_bytes(pdf.read_bytes())
    results = convert_folder(pdf_dir, tmp_path / "md", converter="text")
    assert [(r.pdf, r.status) for r in results] == [("topic/paper.pdf", "converted"),
                                                    ("zotero/ABCD1234/paper.pdf", "converted")]
    assert results[0].markdown == str(tmp_path / "md" / "topic" / "paper.md")  # two papers of one name both kept
    assert "Marrow" in (tmp_path / "md" / "topic" / "paper.md").read_text()
    assert "Marrow" not in (tmp_path / "md" / "zotero" / "ABCD1234" / "paper.md").read_text()


def test_a_file_name_that_is_not_utf8_is_shown_with_a_replacement_character(tmp_path):
    pdf_dir = tmp_path / "pdf"
    pdf_dir.mkdir()
    (pdf_dir / os.fsdecode(b"caf\xe9.pdf")).write_bytes(SAMPLE_PDF.read_bytes())
    [result] = convert_folder(pdf_dir, tmp_path / "md", converter="text")
    assert result.status == "converted" and result.pdf == "caf\ufffd.pdf"
    result.pdf.encode("utf-8")  # what the dataset's "source" column will hold


def test_unchanged_pdf_is_not_converted_again_even_after_a_rename(tmp_path):
    pdf_dir = _folder(tmp_path)
    md_dir = tmp_path / "md"
    assert convert_folder(pdf_dir, md_dir, converter="text")[0].status == "converted"
    assert convert_folder(pdf_dir, md_dir, converter="text")[0].status == "cached"
    os.rename(pdf_dir / "paper.pdf", pdf_dir / "renamed.pdf")
    result = convert_folder(pdf_dir, md_dir, converter="text")[0]
    assert result.status == "cached" and (md_dir / "renamed.md").exists()
    assert convert_folder(pdf_dir, md_dir, converter="text", force=True)[0].status == "converted"


def _machine(monkeypatch, *, gpu=False, marker_ok=False):
    """The facts the plan is made from, given: a CUDA GPU or not, marker's models reachable or not."""
    monkeypatch.setattr(folder_module, "gpu_available", lambda: gpu)
    monkeypatch.setattr(folder_module, "marker_available", lambda: (marker_ok, "" if marker_ok else "no network"))


def _mixed_folder(tmp_path):
    pdf_dir = _folder(tmp_path)
    (pdf_dir / "scanned_page.pdf").write_bytes(SCANNED.read_bytes())
    return pdf_dir


def test_on_a_laptop_auto_reads_text_layers_and_never_asks_for_marker(tmp_path, monkeypatch, capsys):
    _machine(monkeypatch)
    monkeypatch.setattr(folder_module, "marker_available", lambda: pytest.fail("marker's hosts were asked"))
    [result] = convert_folder(_folder(tmp_path), tmp_path / "md", converter="auto")
    assert result.status == "converted" and result.converter == "text"
    assert capsys.readouterr().out.startswith("Converter (auto) for 7 pages of 1 PDF: the text-layer converter for "
                                              "7 pages; no CUDA GPU")


def test_a_scanned_page_among_text_pages_is_named_and_the_others_converted(tmp_path, monkeypatch, capsys):
    _machine(monkeypatch)  # no GPU, marker out of reach
    md_dir = tmp_path / "md"
    results = {r.pdf: r for r in convert_folder(_mixed_folder(tmp_path), md_dir, converter="auto")}
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ("Converter (auto) for 11 pages of 2 PDFs: the text-layer converter for 10 pages, "
                                   "1 page without a text layer left out; no CUDA GPU, so the text layer wherever "
                                   "there is one (about 20 pages/s on the CPU; marker's models manage under 0.1 "
                                   "pages/s there); marker cannot OCR the pages without a text layer (no network): "
                                   "they are left out and named below.")
    mixed = results["scanned_page.pdf"]
    assert mixed.status == "converted" and mixed.pages_left_out == [3]
    assert mixed.reason == "page 3 has no text layer (scanned?)" and "OCR" in mixed.advice
    markdown = (md_dir / "scanned_page.md").read_text()
    for sections in SCANNED_TEXT_PAGES:  # pages 1, 2 and 4, whole
        for heading, paragraphs in sections:
            assert f"## {heading}" in markdown and all(p in markdown for p in paragraphs)
    assert "<!-- page 3 -->\n\n<!-- page 4 -->" in markdown
    report = {r["pdf"]: r for r in json.loads((md_dir / REPORT_NAME).read_text())}
    assert report["scanned_page.pdf"]["pages_left_out"] == [3] and report["paper.pdf"]["pages_left_out"] == []

    assert not print_conversion_summary(list(results.values()), md_dir)  # pages left out do not fail the run
    summary = capsys.readouterr().out
    assert ("PAGES LEFT OUT of scanned_page.pdf: page 3 has no text layer (scanned?); its other pages are "
            "converted. What to do: let marker OCR it") in summary
    assert "(2 converted, 0 unchanged, 0 failed, 1 with pages left out)" in summary

    again = {r.pdf: r.status for r in convert_folder(tmp_path / "pdf", md_dir, converter="auto")}
    assert again == {"paper.pdf": "cached", "scanned_page.pdf": "converted"}  # not cached: marker may fill it in


def test_with_marker_at_hand_only_the_scanned_page_goes_to_marker_and_its_failure_is_named(tmp_path, monkeypatch,
                                                                                           capsys):
    if marker_available()[0]:
        pytest.skip("marker's models are reachable here: this test is for a machine where they cannot load")
    _machine(monkeypatch, marker_ok=True)  # said to be reachable; the real marker then cannot load its models
    results = {r.pdf: r for r in convert_folder(_mixed_folder(tmp_path), tmp_path / "md", converter="auto")}
    out = capsys.readouterr().out
    assert "the text-layer converter for 10 pages, marker's OCR for 1 page without a text layer" in out.splitlines()[0]
    assert "Notice: marker " in out
    mixed = results["scanned_page.pdf"]
    assert mixed.status == "converted" and mixed.pages_left_out == [3] and mixed.converter == "text"
    assert mixed.reason.startswith("page 3 has no text layer (scanned?) and marker could not load its models")
    assert "## 4 Discussion" in (tmp_path / "md" / "scanned_page.md").read_text()
    assert results["paper.pdf"].status == "converted" and results["paper.pdf"].converter == "text"


def test_a_pdf_whose_every_page_is_a_scan_fails_as_image_only_where_marker_cannot_run(tmp_path, monkeypatch):
    import pypdfium2
    _machine(monkeypatch)
    pdf_dir = _folder(tmp_path)
    source, scan = pypdfium2.PdfDocument(str(SCANNED)), pypdfium2.PdfDocument.new()
    scan.import_pages(source, [2, 2])  # the scanned page, twice
    scan.save(str(pdf_dir / "scan.pdf"))
    results = {r.pdf: r for r in convert_folder(pdf_dir, tmp_path / "md", converter="auto")}
    assert results["scan.pdf"].status == "failed" and "image-only" in results["scan.pdf"].reason
    assert "OCR" in results["scan.pdf"].advice and results["paper.pdf"].status == "converted"


def test_converter_text_names_the_scanned_page_too(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_module, "marker_available", lambda: pytest.fail("marker's hosts were asked"))
    monkeypatch.setattr(folder_module, "gpu_available", lambda: pytest.fail("the GPU was asked"))
    results = {r.pdf: r for r in convert_folder(_mixed_folder(tmp_path), tmp_path / "md", converter="text")}
    assert results["scanned_page.pdf"].pages_left_out == [3]


def test_a_wrong_converter_name_says_which_are_allowed(tmp_path):
    from common.errors import SettingsError
    with pytest.raises(SettingsError, match="auto, marker or text"):
        convert_folder(_folder(tmp_path), tmp_path / "md", converter="ocr")


def test_an_interrupted_run_leaves_no_partial_file_and_the_next_converts_only_the_rest(tmp_path, monkeypatch):
    folder = folder_module
    pdf_dir, md_dir = tmp_path / "pdf", tmp_path / "md"
    pdf_dir.mkdir()
    for name, source in zip("abc", (SAMPLE_PDF, FIXTURES / "two_column.pdf", FIXTURES / "appendix.pdf")):
        (pdf_dir / f"{name}.pdf").write_bytes(source.read_bytes())
    real, calls = folder.convert_text_layer, []

    def crash_on_the_second(path):
        calls.append(Path(path).name)
        if calls == ["a.pdf", "b.pdf"]:
            raise KeyboardInterrupt  # Ctrl-C, or the machine going down, in the middle of the folder
        return real(path)

    monkeypatch.setattr(folder, "convert_text_layer", crash_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        convert_folder(pdf_dir, md_dir, converter="text", workers=1)
    files = sorted(p.relative_to(md_dir).as_posix() for p in md_dir.rglob("*") if p.is_file())
    assert len(files) == 2 and "a.md" in files and files[0].startswith(".cache/")  # a.pdf whole, nothing else

    calls.clear()
    results = convert_folder(pdf_dir, md_dir, converter="text", workers=1)
    assert calls == ["b.pdf", "c.pdf"]
    assert [r.status for r in results] == ["cached", "converted", "converted"]


def test_a_crash_while_writing_leaves_no_temporary_file(tmp_path, monkeypatch):
    from common.pdf import write_atomic
    write_atomic(tmp_path / "a.md", "old")
    def crash(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "a.md", "new")
    assert [p.name for p in tmp_path.iterdir()] == ["a.md"] and (tmp_path / "a.md").read_text() == "old"
