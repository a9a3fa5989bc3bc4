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
