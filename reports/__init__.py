"""Reports built from result files only (harness.results): findings, PNG plots, one HTML file, compare.

The public functions are imported lazily, so that ``import reports`` (say, by the
CLI's ``--help``) does not pay for matplotlib.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "compare_runs", "render_comparison_text", "build_comparison_report"]

_WHERE = {
    "build_report": "reports.build",
    "compare_runs": "reports.compare",
    "render_comparison_text": "reports.compare",
    "build_comparison_report": "reports.compare_report",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
