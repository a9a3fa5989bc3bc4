"""Markdown rebuilt from a PDF's text layer: the lines that common/pdf/lines.py reads, in reading order.

In reading order (two columns read left, then right): headings as `#` levels (by font size, bold or
small-caps fonts, section numbers 1.2 / A.1 / Appendix B / II., ALL-CAPS titles that stand apart), the
title and, before the abstract, names and affiliations as plain text; paragraphs re-flowed across lines,
columns and pages (hyphenation at line ends undone); bullet lists as `- ` items; tables, whose cells are
told apart by the gaps between characters and the columns those gaps line up in, as markdown tables
(wrapped cells joined); monospace lines as fenced code with their indentation; numbered display
equations. The entries of a table of contents are dropped. Pages are marked `<!-- page N -->` for
provenance. The entry point is pages_to_markdown.
"""
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from .lines import Block, Cell, Page, footnotes_last, merge_split_lines, page_blocks

PAGE_MARK = "<!-- page {} -->"  # before each page's markdown, numbered from 1

_NUMBERED_HEADING = re.compile(r"^((\d+)(\.\d+)*|[A-Z](\.\d+)+|[A-Z](?=\.?\s+[A-Z])|[IVX]+(?=\.\s)|"
                               r"(?:Appendix|APPENDIX)\s+[A-Z0-9]+)[.:]?\s+\S")
_EQUATION_NUMBER = re.compile(r"^\(([A-Z]?\d+(\.\d+)*[a-z]?)\)$")
_ENDS_WITH_EQUATION_NUMBER = re.compile(r"\s{2,}\(([A-Z]?\d+(\.\d+)*[a-z]?)\)$")
_SECTION_NUMBER = re.compile(r"^(\d+(\.\d+)*|[A-Z](\.\d+)*)\.?$")
_CAPTION = re.compile(r"^(figure|fig\.|table|listing|algorithm)\s*[A-Z]?\d+[:.]", re.I)
_ONLY_NUMBERS = re.compile(r"^[\d\s.,%()+\-]*$")
_BULLET = re.compile(r"^[•◦▪▫▸▹‣∙●○■□►➢✓]\s*")
_FRONT_ANCHOR = re.compile(r"^(abstract|summary|contents|table of contents|introduction|keywords|key words)\b", re.I)
_SECTION_NAMES = {"abstract", "references", "bibliography", "acknowledgements", "acknowledgments", "introduction",
                  "conclusion", "conclusions", "appendix", "appendices", "summary", "discussion"}


def _is_justified_prose(cells):
    """A line of words that justification spread evenly (gaps alike, bar those after punctuation)."""
    if len(cells) < 4 or sum(bool(re.fullmatch(r"[^\W\d_][\w’'-]*[.,;:!?)]?|\(?[^\W\d_]+", c.text.split()[0]))
                             for c in cells) < 0.75 * len(cells):
        return False
    gaps = [b.x0 - a.x1 for a, b in zip(cells, cells[1:]) if not a.text.endswith((".", ",", ";", ":", "!", "?"))]
    return len(gaps) >= 2 and max(gaps) <= 1.3 * min(gaps)


def _heading_level(text, size, body_size, size_levels, bold, alone=False):
    """0 for body text, else a markdown heading level. `alone`: the line stands apart from the text
    around it, as the ALL-CAPS section titles of some journals set at body size do."""
    if len(text) > 150 or len(re.findall(r"[^\W\d_]", text)) < 3 or _CAPTION.match(text):
        return 0
    larger = size > body_size * 1.08
    if text.endswith((".", ",", ";") if larger else (".", ",", ";", ":")) and not _NUMBERED_HEADING.match(text):
        return 0
    numbered = _NUMBERED_HEADING.match(text)
    if numbered and re.fullmatch(r"[A-Z]", numbered.group(1)) and size_levels.get(size) == 1:
        numbered = None  # "A Simple Example of ..." in the title's size: a title, not appendix A
    title = text[numbered.end(1):].strip(" .:") if numbered else text
    caps = alone and title.isupper() and len(re.findall(r"[^\W\d_]", title)) >= 4 and len(title.split()) <= 8
    if numbered and (bold or larger or caps):
        number = numbered.group(1)
        if number.lower().startswith("appendix"):
            return 2
        return min(2 + number.count("."), 6)
    if larger:
        return size_levels.get(size, 2)
    if bold and len(text.split()) <= 10 and text[:1].isupper():
        return 2 if text.lower() in _SECTION_NAMES else 3
    if caps and title.lower() in _SECTION_NAMES:
        return 2
    return 0


