"""Markdown -> clean sections -> chunks of at most CHUNK_TOKENS tokens, each with its paper and section.

Blocks (paragraphs, tables, code blocks, display equations) are the unit of packing: a block that fits
the budget is never split; a longer paragraph is cut at sentences. A table or code block stays whole up
to twice the budget; a longer one is cut between rows (each piece keeps the header) or lines (each piece
fenced), so a long program listing or data table does not become one oversized record.
"""
import re
from dataclasses import dataclass, field


_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
_PAGE = re.compile(r"^<!-- page (\d+) -->$")
_REFERENCES = re.compile(r"^(\d+(\.\d+)*\.?\s*)?(references|bibliography|works cited|literature cited|"
                         r"references and notes)\s*$", re.I)
_NUMBERED = re.compile(r"^(\d+(\.\d+)*|[A-Z](\.\d+)*|[IVX]+|appendix\s+[A-Z0-9]+)[.:]?\s+\S", re.I)
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


def split_blocks(markdown: str) -> list[str]:
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


def clean_markdown(markdown: str) -> str:
    """Drop the references section, images and page artefacts; keep text, tables and equations."""
    kept, skip_level = [], None
    for block in split_blocks(_IMAGE.sub("", markdown)):
        heading = _HEADING.match(block)
        if heading:
            level, text = len(heading.group(1)), heading.group(2).strip("* ")
            if _REFERENCES.match(text):
                skip_level = level
                continue
            if skip_level is not None and (level <= skip_level or _NUMBERED.match(text)):
                skip_level = None  # the section after the references, or a numbered one (an appendix)
        if skip_level is not None and not _PAGE.match(block):
            continue
        if _ARTEFACTS.match(block.strip()):
            continue
        kept.append(block)
    return "\n\n".join(kept) + "\n"


def paper_title(markdown: str, fallback: str) -> str:
    for block in split_blocks(markdown):
        heading = _HEADING.match(block)
        if heading and len(heading.group(1)) == 1:
            return heading.group(2).strip("* ")
    return fallback


def sections_of(markdown: str, title: str):
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


def _split_long_paragraph(text, count, budget):
    """[(piece, tokens)]: a paragraph cut at sentence ends into pieces of at most `budget` tokens."""
    pieces, current, size = [], [], 0
    for sentence in _SENTENCE_END.split(text):
        n = count(sentence)
        if current and size + n > budget:
            pieces.append((" ".join(current), size))
            current, size = [], 0
        current.append(sentence)
        size += n
    return pieces + ([(" ".join(current), size)] if current else [])


def _split_long_atomic(block, count, budget):
    """[(piece, tokens)]: a table or code block longer than the budget cut between rows or lines, each
    piece a whole table (the header repeated) or a whole fenced block; an equation stays whole."""
    lines = block.strip().split("\n")
    if lines[0].lstrip().startswith("|") and len(lines) > 3 and set(lines[1].replace("|", "").strip()) <= set("-: "):
        head, body, close = lines[:2], lines[2:], []
    elif lines[0].lstrip().startswith(("```", "~~~")) and len(lines) > 3:
        head, body, close = lines[:1], lines[1:-1], lines[-1:]
    else:
        return [(block, count(block))]
    fixed = count("\n".join(head + close))
    pieces, current, size = [], [], fixed
    for line in body:
        n = count(line) + 1
        if current and size + n > budget:
            pieces.append(current)
            current, size = [], fixed
        current.append(line)
        size += n
    pieces.append(current)
    texts = ["\n".join(head + piece + close) for piece in pieces]
    return [(text, count(text)) for text in texts]


def _memo(count_tokens):
    """count_tokens that measures each text once: overlaps measure the same sentences again."""
    sizes = {}

    def count(text):
        if text not in sizes:
            sizes[text] = count_tokens(text)
        return sizes[text]
    return count


def _is_atomic(block):
    return block.lstrip().startswith(("|", "```", "~~~", "$$"))


def chunk_markdown(markdown: str, count_tokens, *, chunk_tokens: int, chunk_overlap: int,
                   fallback_title: str = "Untitled") -> list[Chunk]:
    """Chunks of one paper. `count_tokens(text)` measures with the training model's tokenizer.

    Sizes add up the tokens of blocks and sentences, so each text is tokenized about once (the
    tokenizer is most of the cost of this step).
    """
    cleaned = clean_markdown(markdown)
    title = paper_title(cleaned, fallback_title)
    count, chunks = _memo(count_tokens), []
    for section_index, (section, blocks) in enumerate(sections_of(cleaned, title)):
        units = []
        for page, block in blocks:
            n = count(block)
            if n <= chunk_tokens:
                units.append((page, block, n))
            elif _is_atomic(block) and n <= 2 * chunk_tokens:
                units.append((page, block, n))  # a table or code block a little over the budget stays whole
            elif _is_atomic(block):
                units += [(page, piece, size) for piece, size in _split_long_atomic(block, count, chunk_tokens)]
            else:
                units += [(page, piece, size) for piece, size in _split_long_paragraph(block, count, chunk_tokens)]
        current, size = [], 0
        for page, unit, n in units:
            if current and size + n > chunk_tokens:
                chunks.append(_make_chunk(title, section, section_index, current))
                current, size = _overlap_tail(current, count, chunk_overlap)
            current.append((page, unit, n))
            size += n
        if current:
            chunks.append(_make_chunk(title, section, section_index, current))
    return chunks


def _overlap_tail(units, count, overlap):
    """The last sentences of the previous chunk (up to `overlap` tokens) to open the next one."""
    page, last, _ = units[-1]
    if overlap <= 0 or _is_atomic(last):
        return [], 0
    tail, size = [], 0
    for sentence in reversed(_SENTENCE_END.split(last)):
        n = count(sentence)
        if size + n > overlap:
            break
        tail.insert(0, sentence)
        size += n
    text = " ".join(tail)
    return ([(page, text, size)], size) if tail and text != last else ([], 0)


def _make_chunk(title, section, section_index, units):
    return Chunk(title=title, section=section, page=units[0][0], section_index=section_index,
                 text="\n\n".join(u for _, u, _ in units), blocks=[u for _, u, _ in units])

