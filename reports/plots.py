"""PNG plots of a run, with matplotlib's Agg renderer and no pyplot.

Figures are built with :class:`matplotlib.figure.Figure` directly (as
matplotlib's "embedding in a web server" guide does): no GUI backend, no global
figure registry to leak, safe in any process. A variant keeps its colour in
every plot; non-positive values are left off log axes rather than drawn at zero.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the renderer savefig uses; never a GUI backend, even if pyplot is imported later
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter  # noqa: E402

from harness.results import CellResult, ResultError, RunManifest, write_bytes  # noqa: E402
from reports.findings import CONNECT_JUMP_MS, by_variant  # noqa: E402
from reports.summary import CONNECT, kernel_counter, latency, memory_mib, users_word, variant_order  # noqa: E402

DPI = 100
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f", "#d62728")
Getter = Callable[[CellResult], float | None]


@dataclass(frozen=True, slots=True)
class Plot:
    name: str  # file stem
    title: str
    caption: str
    path: Path
    width: int
    height: int
    variant: str | None = None
    users: int | None = None


def variant_colours(variants: Sequence[str]) -> dict[str, str]:
    """One colour per variant, by plan order, so a design looks the same in every plot."""
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(variants)}


def _plain(value: float, _pos: object = None) -> str:
    return f"{value:g}" if value >= 0.01 or value == 0 else f"{value:.0e}"


def users_axis(ax: Axes, levels: Sequence[int]) -> None:
    """Log x axis with a tick at every concurrency level the sweep ran."""
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(levels)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = min(levels), max(levels)
    ax.set_xlim(lo / 1.4, hi * 1.4)
    ax.set_xlabel("concurrent users")


def label_axes(ax: Axes, levels: Sequence[int], title: str, ylabel: str, *, fontsize: float | None = None) -> None:
    """What every against-concurrency panel shares: the users axis, a bold title, the y label, a grid."""
    users_axis(ax, levels)
    ax.set_title(title, fontweight="bold", fontsize=fontsize)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


def log_y(ax: Axes, had_data: bool) -> None:
    if had_data:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    else:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#888")


def count_axis(ax: Axes, integer: bool = True, nbins: int | str = "auto") -> None:
    """A linear axis from zero with headroom and readable ticks, even when every value is zero."""
    top = ax.dataLim.y1 if ax.has_data() and math.isfinite(ax.dataLim.y1) else 0.0
    ax.set_ylim(0, max(1.0, top * 1.12))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=nbins, integer=integer, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}" if abs(v) >= 10 or v == int(v) else f"{v:g}"))


def _finite(value: float | None, log: bool) -> bool:
    return value is not None and math.isfinite(value) and (value > 0 or not log)


def draw_variants(ax: Axes, groups: dict[str, list[CellResult]], colours: dict[str, str], get: Getter, *,
                  log: bool, label: bool = True, bound: Callable[[CellResult], bool] | None = None,
                  **style: object) -> bool:
    """A line per variant through its ok cells; open circle: generator-saturated; open triangle: the value
    is only a lower bound (``bound``); X: server died/failed."""
    drawn = False
    for variant, cells in groups.items():
        colour = colours[variant]
        ok = [(c.users, get(c), c.generator.saturated, bound is not None and bound(c)) for c in cells
              if c.status == "ok"]  # fmt: skip
        ok = [(u, y, s, b) for u, y, s, b in ok if _finite(y, log)]
        if ok:
            ax.plot([u for u, *_ in ok], [y for _, y, *_ in ok], color=colour, marker="o", markersize=5,
                    label=variant if label else None, **style)  # type: ignore[arg-type]
            for flag, marker in ((2, "o"), (3, "^")):
                marked = [(row[0], row[1]) for row in ok if row[flag]]
                if marked:
                    ax.plot([u for u, _ in marked], [y for _, y in marked], ls="", marker=marker, markersize=9,
                            markerfacecolor="white", markeredgecolor=colour, markeredgewidth=2, zorder=3)
            drawn = True
        bad = [(c.users, get(c)) for c in cells if c.status != "ok"]
        bad = [(u, y) for u, y in bad if _finite(y, log)]
        if bad:
            ax.plot([u for u, _ in bad], [y for _, y in bad], ls="", marker="X", markersize=9, color=colour,
                    markeredgecolor="black", markeredgewidth=0.6, zorder=3)
            drawn = True
    return drawn


def marker_legend(ax: Axes, cells: Sequence[CellResult], **kwargs: object) -> None:
    """The variants' legend, plus what the special markers mean when any is drawn."""
    handles, labels = ax.get_legend_handles_labels()
    if any(c.generator.saturated for c in cells):
        handles.append(Line2D([], [], ls="", marker="o", markersize=9, markerfacecolor="white",
                              markeredgecolor="#555", markeredgewidth=2))
        labels.append("generator-saturated")
    if any((lat := latency(c)) is not None and lat.bounds for c in cells):
        handles.append(Line2D([], [], ls="", marker="^", markersize=9, markerfacecolor="white",
                              markeredgecolor="#555", markeredgewidth=2))
        labels.append("≥: a lower bound (messages had no reply)")
    if any(c.status != "ok" for c in cells):
        handles.append(Line2D([], [], ls="", marker="X", markersize=9, color="#999", markeredgecolor="black"))
        labels.append("server died / failed")
    if handles:
        ax.legend(handles, labels, fontsize=8, **kwargs)  # type: ignore[arg-type]


