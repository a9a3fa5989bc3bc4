from common.pdf.layout import _join_lines, pages_to_markdown, reading_order
from common.pdf.lines import Block, Box


def test_hyphenation_at_line_end_is_undone():
    assert _join_lines(["the measure-", "ments were taken"]) == "the measurements were taken"
    assert _join_lines(["Okafor-", "Hale wrote"]) == "Okafor-Hale wrote"  # a capital: a hyphenated name
    assert _join_lines(["ISBN 3-540-52381-", "2."]) == "ISBN 3-540-52381-2."


def test_reading_order_keeps_single_column_pages_top_to_bottom():
    blocks = [Block(Box(72, y, 540, y + 20), []) for y in (300, 100, 200)] + [Block(Box(72, 50, 150, 60), [])]
    assert [b.bbox.y0 for b in reading_order(blocks, 612)] == [50, 100, 200, 300]


# ---------------------------------------------------------------- defects found on real papers (issue 3)
# Each test builds pdftext's dictionary output by hand (characters with their boxes and fonts), the way
# TeX-made PDFs look: one span per font run, table cells in one run apart only by their gaps, fonts
# named CMBX10 or LMRoman10-Regular with pdfium weights that say nothing about boldness.

def _line(x, y, parts, font="LMRoman10-Regular", size=10.0, weight=744, rotation=0.0, reported_size=None):
    """A pdftext line at (x, y): `parts` is text, or [(x, text), ...] for runs set apart (table cells);
    `reported_size`: the font size pdfium reports, where it differs from the size the text is drawn at."""
    parts = [(x, parts)] if isinstance(parts, str) else parts
    chars, width = [], 0.5 * size
    font_info = {"name": font, "size": reported_size or size, "weight": weight}
    for x0, text in parts:
        for k, ch in enumerate(text):
            chars.append({"char": ch, "bbox": [x0 + k * width, y, x0 + (k + 1) * width, y + size],
                          "rotation": rotation, "font": dict(font_info)})
    text = "".join(c["char"] if c is chars[0] or c["bbox"][0] - chars[i - 1]["bbox"][2] < 1 else " " + c["char"]
                   for i, c in enumerate(chars))
    span = {"text": text, "bbox": [chars[0]["bbox"][0], y, chars[-1]["bbox"][2], y + size], "rotation": rotation,
            "font": dict(font_info), "chars": chars}
    return {"spans": [span], "bbox": list(span["bbox"])}


def _pages(*pages, width=612, height=792):
    """pdftext pages from lists of blocks (each a list of _line)."""
    out = []
    for number, blocks in enumerate(pages):
        out.append({"page": number, "width": width, "height": height, "rotation": 0, "blocks": [
            {"lines": lines, "bbox": [min(l["bbox"][0] for l in lines), min(l["bbox"][1] for l in lines),
                                      max(l["bbox"][2] for l in lines), max(l["bbox"][3] for l in lines)]}
            for lines in blocks]})
    return out


BODY = ["Maximum likelihood estimates of the parameters in linear mixed models are found by",
        "optimising the profiled deviance, a function of the covariance parameters alone, and",
        "the fixed effects then follow from a penalised least squares problem at the optimum."]


def _body(y, lines=BODY, x=72):
    return [_line(x, y + 12 * k, text) for k, text in enumerate(lines)]


def test_table_cells_in_one_text_run_are_split_at_their_gaps():
    rows = [["Command", "Number", "Comments"], ["\\author", "100", "Author"], ["\\table", "300", "For tables"]]
    table = [_line(72, 300 + 12 * k, [(72, a), (200, b), (300, c)]) for k, (a, b, c) in enumerate(rows)]
    markdown = pages_to_markdown(_pages([_body(100), table, _body(360)]))
    assert ("| Command | Number | Comments |\n|---|---|---|\n| \\author | 100 | Author |\n"
            "| \\table | 300 | For tables |") in markdown


def test_justified_text_with_wide_spaces_is_not_a_table():
    words = ["file,", "if", "he", "wants", "to", "use", "another", "font"]
    starts = [72 + sum(5 * len(w) + 10 for w in words[:i]) for i in range(len(words))]  # spaces of 10pt
    spread = [_line(72, 100 + 12 * k, list(zip(starts, words))) for k in range(2)]
    markdown = pages_to_markdown(_pages([spread]))
    assert "|" not in markdown and "file, if he wants to use another font" in markdown


def test_monospace_lines_become_a_code_block_with_their_indentation():
    code = [_line(81, 300, "> fm1 <- lmer(Reaction ~ Days,", font="LMMono10-Regular", weight=625),
            _line(81 + 4 * 5, 312, "data = sleepstudy)", font="LMMono10-Regular", weight=625)]
    markdown = pages_to_markdown(_pages([_body(100), code, _body(360)]))
    assert "```\n> fm1 <- lmer(Reaction ~ Days,\n    data = sleepstudy)\n```" in markdown