def reading_order(blocks: list[Block], page_width: float) -> list[Block]:
    """Blocks top to bottom, but where text runs in two columns, the whole left column first.

    pdftext's sort=True orders by height alone, which interleaves the columns. Blocks that cross the
    middle of the page (title, abstract, wide tables) cut it into bands; a band with column-wide text
    on both sides is read left column, then right column.
    """
    mid, ordered, band = page_width / 2, [], []

    def close_band():
        wide = [b for b in band if b.bbox.x1 - b.bbox.x0 > 0.25 * page_width]
        two_columns = any(b.bbox.x1 <= mid for b in wide) and any(b.bbox.x0 >= mid for b in wide)
        ordered.extend(sorted(band, key=lambda b: (two_columns and (b.bbox.x0 + b.bbox.x1) / 2 > mid,
                                                   round(b.bbox.y0 / 1.25), b.bbox.x0)))
        band.clear()

    for block in sorted(blocks, key=lambda b: (b.bbox.y0, b.bbox.x0)):
        if block.bbox.x0 < mid - 2 and mid + 2 < block.bbox.x1:
            close_band()
            ordered.append(block)
        else:
            band.append(block)
    close_band()
    return ordered


def _join_lines(lines):
    """Re-flow lines into one paragraph, undoing hyphenation at line ends (a hyphen before a capital
    or a digit is kept: "Okafor-Hale", "3-540-52381-2")."""
    text = ""
    for line in lines:
        if text.endswith("-") and len(text) > 1 and text[-2].isalnum() and line[:1].isalnum():
            text = text[:-1] + line if line[:1].islower() and text[-2].isalpha() else text + line
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


def _is_equation(line):
    return len(line.cells) >= 2 and bool(_EQUATION_NUMBER.match(line.cells[-1].text))


class _Column(NamedTuple):
    """The x-interval of a table's column."""
    x0: float
    x1: float


def _columns(lines):
    """x-intervals of the columns that the cells of `lines` fill, split where no cell crosses."""
    spans = sorted((c.x0, c.x1) for line in lines for c in line.cells)
    columns = []
    for x0, x1 in spans:
        if columns and x0 <= columns[-1].x1 + 1:
            columns[-1] = columns[-1]._replace(x1=max(columns[-1].x1, x1))
        else:
            columns.append(_Column(x0, x1))
    return columns


def _column_of(columns, x0, x1):
    overlap = [min(x1, c.x1) - max(x0, c.x0) for c in columns]
    return max(range(len(columns)), key=lambda i: (overlap[i], -abs(columns[i].x0 - x0)))


class _Table(NamedTuple):
    """A table's rows (the text of each cell) and the index of the first line after it."""
    rows: list[list[str]]
    end: int


