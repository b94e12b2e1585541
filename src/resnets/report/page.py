"""What every report shares: the document, written as Markdown, one self-contained HTML page and JSON."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write_text

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


@dataclass
class Table:
    """A further table of a report: its title, header, rows, row styles and a note under it."""

    title: str
    header: list[str]
    rows: list[list[str]]
    classes: list[str]
    note: str = ""


@dataclass
class Document:
    """A study's report before it is written: its words, its results table and its figures."""

    title: str
    intro: list[str]  # paragraphs; empty ones are left out
    command: str  # the command line that made the study, shown as code; "" for none
    findings: list[str]  # the verdict, one Markdown line each
    header: list[str]
    rows: list[list[str]]
    classes: list[str]  # each row's style: plain, residual, failed or group
    table_note: str
    figures: dict[str, Path]  # by key, in the report's order
    titles: dict[str, str]  # a title and a caption for each figure key
    captions: dict[str, str]
    page_title: str = ""  # the HTML page's title where it says more than the Markdown's
    table_title: str = "Results"
    more_tables: list[Table] = field(default_factory=list)  # after the results table, before the figures

    def sections(self) -> list[tuple[str, Path, str]]:
        """(title, PNG, caption) of every figure, in order."""
        return [(self.titles[k], path, self.captions[k]) for k, path in self.figures.items()]


def sgd_recipe(cfg: Any) -> str:
    """The recipe a study's runs share, in one sentence fragment (dataset, epochs, SGD settings)."""
    subset = f" (a {cfg.train_subset}-image subset)" if cfg.train_subset else ""
    iterations = getattr(cfg, "iterations", None)  # a study given steps trains that many, not epochs
    length = f"{iterations} iterations" if iterations else f"{cfg.epochs} epochs"
    return (
        f"dataset **{cfg.dataset}**{subset}; {length} of SGD (momentum 0.9, "
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


def html_page(doc: Document) -> str:
    """The whole report page: title, intro, command, verdict, results table, figures with captions."""
    paragraphs = "".join(f"<p>{md_inline(p)}</p>" for p in doc.intro if p)
    sections = "".join(
        f"<section><h2>{html.escape(t)}</h2>{image(p)}<p class=cap>{html.escape(c)}</p></section>"
        for t, p, c in doc.sections()
    )
    title = doc.page_title or doc.title
    more = "".join(
        f"<h2>{html.escape(t.title)}</h2>{html_table(t.header, t.rows, t.classes)}"
        f"<p class=cap>{html.escape(t.note)}</p>"
        for t in doc.more_tables
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>resnets: {html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
{paragraphs}
{f"<pre>{html.escape(doc.command)}</pre>" if doc.command else ""}
<h2>Verdict</h2><ul class="verdict">{"".join(f"<li>{md_inline(x)}</li>" for x in doc.findings)}</ul>
<h2>{html.escape(doc.table_title)}</h2>{html_table(doc.header, doc.rows, doc.classes)}
<p class=cap>{html.escape(doc.table_note)}</p>
{more}
{sections}
</body></html>
"""


def markdown(doc: Document) -> str:
    """The report as Markdown, its figures linked from the figures/ folder beside it."""
    md = [f"# {doc.title}", ""] + [line for p in doc.intro if p for line in (p, "")]
    if doc.command:
        md += ["```", doc.command, "```", ""]
    md += ["## Verdict", ""] + [f"- {line}" for line in doc.findings] + ["", f"## {doc.table_title}", ""]
    md += [*markdown_table(doc.header, doc.rows), "", doc.table_note, ""]
    for t in doc.more_tables:
        md += [f"## {t.title}", "", *markdown_table(t.header, t.rows), "", t.note, ""]
    for title, path, caption in doc.sections():
        md += [f"## {title}", "", f"![{title}](figures/{path.name})", "", caption, ""]
    return "\n".join(md)


def write_documents(out: Path, doc: Document, summary: list[dict[str, Any]]) -> dict[str, Path]:
    """summary.json, report.md and report.html in ``out``; their paths and the figures', by key."""
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "report.md", markdown(doc))
    atomic_write_text(out / "report.html", html_page(doc))
    return {"html": out / "report.html", "markdown": out / "report.md", "summary": out / "summary.json",
            **doc.figures}  # fmt: skip
