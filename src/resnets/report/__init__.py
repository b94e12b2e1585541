"""The study's report: figures, verdict, Markdown and self-contained HTML."""

from .document import write_report

__all__ = ["write_report"]
