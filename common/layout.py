"""Markdown rebuilt from a PDF's text layer (pdftext's characters, fonts and positions); common/pdf.py reads the file.

Each line is rebuilt from its characters: cells split at gaps wider than about an em, its dominant size,
bold or monospace by font name (or by weight against the body font where the name says nothing). Then,
in reading order (two columns read left, then right): headings as `#` levels (by font size, bold or
small-caps fonts, section numbers 1.2 / A.1 / Appendix B / II., ALL-CAPS titles that stand apart), the
title and, before the abstract, names and affiliations as plain text; paragraphs re-flowed across lines,
columns and pages (hyphenation at line ends undone; footnotes moved after the page's text so they do not
cut a paragraph); bullet lists as `- ` items; tables, whose cells are told apart by the gaps between
characters and the columns those gaps line up in, as markdown tables (wrapped cells joined); monospace
lines as fenced code with their indentation; numbered display equations. Dropped: running heads and feet
(text repeated at one height in the margin of several pages), page numbers, rotated text (watermarks,
margin stamps), the line numbers of manuscripts and the entries of a table of contents. Pages are marked
`<!-- page N -->` for provenance. The entry point is pages_to_markdown.
"""
import re
from collections import Counter

from .pdf import PAGE_MARK

_PAGE_NUMBER = re.compile(r"^(page\s*)?\d+(\s*(of|/)\s*\d+)?$", re.I)
_NUMBERED_HEADING = re.compile(r"^((\d+)(\.\d+)*|[A-Z](\.\d+)+|[A-Z](?=\.?\s+[A-Z])|[IVX]+(?=\.\s)|"
                               r"(?:Appendix|APPENDIX)\s+[A-Z0-9]+)[.:]?\s+\S")
_EQUATION_NUMBER = re.compile(r"^\(([A-Z]?\d+(\.\d+)*[a-z]?)\)$")
_ENDS_WITH_EQUATION_NUMBER = re.compile(r"\s{2,}\(([A-Z]?\d+(\.\d+)*[a-z]?)\)$")
_SECTION_NUMBER = re.compile(r"^(\d+(\.\d+)*|[A-Z](\.\d+)*)\.?$")
_CAPTION = re.compile(r"^(figure|fig\.|table|listing|algorithm)\s*[A-Z]?\d+[:.]", re.I)
_ONLY_NUMBERS = re.compile(r"^[\d\s.,%()+\-]*$")
_BULLET = re.compile(r"^[•◦▪▫▸▹‣∙●○■□►➢✓]\s*")
_FRONT_ANCHOR = re.compile(r"^(abstract|summary|contents|table of contents|introduction|keywords|key words)\b", re.I)
_BOLD_FONT = re.compile(r"bold|black|heavy|demi|semibd|extrabd|ultrabd|[-,_]bd\b|medi\b|"
                        r"^(cm|ec|sf|tc|eu)[a-z]*?(bx|sx|b)(ti|sl|it)?\d", re.I)
_SMALL_CAPS_FONT = re.compile(r"csc\d|smallcaps|-sc\b|caps\b", re.I)  # set apart like bold: headings
_SYMBOL_FONT = re.compile(r"^(cm(sy|mi|ex|bsy|mib)|ms(am|bm)|eu(sm|rm|ex)|stmary|wasy|rsfs|txsy|txmi|txex|rtxmi|rntxmi)|"
                          r"math|symbol|dingbat", re.I)
_STYLED_FONT = re.compile(r"regular|roman|roma\b|book|light|italic|ital\b|oblique|medium|-it\b|-r\b", re.I)
_MONO_FONT = re.compile(r"mono|courier|consol|typewriter|menlo|tt\d|t1xtt|txtt|^(cm|sf|ec|lm)[a-z]*tt", re.I)


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


def _pieces(line, rotation):
    """(text, x0, x1, font name, size) of each character (or span, without chars) of upright text."""
    pieces = []
    for span in line["spans"]:
        if abs(round(span.get("rotation") or 0, 2) - rotation) > 0.02:
            continue  # rotated text: watermarks, margin stamps
        name, size = _font_name(span["font"]), span["font"]["size"] or 0
        if span.get("chars"):
            pieces += [(c["char"], c["bbox"][0], c["bbox"][2], name, size) for c in span["chars"]]
        else:
            pieces.append((span["text"], span["bbox"][0], span["bbox"][2], name, size))
    return pieces


