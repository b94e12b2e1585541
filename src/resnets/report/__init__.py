"""The studies' reports: for the depth study and the remedies study, figures, verdict, Markdown and HTML.

Each study has its document (``degradation``, ``remedies``), its figures (``*_figures``) and its
verdict (``*_verdict``); ``page`` writes any document and ``plotting`` holds what the figures share.
"""

from .degradation import write_report
from .remedies import write_remedies_report

__all__ = ["write_remedies_report", "write_report"]
