import json
import os

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
    results = {r.pdf: r for r in convert_folder(pdf_dir, tmp_path / "md", converter="text", workers=2)}
    assert results["paper.pdf"].status == "converted"
    assert (tmp_path / "md" / "paper.md").read_text().startswith("<!-- page 1 -->")
    assert results["empty.pdf"].status == "failed" and results["readme.pdf"].status == "failed"
    report = json.loads((tmp_path / "md" / REPORT_NAME).read_text())
    assert {r["pdf"]: r["status"] for r in report} == {"empty.pdf": "failed", "paper.pdf": "converted",
                                                       "readme.pdf": "failed"}
    assert all(r["advice"] for r in report if r["status"] == "failed")


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