def _make_line(line, rotation, fonts):
    """A line as a dict: text, cells [(text, x0, x1)] split at gaps wider than about an em, bbox,
    dominant size, bold, mono; None for a line without upright text."""
    pieces = _pieces(line, rotation)
    sizes, bold, mono, total = Counter(), 0, 0, 0
    cells, current, last_x1 = [], None, None
    for text, x0, x1, name, size in pieces:
        if not text.strip():
            if current is not None:
                current[0] += text
            continue
        n = len(text)
        sizes[round(size, 1)] += n
        if not fonts.symbol.get(name, False):  # math and symbol fonts do not decide a line's style
            total += n
            bold += n * fonts.bold.get(name, False)
            mono += n * fonts.mono.get(name, False)
        if current is None or x0 - last_x1 > 0.9 * max(size, 1):
            current = [text, x0, x1]
            cells.append(current)
            last_x1 = x1
        else:
            current[0] += text
            current[2] = max(current[2], x1)
            last_x1 = max(last_x1, x1)
    cells = [(re.sub(r"\s+", " ", _clean(t)).strip(), a, b) for t, a, b in cells]
    cells = [c for c in cells if c[0]]
    if not cells:
        return None
    x0 = min(c[1] for c in cells)
    x1 = max(c[2] for c in cells)
    return {"text": " ".join(c[0] for c in cells), "cells": cells,
            "bbox": [x0, line["bbox"][1], x1, line["bbox"][3]],
            "size": sizes.most_common(1)[0][0], "bold": total > 0 and bold >= 0.9 * total,
            "mono": total > 0 and mono >= 0.9 * total}


def _normalise_margin_text(text):
    return re.sub(r"\d+", "#", text.lower()).strip()


def _in_margin(line, height, share=0.12):
    return line["bbox"][3] < share * height or line["bbox"][1] > (1 - share) * height


def _running_lines(doc):
    """(normalised text, y) of lines repeated at the same height in the top or bottom margin of
    several pages: running heads and feet (odd and even pages may differ, so two or three suffice)."""
    where = {}
    for page_lines, height in doc:
        for line in page_lines:
            if _in_margin(line, height, 0.15):
                where.setdefault(_normalise_margin_text(line["text"]), []).append(line["bbox"][1])
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
    if _in_margin(line, height) and _PAGE_NUMBER.match(line["text"]):
        x0, y0, x1, y1 = line["bbox"]
        beside = any(other is not line and min(y1, other["bbox"][3]) - max(y0, other["bbox"][1]) > 0
                     and min(abs(other["bbox"][0] - x1), abs(x0 - other["bbox"][2])) < 12 for other in page_lines)
        return not beside  # a number beside text on its line is a footnote mark or a cell, not a page number
    ys = running.get(_normalise_margin_text(line["text"]))
    return bool(ys) and _in_margin(line, height, 0.15) and any(abs(line["bbox"][1] - y) <= 3 for y in ys)


def _strip_line_numbers(lines, width):
    """Drop the numbers of line-numbered manuscripts: integers in the side margin, one more each line."""
    for side in (0, -1):
        found = []
        for line in lines:
            if not line["cells"]:
                continue
            text, x0, x1 = line["cells"][side]
            margin = x1 < 0.15 * width if side == 0 else x0 > 0.85 * width
            if margin and text.isdigit() and len(text) <= 5 and (len(line["cells"]) > 1 or line["size"] < 8):
                found.append((line["bbox"][1], int(text), line))
        found.sort(key=lambda f: f[0])
        steps = sum(b[1] - a[1] == 1 for a, b in zip(found, found[1:]))
        if len(found) >= 5 and steps >= 0.7 * (len(found) - 1):  # 1, 2, 3...: not a table of contents
            for _, _, line in found:
                line["cells"] = line["cells"][1:] if side == 0 else line["cells"][:-1]
                line["text"] = " ".join(c[0] for c in line["cells"])
                if line["cells"]:
                    line["bbox"][0], line["bbox"][2] = line["cells"][0][1], line["cells"][-1][2]


