"""The comparison as one HTML page: A and B overlaid per variant, the ratios, the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from reports.compare import METRICS, Comparison, comparison_headers, comparison_rows, summary_line
from reports.findings import Finding
from reports import page
from reports.plots import Plot, log_y, save, users_axis, variant_colours
from reports.summary import users_word

COMPARE_NAME = "compare.html"
RATIO_TICKS = (0.25, 0.5, 0.8, 1.0, 1.25, 2.0, 4.0)


def _variants(comp: Comparison) -> list[str]:
    return list(dict.fromkeys(p.variant for p in comp.pairs))


def overlay_plot(comp: Comparison, colours: dict[str, str], out_dir: Path) -> Plot:
    """Each metric against users: A dashed with open markers, B solid, one colour per variant."""
    fig = Figure(figsize=(11, 7.4), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    fig.suptitle(f"A = {comp.label_a} (dashed), B = {comp.label_b} (solid)", fontweight="bold")
    levels = sorted({p.users for p in comp.pairs})
    for ax, (metric, label, _) in zip(axes.flat, METRICS):
        log = metric != "throughput"
        drawn = False
        for variant in _variants(comp):
            pairs = [p for p in comp.pairs if p.variant == variant]
            for side, style in (("a", {"ls": "--", "markerfacecolor": "white"}), ("b", {"ls": "-"})):
                sides = [(p.users, getattr(p, side)) for p in pairs]
                pts = [(u, sd.value(metric), sd) for u, sd in sides]
                pts = [(u, v, sd) for u, v, sd in pts if v is not None and (v > 0 or not log)]
                ok = [(u, v) for u, v, sd in pts if sd.valid]
                bad = [(u, v) for u, v, sd in pts if not sd.valid]
                if ok:
                    ax.plot([u for u, _ in ok], [v for _, v in ok], color=colours[variant], marker="o",
                            markersize=5, **style)  # type: ignore[arg-type]
                if bad:  # failed or generator-bound: shown, never joined to the valid line
                    ax.plot([u for u, _ in bad], [v for _, v in bad], ls="", marker="X", markersize=8,
                            color=colours[variant], markeredgecolor="black", markeredgewidth=0.5,
                            alpha=0.6 if side == "a" else 1.0)
                drawn |= bool(pts)
        if log:
            log_y(ax, drawn)
        else:
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}"))
        if levels:
            users_axis(ax, levels)
        ax.set_title("throughput (messages/s)" if metric == "throughput" else f"message {label}")
        if ax in axes[0]:
            ax.set_xlabel("")
        ax.grid(True, which="major", alpha=0.3)
    handles = [Line2D([], [], color=colours[v], lw=2) for v in _variants(comp)]
    handles += [Line2D([], [], color="#555", ls="--", marker="o", markerfacecolor="white"),
                Line2D([], [], color="#555", ls="-", marker="o"),
                Line2D([], [], ls="", marker="X", color="#999", markeredgecolor="black")]
    axes[0, 0].legend(handles, [*_variants(comp), "A", "B", "failed / generator-bound"], fontsize=8, loc="best")
    return save(fig, out_dir, "compare-overlay", "A and B", "Both runs per variant; dashed: A, solid: B.")


def ratio_plot(comp: Comparison, colours: dict[str, str], out_dir: Path) -> Plot:
    """B/A per metric against users; the shaded band is 'the same within the threshold'."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    axes = fig.subplots(1, len(METRICS), sharey=True)
    levels = sorted({p.users for p in comp.pairs})
    for ax, (metric, label, higher_better) in zip(axes, METRICS):
        ax.axhspan(1 - comp.threshold, 1 + comp.threshold, color="#e8e8e8", lw=0)
        ax.axhline(1.0, color="#777", lw=1)
        values = []
        for variant in _variants(comp):
            pts = [(p.users, p.ratio(metric)) for p in comp.pairs if p.variant == variant]
            pts = [(u, r) for u, r in pts if r is not None and r > 0]
            values += [r for _, r in pts]
            if pts:
                ax.plot([u for u, _ in pts], [r for _, r in pts], color=colours[variant], marker="o",
                        markersize=5, label=variant)
        ax.set_yscale("log")
        lo, hi = min([0.5, *values]) / 1.2, max([2.0, *values]) * 1.2
        ax.set_ylim(lo, hi)
        ax.yaxis.set_major_locator(FixedLocator([t for t in RATIO_TICKS if lo <= t <= hi]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"×{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        if levels:
            users_axis(ax, levels)
        worse = "lower" if higher_better else "higher"
        ax.set_title(f"{label.replace(' ms', '')} B/A ({worse} is worse)", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("B / A")
    if comp.pairs:
        axes[0].legend(fontsize=8, loc="best")
    return save(fig, out_dir, "compare-ratios", "Ratios B/A", f"The grey band is ±{comp.threshold * 100:g}%: "
                "outside it on the worse side is a regression.")


def _findings(comp: Comparison) -> list[Finding]:
    found = [Finding("summary", "bad" if comp.regressions else "good", summary_line(comp))]
    for p in comp.pairs:
        if not p.reliable and not p.regressions:
            found.append(Finding("unreliable", "warn", f"{p.variant} at {users_word(p.users)}: not comparable "
                                 f"(A {p.a.status}{', generator-saturated' if p.a.saturated else ''}; "
                                 f"B {p.b.status}{', generator-saturated' if p.b.saturated else ''}).",
                                 p.variant, p.users))
    for label, keys in (("only in A", comp.only_a), ("only in B", comp.only_b)):
        if keys:
            names = ", ".join(f"{v} at {users_word(u)}" for v, u in keys)
            found.append(Finding("unpaired", "info", f"Cells {label}: {names}."))
    return found


def _manifest_items(comp: Comparison, side: str) -> list[tuple[str, object]]:
    manifest = comp.manifest_a if side == "a" else comp.manifest_b
    folder = comp.dir_a if side == "a" else comp.dir_b
    items: list[tuple[str, object]] = [("results folder", folder)]
    if manifest is not None:
        items += [("run id", manifest.run_id), ("outcome", manifest.outcome),
                  ("git commit", manifest.git_commit or "-"), ("command", " ".join(manifest.argv) or "-")]
        items += [(f"version: {k}", v) for k, v in sorted(manifest.versions.items())]
    return items


def build_comparison_report(comp: Comparison, out: Path) -> Path:
    """Write compare.html (or ``out`` if it names an .html file) with its PNGs beside it."""
    html_path = page.output_paths(Path(out), Path(out), COMPARE_NAME)
    plots_dir = html_path.parent / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    colours = variant_colours(_variants(comp))
    plots = [overlay_plot(comp, colours, plots_dir), ratio_plot(comp, colours, plots_dir)]
    rows: list[dict[str, Any]] = []
    worse_cols = {m: 3 + 2 * i for i, (m, _, _) in enumerate(METRICS)}  # each metric's B/A column
    for pair, texts in zip(comp.pairs, comparison_rows(comp)):
        flagged = {worse_cols[m] for m in pair.regressions if m in worse_cols}
        better = {worse_cols[m] for m in pair.improvements}
        cells = [page.cell(texts[0], colour=colours.get(pair.variant))]
        cells += [page.cell(t, cls="num worse" if i in flagged else "num better" if i in better else "")
                  for i, t in enumerate(texts[1:-1], start=1)]
        cells.append(page.cell(texts[-1], cls="note"))
        cls = "regression" if pair.regressions else ("saturated" if not pair.reliable else "")
        rows.append({"cls": cls, "cells": cells})
    sections = [
        page.findings_section(_findings(comp), intro=f"Ratios are B/A. A regression is {comp.threshold * 100:g}% "
                         "worse: throughput lower or latency higher, in a cell valid in both runs."),
        page.plots_section("plots", "Side by side", [(None, plots)]),
        page.table_section("comparison", "Cells", comparison_headers(), rows,
                      numeric=range(1, len(comparison_headers()) - 1),
                      legend="Red rows: regressions (the worse figures in bold red). Amber rows: not comparable "
                             "(a side failed or its generator was saturated)."),
        page.kv_section("manifests", "Runs", [(f"A: {comp.label_a}", _manifest_items(comp, "a")),
                                         (f"B: {comp.label_b}", _manifest_items(comp, "b"))]),
    ]
    title = f"Swarmbench comparison: {comp.label_a} → {comp.label_b}"
    return page.write_atomic(html_path, page.render_page(title, summary_line(comp), sections))
