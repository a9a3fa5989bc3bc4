"""Markdown -> clean sections -> chunks of at most CHUNK_TOKENS tokens, each with its paper and section.

Blocks (paragraphs, tables, code blocks, display equations) are the unit of packing: a table, a code
block or an equation is never split; only a paragraph longer than the budget is cut, at sentences.
"""
import re
from dataclasses import dataclass, field

from .pdf import PAGE_MARK

_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
_PAGE = re.compile(r"^<!-- page (\d+) -->$")
_REFERENCES = re.compile(r"^(\d+(\.\d+)*\.?\s*)?(references|bibliography|works cited|literature cited|"
                         r"references and notes)\s*$", re.I)
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_ARTEFACTS = re.compile(r"^(arxiv:\S+.*|preprint\.?( under review\.?)?|\d{1,4})$", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


@dataclass
class Chunk:
    title: str
    section: str
    page: int
    text: str
    chunk_id: str = ""
    section_index: int = 0
    blocks: list = field(default_factory=list)


def split_blocks(markdown):
    """Blocks separated by blank lines; a fenced code block or a $$ equation stays one block."""
    blocks, current, fence = [], [], None
    for line in markdown.splitlines():
        stripped = line.strip()
        if fence:
            current.append(line)
            if stripped.startswith(fence):
                blocks.append("\n".join(current))
                current, fence = [], None
            continue
        if stripped.startswith(("```", "~~~")) or stripped == "$$":
            if current:
                blocks.append("\n".join(current))
            current, fence = [line], stripped[:3] if stripped != "$$" else "$$"
            continue
        if not stripped:
            if current:
                blocks.append("\n".join(current))
                current = []
            continue
        if _HEADING.match(stripped) or _PAGE.match(stripped):
            if current:
                blocks.append("\n".join(current))
            blocks.append(stripped)
            current = []
            continue
        current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def clean_markdown(markdown):
    """Drop the references section, images and page artefacts; keep text, tables and equations."""
    kept, skip_level = [], None
    for block in split_blocks(_IMAGE.sub("", markdown)):
        heading = _HEADING.match(block)
        if heading:
            level, text = len(heading.group(1)), heading.group(2).strip("* ")
            if _REFERENCES.match(text):
                skip_level = level
                continue
            if skip_level is not None and level <= skip_level:
                skip_level = None
        if skip_level is not None and not _PAGE.match(block):
            continue
        if _ARTEFACTS.match(block.strip()):
            continue
        kept.append(block)
    return "\n\n".join(kept) + "\n"


def paper_title(markdown, fallback):
    for block in split_blocks(markdown):
        heading = _HEADING.match(block)
        if heading and len(heading.group(1)) == 1:
            return heading.group(2).strip("* ")
    return fallback


def sections_of(markdown, title):
    """[(section path, [(page, block), ...]), ...] in document order."""
    sections, path, page, current = [], [], 1, None
    for block in split_blocks(markdown):
        page_mark, heading = _PAGE.match(block), _HEADING.match(block)
        if page_mark:
            page = int(page_mark.group(1))
            continue
        if heading:
            level, text = len(heading.group(1)), heading.group(2).strip("* ")
            if text == title:
                continue
            path = [p for p in path if p[0] < level] + [(level, text)]
            current = None
            continue
        if current is None:
            current = (" > ".join(p[1] for p in path) or "Front matter", [])
            sections.append(current)
        current[1].append((page, block))
    return sections


def _split_long_paragraph(text, count_tokens, budget):
    pieces, current = [], ""
    for sentence in _SENTENCE_END.split(text):
        candidate = f"{current} {sentence}".strip()
        if current and count_tokens(candidate) > budget:
            pieces.append(current)
            current = sentence
        else:
            current = candidate
    return pieces + ([current] if current else [])


def _is_atomic(block):
    return block.lstrip().startswith(("|", "```", "~~~", "$$"))


def chunk_markdown(markdown, count_tokens, chunk_tokens=384, chunk_overlap=32, fallback_title="Untitled"):
    """Chunks of one paper. `count_tokens(text)` measures with the training model's tokenizer."""
    cleaned = clean_markdown(markdown)
    title = paper_title(cleaned, fallback_title)
    chunks = []
    for section_index, (section, blocks) in enumerate(sections_of(cleaned, title)):
        units = []
        for page, block in blocks:
            if not _is_atomic(block) and count_tokens(block) > chunk_tokens:
                units += [(page, piece) for piece in _split_long_paragraph(block, count_tokens, chunk_tokens)]
            else:
                units.append((page, block))
        current, size = [], 0
        for page, unit in units:
            n = count_tokens(unit)
            if current and size + n > chunk_tokens:
                chunks.append(_make_chunk(title, section, section_index, current))
                current, size = _overlap_tail(current, count_tokens, chunk_overlap)
            current.append((page, unit))
            size += n
        if current:
            chunks.append(_make_chunk(title, section, section_index, current))
    return chunks


def _overlap_tail(units, count_tokens, overlap):
    """The last sentences of the previous chunk (up to `overlap` tokens) to open the next one."""
    if overlap <= 0 or _is_atomic(units[-1][1]):
        return [], 0
    page, last = units[-1]
    tail = ""
    for sentence in reversed(_SENTENCE_END.split(last)):
        candidate = f"{sentence} {tail}".strip()
        if count_tokens(candidate) > overlap:
            break
        tail = candidate
    return ([(page, tail)], count_tokens(tail)) if tail and tail != last else ([], 0)


def _make_chunk(title, section, section_index, units):
    return Chunk(title=title, section=section, page=units[0][0], section_index=section_index,
                 text="\n\n".join(u for _, u in units), blocks=[u for _, u in units])


def strip_page_marks(markdown):
    return re.sub(r"\n*" + re.escape(PAGE_MARK).replace(r"\{\}", r"\d+") + r"\n*", "\n\n", markdown)
