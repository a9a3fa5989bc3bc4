"""The lines of a PDF's text layer, rebuilt from pdftext's characters; common/pdf/layout.py makes markdown of them.

Each line is rebuilt from its characters: cells split at gaps wider than about an em, its dominant size,
bold or monospace by font name (or by weight against the body font where the name says nothing). Dropped
here: running heads and feet (text repeated at one height in the margin of several pages), page numbers,
rotated text (watermarks, margin stamps) and the line numbers of manuscripts. Lines that pdftext cut apart
on one baseline are joined, and footnotes are moved after the page's text. The entry point is page_blocks.
"""
import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

_PAGE_NUMBER = re.compile(r"^(page\s*)?\d+(\s*(of|/)\s*\d+)?$", re.I)
_BOLD_FONT = re.compile(r"bold|black|heavy|demi|semibd|extrabd|ultrabd|[-,_]bd\b|medi\b|"
                        r"^(cm|ec|sf|tc|eu)[a-z]*?(bx|sx|b)(ti|sl|it)?\d", re.I)
_SMALL_CAPS_FONT = re.compile(r"csc\d|smallcaps|-sc\b|caps\b", re.I)  # set apart like bold: headings
_SYMBOL_FONT = re.compile(r"^(cm(sy|mi|ex|bsy|mib)|ms(am|bm)|eu(sm|rm|ex)|stmary|wasy|rsfs|txsy|txmi|txex|rtxmi|rntxmi)|"
                          r"math|symbol|dingbat", re.I)
_STYLED_FONT = re.compile(r"regular|roman|roma\b|book|light|italic|ital\b|oblique|medium|-it\b|-r\b", re.I)
_MONO_FONT = re.compile(r"mono|courier|consol|typewriter|menlo|tt\d|t1xtt|txtt|^(cm|sf|ec|lm)[a-z]*tt", re.I)

Page = dict[str, Any]  # one page of pdftext's dictionary output (characters kept)


class Box(NamedTuple):
    """A rectangle on the page in points, y growing downwards (pdftext's bbox order)."""
    x0: float
    y0: float
    x1: float
    y1: float


class Cell(NamedTuple):
    """A run of a line's text, set apart from the next one by a gap wider than about an em."""
    text: str
    x0: float
    x1: float


@dataclass(slots=True)
class Line:
    """A line of text rebuilt from its characters: `size` the dominant one, `bold` and `mono` when nearly all
    its characters (bar those of math and symbol fonts) are; `block` says which pdftext block it came from:
    (page, block index), or ("footnote", that block, k) once footnotes_last has moved it."""
    text: str
    cells: list[Cell]
    bbox: Box
    size: float
    bold: bool
    mono: bool
    block: tuple = ()

    @property
    def in_footnote(self) -> bool:
        return self.block[0] == "footnote"


@dataclass(slots=True)
class Block:
    """The kept lines of one pdftext block and the box around them."""
    bbox: Box
    lines: list[Line]


class _Piece(NamedTuple):
    """A character (or a span, where pdftext kept no characters) of upright text."""
    text: str
    x0: float
    x1: float
    font: str
    size: float


@dataclass(slots=True)
class _CellDraft:
    """A cell while its characters are read: counts of the styled ones (not math or symbols), bold and mono."""
    text: str
    x0: float
    x1: float
    styled: int = 0
    bold: int = 0
    mono: int = 0


class _Numbered(NamedTuple):
    """A line whose first or last cell may be a manuscript's line number."""
    y: float
    number: int
    line: Line


def _font_name(font):
    return (font.get("name") or "").split("+")[-1]


class _Fonts:
    """Which fonts of one document are bold or monospace, judged by name and, for names that say
    nothing, by weight against the body font (pdfium's weights of Type 1 fonts are unreliable)."""

    def __init__(self, pages):
        weights, chars = {}, Counter()
        for page in pages:
            for block in page["blocks"]:
                for line in block["lines"]:
                    for span in line["spans"]:
                        key = _font_name(span["font"])
                        weights[key] = span["font"].get("weight") or 0
                        chars[key] += len(span["text"].strip())
        body = chars.most_common(1)[0][0] if chars else ""
        self.body_weight = weights.get(body, 400)
        self.bold, self.mono, self.symbol = {}, {}, {}
        for name, weight in weights.items():
            by_weight = not _STYLED_FONT.search(name) and weight >= max(550, self.body_weight + 150)
            self.bold[name] = bool(_BOLD_FONT.search(name) or _SMALL_CAPS_FONT.search(name)) or by_weight
            self.mono[name] = bool(_MONO_FONT.search(name))
            self.symbol[name] = bool(_SYMBOL_FONT.search(name))


def _page_rotation(page):
    counts = Counter()
    for block in page["blocks"]:
        for line in block["lines"]:
            for span in line["spans"]:
                counts[round(span.get("rotation") or 0, 2)] += len(span["text"])
    return counts.most_common(1)[0][0] if counts else 0


