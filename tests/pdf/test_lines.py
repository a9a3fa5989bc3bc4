import re

from common.pdf.layout import pages_to_markdown
from common.pdf.lines import footnotes_last, page_blocks
from tests.pdf.test_layout import BODY, _body, _line, _pages


def _texts(pages):
    """The text of every line page_blocks keeps, page by page."""
    return [[line.text for block in blocks for line in block.lines] for blocks in page_blocks(pages)]


def test_bold_is_read_from_font_names_not_pdfium_weights():
    # Latin Modern regular text that pdfium weighs 744, a CMBX10 heading weighed 570, a Libertine
    # bold (no style in its name) known only by its weight against the body font's
    pages = _pages([[_line(72, 100, "1 Introduction", font="CMBX10", weight=570)], _body(120),
                    [_line(72, 170, "Short regular line here")], _body(190),
                    [_line(72, 240, "Fixed effects", font="LinLibertineTB", weight=1100)], _body(260)])
    bold = {line.text: line.bold for block in page_blocks(pages)[0] for line in block.lines}
    assert bold["1 Introduction"] and bold["Fixed effects"]
    assert not bold["Short regular line here"] and not bold[BODY[0]]
    markdown = pages_to_markdown(pages)
    assert "## 1 Introduction" in markdown and "### Fixed effects" in markdown and "# Short" not in markdown


def test_cells_are_split_at_gaps_wider_than_an_em():
    line = page_blocks(_pages([[_line(72, 100, [(72, "Command"), (200, "Number"), (300, "Comments")])]]))[0][0]
    assert [cell.text for cell in line.lines[0].cells] == ["Command", "Number", "Comments"]
    assert line.lines[0].block == (0, 0)


def test_running_heads_of_odd_and_even_pages_and_a_rotated_watermark_are_dropped():
    pages = []
    for n in range(6):
        head = "Douglas Bates, Martin Maechler 7" if n % 2 else "8 Linear Mixed Models with lme4"
        pages.append([[_line(81, 76, head)], [_line(150, 300, "DRAFT", rotation=0.9)],
                      _body(200, [f"Text of page {'abcdef'[n]} starts here and runs on.", "More words."])])
    texts = _texts(_pages(*pages, height=842))
    assert texts == [[f"Text of page {c} starts here and runs on.", "More words."] for c in "abcdef"]


def test_a_page_number_is_dropped_but_a_number_beside_text_is_kept():
    mark_and_note = [_line(72, 740, "3", size=8), _line(84, 740, "A footnote.", size=8)]
    texts = _texts(_pages([_body(100), [_line(300, 760, "12")], mark_and_note]))[0]
    assert "12" not in texts and texts[-2:] == ["3", "A footnote."]


def test_line_numbers_of_a_manuscript_are_dropped():
    lines = [_line(24, 100 + 12 * k, [(24, str(38 + k)), (60, text)], size=10) for k, text in enumerate(BODY)]
    lines += [_line(24, 136 + 12 * k, [(24, str(41 + k)), (60, f"and a further line number {k} of the text")])
              for k in range(3)]
    texts = _texts(_pages([lines]))[0]
    assert texts[:3] == BODY and not any(re.search(r"\b(3[89]|4[0-3])\b", t) for t in texts)


def test_footnotes_move_after_the_text_of_their_page():
    left = [_line(72, 600, "We would be glad of help. The"),
            _line(85, 700, "1", size=6), _line(91, 701, "In some languages names are missing.", size=8),
            _line(72, 711, "For instance Nynorsk is not defined.", size=8)]
    right = [_line(318, 100, "current version runs only with LaTeX."), _line(318, 112, "The package is stable.")]
    pages = _pages([[_line(72, 560, "Fixed effects are found by least squares.")], left, right])
    lines = [line for block in page_blocks(pages)[0] for line in block.lines]
    ordered = footnotes_last(lines, 10.0, 792)
    assert [line.text for line in ordered][-1] == "For instance Nynorsk is not defined."
    assert all(line.block[0] == "footnote" for line in ordered[-2:])
    markdown = pages_to_markdown(pages)
    assert "help. The current version runs only" in markdown, markdown
    assert "1 In some languages names are missing. For instance Nynorsk is not defined." in markdown
    assert markdown.index("current version") < markdown.index("In some languages")


def test_text_scaled_by_its_matrix_takes_its_size_from_the_character_boxes():
    # publishers' PDFs often set `/F1 1 Tf` and scale by the text matrix: pdfium then reports size 1 for all
    heading = [_line(72, 100, "Introduction", size=10.1, reported_size=1.0)]
    body = [_line(72, 120 + 9 * k, text, size=6.8, reported_size=1.0) for k, text in enumerate(BODY)]
    sizes = {line.text: line.size for block in page_blocks(_pages([heading, body]))[0] for line in block.lines}
    assert sizes["Introduction"] == 10.1 and sizes[BODY[0]] == 6.8
    assert "\n# Introduction\n" in pages_to_markdown(_pages([heading, body]))


def test_a_numbered_code_listing_is_monospace_though_its_numbers_are_not():
    # docstrip and the listings package set the line numbers in the body's roman font, the code in typewriter
    listing = []
    for k, code in enumerate(["\\def\\section{%", "  \\@startsection", "  {section}%"]):
        y = 100 + 12 * k
        number, text = _line(72, y, str(504 + k), font="CMR10"), _line(100, y, code, font="CMTT10")
        listing.append({"spans": number["spans"] + text["spans"], "bbox": [72, y, text["bbox"][2], y + 10]})
    lines = [line for block in page_blocks(_pages([_body(40), listing]))[0] for line in block.lines]
    assert [line.mono for line in lines[-3:]] == [True, True, True] and not lines[0].mono