def test_table_of_contents_entries_are_dropped():
    toc = [[_line(145, 100, "Contents", font="URWPalladioL-Bold", size=14.3, weight=615)],
           [_line(145, 130, [(145, "1"), (170, "Introduction"), (523, "3")], font="URWPalladioL-Bold", weight=615)],
           [_line(170, 142, [(170, "1.1"), (193, "Numbers . . . . . . . . . . . ."), (523, "4")],
                  font="URWPalladioL-Roma", weight=420)]]
    body = [[_line(72, 100, "1 Introduction", font="URWPalladioL-Bold", size=14.3, weight=615)],
            [_line(72, 130 + 12 * k, t, font="URWPalladioL-Roma", weight=420) for k, t in enumerate(BODY)]]
    markdown = pages_to_markdown(_pages(toc, body))
    assert markdown.count("Introduction") == 1 and "Numbers" not in markdown and "## 1 Introduction" in markdown


def test_front_matter_names_are_text_and_caps_sections_are_headings():
    front = [[_line(100, 60, "Fitting Mixed Models in R", size=17.2)],
             [_line(100, 90, "Douglas Bates", size=12)], [_line(100, 105, "University of Wisconsin", size=10.9)],
             [_line(100, 130, "ABSTRACT")], _body(145),
             [_line(72, 200, "1. INTRODUCTION")], _body(215),
             [_line(72, 270, "A.1 Zero slope covariance", font="LMRoman12-Bold", size=10, weight=820)], _body(285)]
    markdown = pages_to_markdown(_pages(front))
    assert markdown.startswith("<!-- page 1 -->\n\n# Fitting Mixed Models in R\n\nDouglas Bates\n\n")
    assert "## ABSTRACT" in markdown and "## 1. INTRODUCTION" in markdown
    assert "### A.1 Zero slope covariance" in markdown


def test_wrapped_heading_is_one_heading_and_a_bold_paragraph_is_not_one():
    heading = [_line(72, 100, "2.2 Different approaches for multilingual", font="SFBX1000", weight=250),
               _line(90, 112, "bibliographies", font="SFBX1000", weight=250)]
    abstract = [_line(72, 200 + 12 * k, t, font="TeXGyreTermes-Bold", weight=695) for k, t in enumerate(BODY)]
    markdown = pages_to_markdown(_pages([heading, _body(130), abstract, _body(260)]))
    assert "### 2.2 Different approaches for multilingual bibliographies" in markdown
    assert " ".join(BODY) in markdown and "# Maximum" not in markdown


def test_bullets_are_list_items():
    items = [_line(72, 100, "• acmsmall: The default journal template style."),
             _line(72, 112, "• acmlarge: Used by JOCCH and TAP.")]
    markdown = pages_to_markdown(_pages([items]))
    assert "- acmsmall: The default journal template style.\n\n- acmlarge: Used by JOCCH and TAP." in markdown


def test_text_that_looks_like_markdown_syntax_is_escaped():
    markdown = pages_to_markdown(_pages([[_line(72, 100, "# u # 2 is what the bracket glyphs read as")]]))
    assert "\\# u # 2" in markdown and "\n# u" not in markdown


def test_a_display_equation_keeps_its_number_and_text_after_it_stays_apart():
    lines = [[_line(72, 100, "The conditional mode solves the penalised least squares problem")],
             [_line(150, 130, [(150, "# u # 2 = r2"), (480, "(17)")])],
             [_line(72, 160, "where the conditional mean depends on theta.")]]
    markdown = pages_to_markdown(_pages(lines))
    assert "\\# u # 2 = r2    (17)\n\nwhere the conditional mean" in markdown


def test_a_numbered_heading_with_a_wide_gap_inside_is_a_heading_not_a_table_row():
    # elsarticle and REVTeX set "2. Evanescent vs.   conventional coupling" with a sentence space after "vs."
    heading = [_line(72, 100, [(72, "2. Evanescent vs."), (170, "conventional quadrupole coupling")],
                     font="NimbusRomNo9L-Medi", weight=700)]
    markdown = pages_to_markdown(_pages([_body(60), heading, _body(120)]))
    assert "## 2. Evanescent vs. conventional quadrupole coupling" in markdown and "|" not in markdown


def test_a_title_that_starts_with_a_and_wraps_into_another_font_is_one_title():
    # llncs: "A Simple Example of the llncsconf Package for" (partly typewriter) over "LATEX" in bold; "A" is
    # not appendix A, and the two lines are one title
    front = [[_line(120, 60, "A Simple Example of the Package for", size=14.3),
              _line(250, 78, "LATEX", font="CMBX12", size=14.3, weight=545)],
             [_line(200, 110, "Achim D. Brucker")], _body(140),
             [_line(72, 200, "1 Introduction", font="CMBX12", size=12, weight=545)], _body(220)]
    markdown = pages_to_markdown(_pages(front))
    assert markdown.startswith("<!-- page 1 -->\n\n# A Simple Example of the Package for LATEX\n\nAchim D. Brucker")
    assert "## 1 Introduction" in markdown


def test_a_line_inside_a_paragraph_set_in_large_type_is_not_a_heading():
    # an abstract set larger than the body, its lines judged together: none of them is a heading
    abstract = [_line(72, 100 + 13 * k, text, size=12) for k, text in enumerate(BODY + ["as possible."])]
    markdown = pages_to_markdown(_pages([abstract, _body(160), _body(200), _body(240)]))
    assert "#" not in markdown and " ".join(BODY) + " as possible." in markdown