_SECTION_NAMES = {"abstract", "references", "bibliography", "acknowledgements", "acknowledgments", "introduction",
                  "conclusion", "conclusions", "appendix", "appendices", "summary", "discussion"}


def _is_justified_prose(cells):
    """A line of words that justification spread evenly (gaps alike, bar those after punctuation)."""
    if len(cells) < 4 or sum(bool(re.fullmatch(r"[^\W\d_][\w’'-]*[.,;:!?)]?|\(?[^\W\d_]+", c[0].split()[0]))
                             for c in cells) < 0.75 * len(cells):
        return False
    gaps = [b[1] - a[2] for a, b in zip(cells, cells[1:]) if not a[0].endswith((".", ",", ";", ":", "!", "?"))]
    return len(gaps) >= 2 and max(gaps) <= 1.3 * min(gaps)


def _heading_level(text, size, body_size, heading_sizes, bold, alone=False):
    """0 for body text, else a markdown heading level. `alone`: the line stands apart from the text
    around it, as the ALL-CAPS section titles of some journals set at body size do."""
    if len(text) > 150 or len(re.findall(r"[^\W\d_]", text)) < 3 or _CAPTION.match(text):
        return 0
    larger = size > body_size * 1.08
    if text.endswith((".", ",", ";") if larger else (".", ",", ";", ":")) and not _NUMBERED_HEADING.match(text):
        return 0
    numbered = _NUMBERED_HEADING.match(text)
    title = text[numbered.end(1):].strip(" .:") if numbered else text
    caps = alone and title.isupper() and len(re.findall(r"[^\W\d_]", title)) >= 4 and len(title.split()) <= 8
    if numbered and (bold or larger or caps):
        number = numbered.group(1)
        if number.lower().startswith("appendix"):
            return 2
        return min(2 + number.count("."), 6)
    if larger:
        return min(1 + heading_sizes.index(size), 6) if size in heading_sizes else 2
    if bold and len(text.split()) <= 10 and text[:1].isupper():
        return 2 if text.lower() in _SECTION_NAMES else 3
    if caps and title.lower() in _SECTION_NAMES:
        return 2
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
        if block["bbox"][0] < mid - 2 and mid + 2 < block["bbox"][2]:
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
    return len(line["cells"]) >= 2 and bool(_EQUATION_NUMBER.match(line["cells"][-1][0]))


def _columns(lines):
    """x-intervals of the columns that the cells of `lines` fill, split where no cell crosses."""
    spans = sorted((c[1], c[2]) for line in lines for c in line["cells"])
    columns = []
    for x0, x1 in spans:
        if columns and x0 <= columns[-1][1] + 1:
            columns[-1][1] = max(columns[-1][1], x1)
        else:
            columns.append([x0, x1])
    return columns


def _column_of(columns, x0, x1):
    overlap = [min(x1, c[1]) - max(x0, c[0]) for c in columns]
    return max(range(len(columns)), key=lambda i: (overlap[i], -abs(columns[i][0] - x0)))


