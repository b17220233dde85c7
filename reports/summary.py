"""The summary table and its formatting: pure functions of the result model.

Nothing here (but ``load_cells``) reads files, and nothing plots or renders HTML, so the numbers a report shows
can be tested (and reused by ``compare`` and the CLI) without matplotlib.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.results import CellResult, ResultError, RunManifest, load_run
# How a cell is read lives beside the result model (harness.verdict reads cells too); kept importable from here.
from harness.results.reading import CONNECT, MESSAGE, fmt_duration_ms, fmt_rate, generator_limited, generator_note
from harness.results.reading import lag_bound_only, latency

#: Status of a planned cell that has no result file (an interrupted run).
MISSING = "missing"
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the summary table; None where the cell has no such figure."""

    variant: str
    users: int
    status: str  # a CellResult status, or MISSING
    throughput: float | None = None  # achieved messages/s over the window
    rate: float | None = None  # asked messages/s (open loop); None: closed loop
    window_s: float | None = None  # seconds the figures cover, as measured
    not_established: int | None = None  # users with no reply yet when the cell stopped
    mean_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    connect_p99_ms: float | None = None
    failures: int | None = None  # errors: every failure of the whole cell, ramp included
    threads_max: int | None = None
    cpu_percent: float | None = None
    rss_mib: float | None = None  # the server's memory: PSS where read, else RSS (``memory``)
    memory: str = ""
    listen_overflows: int | None = None
    saturated: bool = False
    note: str = ""
    #: the latency fields above (``"p99_ms"``...) known only as lower bounds: they rest on messages that
    #: had no reply (harness.results.cells.Latency.bounds), shown "≥ x"
    bounds: tuple[str, ...] = ()


def load_cells(results_dir: Path) -> tuple[RunManifest | None, list[CellResult]]:
    """load_run, plus: a folder whose run never finished a cell has nothing to report (the one I/O here)."""
    manifest, cells = load_run(Path(results_dir))
    if not cells:
        raise ResultError(f"{results_dir} holds no cell results yet (the run finished no cell)")
    return manifest, cells


def ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


def kernel_counter(cell: CellResult, name: str) -> int | None:
    """A kernel TCP counter delta by its short name ("ListenOverflows"), whatever its prefix;
    None when the counter was not read (never "the kernel counted none")."""
    values = [v for k, v in cell.kernel.items() if k == name or k.endswith("." + name) or k.endswith(":" + name)]
    if not values or any(v is None for v in values):
        return None
    return sum(int(v) for v in values if v is not None)


def variant_order(manifest: RunManifest | None, cells: Iterable[CellResult]) -> tuple[str, ...]:
    """Variants in the order the sweep planned (then ran) them: the order of every legend."""
    seen: dict[str, None] = {}
    if manifest is not None:
        for variant, _ in manifest.planned:
            seen.setdefault(variant, None)
    for cell in cells:
        seen.setdefault(cell.variant, None)
    return tuple(seen)


def missing_cells(manifest: RunManifest | None, cells: Sequence[CellResult]) -> list[tuple[str, int]]:
    """Planned cells with no result file, in plan order."""
    if manifest is None:
        return []
    have = {c.key for c in cells}
    return [key for key in manifest.planned if key not in have]


def is_valid(cell: CellResult) -> bool:
    """A cell whose figures describe the server: it ran its window and the generator kept up."""
    return cell.status == "ok" and not generator_limited(cell)


def memory_mib(cell: CellResult) -> tuple[str, float | None]:
    memory = cell.server.memory_bytes if cell.server.samples > 0 else None
    return ("", None) if memory is None else (memory[0], memory[1] / MIB)


def row_for(cell: CellResult) -> Row:
    lat = latency(cell)
    conn = latency(cell, CONNECT)
    sampled = (cell.server.samples or 0) > 0  # no --pid: None or 0 samples, shown as "-"
    notes = []
    if generator_limited(cell):
        notes.append(generator_note(cell))
    if cell.users_not_established:
        notes.append(f"{cell.users_not_established:,} users never established")
    if cell.status != "ok":
        notes.append(cell.status + (f": {cell.error}" if cell.error else ""))
    notes.extend(cell.notes)
    ran = cell.status in ("ok", "server-died") or cell.messages > 0  # a cell that never ran measured nothing
    return Row(
        variant=cell.variant,
        users=cell.users,
        status=cell.status,
        throughput=cell.throughput if ran and (cell.window_s is None or cell.window_s > 0) else None,
        rate=cell.rate,
        window_s=cell.window_s,
        not_established=cell.users_not_established,
        mean_ms=ms(lat.mean_us) if lat else None,
        p50_ms=ms(lat.p50_us) if lat else None,
        p95_ms=ms(lat.p95_us) if lat else None,
        p99_ms=ms(lat.p99_us) if lat else None,
        p999_ms=ms(lat.p999_us) if lat else None,
        connect_p99_ms=ms(conn.p99_us) if conn else None,
        failures=cell.errors if ran else None,
        threads_max=cell.server.threads_max if sampled else None,
        cpu_percent=cell.server.cpu_percent_mean if sampled else None,
        rss_mib=memory_mib(cell)[1] if sampled else None,
        memory=memory_mib(cell)[0],
        listen_overflows=kernel_counter(cell, "ListenOverflows"),
        saturated=generator_limited(cell),
        note="; ".join(notes),
        bounds=tuple(f"{key[:-3]}_ms" for key in lat.bounds) if lat else (),
    )


