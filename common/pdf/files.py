"""PDF -> markdown, the file-level side: whether a file is a readable PDF, the text-layer converter's
entry point (pdftext reads the characters, common/pdf/lines.py the lines, common/pdf/layout.py the markdown), and
marker where its models are reachable.
"""
import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PipelineError
from .layout import PAGE_MARK, pages_to_markdown

if TYPE_CHECKING:
    import pypdfium2

TEXT_CONVERTER_VERSION = 4  # bump when the text converter's output changes: cached conversions are redone
MIN_CHARS_PER_PAGE = 40  # a page with fewer characters of text has no text layer (a scan, or blank)
NO_TEXT_ADVICE = ("let marker OCR it: run where marker's models are reachable (internet once; a CUDA GPU makes it "
                  "fast), or OCR the PDF first (e.g. `ocrmypdf in.pdf out.pdf`)")

PathLike = str | os.PathLike[str]


class ConversionError(PipelineError):
    """A PDF that cannot be converted; `reason` and `advice` are shown to the user."""

    def __init__(self, reason: str, advice: str):
        super().__init__(f"{reason}: {advice}")
        self.reason, self.advice = reason, advice


def check_pdf_file(path: PathLike) -> None:
    """Reject what is not a readable PDF before any parsing, with what to do about it."""
    path = Path(path)
    raw = path.read_bytes()
    data = raw[:1024]
    if not data:
        raise ConversionError("empty file (0 bytes)", "download it again or remove it from the folder")
    if b"%PDF-" not in data:
        kind = "text" if all(32 <= b < 127 or b in b"\r\n\t" for b in data[:256]) else "binary data"
        raise ConversionError(f"not a PDF (the file holds {kind})",
                              "export or download the real PDF, or move this file out of the folder")
    if b"%%EOF" not in raw[-2048:]:
        raise ConversionError("truncated PDF (it does not end with %%EOF: the download was cut short)",
                              "download it again")


def open_pdf(path: PathLike) -> "pypdfium2.PdfDocument":
    """pypdfium2 document, or a ConversionError saying whether it is encrypted or damaged."""
    import pypdfium2
    try:
        return pypdfium2.PdfDocument(str(path))
    except pypdfium2.PdfiumError as error:
        if "password" in str(error).lower():
            raise ConversionError("encrypted (password-protected)",
                                  "save an unprotected copy with its password, e.g. "
                                  "`qpdf --password=PASSWORD --decrypt in.pdf out.pdf`") from error
        raise ConversionError(f"corrupted or truncated PDF ({error})",
                              "download it again, or repair it with `qpdf in.pdf out.pdf`") from error


def pages_without_text(path: PathLike) -> tuple[list[int], int]:
    """(the numbers, from 1, of the pages with no text layer, the number of pages): a page without text is one
    with fewer than MIN_CHARS_PER_PAGE characters of text and an image, as a scan is (a blank page holds nothing
    to read). Raises ConversionError for what is not a readable PDF."""
    import pypdfium2.raw as pdfium_c
    check_pdf_file(path)
    document = open_pdf(path)
    try:
        scanned = []
        for number, page in enumerate(document, start=1):
            textpage = page.get_textpage()
            chars = len(re.sub(r"\s", "", textpage.get_text_range()))
            textpage.close()
            if chars < MIN_CHARS_PER_PAGE and any(page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,))):
                scanned.append(number)
            page.close()
        return scanned, len(document)
    finally:
        document.close()


def pages_phrase(pages: Sequence[int]) -> str:
    """'page 7 has' or 'pages 7, 9 have'."""
    return f"page {pages[0]} has" if len(pages) == 1 else f"pages {', '.join(map(str, pages))} have"


