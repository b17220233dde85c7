"""``build_report``: a results folder in, ``report.html`` + ``summary.csv`` + PNGs out."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.results import CellResult, RunManifest
from harness.results.capacity import CAPACITY_DIR, CAPACITY_NAME, load_capacity
from reports.capacity_report import CAPACITY_CSV, capacity_csv, capacity_findings, capacity_plots, capacity_section
from reports.findings import find
from reports.page import (
    cell,
    findings_section,
    format_time,
    kv_section,
    output_paths,
    plots_section,
    render_page,
    table_section,
    write_atomic,
)
from reports.plots import render_plots, variant_colours
from reports.summary import (
    MISSING,
    SUMMARY_HEADERS,
    load_cells,
    row_cells,
    rows_to_csv,
    summary_rows,
    users_word,
    variant_order,
)

REPORT_NAME = "report.html"
CSV_NAME = "summary.csv"
PLOTS_DIR = "plots"


def check_slo(slo_ms: float) -> float:
    if not isinstance(slo_ms, (int, float)) or not math.isfinite(slo_ms) or slo_ms <= 0:
        raise ValueError(f"the SLO must be a positive number of milliseconds, not {slo_ms!r}")
    return float(slo_ms)


def summary_section(manifest: RunManifest | None, cells: Sequence[CellResult],
                    colours: dict[str, str]) -> dict[str, Any]:
    rows = []
    for r in summary_rows(manifest, cells):
        texts = row_cells(r)
        cls = "saturated" if r.saturated else ""
        cls = r.status if r.status != "ok" else cls
        cells_out = [cell(texts[0], colour=colours.get(r.variant))] + [cell(t) for t in texts[1:-1]]
        cells_out.append(cell(("⚠ " if r.saturated else "") + texts[-1], cls="note"))
        rows.append({"cls": cls, "cells": cells_out})
    return table_section(
        "summary", "Summary", SUMMARY_HEADERS, rows,
        intro="One row per cell (variant × concurrency), message latency in milliseconds with microsecond "
              "precision over the window each row states (Window s: the whole seconds measured, after every user "
              "had connected and had its first reply, plus the settle). Ops/sec is the achieved rate, Asked/sec "
              "the open loop's. Errors: every failure of the whole cell, ramp and stop included. Connect "
              "covers every connect of the cell. Mem: the server's peak PSS (shared pages counted once) "
              "where it could be read, else RSS.",
        legend="Amber rows ⚠: the load generator was saturated or starved (the note names the figure), so the "
               "figures describe the generator, not the server. Red rows: the server died or the cell failed. "
               "Grey rows: planned but missing. '-': not measured.",
        numeric=range(1, len(SUMMARY_HEADERS) - 1),
    )


def details_section(manifest: RunManifest | None, cells: Sequence[CellResult]) -> dict[str, Any]:
    """What ran, exactly: window, load, generator CPU, kernel deltas, failures by class, commands."""
    order = {v: i for i, v in enumerate(variant_order(manifest, cells))}
    rows = []
    for c in sorted(cells, key=lambda c: (order[c.variant], c.users)):
        kernel = "\n".join(f"{k.split('.')[-1]} {v:,}" for k, v in sorted(c.kernel.items()) if v)
        fails = "\n".join(f"{name}: {cls} {n:,}" for name, by in c.failures.items() for cls, n in by.items())
        load = (f"asked {c.rate:g}/s, achieved {c.throughput:,.0f}/s" if c.rate else "closed loop")
        workers = f"{c.workers} worker{'s' if c.workers != 1 else ''}" if c.workers else "1 process"
        window = window_words(c)
        status = c.status + (f": {c.error}" if c.error else "")
        rows.append({"cls": c.status if c.status != "ok" else ("saturated" if c.generator.saturated else ""),
                     "cells": [cell(f"{c.variant} · {users_word(c.users)}"), cell(status),
                               cell(f"{window}\n{load}, {workers}", cls="lines"),
                               cell(generator_words(c), cls="lines"),
                               cell(kernel or "-", cls="code lines"), cell(fails or "-", cls="code lines")]})
    return table_section("cells", "Cells in detail",
                         ("Cell", "Status", "Window, load", "Generator and machine", "Kernel TCP deltas",
                          "Failures in the window"), rows,
                         legend="The exact commands of each cell are listed with the run manifest below.")


def window_words(c: CellResult) -> str:
    """What the figures cover: the window measured, and when every user was established."""
    if c.window_s is None:
        return f"{c.warmup_s:g} s warm-up + {c.duration_s:g} s (format 1: no establishment recorded)"
    if c.window_from is None or not c.window_s:
        return "no window measured"
    est = ("every user established at +" + f"{c.established_at - c.started_at:.1f} s"
           if c.established_at is not None else f"{c.users_not_established or 0:,} users never established")
    return f"{c.window_s:g} s measured from +{c.window_from - c.started_at:.0f} s ({est}, settle {c.warmup_s:g} s)"


def generator_words(c: CellResult) -> str:
    lines = [f"Locust CPU max {c.generator.cpu_percent_max:.0f}%"]
    if c.machine is not None and c.machine.busy_percent_mean is not None:
        cores = ", ".join(f"{b:.0f}%" for b in c.machine.per_core_busy_mean)
        lines.append(f"machine busy {c.machine.busy_percent_mean:.0f}% (cores {cores})")
    lag = c.latency.get("loop_lag")
    if lag is not None and lag.p99_us is not None:
        lines.append(f"loop lag p99 {lag.p99_us / 1000:.2f} ms")
    if c.generator_bound:
        lines.append(f"⚠ {c.generator_bound}")
    return "\n".join(lines)


def manifest_section(manifest: RunManifest | None, cells: Sequence[CellResult], results_dir: Path,
                     slo_ms: float) -> dict[str, Any]:
    if manifest is None:
        run = [("results folder", results_dir), ("manifest", "missing (run.json not found)"),
               ("cells with results", len(cells))]
        return kv_section("manifest", "Run manifest", [("Run", run), commands_group(manifest, cells)])
    duration = (f"{manifest.ended_at - manifest.started_at:,.0f} s" if manifest.ended_at is not None else "-")
    have = {c.key for c in cells}
    missing = [f"{v}@{u}" for v, u in manifest.planned if (v, u) not in have]
    run = [
        ("run id", manifest.run_id), ("outcome", manifest.outcome), ("started", format_time(manifest.started_at)),
        ("ended", format_time(manifest.ended_at)), ("duration", duration),
        ("command", shlex.join(manifest.argv) if manifest.argv else "-"), ("git commit", manifest.git_commit or "-"),
        ("planned cells", len(manifest.planned)), ("cells with results", len(cells)),
        ("missing cells", ", ".join(missing) if missing else "none"), ("results folder", results_dir),
        ("SLO for findings", f"message p99 < {slo_ms:g} ms"),
    ]
    groups = [("Run", run)]
    for heading, mapping in (("Options", manifest.options), ("Host", manifest.host), ("Versions", manifest.versions)):
        if mapping:
            groups.append((heading, sorted(mapping.items())))
    return kv_section("manifest", "Run manifest", groups + [commands_group(manifest, cells)])


def commands_group(manifest: RunManifest | None, cells: Sequence[CellResult]) -> tuple[str, list[tuple[str, str]]]:
    order = {v: i for i, v in enumerate(variant_order(manifest, cells))}
    return ("Commands per cell", [(f"{c.variant} · {users_word(c.users)}",
                                   "\n".join(shlex.join(cmd) for cmd in c.commands) or "-")
                                  for c in sorted(cells, key=lambda c: (order[c.variant], c.users))])


def build_report(results_dir: Path, out: Path | None = None, slo_ms: float = 10.0) -> Path:
    """Render the report of a results folder; returns the path of report.html (summary.csv beside it)."""
    results_dir = Path(results_dir)
    slo_ms = check_slo(slo_ms)
    manifest, cells = load_cells(results_dir)
    html_path = output_paths(results_dir, Path(out) if out is not None else None, REPORT_NAME)
    out_dir = html_path.parent
    colours = variant_colours(variant_order(manifest, cells))
    overview, timelines = render_plots(manifest, cells, out_dir / PLOTS_DIR, slo_ms)
    by_variant: dict[str, list[Any]] = {}
    for plot in timelines:
        by_variant.setdefault(plot.variant or "", []).append(plot)
    outcome = manifest.outcome if manifest is not None else "unknown (no manifest)"
    n_missing = sum(1 for r in summary_rows(manifest, cells) if r.status == MISSING)
    subtitle = (f"{len(cells)} cell(s), {len(by_variant)} variant(s), run outcome: {outcome}"
                + (f", {n_missing} planned cell(s) missing" if n_missing else "")
                + (f" — run {manifest.run_id}, started {format_time(manifest.started_at)}" if manifest else ""))
    capacity = next((load_capacity(folder) for folder in (results_dir, results_dir / CAPACITY_DIR)
                     if (folder / CAPACITY_NAME).is_file()), None)  # a search, or the main job's
    found = find(manifest, cells, slo_ms)
    searched: list[dict[str, Any]] = []
    if capacity is not None:  # a capacity search: its answer first, in its own SLO
        found = capacity_findings(capacity) + found
        searched = [capacity_section(capacity, colours),
                    plots_section("capacity-plots", "Latency against offered load",
                                  [(None, capacity_plots(capacity, out_dir / PLOTS_DIR, colours))], layout="grid",
                                  intro="Each trial of the search: where p99 crosses the SLO is the knee.")]
        write_atomic(out_dir / CAPACITY_CSV, capacity_csv(capacity))
    sections = [
        findings_section(found, intro=f"Derived from the numbers below; SLO: message p99 under {slo_ms:g} ms."),
        *searched,
        plots_section("plots", "Against concurrency", [(None, overview)]),
        summary_section(manifest, cells, colours),
        plots_section("timelines", "Each cell over time", list(by_variant.items()), layout="grid", colours=colours,
                      intro="Messages/s (dotted: asked), p99 (solid) and p50 (dotted), the server's connections and "
                            "failures second by second; the grey band is the ramp (until every user had a reply) and "
                            "the settle, excluded from every figure above; the red dashed line is the stop."),
        details_section(manifest, cells),
        manifest_section(manifest, cells, results_dir, slo_ms),
    ]
    title = "Swarmbench report" + (f": {', '.join(by_variant)}" if by_variant else "")
    write_atomic(out_dir / CSV_NAME, rows_to_csv(summary_rows(manifest, cells)))
    return write_atomic(html_path, render_page(title, subtitle, sections))
