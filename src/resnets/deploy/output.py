"""Predictions written as they come: text lines, CSV rows or one JSON list, to a stream."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import Any, TextIO

OUTPUT_FORMATS = ("text", "json", "csv")


def write_predictions(results: Iterable[dict[str, Any]], fmt: str, k: int, out: TextIO) -> int:
    """Write each result in ``fmt`` as soon as it arrives; returns how many were written."""
    return {"text": _text, "json": _json, "csv": _csv}[fmt](results, k, out)


def csv_header(k: int) -> list[str]:
    """file, then a class and its probability for each of the k ranks (the names JSON uses)."""
    return ["file", *(f"{name}_{rank}" for rank in range(1, k + 1) for name in ("class", "probability"))]


def _text(results: Iterable[dict[str, Any]], k: int, out: TextIO) -> int:
    n = 0
    for r in results:
        best = ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"])
        out.write(f"{r['file']}: {best}\n")
        n += 1
    return n


def _json(results: Iterable[dict[str, Any]], k: int, out: TextIO) -> int:
    # One object a line inside one list: valid JSON that never needs all results in memory.
    out.write("[")
    n = 0
    for n, r in enumerate(results, 1):
        out.write(("\n" if n == 1 else ",\n") + json.dumps(r))
    out.write("\n]\n" if n else "]\n")
    return n


def _csv(results: Iterable[dict[str, Any]], k: int, out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(csv_header(k))
    n = 0
    for r in results:
        writer.writerow([r["file"], *(v for t in r["top"] for v in (t["class"], t["probability"]))])
        n += 1
    return n