def summary_rows(manifest: RunManifest | None, cells: Sequence[CellResult]) -> list[Row]:
    """Every cell and every planned-but-missing cell, by variant (plan order) then users."""
    order = {v: i for i, v in enumerate(variant_order(manifest, cells))}
    rows = [row_for(c) for c in cells]
    rows += [Row(variant=v, users=u, status=MISSING, note="no result (run stopped before this cell)")
             for v, u in missing_cells(manifest, cells)]
    return sorted(rows, key=lambda r: (order.get(r.variant, len(order)), r.users))


# -- formatting ---------------------------------------------------------------------------

def fmt_ms(value: float | None, bound: bool = False) -> str:
    """Milliseconds with microsecond precision, as memtier_benchmark prints them; "≥ " when only a lower bound."""
    return "-" if value is None else f"{'≥ ' if bound else ''}{value:.3f}"


def fmt_int(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def users_word(users: int) -> str:
    return f"{users:,} user" + ("" if users == 1 else "s")


CSV_FIELDS = (
    "variant", "users", "status", "ops_per_s", "asked_per_s", "window_s", "not_established", "avg_ms", "p50_ms", "p95_ms", "p99_ms", "p999_ms",
    "connect_p99_ms", "errors", "threads_max", "cpu_percent_mean", "memory_mib_max", "memory_measure",
    "listen_overflows", "generator_saturated", "note", "lower_bounds",
)


def _num(value: float | int | None, digits: int | None = None) -> str:
    if value is None:
        return ""
    return str(value) if digits is None else f"{value:.{digits}f}"


#: A spreadsheet takes a field that begins with one of these for a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """Text as a spreadsheet shows it, never runs it: a leading ``'`` where it could start a formula."""
    return "'" + value if value.startswith(FORMULA_START) else value


def rows_to_csv(rows: Sequence[Row]) -> str:
    """The summary table as CSV: plain numbers (ms with 3 decimals), empty where unknown."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(CSV_FIELDS)
    for r in rows:
        out.writerow([
            csv_text(r.variant), r.users, csv_text(r.status), _num(r.throughput, 1), _num(r.rate, 1), _num(r.window_s),
            _num(r.not_established), _num(r.mean_ms, 3), _num(r.p50_ms, 3),
            _num(r.p95_ms, 3), _num(r.p99_ms, 3), _num(r.p999_ms, 3), _num(r.connect_p99_ms, 3),
            _num(r.failures), _num(r.threads_max), _num(r.cpu_percent, 1), _num(r.rss_mib, 1), csv_text(r.memory),
            _num(r.listen_overflows), "yes" if r.saturated else "no", csv_text(r.note), " ".join(r.bounds),
        ])
    return buf.getvalue()


SUMMARY_HEADERS = ("Variant", "Users", "Ops/sec", "Asked/sec", "Window s", "Avg ms", "p50 ms", "p99 ms", "p99.9 ms",
                   "Connect p99 ms", "Errors", "Not estab.", "Threads max", "CPU %", "Mem MiB", "Note")


def row_cells(r: Row) -> tuple[str, ...]:
    """The formatted columns of SUMMARY_HEADERS for one row."""
    return (
        r.variant, fmt_int(r.users), fmt_rate(r.throughput) if r.status != MISSING else "-",
        fmt_rate(r.rate) if r.rate else ("closed" if r.status != MISSING else "-"),
        "-" if r.window_s is None else f"{r.window_s:g}",
        *(fmt_ms(getattr(r, key), key in r.bounds) for key in ("mean_ms", "p50_ms", "p99_ms", "p999_ms")),
        fmt_ms(r.connect_p99_ms),
        fmt_int(r.failures), fmt_int(r.not_established), fmt_int(r.threads_max),
        "-" if r.cpu_percent is None else f"{r.cpu_percent:.1f}",
        "-" if r.rss_mib is None else f"{r.rss_mib:.1f} {r.memory}",
        r.note,
    )


def render_summary_text(rows: Sequence[Row]) -> str:
    """The summary as a fixed-width text table, for terminals and CI logs."""
    table = [SUMMARY_HEADERS] + [row_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(SUMMARY_HEADERS) - 1)]
    lines = []
    for n, line in enumerate(table):
        cols = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:-1], widths[1:])]
        lines.append("  ".join(cols + [line[-1]]).rstrip())
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines) + "\n"
