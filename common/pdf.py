"""PDF -> markdown. marker where its models are reachable, else a fast converter on the PDF's text layer.

The text-layer converter reads words, fonts and positions with pdftext (marker's own text layer) and
rebuilds, in reading order (two columns read left, then right): headings as `#` levels (by font size
and section numbers), paragraphs re-flowed across lines (a blank gap inside a block starts a new one),
hyphenation at line ends undone, running headers/footers and page numbers dropped, tables whose cells
sit in aligned columns as markdown tables. Pages are marked `<!-- page N -->` for provenance.
"""
import re
import socket
from collections import Counter
from pathlib import Path

PAGE_MARK = "<!-- page {} -->"
TEXT_CONVERTER_VERSION = 2  # bump when the text converter's output changes: cached conversions are redone
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

def _line_text(line):
    return "".join(span["text"] for span in line["spans"]).replace("\n", "").strip()


def _line_cells(line, gap):
    """Split a line into cells where the horizontal gap between spans is wider than `gap` points."""
    cells, last_x1 = [], None
    for span in line["spans"]:
        text = span["text"].replace("\n", "")
        if not text.strip():
            continue
        x0, x1 = span["bbox"][0], span["bbox"][2]
        if cells and x0 - last_x1 <= gap:
            cells[-1] += (" " if not cells[-1].endswith(" ") and not text.startswith(" ") else "") + text
        else:
            cells.append(text)
        last_x1 = x1
    return [c.strip() for c in cells]


def _font_size(line):
    sizes = [s["font"]["size"] for s in line["spans"] if s["text"].strip()]
    return max(sizes) if sizes else 0


def _is_bold(line):
    spans = [s for s in line["spans"] if s["text"].strip()]
    return bool(spans) and all("bold" in (s["font"]["name"] or "").lower() or (s["font"]["weight"] or 0) >= 600
                               for s in spans)


def _normalise_margin_text(text):
    return re.sub(r"\d+", "#", text.lower()).strip()


def _margin_lines(pages):
    """Texts (digits normalised) that repeat in the top or bottom margin of many pages: running heads."""
    counts = Counter()
    for page in pages:
        height = page["height"] or 792
        seen = set()
        for block in page["blocks"]:
            for line in block["lines"]:
                y0, y1 = line["bbox"][1], line["bbox"][3]
                if y1 < 0.1 * height or y0 > 0.9 * height:
                    seen.add(_normalise_margin_text(_line_text(line)))
        counts.update(seen)
    need = max(2, int(0.5 * len(pages)))
    return {text for text, n in counts.items() if n >= need and len(pages) >= 2}


_PAGE_NUMBER = re.compile(r"^(page\s*)?\d+(\s*(of|/)\s*\d+)?$", re.I)
_NUMBERED_HEADING = re.compile(r"^((\d+)(\.\d+)*)\.?\s+[A-Z]")
_EQUATION_NUMBER = re.compile(r"^\(\d+[a-z]?\)$")
_SECTION_NUMBER = re.compile(r"^\d+(\.\d+)*\.?$")
_CAPTION = re.compile(r"^(figure|fig\.|table)\s*\d+[:.]", re.I)
_ONLY_NUMBERS = re.compile(r"^[\d\s.,%()+\-]*$")


def _is_margin_artefact(line, page_height, running):
    text = _line_text(line)
    y0, y1 = line["bbox"][1], line["bbox"][3]
    in_margin = y1 < 0.1 * page_height or y0 > 0.9 * page_height
    return in_margin and (_PAGE_NUMBER.match(text) or _normalise_margin_text(text) in running)


def _heading_level(text, size, body_size, heading_sizes, bold):
    """0 for body text, else a markdown heading level."""
    if len(text) > 120 or text.endswith((".", ",", ";", ":")) and not _NUMBERED_HEADING.match(text):
        return 0
    larger = size > body_size * 1.08
    numbered = _NUMBERED_HEADING.match(text)
    if numbered and (bold or larger):
        return min(2 + numbered.group(1).count("."), 6)
    if larger:
        return min(1 + heading_sizes.index(size), 6) if size in heading_sizes else 2
    if bold and len(text.split()) <= 8 and text[:1].isupper():
        return 3 if text.lower() not in {"abstract", "references", "bibliography", "acknowledgements",
                                         "acknowledgments", "introduction", "conclusion", "conclusions"} else 2
    return 0


def reading_order(blocks, page_width):
    """Blocks top to bottom, but where text runs in two columns, the whole left column first.

    pdftext's sort=True orders by height alone, which interleaves the columns. Blocks that cross the
    middle of the page (title, abstract, wide tables) cut it into bands; a band with column-wide text
    on both sides is read left column, then right column.
    """
    mid, ordered, band = page_width / 2, [], []

    def close_band():
        wide = [b for b in band if b["bbox"][2] - b["bbox"][0] > 0.25 * page_width]
        two_columns = any(b["bbox"][2] <= mid for b in wide) and any(b["bbox"][0] >= mid for b in wide)
        ordered.extend(sorted(band, key=lambda b: (two_columns and (b["bbox"][0] + b["bbox"][2]) / 2 > mid,
                                                   round(b["bbox"][1] / 1.25), b["bbox"][0])))
        band.clear()

    for block in sorted(blocks, key=lambda b: (b["bbox"][1], b["bbox"][0])):
        if block["bbox"][0] < mid < block["bbox"][2]:
            close_band()
            ordered.append(block)
        else:
            band.append(block)
    close_band()
    return ordered


