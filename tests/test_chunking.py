from common.chunking import chunk_markdown, clean_markdown, split_blocks

MD = """<!-- page 1 -->

# A Paper

## 1 Intro

First paragraph. It has two sentences.

![figure](img.png)

| a | b |
|---|---|
| 1 | 2 |

<!-- page 2 -->

## 2 Method

```python
x = 1

y = 2
```

## References

[1] Someone. A book. 1999.
"""


def test_clean_drops_references_and_images_but_keeps_tables_and_code():
    cleaned = clean_markdown(MD)
    assert "Someone" not in cleaned and "img.png" not in cleaned
    assert "| 1 | 2 |" in cleaned and "x = 1\n\ny = 2" in cleaned


def test_code_block_with_blank_line_is_one_block():
    assert any(b.startswith("```python") and b.endswith("```") for b in split_blocks(MD))


def test_chunks_carry_title_section_and_page():
    chunks = chunk_markdown(MD, lambda t: len(t.split()), chunk_tokens=100, chunk_overlap=0)
    assert [(c.title, c.section, c.page) for c in chunks] == [("A Paper", "1 Intro", 1), ("A Paper", "2 Method", 2)]


def test_budget_is_respected_and_tables_are_never_split(sample_markdown, tokenizer):
    def count(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    chunks = chunk_markdown(sample_markdown, count, chunk_tokens=128, chunk_overlap=16)
    assert len(chunks) > 10
    table_chunks = [c for c in chunks if "| Tidal zone |" in c.text]
    assert len(table_chunks) == 1 and "| Subtidal fringe | 0.8 | 9 | 1.2 |" in table_chunks[0].text
    for c in chunks:
        if "|" not in c.text:
            assert count(c.text) <= 128 + 16
    assert all("Quillon, E. (1962)" not in c.text for c in chunks)  # the references are gone
    assert {c.page for c in chunks} >= {1, 2, 3, 4, 5, 6}


def test_references_section_ends_at_a_numbered_heading_of_any_level():
    # a bibliography set inside a section as an example (or a references heading one level too high)
    md = ("## 2 Multilingual bibliographies\n\nText before the example.\n\n## References\n\n[1] Beitz, W. 1990.\n\n"
          "### Literatur\n\n[1] Beitz, W. 1990.\n\n### 2.3 Using the package\n\nLoad it with usepackage.\n\n"
          "## References\n\n[1] Real reference.\n\n## A. Technical details\n\nAppendix text.\n")
    cleaned = clean_markdown(md)
    assert "Beitz" not in cleaned and "Real reference" not in cleaned
    assert "Load it with usepackage." in cleaned and "Appendix text." in cleaned


def test_long_code_and_tables_are_cut_between_lines_keeping_fences_and_header():
    code = "```\n" + "\n".join(f"x{i} <- rnorm({i})" for i in range(60)) + "\n```"
    table = "| a | b |\n|---|---|\n" + "\n".join(f"| r{i} | {i} |" for i in range(60))
    md = f"# P\n\n## 1 Intro\n\n{code}\n\n{table}\n"
    chunks = chunk_markdown(md, lambda t: len(t.split()), chunk_tokens=40, chunk_overlap=0)
    assert len(chunks) > 4
    for chunk in chunks:
        assert len(chunk.text.split()) <= 40 + 6
        assert chunk.text.startswith(("```", "| a | b |\n|---|---|"))
        if chunk.text.startswith("```"):
            assert chunk.text.endswith("```")
    assert sum(c.text.count("rnorm") for c in chunks) == 60 and sum(c.text.count("| r") for c in chunks) == 60
    small = chunk_markdown("# P\n\n## 1\n\n" + "\n".join(table.split("\n")[:12]) + "\n",
                           lambda t: len(t.split()), chunk_tokens=40, chunk_overlap=0)
    assert len(small) == 1  # a table up to twice the budget stays whole
