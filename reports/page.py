"""One self-contained HTML page from sections: the template knows layout, not benchmarks.

The report and the comparison both describe themselves as a list of sections
(findings, plots, tables, key-value lists); images are embedded as base64 data
URIs so the file can be mailed, archived or attached to a CI run on its own.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jinja2

from harness.results import write_bytes
from reports.plots import Plot

TEMPLATES = Path(__file__).resolve().parent / "templates"


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def plot_item(plot: Plot) -> dict[str, Any]:
    return {"uri": data_uri(plot.path), "title": plot.title, "caption": plot.caption,
            "alt": f"{plot.title} plot", "width": plot.width, "height": plot.height, "name": plot.name}


def findings_section(findings: Iterable[Any], title: str = "Findings", intro: str = "") -> dict[str, Any]:
    labels = {"good": "good", "info": "note", "warn": "watch", "bad": "problem"}
    items = [{"severity": f.severity, "label": labels.get(f.severity, f.severity), "text": f.text,
              "kind": f.kind} for f in findings]
    return {"kind": "findings", "id": "findings", "title": title, "intro": intro, "items": items}


def plots_section(sid: str, title: str, groups: Sequence[tuple[str | None, Sequence[Plot]]], *,
                  layout: str = "wide", intro: str = "", colours: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kind": "plots", "id": sid, "title": title, "intro": intro, "layout": layout,
            "groups": [{"heading": h, "colour": (colours or {}).get(h or ""), "items": [plot_item(p) for p in ps]}
                       for h, ps in groups]}


def cell(text: object, cls: str = "", colour: str | None = None) -> dict[str, Any]:
    return {"text": "" if text is None else str(text), "cls": cls, "colour": colour}


def table_section(sid: str, title: str, headers: Sequence[str], rows: Sequence[dict[str, Any]], *,
                  intro: str = "", legend: str = "", numeric: range = range(0)) -> dict[str, Any]:
    """rows: {"cls": row class, "cells": [cell(...)]}; columns in ``numeric`` are right-aligned figures."""
    return {"kind": "table", "id": sid, "title": title, "intro": intro, "legend": legend,
            "headers": list(headers), "rows": list(rows), "numeric": list(numeric)}


def kv_section(sid: str, title: str, groups: Sequence[tuple[str, Sequence[tuple[str, object]]]],
               intro: str = "") -> dict[str, Any]:
    return {"kind": "kv", "id": sid, "title": title, "intro": intro,
            "groups": [{"heading": h, "items": [(k, "" if v is None else str(v)) for k, v in items]}
                       for h, items in groups]}


def render_page(title: str, subtitle: str, sections: Sequence[dict[str, Any]]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return env.get_template("report.html").render(title=title, subtitle=subtitle, sections=sections,
                                                  generated=generated)


def write_atomic(path: Path, text: str) -> Path:
    """Readers (a browser, a CI artifact upload) never see half a file: the project's one writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(path, text.encode("utf-8"))


def output_paths(default_dir: Path, out: Path | None, default_name: str) -> Path:
    """``out`` may be a file (``*.html``) or a folder; None means ``default_dir``."""
    if out is None:
        return default_dir / default_name
    return out if out.suffix.lower() in (".html", ".htm") else out / default_name


def format_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))