def _table_at(lines, i, body_size):
    """A _Table when a table of aligned cells starts at lines[i], else None.

    Lines with two or more cells (split at gaps of about an em) that fill the same columns, with the
    lines of a cell's wrapped text and the pieces of a row that pdftext cut apart joined in."""
    first = lines[i]
    if len(first.cells) < 2 or _is_equation(first) or first.mono or first.size > 1.08 * body_size \
            or first.in_footnote:
        return None
    region, j = [first], i + 1
    while j < len(lines):
        line, prev = lines[j], region[-1]
        gap = line.bbox.y0 - prev.bbox.y1
        if gap > 1.6 * max(line.size, 1) or gap < -3 * max(line.size, 1) or _is_equation(line) \
                or line.mono or _CAPTION.match(line.text) or line.size > 1.08 * body_size \
                or line.in_footnote:
            break
        region.append(line)
        j += 1
    multi = [line for line in region if len(line.cells) >= 2]
    if len(multi) < 2:
        return None
    columns = _columns(multi)
    if len(columns) < 2:
        return None
    rows, row_lines, end = [], [], i
    for k, line in enumerate(region):
        cols = [_column_of(columns, c.x0, c.x1) for c in line.cells]
        same_row = bool(row_lines) and line.bbox.y0 < row_lines[-1].bbox.y1 - 0.4 * line.size
        wrapped = bool(rows) and len(cols) == 1 and cols[0] > 0 and bool(rows[-1][0])
        if not same_row and not wrapped:
            if len(line.cells) < 2:
                break  # a line of text after the table
            rows.append([""] * len(columns))
            row_lines = []
        for col, cell in zip(cols, line.cells):
            rows[-1][col] = f"{rows[-1][col]} {cell.text}".strip()
        row_lines.append(line)
        end = i + k + 1
    if len(rows) < 2 or sum(len(r) - r.count("") for r in rows) < 2 * len(rows) * 0.6:
        return None
    texts = [c for r in rows for c in r if c]
    if sum(len(t) for t in texts) / len(texts) > 45:
        return None  # long runs of prose side by side: text columns, not a table
    return _Table(rows, end)


