"""The capacity search in the report: a table, one latency-against-offered-load plot per design, findings.

Built from ``capacity.json`` alone (:class:`~harness.results.capacity.CapacityResults`), beside the
cells' summary, so ``swarmbench report`` rebuilds it from the files. A capacity known only from
below (the generator, the descriptor limit or the budget stopped the search before the server
failed) reads "≥ X"; a figure that was not measured reads "-".
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from harness.results.capacity import CapacityEntry, CapacityResults, Trial
from reports.findings import Finding
from reports.page import cell, table_section
from reports.plots import Plot, save
from reports.summary import csv_text

CAPACITY_CSV = "capacity.csv"
HEADERS = ("Design", "Level", "Holds", "Fails at", "Limited by", "Why", "Trials")
LIMIT_WORDS = {
    "server": "the server",
    "generator": "the generator (the server's limit lies beyond)",
    "fd-limit": "the descriptor limit",
    "budget": "the time budget",
}


@dataclass(frozen=True, slots=True)
class CapacityRow:
    """One design at one level, as the table, the CSV and the findings say it."""

    variant: str
    level: str  # "100 users" (rate axis) or "10 msg/s each" (users axis)
    unit: str  # what a load counts: "msg/s" or "users"
    holds: int | None
    fails: int | None
    lower_bound: bool  # holds is only "at least": the server never failed
    limited_by: str
    reason: str
    trials: int
    confirmed: bool


def level_words(entry: CapacityEntry) -> str:
    if entry.users is not None:
        return f"{entry.users:,} user" + ("" if entry.users == 1 else "s")
    return f"{entry.rate_per_user:g} msg/s each" if entry.rate_per_user is not None else "-"


def capacity_rows(results: CapacityResults) -> list[CapacityRow]:
    unit = "msg/s" if results.axis == "rate" else "users"
    return [CapacityRow(e.variant, level_words(e), unit, e.capacity.holds, e.capacity.fails, e.capacity.lower_bound,
                        e.capacity.limited_by, e.capacity.reason, len(e.capacity.trials), e.capacity.confirmed)
            for e in results.entries]  # fmt: skip


def fmt_load(value: int | None, unit: str, bound: bool = False) -> str:
    if value is None:
        return "-"
    return f"{'≥ ' if bound else ''}{value:,} {unit}"


def holds_text(row: CapacityRow) -> str:
    if row.holds is None:
        return "none" if row.limited_by == "server" else "-"
    return fmt_load(row.holds, row.unit, row.lower_bound) + (" (confirmed)" if row.confirmed else "")


def capacity_section(results: CapacityResults, colours: dict[str, str]) -> dict[str, Any]:
    rows = []
    for r in capacity_rows(results):
        cls = "" if r.limited_by == "server" else "saturated"
        rows.append({"cls": cls, "cells": [
            cell(r.variant, colour=colours.get(r.variant)), cell(r.level), cell(holds_text(r)),
            cell(fmt_load(r.fails, r.unit)), cell(LIMIT_WORDS.get(r.limited_by, r.limited_by)),
            cell(r.reason, cls="note"), cell(f"{r.trials:,}")]})
    what = "msg/s over all users" if results.axis == "rate" else "connected users"
    return table_section(
        "capacity", "Capacity", HEADERS, rows,
        intro=f"The highest load ({what}) that held message p99 under {results.slo_ms:g} ms with at least 99% of "
              f"the asked rate answered, no user left unanswered and errors within {results.max_error_ratio:.1%}; "
              f"found by doubling, then bisecting to {results.resolution:.0%}. p99 counts every due message.",
        legend="Amber rows: the search stopped before the server failed, so its limit is at least the figure "
               "(≥). '-': not reached.",
        numeric=range(2, 4),
    )


def capacity_csv(results: CapacityResults) -> str:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(("variant", "level", "unit", "holds", "holds_lower_bound", "fails", "limited_by", "confirmed",
                  "trials", "reason"))
    for r in capacity_rows(results):
        out.writerow((csv_text(r.variant), csv_text(r.level), r.unit, "" if r.holds is None else r.holds,
                      "yes" if r.lower_bound else "no", "" if r.fails is None else r.fails, r.limited_by,
                      "yes" if r.confirmed else "no", r.trials, csv_text(r.reason)))
    return buf.getvalue()


def capacity_findings(results: CapacityResults) -> list[Finding]:
    """One line per design and level: where it stops holding the SLO and why; then which design held most."""
    found = []
    rows = capacity_rows(results)
    for r in rows:
        if r.limited_by == "server" and r.holds is None:
            text = f"{r.variant} at {r.level}: held the SLO at no load tried (from {fmt_load(r.fails, r.unit)}): {r.reason}"
            severity = "bad"
        elif r.limited_by == "server":
            text = (f"{r.variant} at {r.level}: holds {fmt_load(r.holds, r.unit)}, fails at "
                    f"{fmt_load(r.fails, r.unit)}: {r.reason}")
            severity = "info"
        elif r.fails is not None:  # the server failed, but the bracket was not narrowed to the resolution
            text = (f"{r.variant} at {r.level}: holds {fmt_load(r.holds, r.unit)}, fails at {fmt_load(r.fails, r.unit)}; "
                    f"its limit lies between (the search was not narrowed further: "
                    f"{LIMIT_WORDS.get(r.limited_by, r.limited_by)} stopped it)")
            severity = "info"
        else:
            text = (f"{r.variant} at {r.level}: holds {fmt_load(r.holds, r.unit, True) if r.holds is not None else 'no load'}"
                    f"; the search was stopped by {LIMIT_WORDS.get(r.limited_by, r.limited_by)} before the server "
                    f"failed: {r.reason}")
            severity = "warn"
        found.append(Finding("capacity", severity, text, r.variant, None, float(r.holds) if r.holds else None))
    known = [r for r in rows if r.holds is not None]
    if len({r.variant for r in known}) > 1:
        best = max(known, key=lambda r: r.holds or 0)
        worst = min(known, key=lambda r: r.holds or 0)
        found.append(Finding("capacity", "good",
                             f"Most load held: {best.variant} at {best.level} ({fmt_load(best.holds, best.unit, best.lower_bound)}); "
                             f"least: {worst.variant} at {worst.level} ({fmt_load(worst.holds, worst.unit, worst.lower_bound)})."))
    return found


# -- plots ------------------------------------------------------------------------------------------------


def capacity_plots(results: CapacityResults, out_dir: Path, colours: dict[str, str]) -> list[Plot]:
    """Per design and level: p50 and p99 against the load asked, each trial marked by its verdict."""
    plots = []
    for i, entry in enumerate(results.entries):
        plots.append(entry_plot(results, entry, out_dir, f"capacity-{i:02d}", colours.get(entry.variant, "#1f77b4")))
    return plots


def _ms(trial: Trial, key: str) -> float | None:
    value = getattr(trial, key)
    return None if value is None or value <= 0 else value / 1000.0


def entry_plot(results: CapacityResults, entry: CapacityEntry, out_dir: Path, name: str, colour: str) -> Plot:
    fig = Figure(figsize=(7.2, 4.4), layout="constrained")
    ax = fig.subplots()
    unit = "msg/s asked" if results.axis == "rate" else "users"
    trials = sorted(entry.capacity.trials, key=lambda t: t.load)
    for key, style in (("p99_us", "-"), ("p50_us", ":")):
        valid = [(t.load, _ms(t, key)) for t in trials if t.verdict != "invalid" and _ms(t, key) is not None]
        if valid:
            ax.plot([x for x, _ in valid], [y for _, y in valid], color=colour, ls=style, lw=1.2, zorder=2)
    for t in trials:
        y = _ms(t, "p99_us")
        if y is None:
            continue
        bound = t.p99_lower_bound
        if t.verdict == "invalid":
            ax.plot([t.load], [y], ls="", marker="o", markersize=8, markerfacecolor="white", markeredgecolor="#888")
        elif t.verdict == "fail":
            ax.plot([t.load], [y], ls="", marker="^" if bound else "X", markersize=9,
                    markerfacecolor="white" if bound else "#c00", markeredgecolor="#c00", markeredgewidth=1.5)
        else:
            ax.plot([t.load], [y], ls="", marker="o", markersize=6, color=colour)
    ax.axhline(results.slo_ms, color="#c00", ls="--", lw=1)
    cap = entry.capacity
    if cap.holds is not None:
        ax.axvline(cap.holds, color="#2a2", ls=":", lw=1)
    if cap.fails is not None:
        ax.axvline(cap.fails, color="#c00", ls=":", lw=1)
    if ax.has_data():
        loads = [t.load for t in trials] or [1]
        if min(loads) == max(loads):  # one load tried: a span around it (a log axis needs one)
            ax.set_xlim(loads[0] / 2, loads[0] * 2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _p: f"{v:,.0f}" if v >= 1 else f"{v:g}")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(unit)
    ax.set_ylabel("message latency (ms)")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(f"{entry.variant} at {level_words(entry)}", fontsize=10)
    ax.legend([Line2D([], [], color=colour, ls="-"), Line2D([], [], color=colour, ls=":"),
               Line2D([], [], ls="", marker="o", color=colour),
               Line2D([], [], ls="", marker="X", color="#c00"),
               Line2D([], [], ls="", marker="^", markerfacecolor="white", markeredgecolor="#c00"),
               Line2D([], [], ls="", marker="o", markerfacecolor="white", markeredgecolor="#888"),
               Line2D([], [], color="#c00", ls="--")],
              ["p99", "p50", "pass", "fail", "fail, p99 ≥ (no reply)", "invalid (generator)", f"SLO {results.slo_ms:g} ms"],
              fontsize=7, loc="upper left")
    holds = fmt_load(cap.holds, "msg/s" if results.axis == "rate" else "users", cap.lower_bound)
    return save(fig, out_dir, name, f"{entry.variant} at {level_words(entry)}",
                f"Each trial's p99 (solid) and p50 (dotted) against the load; holds {holds} (green dotted), "
                f"fails at {fmt_load(cap.fails, 'msg/s' if results.axis == 'rate' else 'users')} (red dotted).",
                variant=entry.variant)
