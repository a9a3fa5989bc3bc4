"""PDF -> markdown, the file-level side: whether a file is a readable PDF, the text-layer converter's
entry point (pdftext reads the characters, common/pdf_lines.py the lines, common/layout.py the markdown), and marker
where its models are reachable.
"""
import re
import socket
from pathlib import Path

PAGE_MARK = "<!-- page {} -->"
TEXT_CONVERTER_VERSION = 4  # bump when the text converter's output changes: cached conversions are redone
MIN_CHARS_PER_PAGE = 40  # below this on average, a PDF is taken as image-only (scanned)


class ConversionError(Exception):
    """A PDF that cannot be converted; `reason` and `advice` are shown to the user."""

    def __init__(self, reason, advice):
        super().__init__(f"{reason}: {advice}")
        self.reason, self.advice = reason, advice


def check_pdf_file(path):
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


def open_pdf(path):
    """pypdfium2 document, or a ConversionError saying whether it is encrypted or damaged."""
    import pypdfium2
    try:
        return pypdfium2.PdfDocument(str(path))
    except pypdfium2.PdfiumError as error:
        if "password" in str(error).lower():
            raise ConversionError("encrypted (password-protected)",
                                  "save an unprotected copy, e.g. `qpdf --decrypt in.pdf out.pdf`") from error
        raise ConversionError(f"corrupted or truncated PDF ({error})",
                              "download it again, or repair it with `qpdf in.pdf out.pdf`") from error


# ---------------------------------------------------------------- text-layer converter


def convert_text_layer(path):
    """Markdown of one PDF from its text layer; raises ConversionError for files it cannot read."""
    from pdftext.extraction import dictionary_output
    from .layout import pages_to_markdown  # here, not at the top: layout imports PAGE_MARK from this module
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
    text_chars = len(re.sub(r"<!-- page \d+ -->|\s", "", markdown))
    if text_chars < MIN_CHARS_PER_PAGE * n_pages:
        raise ConversionError("image-only PDF (no text layer)", "use --converter marker for OCR")
    return markdown


# ---------------------------------------------------------------- marker

MARKER_HOSTS = ("models.datalab.to", "huggingface.co")


def marker_available(timeout=2.0):
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


class MarkerConverter:
    """marker's real batch path: the models are loaded once and reused for every PDF."""

    def __init__(self):
        try:
            from marker.converters.pdf import PdfConverter
            from marker.models import create_model_dict
            self.converter = PdfConverter(artifact_dict=create_model_dict(),
                                          config={"paginate_output": True, "disable_image_extraction": True})
        except Exception as error:
            raise ConversionError(f"marker could not load its models ({type(error).__name__}: {error})",
                                  "check your network, or use --converter text") from error

    def __call__(self, path):
        from marker.output import text_from_rendered
        check_pdf_file(path)
        open_pdf(path).close()
        text, _, _ = text_from_rendered(self.converter(str(path)))
        # marker marks pages as "{N}------": turn them into our page comments
        return re.sub(r"^\{(\d+)\}-{20,}\s*$", lambda m: PAGE_MARK.format(int(m.group(1)) + 1),
                      text, flags=re.M)
