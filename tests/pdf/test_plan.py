"""Which converter reads which page: plan_conversion for each combination of the facts, and the line that says so.

The facts (a CUDA GPU or not, marker's models reachable or not) are given, not measured: this machine has neither.
"""
import pytest

from common.pdf import ConversionError, plan_conversion, plan_line
from common.pdf import folder

WHY = "marker's models cannot be downloaded (models.datalab.to: no network)"


def _plan(no_text=(), pages=10, *, gpu=False, marker_ok=False, requested="auto"):
    return plan_conversion(no_text, pages, gpu=gpu, marker_ok=marker_ok, marker_why=WHY, requested=requested)


# (pages without a text layer, gpu, marker reachable) -> (converter, pages to marker's OCR, pages left out)
AUTO = [
    ((), False, False, ("text", (), ())),  # a laptop offline
    ((), False, True, ("text", (), ())),  # a laptop online: no model download for text pages
    ((), True, True, ("marker", (), ())),  # a GPU with marker at hand: marker earns its cost
    ((), True, False, ("text", (), ())),  # a GPU offline
    ((7, 9), False, True, ("text", (7, 9), ())),  # scanned pages of a text PDF: only they go to marker's OCR
    ((7, 9), False, False, ("text", (), (7, 9))),  # ... and where marker cannot run, they are named
    ((7, 9), True, True, ("marker", (), ())),
    ((7, 9), True, False, ("text", (), (7, 9))),
    (tuple(range(1, 11)), False, True, ("marker", (), ())),  # a scan: marker's OCR for the whole file
    (tuple(range(1, 11)), False, False, ("text", (), tuple(range(1, 11)))),  # fails as image-only (test_folder)
]


@pytest.mark.parametrize("no_text, gpu, marker_ok, expected", AUTO)
def test_auto_picks_per_machine_and_per_page(no_text, gpu, marker_ok, expected):
    plan = _plan(no_text, gpu=gpu, marker_ok=marker_ok)
    assert (plan.converter, plan.ocr_pages, plan.missing_pages) == expected
    assert plan.pages == 10 and plan.reasons


@pytest.mark.parametrize("gpu, marker_ok", [(False, False), (False, True), (True, True)])
def test_text_and_marker_when_asked_for(gpu, marker_ok):
    text = _plan((3,), gpu=gpu, marker_ok=marker_ok, requested="text")
    assert (text.converter, text.ocr_pages, text.missing_pages) == ("text", (), (3,))
    assert "--converter text" in text.reasons[0] and "no OCR" in text.reasons[1]
    marker = _plan((3,), gpu=gpu, marker_ok=True, requested="marker")
    assert (marker.converter, marker.ocr_pages, marker.missing_pages) == ("marker", (), ())


def test_the_reasons_say_why():
    assert "no CUDA GPU" in _plan().reasons[0] and "pages/s" in _plan().reasons[0]
    assert "CUDA GPU" in _plan(gpu=True, marker_ok=True).reasons[0]
    assert WHY in _plan(gpu=True).reasons[0]  # a GPU, but marker cannot run: why
    assert "OCR" in _plan((7,), marker_ok=True).reasons[1]
    assert " ".join(_plan((7,), gpu=True).reasons).count(WHY) == 1  # said once
    missing = _plan((7,)).reasons[1]
    assert WHY in missing and "left out" in missing


def test_one_line_says_which_converter_reads_how_many_pages_and_why():
    plans = [_plan(pages=7), _plan((3,), pages=4, marker_ok=True)]
    line = plan_line(plans, "auto")
    assert line.startswith("Converter (auto) for 11 pages of 2 PDFs: the text-layer converter for 10 pages, "
                           "marker's OCR for 1 page without a text layer; no CUDA GPU")
    assert line.count("no CUDA GPU") == 1 and "\n" not in line
    offline = plan_line([_plan(pages=7), _plan((3,), pages=4)], "auto")
    assert "the text-layer converter for 10 pages, 1 page without a text layer left out;" in offline and WHY in offline
    assert plan_line([_plan(pages=5, gpu=True, marker_ok=True)], "auto").startswith(
        "Converter (auto) for 5 pages of 1 PDF: marker for 5 pages; a CUDA GPU")


def _facts(monkeypatch, *, gpu, marker_ok):
    asked = []

    def gpu_available():
        asked.append("gpu")
        return gpu

    def marker_available():
        asked.append("marker")
        return marker_ok, "" if marker_ok else WHY

    monkeypatch.setattr(folder, "gpu_available", gpu_available)
    monkeypatch.setattr(folder, "marker_available", marker_available)
    return asked


def test_marker_hosts_are_asked_only_where_marker_could_run(monkeypatch):
    asked = _facts(monkeypatch, gpu=False, marker_ok=True)
    assert folder.machine_facts("text", any_without_text=True) == (False, False, "") and asked == []
    assert folder.machine_facts("auto", any_without_text=False) == (False, False, "") and asked == ["gpu"]
    asked.clear()
    assert folder.machine_facts("auto", any_without_text=True) == (False, True, "") and asked == ["gpu", "marker"]
    asked = _facts(monkeypatch, gpu=True, marker_ok=False)
    assert folder.machine_facts("auto", any_without_text=False) == (True, False, WHY)


def test_converter_marker_without_marker_stops_the_run_with_what_to_do(monkeypatch):
    _facts(monkeypatch, gpu=True, marker_ok=False)
    with pytest.raises(ConversionError) as info:
        folder.machine_facts("marker", any_without_text=False)
    assert WHY in info.value.reason and "--converter text" in info.value.advice