def _clean(text):
    from pdftext.postprocessing import handle_hyphens, postprocess_text
    return handle_hyphens(postprocess_text(text), keep_hyphens=True).replace("\n", "")


def _size(font_size, bbox):
    """The font size, or where the PDF scales text by its matrix and pdfium reports size 1, the height of the
    character's loose box (font ascent to descent: the same for every character of one font and size)."""
    return font_size if font_size >= 2 else round(bbox[3] - bbox[1], 1)


def _pieces(line, rotation):
    """The characters (or spans, without chars) of upright text of a pdftext line."""
    pieces = []
    for span in line["spans"]:
        if abs(round(span.get("rotation") or 0, 2) - rotation) > 0.02:
            continue  # rotated text: watermarks, margin stamps
        name, size = _font_name(span["font"]), span["font"]["size"] or 0
        if span.get("chars"):
            pieces += [_Piece(c["char"], c["bbox"][0], c["bbox"][2], name, _size(size, c["bbox"]))
                       for c in span["chars"]]
        else:
            pieces.append(_Piece(span["text"], span["bbox"][0], span["bbox"][2], name, _size(size, span["bbox"])))
    return pieces


def _make_line(line, rotation, fonts):
    """A pdftext line as a Line, its cells split at gaps wider than about an em; None for a line without
    upright text."""
    pieces = _pieces(line, rotation)
    sizes = Counter()
    cells, current, last_x1 = [], None, None
    for text, x0, x1, name, size in pieces:
        if not text.strip():
            if current is not None:
                current.text += text
            continue
        n = len(text)
        sizes[round(size, 1)] += n
        if current is None or x0 - last_x1 > 0.9 * max(size, 1):
            current = _CellDraft(text, x0, x1)
            cells.append(current)
            last_x1 = x1
        else:
            current.text += text
            current.x1 = max(current.x1, x1)
            last_x1 = max(last_x1, x1)
        if not fonts.symbol.get(name, False):  # math and symbol fonts do not decide a line's style
            current.styled += n
            current.bold += n * fonts.bold.get(name, False)
            current.mono += n * fonts.mono.get(name, False)
    total, bold = sum(cell.styled for cell in cells), sum(cell.bold for cell in cells)
    # a code listing's line number is often set in another font than its code
    code = cells[1:] if len(cells) > 1 and cells[0].text.strip().isdigit() else cells
    code_total, mono = sum(cell.styled for cell in code), sum(cell.mono for cell in code)
    cells = [Cell(re.sub(r"\s+", " ", _clean(cell.text)).strip(), cell.x0, cell.x1) for cell in cells]
    cells = [c for c in cells if c.text]
    if not cells:
        return None
    x0 = min(c.x0 for c in cells)
    x1 = max(c.x1 for c in cells)
    return Line(text=" ".join(c.text for c in cells), cells=cells, bbox=Box(x0, line["bbox"][1], x1, line["bbox"][3]),
                size=sizes.most_common(1)[0][0], bold=total > 0 and bold >= 0.9 * total,
                mono=code_total > 0 and mono >= 0.9 * code_total)


def _normalise_margin_text(text):
    return re.sub(r"\d+", "#", text.lower()).strip()


def _in_margin(line, height, share=0.12):
    return line.bbox.y1 < share * height or line.bbox.y0 > (1 - share) * height


def _running_lines(doc):
    """(normalised text, y) of lines repeated at the same height in the top or bottom margin of
    several pages: running heads and feet (odd and even pages may differ, so two or three suffice)."""
    where = {}
    for page_lines, height in doc:
        for line in page_lines:
            if _in_margin(line, height, 0.15):
                where.setdefault(_normalise_margin_text(line.text), []).append(line.bbox.y0)
    need = 2 if len(doc) <= 6 else 3
    running = {}
    for text, ys in where.items():
        if len(ys) < need:
            continue
        ys.sort()
        best = max(sum(1 for y in ys if abs(y - pivot) <= 3) for pivot in ys)
        if best >= need:
            running[text] = ys
    return running


def _is_furniture(line, height, running, page_lines=()):
    if _in_margin(line, height) and _PAGE_NUMBER.match(line.text):
        x0, y0, x1, y1 = line.bbox
        beside = any(other is not line and min(y1, other.bbox.y1) - max(y0, other.bbox.y0) > 0
                     and min(abs(other.bbox.x0 - x1), abs(x0 - other.bbox.x1)) < 12 for other in page_lines)
        return not beside  # a number beside text on its line is a footnote mark or a cell, not a page number
    ys = running.get(_normalise_margin_text(line.text))
    return bool(ys) and _in_margin(line, height, 0.15) and any(abs(line.bbox.y0 - y) <= 3 for y in ys)


