"""Render the bundled sample paper (docs/sample_paper/paper.md) to docs/pdf/sample_paper.pdf.

Regenerate the PDF with:

    python docs/sample_paper/render.py

Needs the pure-Python package fpdf2 (`pip install fpdf2`). The output is deterministic:
re-rendering gives identical bytes. Only the small Markdown subset used by paper.md is
understood: `# title`, front-matter lines, `## section`, `### subsection`, paragraphs,
indented equation lines, one pipe table, and `![Figure N: caption](bars)`, which draws a
bar chart of the last column of the preceding table.
"""
from datetime import datetime, timezone
from pathlib import Path

from fpdf import FPDF

HERE = Path(__file__).resolve().parent
SRC = HERE / "paper.md"
OUT = HERE.parent / "pdf" / "sample_paper.pdf"
SHORT_TITLE = "Velmora Tidal-Lichen at Kesterhaven"
FONT = "Times"


class Paper(FPDF):
    def header(self):
        if self.page_no() > 1:
            self.set_font(FONT, "I", 9)
            self.cell(0, 5, SHORT_TITLE, align="L")
            self.cell(0, 5, "Vansk, Amundry and Okafor-Hale", align="R", new_x="LMARGIN", new_y="NEXT")
            self.line(self.l_margin, self.get_y() + 1, self.w - self.r_margin, self.get_y() + 1)
            self.ln(6)

    def footer(self):
        self.set_y(-15)
        self.set_font(FONT, "", 9)
        self.cell(0, 10, f"Page {self.page_no()} of {{nb}}", align="C")


def blocks(text):
    """Split the Markdown source into blank-line separated blocks, dropping HTML comments."""
    out, cur = [], []
    for line in text.splitlines():
        if line.strip().startswith("<!--"):
            continue
        if line.strip():
            cur.append(line.rstrip())
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def draw_bars(pdf, labels, values, caption):
    w, h, top = 120, 55, pdf.get_y() + 4
    x0 = (pdf.w - w) / 2
    if top + h + 30 > pdf.h - pdf.b_margin:
        pdf.add_page()
        top = pdf.get_y() + 4
    vmax = 6.0
    pdf.line(x0, top + h, x0 + w, top + h)
    pdf.line(x0, top, x0, top + h)
    pdf.set_font(FONT, "", 8)
    for tick in range(0, 7, 2):
        y = top + h - h * tick / vmax
        pdf.line(x0 - 1.5, y, x0, y)
        pdf.text(x0 - 6, y + 1, str(tick))
    slot = w / len(values)
    for i, (lab, v) in enumerate(zip(labels, values)):
        bh = h * v / vmax
        bx = x0 + i * slot + slot * 0.2
        pdf.set_fill_color(150, 150, 150)
        pdf.rect(bx, top + h - bh, slot * 0.6, bh, style="DF")
        pdf.text(bx + slot * 0.15, top + h - bh - 1.5, f"{v:.1f}")
        pdf.set_xy(x0 + i * slot, top + h + 1)
        pdf.multi_cell(slot, 3.5, lab, align="C")
    pdf.set_y(top + h + 10)
    pdf.set_font(FONT, "I", 10)
    pdf.multi_cell(0, 5, caption, align="J", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)


def render(src=SRC, out=OUT):
    pdf = Paper(format="A4")
    pdf.set_creation_date(datetime(2024, 1, 1, tzinfo=timezone.utc))
    pdf.set_title(SHORT_TITLE)
    pdf.set_author("Teodora Vansk, Pell Amundry, Rosalind Okafor-Hale")
    pdf.set_margins(25, 20, 25)
    pdf.set_auto_page_break(True, margin=22)
    pdf.add_page()
    last_table = None
    for block in blocks(src.read_text(encoding="latin-1")):
        first = block[0]
        if first.startswith("# "):
            pdf.set_font(FONT, "B", 16)
            pdf.multi_cell(0, 7.5, first[2:], align="C", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
        elif first.startswith("## ") or first.startswith("### "):
            big = first.startswith("## ")
            if pdf.get_y() > pdf.h - 50:
                pdf.add_page()
            pdf.ln(3 if big else 1)
            pdf.set_font(FONT, "B", 13 if big else 11.5)
            pdf.multi_cell(0, 7, first.lstrip("# "), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        elif first.startswith("    "):
            pdf.set_font(FONT, "", 11)
            pdf.ln(1)
            for line in block:
                eq, num = line.strip().rsplit("    ", 1)
                pdf.cell(0, 6, eq.strip(), align="C")
                pdf.set_x(pdf.l_margin)
                pdf.cell(0, 6, num.strip(), align="R", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
        elif first.startswith("|"):
            rows = [[c.strip() for c in r.strip("|").split("|")] for r in block if "---" not in r]
            last_table = rows
            pdf.set_font(FONT, "", 10)
            with pdf.table(col_widths=(34, 22, 16, 22), text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"),
                           line_height=6, first_row_as_headings=True) as table:
                for r in rows:
                    row = table.row()
                    for c in r:
                        row.cell(c)
            pdf.ln(5)
        elif first.startswith("!["):
            caption, _ = first[2:].split("](", 1)
            labels = [r[0].replace(" zone", "") for r in last_table[1:]]
            values = [float(r[-1]) for r in last_table[1:]]
            draw_bars(pdf, labels, values, caption)
        elif pdf.page_no() == 1 and pdf.get_y() < 60:  # author / affiliation lines
            for i, line in enumerate(block):
                pdf.set_font(FONT, "B" if i == 0 else "I", 11)
                pdf.multi_cell(0, 5.5, line, align="C", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(4)
        else:
            is_caption = first.startswith("Table ")
            pdf.set_font(FONT, "I" if is_caption else "", 10 if is_caption else 11)
            pdf.multi_cell(0, 5.5, " ".join(block), align="J", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2.5 if is_caption else 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out))
    return out


if __name__ == "__main__":
    print(f"wrote {render()}")