def _join_lines(lines):
    """Re-flow lines into one paragraph, undoing hyphenation at line ends."""
    text = ""
    for line in lines:
        if text.endswith("-") and line[:1].islower() and len(text) > 1 and text[-2].isalpha():
            text = text[:-1] + line
        else:
            text = f"{text} {line}" if text else line
    return re.sub(r"\s+", " ", text).strip()


def _table_markdown(rows):
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    cells = [[c.replace("|", "\\|") for c in r] for r in rows]
    out = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * width]
    out += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(out)


def pages_to_markdown(pages):
    """Markdown from pdftext's dictionary output (a list of pages)."""
    all_lines = [(line, page) for page in pages for block in page["blocks"] for line in block["lines"]]
    size_chars = Counter()
    for line, _ in all_lines:
        size_chars[round(_font_size(line), 1)] += len(_line_text(line))
    body_size = size_chars.most_common(1)[0][0] if size_chars else 10
    heading_sizes = sorted({s for s in size_chars if s > body_size * 1.08}, reverse=True)
    running = _margin_lines(pages)
    out = []
    for page in pages:
        out.append(PAGE_MARK.format(page["page"] + 1))
        height = page["height"] or 792
        for block in reading_order(page["blocks"], page["width"] or 612):
            paragraph, table, last_bottom = [], [], None

            def flush():
                if paragraph:
                    out.append(_join_lines(paragraph))
                    paragraph.clear()
                if len(table) >= 2:
                    out.append(_table_markdown(table))
                elif table:
                    out.append(" ".join(table[0]))
                table.clear()

            for line in block["lines"]:
                text = _line_text(line)
                if not text or _is_margin_artefact(line, height, running):
                    continue
                size = round(_font_size(line), 1)
                if paragraph and last_bottom is not None and line["bbox"][1] - last_bottom > 0.5 * size:
                    flush()  # a blank gap inside one pdftext block: a new paragraph
                last_bottom = line["bbox"][3]
                cells = _line_cells(line, gap=2.0 * max(size, 1))
                if len(cells) == 2 and _SECTION_NUMBER.match(cells[0]):
                    cells = [" ".join(cells)]  # "3   Methods": a heading with a wide gap after its number
                level = 0 if len(cells) >= 2 else _heading_level(text, size, body_size, heading_sizes,
                                                                 _is_bold(line))
                if level:
                    flush()
                    if out and out[-1].startswith("#") and out[-1].count("#") == level and len(out[-1]) < 200 \
                            and not _NUMBERED_HEADING.match(text):
                        out[-1] += " " + text  # a heading wrapped over two lines
                    else:
                        out.append("#" * level + " " + text)
                elif len(cells) == 2 and _EQUATION_NUMBER.match(cells[1]):
                    flush()
                    out.append(f"{cells[0]}    {cells[1]}")  # a numbered display equation
                elif len(cells) >= 2:
                    if paragraph:
                        flush()
                    table.append(cells)
                else:
                    if table or _CAPTION.match(text):
                        flush()
                    paragraph.append(text)
            flush()
    return "\n\n".join(_merge_broken_paragraphs(out)) + "\n"


def _is_paragraph(part):
    return not part.startswith(("#", "|", "<!--")) and not _EQUATION_NUMBER.search(part[-6:])


def _merge_broken_paragraphs(parts):
    """Join a paragraph that a block or page break cut in two; drop number-only fragments (plot labels)."""
    merged = []
    for part in parts:
        if _is_paragraph(part) and _ONLY_NUMBERS.match(part):
            continue
        starts_lower = part[:1].islower()
        if starts_lower and merged and _is_paragraph(merged[-1]) and not merged[-1].endswith((".", "?", "!", ":")):
            merged[-1] = _join_lines([merged[-1], part])
        elif (_is_paragraph(part) and len(merged) >= 2 and merged[-1].startswith("<!-- page")
              and _is_paragraph(merged[-2]) and not merged[-2].endswith((".", "?", "!", ":"))):
            merged[-2] = _join_lines([merged[-2], part])  # the page mark moves after the paragraph
        else:
            merged.append(part)
    return merged


def convert_text_layer(path):
    """Markdown of one PDF from its text layer; raises ConversionError for files it cannot read."""
    from pdftext.extraction import dictionary_output
    check_pdf_file(path)
    document = open_pdf(path)
    n_pages = len(document)
    document.close()
    if n_pages == 0:
        raise ConversionError("PDF with no pages", "download it again")
    try:
        pages = dictionary_output(str(path), sort=False, workers=None)
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