def _strip_line_numbers(lines, width):
    """Drop the numbers of line-numbered manuscripts: integers in the side margin, one more each line."""
    for side in (0, -1):
        found = []
        for line in lines:
            if not line.cells:
                continue
            text, x0, x1 = line.cells[side]
            margin = x1 < 0.15 * width if side == 0 else x0 > 0.85 * width
            if margin and text.isdigit() and len(text) <= 5 and (len(line.cells) > 1 or line.size < 8):
                found.append(_Numbered(line.bbox.y0, int(text), line))
        found.sort(key=lambda f: f.y)
        steps = sum(b.number - a.number == 1 for a, b in zip(found, found[1:]))
        if len(found) >= 5 and steps >= 0.7 * (len(found) - 1):  # 1, 2, 3...: not a table of contents
            for entry in found:
                line = entry.line
                line.cells = line.cells[1:] if side == 0 else line.cells[:-1]
                line.text = " ".join(c.text for c in line.cells)
                if line.cells:
                    line.bbox = line.bbox._replace(x0=line.cells[0].x0, x1=line.cells[-1].x1)


def merge_split_lines(lines: list[Line], page_width: float) -> list[Line]:
    """Join consecutive lines that sit side by side on one baseline (a table row, an equation and its
    number, a superscript that pdftext put on a line of its own) into one line, left to right."""
    merged = []
    for line in lines:
        prev = merged[-1] if merged else None
        if prev is not None:
            (a0, b0, a1, b1), (c0, d0, c1, d1) = prev.bbox, line.bbox
            overlap = min(b1, d1) - max(b0, d0)
            apart = c0 >= a1 - 1 or c1 <= a0 + 1
            mid = page_width / 2
            across = min(a1, c1) <= mid + 2 and max(a0, c0) >= mid - 2  # one in each column
            near = prev.block == line.block or (min(abs(c0 - a1), abs(a0 - c1)) < 3 * line.size and not across)
            if apart and near and overlap > 0.5 * min(b1 - b0, d1 - d0):
                main = prev if len(prev.text) >= len(line.text) else line
                cells = sorted(prev.cells + line.cells, key=lambda c: c.x0)
                merged[-1] = replace(main, cells=cells, text=" ".join(c.text for c in cells),
                                     bbox=Box(min(a0, c0), min(b0, d0), max(a1, c1), max(b1, d1)), block=prev.block)
                continue
        merged.append(line)
    return merged


_FOOTNOTE_MARK = re.compile(r"^(\d{1,2}|[a-z]\)|[*∗†‡§¶?])(\s?\S|$)|^[a-z]$")


def footnotes_last(lines: list[Line], body_size: float, height: float) -> list[Line]:
    """Footnotes (small type at the foot of a column, each opening with its mark) moved after the
    page's text, so that a paragraph running on past them to the next column or page joins up again."""
    body = [line for line in lines if line.size >= 0.95 * body_size]

    def at_foot(line):
        x0, y0, x1, y1 = line.bbox
        return (line.size <= 0.88 * body_size and y0 > 0.5 * height and
                not any(b.bbox.y0 > y1 and b.bbox.x0 < x1 and x0 < b.bbox.x1 for b in body))

    text, notes, run = [], [], []
    for line in lines + [None]:
        if line is not None and at_foot(line) and (run or _FOOTNOTE_MARK.match(line.text)):
            run.append(line)
            continue
        for k, note in enumerate(run):
            if k == 0 or _FOOTNOTE_MARK.match(note.text) and note.bbox.x0 < run[0].bbox.x0 + 2:
                block = ("footnote", note.block, k)
            notes.append(replace(note, block=block))
        run = []
        if line is not None:
            if at_foot(line) and _FOOTNOTE_MARK.match(line.text):
                run.append(line)
            else:
                text.append(line)
    return text + notes


def _page_lines(page, fonts):
    """The lines of one page, block by block (a list of Lines for each pdftext block with text)."""
    rotation = _page_rotation(page)
    blocks = []
    for block in page["blocks"]:
        lines = [made for made in (_make_line(line, rotation, fonts) for line in block["lines"]) if made]
        if lines:
            blocks.append(lines)
    return blocks


def page_blocks(pages: list[Page]) -> list[list[Block]]:
    """For each page, its pdftext blocks as Blocks with the page furniture and line numbers gone; each line's
    `block` is (page, block index)."""
    fonts = _Fonts(pages)
    doc = []
    for page in pages:
        blocks = _page_lines(page, fonts)
        _strip_line_numbers([line for block in blocks for line in block], page["width"] or 612)
        doc.append((blocks, page["height"] or 792))
    running = _running_lines([([line for block in blocks for line in block], height) for blocks, height in doc])
    result = []
    for page, (blocks, height) in zip(pages, doc):
        kept = []
        page_lines = [line for block in blocks for line in block if line.cells]
        for number, block in enumerate(blocks):
            lines = [line for line in block if line.cells and not _is_furniture(line, height, running, page_lines)]
            for line in lines:
                line.block = (page["page"], number)
            if lines:
                kept.append(Block(Box(min(ln.bbox.x0 for ln in lines), min(ln.bbox.y0 for ln in lines),
                                      max(ln.bbox.x1 for ln in lines), max(ln.bbox.y1 for ln in lines)), lines))
        result.append(kept)
    return result