def save(fig: Figure, out_dir: Path, name: str, title: str, caption: str, **extra: object) -> Plot:
    path = out_dir / f"{name}.png"
    if path.resolve().parent != out_dir.resolve() or name.startswith("."):  # names are checked on load; twice is cheap
        raise ResultError(f"plot name {name[:60]!r} would leave {out_dir}")
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI)
    write_bytes(path, png.getvalue())  # a unique temporary name: two reports on one folder never collide
    w, h = fig.get_size_inches()
    return Plot(name, title, caption, path, round(w * DPI), round(h * DPI), **extra)  # type: ignore[arg-type]


def _lat(name: str, key: str) -> Getter:
    def get(cell: CellResult) -> float | None:
        lat = latency(cell, name)
        return getattr(lat, key) / 1000.0 if lat is not None else None
    return get


def _bound(name: str, key: str) -> Callable[[CellResult], bool]:
    def bound(cell: CellResult) -> bool:
        lat = latency(cell, name)
        return lat is not None and lat.lower_bound(key)
    return bound


def _server(get: Getter) -> Getter:
    return lambda c: get(c) if c.server.samples > 0 else None


def _opt(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def latency_plot(groups: dict[str, list[CellResult]], colours: dict[str, str], levels: list[int],
                 cells: Sequence[CellResult], out_dir: Path, slo_ms: float) -> Plot:
    fig = Figure(figsize=(11, 7.4), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True, sharey=True)
    fig.suptitle("Message latency against concurrency (log axes)", fontweight="bold")
    for ax, (key, label) in zip(axes.flat, (("p50_us", "p50"), ("p95_us", "p95"), ("p99_us", "p99"),
                                            ("p999_us", "p99.9"))):
        drawn = draw_variants(ax, groups, colours, _lat("message", key), log=True, bound=_bound("message", key))
        log_y(ax, drawn)
        users_axis(ax, levels)
        ax.set_title(label)
        ax.grid(True, which="major", alpha=0.3)
        if drawn:
            ax.axhline(slo_ms, color="#c00", ls="--", lw=1)
            ax.text(0.01, slo_ms, f" SLO {slo_ms:g} ms", color="#c00", fontsize=8, ha="left", va="bottom",
                    transform=ax.get_yaxis_transform())
    for ax in axes[:, 0]:
        ax.set_ylabel("latency (ms)")
    for ax in axes[0, :]:
        ax.set_xlabel("")
    marker_legend(axes[0, 0], cells, loc="upper left")
    return save(fig, out_dir, "latency", "Latency", "Message round-trip percentiles per variant; the dashed "
                f"red line is the {slo_ms:g} ms SLO.")


def throughput_plot(groups: dict[str, list[CellResult]], colours: dict[str, str], levels: list[int],
                    cells: Sequence[CellResult], out_dir: Path) -> Plot:
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax = fig.subplots()
    draw_variants(ax, groups, colours, lambda c: c.throughput, log=False)
    label_axes(ax, levels, "Throughput against concurrency", "messages / s")
    count_axis(ax)
    marker_legend(ax, cells, loc="best")
    return save(fig, out_dir, "throughput", "Throughput", "Replies per second over the steady window.")


def threads_plot(groups: dict[str, list[CellResult]], colours: dict[str, str], levels: list[int],
                 cells: Sequence[CellResult], out_dir: Path) -> Plot:
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax = fig.subplots()
    drawn = draw_variants(ax, groups, colours, _server(lambda c: _opt(c.server.threads_max)), log=True)
    ax.plot(levels, levels, color="#999", ls=":", lw=1.2, label="one thread per user")
    log_y(ax, drawn or bool(levels))
    label_axes(ax, levels, "Server threads against concurrency", "server threads (max)")
    marker_legend(ax, cells, loc="upper left")
    return save(fig, out_dir, "threads", "Server threads", "Peak thread count of the server process; the "
                "dotted line is one thread per concurrent user.")


def resources_plot(groups: dict[str, list[CellResult]], colours: dict[str, str], levels: list[int],
                   cells: Sequence[CellResult], out_dir: Path) -> Plot:
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    cpu, rss = fig.subplots(1, 2)
    draw_variants(cpu, groups, colours, _server(lambda c: c.server.cpu_percent_mean), log=False)
    draw_variants(rss, groups, colours, lambda c: memory_mib(c)[1], log=False)
    measures = sorted({memory_mib(c)[0] for c in cells if memory_mib(c)[1] is not None})
    measure = " / ".join(measures) or "RSS"
    for ax, title, unit in ((cpu, "Server CPU (mean)", "CPU % (100 = one core)"),
                            (rss, f"Server memory (peak {measure})", f"{measure} (MiB)")):
        label_axes(ax, levels, title, unit)
        count_axis(ax, integer=False)
    marker_legend(cpu, cells, loc="best")
    return save(fig, out_dir, "resources", "CPU and memory", "Server process CPU (mean over the window) and "
                f"peak memory as {measure}: PSS (proportional set size, summed over the process tree) counts a page "
                "shared by forked children once; RSS would count it in every child.")


def connect_plot(groups: dict[str, list[CellResult]], colours: dict[str, str], levels: list[int],
                 cells: Sequence[CellResult], out_dir: Path) -> Plot:
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    fails, conn, over = fig.subplots(1, 3)
    draw_variants(fails, groups, colours, lambda c: float(c.errors), log=False)
    label_axes(fails, levels, "Errors", "failed requests (whole cell)")
    drawn = draw_variants(conn, groups, colours, _lat(CONNECT, "p99_us"), log=True)
    drawn |= draw_variants(conn, groups, colours, _lat(CONNECT, "p50_us"), log=True, label=False,
                           ls=":", alpha=0.6)
    log_y(conn, drawn)
    if drawn:
        conn.axhline(CONNECT_JUMP_MS, color="#c00", ls="--", lw=1)
    label_axes(conn, levels, "Connect time: p99 (solid), p50 (dotted)", "connect (ms)", fontsize=10)
    draw_variants(over, groups, colours, lambda c: _opt(kernel_counter(c, "ListenOverflows")), log=False)
    label_axes(over, levels, "Listen-queue overflows (kernel)", "ListenOverflows in the cell", fontsize=10)
    count_axis(fails)
    count_axis(over)
    marker_legend(fails, cells, loc="upper left")
    return save(fig, out_dir, "connect", "Errors and connects", "Connect percentiles cover every connect of "
                "the cell, the ramp included. Connect p99 near 1 s (dashed line) "
                "means SYNs were dropped and retried; the kernel's listen-queue overflows say whether the "
                "accept backlog was full.")


def timeline_plot(cell: CellResult, colour: str, out_dir: Path) -> Plot:
    """One cell second by second: messages/s, p50 and p99, connections and failures; the ramp and
    settle shaded, the window's edges and the stop marked."""
    fig = Figure(figsize=(4.4, 5.4), layout="constrained")
    rate_ax, lat_ax, conn_ax, fail_ax = fig.subplots(4, 1, sharex=True)
    tag = "" if cell.status == "ok" else f" [{cell.status}]"
    tag += " [generator-bound]" if cell.generator.saturated or cell.generator_bound else ""
    fig.suptitle(f"{cell.variant} · {users_word(cell.users)}{tag}", fontsize=10, fontweight="bold",
                 color="#b00" if tag else "black")
    pts = sorted(cell.timeline, key=lambda p: p.t)
    t = [p.t for p in pts]
    rate_ax.plot(t, [p.messages_per_s for p in pts], color=colour, lw=1.5)
    if cell.rate:
        rate_ax.axhline(cell.rate, color="#999", ls=":", lw=1)
    rate_ax.set_ylabel("msg/s", fontsize=8)
    for key, style in (("p99_us", "-"), ("p50_us", ":")):
        series = [(p.t, getattr(p, key) / 1000) for p in pts if getattr(p, key) is not None and getattr(p, key) > 0]
        lat_ax.plot([x for x, _ in series], [y for _, y in series], color=colour, lw=1.5, ls=style)
    lat_ax.set_ylabel("p99 / p50 ms", fontsize=8)
    conn = [(p.t, p.connections) for p in pts if p.connections is not None]
    conn_ax.plot([x for x, _ in conn], [y for _, y in conn], color=colour, lw=1.5)
    conn_ax.set_ylabel("connections", fontsize=8)
    fail_ax.plot(t, [p.failures for p in pts], color="#c00", lw=1.2)
    fail_ax.set_ylabel("failures/s", fontsize=8)
    fail_ax.set_xlabel("seconds since the cell started", fontsize=8)
    window = (cell.window_from - cell.started_at, cell.window_s) if cell.window_from is not None and cell.window_s else None
    stop = cell.window_from - cell.started_at + (cell.window_s or 0) if cell.window_from is not None else None
    for ax in (rate_ax, lat_ax, conn_ax, fail_ax):
        count_axis(ax, integer=ax is not lat_ax, nbins=4)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if window is not None:
            ax.axvspan(0, window[0], color="#ddd", alpha=0.6, lw=0)  # ramp and settle: not measured
            ax.axvline(window[0], color="#555", lw=0.8)
        elif cell.warmup_s > 0:
            ax.axvspan(0, cell.warmup_s, color="#ddd", alpha=0.6, lw=0)
        if stop is not None:
            ax.axvline(stop, color="#c00", lw=0.8, ls="--")
        if not pts:
            ax.text(0.5, 0.5, "no timeline", transform=ax.transAxes, ha="center", va="center", color="#888")
    if pts:
        rate_ax.set_xlim(0, max(max(t) + 1, stop or 0))
    if window is not None and window[0] > 0:
        rate_ax.text(window[0] / 2, 0.95, "ramp + settle", transform=rate_ax.get_xaxis_transform(), ha="center",
                     va="top", fontsize=7, color="#666")
    if stop is not None:
        rate_ax.text(stop, 0.95, " stop", transform=rate_ax.get_xaxis_transform(), ha="left", va="top", fontsize=7,
                     color="#c00")
    return save(fig, out_dir, f"timeline-{cell.variant}-u{cell.users:05d}", f"{cell.variant}, {cell.users} users",
                "", variant=cell.variant, users=cell.users)


def _odds(percentile: float) -> float:
    """HdrHistogram's percentile axis: 1 / (1 - p), so 90, 99, 99.9 are evenly spaced on a log scale."""
    return 1.0 / max(1.0 - percentile / 100.0, 1e-6)


def spectrum_plot(groups: dict[str, list[CellResult]], colours: dict[str, str], levels: list[int],
                  out_dir: Path, slo_ms: float) -> Plot:
    """Latency by percentile (log axes), one line per design, one panel per level (wrk2/HdrHistogram style)."""
    shown = [u for u in levels if any(c.users == u and c.spectrum for cs in groups.values() for c in cs)] or levels[-1:]
    fig = Figure(figsize=(11, 3.9), layout="constrained")
    axes = fig.subplots(1, len(shown), sharey=True, squeeze=False)[0]
    fig.suptitle("Message latency by percentile over the window (log axes)", fontweight="bold")
    ticks = [50.0, 90.0, 99.0, 99.9, 99.99, 99.999]
    for ax, users in zip(axes, shown):
        drawn = False
        for variant, cells in groups.items():
            for cell in cells:
                pts = [(_odds(p), v / 1000) for p, v in cell.spectrum if p < 100.0 and v > 0]
                if cell.users == users and pts:
                    ax.plot([x for x, _ in pts], [y for _, y in pts], color=colours[variant], marker=".", lw=1.5,
                            label=variant, ls="-" if cell.status == "ok" else ":")
                    drawn = True
        ax.set_xscale("log")
        ax.set_xticks([_odds(p) for p in ticks])
        ax.set_xticklabels([f"{p:g}%" for p in ticks], fontsize=7)
        ax.xaxis.set_minor_formatter(NullFormatter())
        log_y(ax, drawn)
        if drawn:
            ax.axhline(slo_ms, color="#c00", ls="--", lw=1)
        ax.set_title(users_word(users), fontsize=10)
        ax.set_xlabel("percentile")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("latency (ms)")
    shown_lines: dict[str, Artist] = {}  # every panel's designs in one legend; none drawn (no data): no legend,
    for ax in axes:  # not matplotlib's "No artists with labels" warning on stderr
        for handle, label in zip(*ax.get_legend_handles_labels()):
            shown_lines.setdefault(label, handle)
    if shown_lines:
        axes[0].legend(list(shown_lines.values()), list(shown_lines), fontsize=8, loc="upper left")
    return save(fig, out_dir, "spectrum", "Latency spectrum", "Each design's message latency at every percentile "
                f"of the window, from its histogram; the dashed red line is the {slo_ms:g} ms SLO.")


def render_plots(manifest: RunManifest | None, cells: Sequence[CellResult], out_dir: Path,
                 slo_ms: float = 10.0) -> tuple[list[Plot], list[Plot]]:
    """Write every PNG into ``out_dir``: (overview plots, per-cell timelines)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    order = variant_order(manifest, cells)
    colours = variant_colours(order)
    grouped = by_variant(cells)
    groups = {v: grouped[v] for v in order if v in grouped}
    levels = sorted({c.users for c in cells})
    overview = [
        latency_plot(groups, colours, levels, cells, out_dir, slo_ms),
        spectrum_plot(groups, colours, levels, out_dir, slo_ms),
        throughput_plot(groups, colours, levels, cells, out_dir),
        threads_plot(groups, colours, levels, cells, out_dir),
        resources_plot(groups, colours, levels, cells, out_dir),
        connect_plot(groups, colours, levels, cells, out_dir),
    ]
    timelines = [timeline_plot(c, colours[c.variant], out_dir) for v in groups for c in groups[v]]
    return overview, timelines