def _code_text(lines):
    """Monospace lines with their indentation and inner spacing rebuilt from the character grid."""
    widths = [(c.x1 - c.x0) / max(1, len(c.text)) for line in lines for c in line.cells if len(c.text) >= 3]
    width = sorted(widths)[len(widths) // 2] if widths else 6.0
    left = min(line.bbox.x0 for line in lines)
    out, last_bottom = [], None
    for line in lines:
        if last_bottom is not None and line.bbox.y0 - last_bottom > 0.8 * line.size:
            out.append("")
        text = ""
        for cell in line.cells:
            column = round((cell.x0 - left) / width)
            text += " " * max(1 if text else 0, column - len(text)) + cell.text
        out.append(text.rstrip())
        last_bottom = line.bbox.y1
    return "```\n" + "\n".join(out) + "\n```"


_DOT_LEADER = re.compile(r"(\.\s?){6,}\s*(\d+|[ivxlc]+)?$")
_PAGE_REF = re.compile(r"^(\d{1,4}|[ivxlc]{1,6})$")
_CONTENTS = re.compile(r"^((table of )?contents|list of (figures|tables))$", re.I)


def _same_style_run(lines, i):
    """The text of lines[i] and of the lines before and after it in its block set in the same size and weight."""
    def same(above, below):
        return (above.block == below.block and above.size == below.size and above.bold == below.bold
                and below.bbox.y0 - above.bbox.y1 < 0.8 * below.size)

    start, end = i, i + 1
    while start > 0 and same(lines[start - 1], lines[start]):
        start -= 1
    while end < len(lines) and same(lines[end - 1], lines[end]):
        end += 1
    return " ".join(line.text for line in lines[start:end])


def _escape(text):
    """Text that would read as markdown syntax (a heading, a table row, a fence) with a backslash first."""
    return "\\" + text if text.startswith(("#", "|", "```", "~~~", "<!--")) else text


@dataclass(slots=True)
class _TypeSpec:
    """The document's type sizes, and whether the lines being read are a table of contents."""
    body_size: float
    size_levels: dict[float, int]  # the heading level of each size larger than the body's
    toc: bool = False


@dataclass(slots=True)
class _Paragraph:
    """The lines of the paragraph being read, and whether it is a footnote."""
    lines: list[str] = field(default_factory=list)
    footnote: bool = False


def _page_items(lines, spec):
    """Markdown items (headings, paragraphs, list items, tables, code, equations) of one page's lines."""
    out, paragraph = [], _Paragraph()
    body_size, size_levels = spec.body_size, spec.size_levels

    def flush():
        if paragraph.lines:
            text = _join_lines(paragraph.lines)
            text = _escape(text)
            out.append(_NOTE + text if paragraph.footnote else text)
            paragraph.lines.clear()

    i, last, last_heading = 0, None, None
    while i < len(lines):
        line = lines[i]
        text, size = line.text, line.size
        new_block = last is None or line.block != last.block
        gap = None if last is None else line.bbox.y0 - last.bbox.y1
        if line.mono and (new_block or (gap is not None and gap > 0.3 * size) or (i + 1 < len(lines) and
                          lines[i + 1].mono and lines[i + 1].block == line.block)):
            j = i
            while j < len(lines) and lines[j].mono and (j == i or -size < lines[j].bbox.y0 -
                                                        lines[j - 1].bbox.y1 < 3 * size):
                j += 1
            flush()
            out.append(_code_text(lines[i:j]))
            last, last_heading, i = lines[j - 1], None, j
            continue
        if _DOT_LEADER.search(text) or (spec.toc and len(line.cells) >= 2 and _PAGE_REF.match(line.cells[-1].text)):
            last, last_heading, i = line, None, i + 1  # an entry of a table of contents
            continue
        if not line.in_footnote:
            spec.toc = False
        table = _table_at(lines, i, body_size)
        if table:
            flush()
            out.append(_table_markdown(table.rows))
            last, last_heading, i = lines[table.end - 1], None, table.end
            continue
        cells = line.cells
        after = lines[i + 1] if i + 1 < len(lines) else None
        alone = (new_block or gap is None or gap > 0.5 * size) and (
            after is None or after.block != line.block or after.bbox.y0 - line.bbox.y1 > 0.5 * size)
        level = 0 if len(cells) >= 2 else _heading_level(text, size, body_size, size_levels, line.bold, alone)
        if level and (line.bold or size > 1.08 * body_size) and len(_same_style_run(lines, i)) > 200:
            level = 0  # a paragraph set in bold or large type (an abstract), not a heading
        continued = (last_heading is not None and last is last_heading and len(cells) == 1 and len(text) < 120
                     and gap is not None and -0.5 * size < gap < 0.8 * size and size == last.size
                     and (line.bold == last.bold or size > 1.08 * body_size) and not _NUMBERED_HEADING.match(text)
                     and (line.bold or size > 1.08 * body_size or text.isupper())
                     and len(out[-1]) < 200)
        if paragraph.lines and (new_block or (gap is not None and gap > 0.5 * size)):
            flush()  # a new pdftext block, or a blank gap inside one: a new paragraph
        if continued:
            out[-1] += " " + text  # a heading wrapped over two lines
            last_heading = line
        elif level:
            flush()
            out.append("#" * level + " " + text)
            last_heading = line
            spec.toc = bool(_CONTENTS.match(text))
        elif _is_equation(line):
            flush()
            out.append(_escape(f"{' '.join(c.text for c in line.cells[:-1])}    {line.cells[-1].text}"))
            last_heading = None
        else:
            if _CAPTION.match(text) or _BULLET.match(text):
                flush()
            if _BULLET.match(text):
                text = "- " + _BULLET.sub("", text)
            if not paragraph.lines:
                paragraph.footnote = line.in_footnote
            paragraph.lines.append(text)
            last_heading = None
        last, i = line, i + 1
    flush()
    return out


def _type_sizes(doc):
    """The body text's size (the most common by characters) and the heading level of each larger size that sets
    a word at least (largest: 1; a large symbol in an equation does not count)."""
    size_chars, size_letters = Counter(), Counter()
    for blocks in doc:
        for block in blocks:
            for line in block.lines:
                size_chars[line.size] += len(line.text)
                size_letters[line.size] += sum(ch.isalpha() for ch in line.text)
    body_size = size_chars.most_common(1)[0][0] if size_chars else 10
    levels, level = {}, 0
    for size in sorted((s for s, n in size_letters.items() if s > body_size * 1.08 and n >= 4), reverse=True):
        if not levels or size < 0.96 * min(levels):  # sizes within 4% are one level (measured box heights vary)
            level += 1
        levels[size] = min(level, 6)
    return _TypeSpec(body_size, levels)


def _one_cell_where_no_table(line, body_size):
    """ "3   Methods" and "2. Evanescent vs.   conventional coupling" (headings) and justified prose are one
    cell, not a row of a table."""
    cells = line.cells
    set_apart = line.bold or line.size > 1.08 * body_size
    numbered_title = (set_apart and len(cells) <= 3 and _NUMBERED_HEADING.match(line.text)
                      and not any(_ONLY_NUMBERS.match(c.text) for c in cells[1:]))  # "1 Introduction  3": contents
    if len(cells) == 2 and _SECTION_NUMBER.match(cells[0].text) and set_apart or numbered_title \
            or _is_justified_prose(cells):
        line.cells = [Cell(line.text, cells[0].x0, cells[-1].x1)]


def pages_to_markdown(pages: list[Page]) -> str:
    """Markdown from pdftext's dictionary output (a list of pages; characters kept, for the gaps)."""
    doc = page_blocks(pages)
    spec = _type_sizes(doc)
    body_size = spec.body_size
    out = []
    for page, blocks in zip(pages, doc):
        width, height = page["width"] or 612, page["height"] or 792
        for block in blocks:
            for line in block.lines:
                _one_cell_where_no_table(line, body_size)
        out.append(PAGE_MARK.format(page["page"] + 1))
        ordered = [line for block in reading_order(blocks, width) for line in block.lines]
        out += _page_items(footnotes_last(merge_split_lines(ordered, width), body_size, height), spec)
    return "\n\n".join(_front_matter(_merge_broken_paragraphs(out))) + "\n"


def _front_matter(parts):
    """Before the abstract (or the first numbered section) of page 1, only the title is a heading:
    names and affiliations set in large or bold type become plain text. With no larger title, the
    first heading there becomes the `#` title."""
    anchor = None
    for k, part in enumerate(parts):
        if k and part.startswith("<!-- page"):
            break
        heading = re.match(r"^(#+) (.*)$", part)
        number = _NUMBERED_HEADING.match(heading.group(2)) if heading else None
        lettered = number and re.fullmatch(r"[A-Z]", number.group(1))  # "A Simple ...": a title, not a section
        if heading and (_FRONT_ANCHOR.match(heading.group(2)) or number and not lettered):
            anchor = k
            break
    if anchor is None:
        return parts
    headings = [k for k in range(anchor) if parts[k].startswith("#")]
    if not headings:
        return parts
    title = next((k for k in headings if parts[k].startswith("# ")), headings[0])
    parts = list(parts)
    for k in headings:
        text = parts[k].lstrip("#").strip()
        parts[k] = "# " + text if k == title else text
    return parts


def _is_paragraph(part):
    return not part.startswith(("#", "|", "<!--", "```", "- ")) and not _ENDS_WITH_EQUATION_NUMBER.search(part)


_NOTE = "\x01"  # marks a footnote's paragraph until _merge_broken_paragraphs is done


def _merge_broken_paragraphs(parts):
    """Join a paragraph that a column or page break cut in two (the page mark and any footnotes in
    between move after it); drop number-only fragments (plot labels)."""
    merged = []
    for part in parts:
        if _is_paragraph(part) and _ONLY_NUMBERS.match(part):
            continue
        k = len(merged) - 1
        while k >= 0 and merged[k].startswith(("<!-- page", _NOTE)):
            k -= 1
        crossed = k < len(merged) - 1  # a page break or footnotes lie between
        target = merged[k] if k >= 0 else ""
        if (_is_paragraph(part) and not part.startswith(_NOTE) and target and not target.endswith((".", "?", "!", ":"))
                and (_is_paragraph(target) or target.startswith("- ")) and (part[:1].islower() or crossed)):
            merged[k] = _join_lines([target, part])
        else:
            merged.append(part)
    return [part.lstrip(_NOTE) for part in merged]