def _table_at(lines, i, body_size):
    """(rows, end) when a table of aligned cells starts at lines[i], else None.

    Lines with two or more cells (split at gaps of about an em) that fill the same columns, with the
    lines of a cell's wrapped text and the pieces of a row that pdftext cut apart joined in."""
    first = lines[i]
    if len(first["cells"]) < 2 or _is_equation(first) or first["mono"] or first["size"] > 1.08 * body_size \
            or first["block"][0] == "footnote":
        return None
    region, j = [first], i + 1
    while j < len(lines):
        line, prev = lines[j], region[-1]
        gap = line["bbox"][1] - prev["bbox"][3]
        if gap > 1.6 * max(line["size"], 1) or gap < -3 * max(line["size"], 1) or _is_equation(line) \
                or line["mono"] or _CAPTION.match(line["text"]) or line["size"] > 1.08 * body_size \
                or line["block"][0] == "footnote":
            break
        region.append(line)
        j += 1
    multi = [line for line in region if len(line["cells"]) >= 2]
    if len(multi) < 2:
        return None
    columns = _columns(multi)
    if len(columns) < 2:
        return None
    rows, row_lines, end = [], [], i
    for k, line in enumerate(region):
        cols = [_column_of(columns, c[1], c[2]) for c in line["cells"]]
        same_row = bool(row_lines) and line["bbox"][1] < row_lines[-1]["bbox"][3] - 0.4 * line["size"]
        wrapped = bool(rows) and len(cols) == 1 and cols[0] > 0 and bool(rows[-1][0])
        if not same_row and not wrapped:
            if len(line["cells"]) < 2:
                break  # a line of text after the table
            rows.append([""] * len(columns))
            row_lines = []
        for col, cell in zip(cols, line["cells"]):
            rows[-1][col] = f"{rows[-1][col]} {cell[0]}".strip()
        row_lines.append(line)
        end = i + k + 1
    if len(rows) < 2 or sum(len(r) - r.count("") for r in rows) < 2 * len(rows) * 0.6:
        return None
    texts = [c for r in rows for c in r if c]
    if sum(len(t) for t in texts) / len(texts) > 45:
        return None  # long runs of prose side by side: text columns, not a table
    return rows, end


