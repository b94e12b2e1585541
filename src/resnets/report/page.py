"""The pieces every report shares: one self-contained HTML page, Markdown tables, inline images."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
body { color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: .3em .8em; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr.plain td:first-child { color: #8a4b00; }
tr.residual td:first-child { color: #0b5394; font-weight: 600; } tr.failed td { color: #999; }
tr.group td { background: #f7f7f7; font-weight: 600; text-align: left; }
img { max-width: 100%; } .cap { color: #555; font-size: .9em; } .verdict li { margin: .4em 0; }
code, pre { background: #f5f5f5; padding: .2em .4em; }
"""


def sgd_recipe(cfg: Any) -> str:
    """The recipe a study's runs share, in one sentence fragment (dataset, epochs, SGD settings)."""
    subset = f" (a {cfg.train_subset}-image subset)" if cfg.train_subset else ""
    return (
        f"dataset **{cfg.dataset}**{subset}; {cfg.epochs} epochs of SGD (momentum 0.9, "
        f"batch {cfg.batch_size}, peak lr {cfg.lr:g}, {cfg.schedule} schedule, "
        f"weight decay {cfg.weight_decay:g}), precision {cfg.precision}"
    )


def md_inline(text: str) -> str:
    """Markdown's **bold** as HTML, the rest escaped."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str]) -> str:
    """An HTML table; ``classes`` styles each row (plain, residual, failed, group)."""
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    out = f"<table><thead><tr>{cells}</tr></thead><tbody>"
    for row, cls in zip(rows, classes, strict=True):
        out += f'<tr class="{cls}">' + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
    return out + "</tbody></table>"


def image(path: Path) -> str:
    """A PNG inlined as a data URL, so the page stands alone."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def html_page(
    title: str, intro: Sequence[str], command: str, findings: Sequence[str], table: str, table_note: str,
    figures: Sequence[tuple[str, Path, str]],
) -> str:  # fmt: skip
    """The whole report page: title, intro, command, verdict, results table, figures with captions."""
    paragraphs = "".join(f"<p>{md_inline(p)}</p>" for p in intro if p)
    sections = "".join(
        f"<section><h2>{html.escape(t)}</h2>{image(p)}<p class=cap>{html.escape(c)}</p></section>"
        for t, p, c in figures
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>resnets: {html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
{paragraphs}
{f"<pre>{html.escape(command)}</pre>" if command else ""}
<h2>Verdict</h2><ul class="verdict">{"".join(f"<li>{md_inline(x)}</li>" for x in findings)}</ul>
<h2>Results</h2>{table}<p class=cap>{html.escape(table_note)}</p>
{sections}
</body></html>
"""
