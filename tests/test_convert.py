import json
import os
from pathlib import Path

import pytest

from common.convert import REPORT_NAME, choose_converter, convert_folder
from tests.conftest import SAMPLE_PDF


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


def test_auto_falls_back_to_text_when_marker_models_are_unreachable(capsys):
    # this machine (and CI) cannot reach marker's model servers
    assert choose_converter("auto") == "text"
    assert "text-layer converter" in capsys.readouterr().out


def test_an_interrupted_run_leaves_no_partial_file_and_the_next_converts_only_the_rest(tmp_path, monkeypatch):
    from common import convert
    fixtures = Path(__file__).resolve().parent / "fixtures"
    pdf_dir, md_dir = tmp_path / "pdf", tmp_path / "md"
    pdf_dir.mkdir()
    for name, source in zip("abc", (SAMPLE_PDF, fixtures / "two_column.pdf", fixtures / "appendix.pdf")):
        (pdf_dir / f"{name}.pdf").write_bytes(source.read_bytes())
    real, calls = convert.convert_text_layer, []

    def crash_on_the_second(path):
        calls.append(Path(path).name)
        if calls == ["a.pdf", "b.pdf"]:
            raise KeyboardInterrupt  # Ctrl-C, or the machine going down, in the middle of the folder
        return real(path)

    monkeypatch.setattr(convert, "convert_text_layer", crash_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        convert_folder(pdf_dir, md_dir, converter="text", workers=1)
    files = sorted(p.relative_to(md_dir).as_posix() for p in md_dir.rglob("*") if p.is_file())
    assert len(files) == 2 and "a.md" in files and files[0].startswith(".cache/")  # a.pdf whole, nothing else

    calls.clear()
    results = convert_folder(pdf_dir, md_dir, converter="text", workers=1)
    assert calls == ["b.pdf", "c.pdf"]
    assert [r.status for r in results] == ["cached", "converted", "converted"]


def test_a_crash_while_writing_leaves_no_temporary_file(tmp_path, monkeypatch):
    from common.convert import write_atomic
    write_atomic(tmp_path / "a.md", "old")
    def crash(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "a.md", "new")
    assert [p.name for p in tmp_path.iterdir()] == ["a.md"] and (tmp_path / "a.md").read_text() == "old"