def gpu_available() -> bool:
    """Whether torch sees a CUDA GPU (False where torch is not installed)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# ---------------------------------------------------------------- text-layer converter


def convert_text_layer(path: PathLike) -> str:
    """Markdown of one PDF from its text layer; raises ConversionError for files it cannot read."""
    from pdftext.extraction import dictionary_output
    check_pdf_file(path)
    document = open_pdf(path)
    n_pages = len(document)
    document.close()
    if n_pages == 0:
        raise ConversionError("PDF with no pages", "download it again")
    try:
        pages = dictionary_output(str(path), sort=False, keep_chars=True, disable_links=True, workers=None)
    except Exception as error:  # pdfium errors inside pdftext: report, never stop the batch
        raise ConversionError(f"unreadable PDF ({type(error).__name__}: {error})",
                              "download it again, or repair it with `qpdf in.pdf out.pdf`") from error
    markdown = pages_to_markdown(pages)
    if max(page_text_chars(markdown).values(), default=0) < MIN_CHARS_PER_PAGE:
        raise ConversionError("image-only PDF (no page has a text layer)", NO_TEXT_ADVICE)
    return markdown


_PAGE_MARK = re.compile("^" + re.escape(PAGE_MARK).replace(r"\{\}", r"(\d+)") + "$", re.M)


def split_pages(markdown: str) -> dict[int, str]:
    """{page number: its markdown} of markdown marked with PAGE_MARK."""
    numbers = [int(n) for n in _PAGE_MARK.findall(markdown)]
    return dict(zip(numbers, (text.strip() for text in _PAGE_MARK.split(markdown)[2::2])))


def page_text_chars(markdown: str) -> dict[int, int]:
    """{page number: characters of text, spaces not counted} of markdown marked with PAGE_MARK."""
    return {number: len(re.sub(r"\s", "", text)) for number, text in split_pages(markdown).items()}


def splice_pages(markdown: str, pages: Mapping[int, str]) -> str:
    """`markdown` with the markdown of `pages` ({page number: its markdown}, from another converter) put in after
    the marks of those pages."""
    def put_in(match):
        extra = pages.get(int(match.group(1)), "").strip()
        return f"{match.group(0)}\n\n{extra}" if extra else match.group(0)
    return _PAGE_MARK.sub(put_in, markdown)


# ---------------------------------------------------------------- marker

MARKER_HOSTS = ("models.datalab.to", "huggingface.co")


def marker_available(timeout: float = 2.0) -> tuple[bool, str]:
    """(True, "") when marker is installed and its model servers answer; else (False, why)."""
    try:
        import marker  # noqa: F401
    except ImportError as error:
        return False, f"marker-pdf is not installed ({error})"
    for host in MARKER_HOSTS:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
        except OSError as error:
            return False, f"marker's models cannot be downloaded ({host}: {error})"
    return True, ""


def marker_models_note() -> str:
    """Where marker keeps its models, and whether this run downloads them."""
    try:
        from surya.settings import settings
        folder = Path(settings.MODEL_CACHE_DIR)
    except Exception:  # an older marker: its own messages say where
        return "marker loads its models (the first time it downloads them: several GB)"
    if folder.is_dir() and any(folder.iterdir()):
        return f"marker loads its models from {folder}"
    return f"marker downloads its models (several GB, once) into {folder}; the progress and size of each file follow"


class MarkerConverter:
    """marker's real batch path: the models are loaded once and reused for every PDF."""

    def __init__(self) -> None:
        try:
            from marker.converters.pdf import PdfConverter
            from marker.models import create_model_dict
            self.converter = PdfConverter(artifact_dict=create_model_dict(),
                                          config={"paginate_output": True, "disable_image_extraction": True})
        except Exception as error:
            raise ConversionError(f"marker could not load its models ({type(error).__name__}: {error})",
                                  "check your network, or use --converter text") from error

    def __call__(self, path: PathLike, *, pages: Sequence[int] | None = None) -> str:
        """Markdown of the PDF, or of those of its pages (numbered from 1) only, with our page marks."""
        from marker.output import text_from_rendered
        check_pdf_file(path)
        open_pdf(path).close()
        config = self.converter.config  # marker's PdfProvider reads page_range from it for each document
        config.pop("page_range", None)
        if pages is not None:
            config["page_range"] = [page - 1 for page in pages]
        text, _, _ = text_from_rendered(self.converter(str(path)))
        # marker marks pages as "{N}------" (N from 0, the page's index in the file): turn them into our page marks
        return re.sub(r"^\{(\d+)\}-{20,}\s*$", lambda m: PAGE_MARK.format(int(m.group(1)) + 1),
                      text, flags=re.M)