def _code_text(lines):
    """Monospace lines with their indentation and inner spacing rebuilt from the character grid."""
    widths = [(c[2] - c[1]) / max(1, len(c[0])) for line in lines for c in line["cells"] if len(c[0]) >= 3]
    width = sorted(widths)[len(widths) // 2] if widths else 6.0
    left = min(line["bbox"][0] for line in lines)
    out, last_bottom = [], None
    for line in lines:
        if last_bottom is not None and line["bbox"][1] - last_bottom > 0.8 * line["size"]:
            out.append("")
        text = ""
        for cell, x0, _ in line["cells"]:
            column = round((x0 - left) / width)
            text += " " * max(1 if text else 0, column - len(text)) + cell
        out.append(text.rstrip())
        last_bottom = line["bbox"][3]
    return "```\n" + "\n".join(out) + "\n```"


_DOT_LEADER = re.compile(r"(\.\s?){6,}\s*(\d+|[ivxlc]+)?$")
_PAGE_REF = re.compile(r"^(\d{1,4}|[ivxlc]{1,6})$")
_CONTENTS = re.compile(r"^((table of )?contents|list of (figures|tables))$", re.I)


def _same_style_run(lines, i):
    """The text of lines[i] and the lines after it in its block set in the same size and weight."""
    text, k = lines[i]["text"], i + 1
    while (k < len(lines) and lines[k]["block"] == lines[i]["block"] and lines[k]["size"] == lines[i]["size"]
           and lines[k]["bold"] == lines[i]["bold"] and lines[k]["bbox"][1] - lines[k - 1]["bbox"][3] < 0.8 * lines[k]["size"]):
        text += " " + lines[k]["text"]
        k += 1
    return text


def _escape(text):
    """Text that would read as markdown syntax (a heading, a table row, a fence) with a backslash first."""
    return "\\" + text if text.startswith(("#", "|", "```", "~~~", "<!--")) else text


def _page_items(lines, spec):
    """Markdown items (headings, paragraphs, list items, tables, code, equations) of one page's lines."""
    out, paragraph = [], []
    body_size, heading_sizes = spec["body_size"], spec["heading_sizes"]

    note = [False]  # whether the paragraph being read is a footnote

    def flush():
        if paragraph:
            text = _join_lines(paragraph)
            text = _escape(text)
            out.append(_NOTE + text if note[0] else text)
            paragraph.clear()

    i, last, last_heading = 0, None, None
    while i < len(lines):
        line = lines[i]
        text, size = line["text"], line["size"]
        new_block = last is None or line["block"] != last["block"]
        gap = None if last is None else line["bbox"][1] - last["bbox"][3]
        if line["mono"] and (new_block or (gap is not None and gap > 0.3 * size) or (i + 1 < len(lines) and
                             lines[i + 1]["mono"] and lines[i + 1]["block"] == line["block"])):
            j = i
            while j < len(lines) and lines[j]["mono"] and (j == i or -size < lines[j]["bbox"][1] -
                                                           lines[j - 1]["bbox"][3] < 3 * size):
                j += 1
            flush()
            out.append(_code_text(lines[i:j]))
            last, last_heading, i = lines[j - 1], None, j
            continue
        if _DOT_LEADER.search(text) or (spec.get("toc") and len(line["cells"]) >= 2 and
                                         _PAGE_REF.match(line["cells"][-1][0])):
            last, last_heading, i = line, None, i + 1  # an entry of a table of contents
            continue
        if line["block"][0] != "footnote":
            spec["toc"] = False
        table = _table_at(lines, i, body_size)
        if table:
            flush()
            out.append(_table_markdown(table[0]))
            last, last_heading, i = lines[table[1] - 1], None, table[1]
            continue
        cells = line["cells"]
        after = lines[i + 1] if i + 1 < len(lines) else None
        alone = (new_block or gap is None or gap > 0.5 * size) and (
            after is None or after["block"] != line["block"] or after["bbox"][1] - line["bbox"][3] > 0.5 * size)
        level = 0 if len(cells) >= 2 else _heading_level(text, size, body_size, heading_sizes, line["bold"], alone)
        if level and (line["bold"] or size > 1.08 * body_size) and len(_same_style_run(lines, i)) > 200:
            level = 0  # a paragraph set in bold or large type (an abstract), not a heading
        continued = (last_heading is not None and last is last_heading and len(cells) == 1 and len(text) < 120
                     and gap is not None and -0.5 * size < gap < 0.8 * size and size == last["size"]
                     and line["bold"] == last["bold"] and not _NUMBERED_HEADING.match(text)
                     and (line["bold"] or size > 1.08 * body_size or text.isupper())
                     and len(out[-1]) < 200)
        if paragraph and (new_block or (gap is not None and gap > 0.5 * size)):
            flush()  # a new pdftext block, or a blank gap inside one: a new paragraph
        if continued:
            out[-1] += " " + text  # a heading wrapped over two lines
            last_heading = line
        elif level:
            flush()
            out.append("#" * level + " " + text)
            last_heading = line
            spec["toc"] = bool(_CONTENTS.match(text))
        elif _is_equation(line):
            flush()
            out.append(_escape(f"{' '.join(c[0] for c in line['cells'][:-1])}    {line['cells'][-1][0]}"))
            last_heading = None
        else:
            if _CAPTION.match(text) or _BULLET.match(text):
                flush()
            if _BULLET.match(text):
                text = "- " + _BULLET.sub("", text)
            if not paragraph:
                note[0] = line["block"][0] == "footnote"
            paragraph.append(text)
            last_heading = None
        last, i = line, i + 1
    flush()
    return out


def _merge_split_lines(lines, page_width):
    """Join consecutive lines that sit side by side on one baseline (a table row, an equation and its
    number, a superscript that pdftext put on a line of its own) into one line, left to right."""
    merged = []
    for line in lines:
        prev = merged[-1] if merged else None
        if prev is not None:
            (a0, b0, a1, b1), (c0, d0, c1, d1) = prev["bbox"], line["bbox"]
            overlap = min(b1, d1) - max(b0, d0)
            apart = c0 >= a1 - 1 or c1 <= a0 + 1
            mid = page_width / 2
            across = min(a1, c1) <= mid + 2 and max(a0, c0) >= mid - 2  # one in each column
            near = prev["block"] == line["block"] or (min(abs(c0 - a1), abs(a0 - c1)) < 3 * line["size"]
                                                      and not across)
            if apart and near and overlap > 0.5 * min(b1 - b0, d1 - d0):
                main = prev if len(prev["text"]) >= len(line["text"]) else line
                cells = sorted(prev["cells"] + line["cells"], key=lambda c: c[1])
                merged[-1] = {**main, "cells": cells, "text": " ".join(c[0] for c in cells),
                              "bbox": [min(a0, c0), min(b0, d0), max(a1, c1), max(b1, d1)], "block": prev["block"]}
                continue
        merged.append(line)
    return merged


_FOOTNOTE_MARK = re.compile(r"^(\d{1,2}|[a-z]\)|[*∗†‡§¶?])(\s?\S|$)|^[a-z]$")


def _footnotes_last(lines, body_size, height):
    """Footnotes (small type at the foot of a column, each opening with its mark) moved after the
    page's text, so that a paragraph running on past them to the next column or page joins up again."""
    body = [line for line in lines if line["size"] >= 0.95 * body_size]

    def at_foot(line):
        x0, y0, x1, y1 = line["bbox"]
        return (line["size"] <= 0.88 * body_size and y0 > 0.5 * height and
                not any(b["bbox"][1] > y1 and b["bbox"][0] < x1 and x0 < b["bbox"][2] for b in body))

    text, notes, run = [], [], []
    for line in lines + [None]:
        if line is not None and at_foot(line) and (run or _FOOTNOTE_MARK.match(line["text"])):
            run.append(line)
            continue
        for k, note in enumerate(run):
            if k == 0 or _FOOTNOTE_MARK.match(note["text"]) and note["bbox"][0] < run[0]["bbox"][0] + 2:
                block = ("footnote", note["block"], k)
            notes.append({**note, "block": block})
        run = []
        if line is not None:
            if at_foot(line) and _FOOTNOTE_MARK.match(line["text"]):
                run.append(line)
            else:
                text.append(line)
    return text + notes


def _page_lines(page, fonts):
    """The lines of one page as dicts, each with the index of its pdftext block."""
    rotation = _page_rotation(page)
    blocks = []
    for block in page["blocks"]:
        lines = [made for made in (_make_line(line, rotation, fonts) for line in block["lines"]) if made]
        if lines:
            blocks.append(lines)
    return blocks


def pages_to_markdown(pages):
    """Markdown from pdftext's dictionary output (a list of pages; characters kept, for the gaps)."""
    fonts = _Fonts(pages)
    doc = []
    for page in pages:
        blocks = _page_lines(page, fonts)
        flat = [line for block in blocks for line in block]
        _strip_line_numbers(flat, page["width"] or 612)
        doc.append((blocks, page["height"] or 792))
    size_chars = Counter()
    for blocks, _ in doc:
        for block in blocks:
            for line in block:
                size_chars[line["size"]] += len(line["text"])
    body_size = size_chars.most_common(1)[0][0] if size_chars else 10
    spec = {"body_size": body_size,
            "heading_sizes": sorted({s for s in size_chars if s > body_size * 1.08}, reverse=True)}
    for blocks, _ in doc:
        for block in blocks:
            for line in block:
                cells = line["cells"]
                if len(cells) == 2 and _SECTION_NUMBER.match(cells[0][0]) and \
                        (line["bold"] or line["size"] > 1.08 * body_size) or _is_justified_prose(cells):
                    line["cells"] = [(line["text"], cells[0][1], cells[-1][2])]  # "3   Methods": a heading
    running = _running_lines([([line for block in blocks for line in block], height) for blocks, height in doc])
    out = []
    for page, (blocks, height) in zip(pages, doc):
        out.append(PAGE_MARK.format(page["page"] + 1))
        kept = []
        page_lines = [line for block in blocks for line in block if line["cells"]]
        for number, block in enumerate(blocks):
            lines = [line for line in block if line["cells"] and not _is_furniture(line, height, running, page_lines)]
            for line in lines:
                line["block"] = (page["page"], number)
            if lines:
                kept.append({"bbox": [min(ln["bbox"][0] for ln in lines), min(ln["bbox"][1] for ln in lines),
                                      max(ln["bbox"][2] for ln in lines), max(ln["bbox"][3] for ln in lines)],
                             "lines": lines})
        ordered = [line for block in reading_order(kept, page["width"] or 612) for line in block["lines"]]
        out += _page_items(_footnotes_last(_merge_split_lines(ordered, page["width"] or 612), body_size, height), spec)
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
        if heading and (_FRONT_ANCHOR.match(heading.group(2)) or _NUMBERED_HEADING.match(heading.group(2))):
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
