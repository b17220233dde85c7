"""Two runs, the same cells side by side: ratios B/A and regressions beyond a threshold.

In the manner of ``pyperf compare_to``: A is the reference, B the change; a
ratio above 1 means B is larger (better for throughput, worse for latency).
Pure functions of the result model; the HTML lives in ``reports.compare_report``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.results import CellResult, RunManifest
from reports.summary import fmt_ms, fmt_rate, latency, load_cells, users_word

#: (metric, label, higher is better)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("throughput", "ops/s", True),
    ("p50", "p50 ms", False),
    ("p99", "p99 ms", False),
    ("p999", "p99.9 ms", False),
)
LATENCY_KEYS = {"p50": "p50_us", "p99": "p99_us", "p999": "p999_us"}


@dataclass(frozen=True, slots=True)
class Side:
    """One run's figures for a cell."""

    status: str
    throughput: float
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    errors: int
    saturated: bool

    @classmethod
    def of(cls, cell: CellResult) -> Side:
        lat = latency(cell)
        get = (lambda key: getattr(lat, LATENCY_KEYS[key]) / 1000.0) if lat is not None else (lambda key: None)
        return cls(cell.status, cell.throughput, get("p50"), get("p99"), get("p999"), cell.errors,
                   cell.generator.saturated)

    @property
    def valid(self) -> bool:
        return self.status == "ok" and not self.saturated

    def value(self, metric: str) -> float | None:
        return self.throughput if metric == "throughput" else getattr(self, f"{metric}_ms")


@dataclass(frozen=True, slots=True)
class Pair:
    variant: str
    users: int
    a: Side
    b: Side
    ratios: tuple[tuple[str, float | None], ...]  # (metric, B/A) in METRICS order
    regressions: tuple[str, ...]  # metrics worse beyond the threshold; "status" if B broke
    improvements: tuple[str, ...]

    @property
    def key(self) -> tuple[str, int]:
        return self.variant, self.users

    @property
    def reliable(self) -> bool:
        """Both sides ran their window with a generator that kept up: the ratios mean something."""
        return self.a.valid and self.b.valid

    def ratio(self, metric: str) -> float | None:
        return dict(self.ratios)[metric]


@dataclass(frozen=True, slots=True)
class Comparison:
    dir_a: Path
    dir_b: Path
    label_a: str
    label_b: str
    threshold: float
    pairs: tuple[Pair, ...]
    only_a: tuple[tuple[str, int], ...]
    only_b: tuple[tuple[str, int], ...]
    manifest_a: RunManifest | None = None
    manifest_b: RunManifest | None = None

    @property
    def regressions(self) -> tuple[Pair, ...]:
        return tuple(p for p in self.pairs if p.regressions)

    @property
    def improvements(self) -> tuple[Pair, ...]:
        return tuple(p for p in self.pairs if p.improvements and not p.regressions)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or a <= 0:
        return None
    return b / a


def is_worse(metric: str, r: float | None, threshold: float) -> bool:
    higher_better = dict((m, h) for m, _, h in METRICS)[metric]
    if r is None:
        return False
    return r < 1.0 - threshold if higher_better else r > 1.0 + threshold


def is_better(metric: str, r: float | None, threshold: float) -> bool:
    higher_better = dict((m, h) for m, _, h in METRICS)[metric]
    if r is None:
        return False
    return r > 1.0 + threshold if higher_better else r < 1.0 - threshold


def pair_cells(a: CellResult, b: CellResult, threshold: float) -> Pair:
    """Ratios always; regressions only where both sides are valid (or B broke where A did not)."""
    sa, sb = Side.of(a), Side.of(b)
    ratios = tuple((m, ratio(sa.value(m), sb.value(m))) for m, _, _ in METRICS)
    worse: list[str] = []
    better: list[str] = []
    if sa.status == "ok" and sb.status != "ok":
        worse.append("status")
    if sa.valid and sb.valid:
        worse += [m for m, r in ratios if is_worse(m, r, threshold)]
        better += [m for m, r in ratios if is_better(m, r, threshold)]
    return Pair(a.variant, a.users, sa, sb, ratios, tuple(worse), tuple(better))


def run_label(manifest: RunManifest | None, directory: Path) -> str:
    return manifest.run_id if manifest is not None and manifest.run_id else directory.name


def compare_cells(cells_a: Sequence[CellResult], cells_b: Sequence[CellResult], threshold: float = 0.10,
                  ) -> tuple[tuple[Pair, ...], tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]:
    """Pair cells by (variant, users): (pairs, keys only in A, keys only in B)."""
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0 <= threshold < 1):
        raise ValueError(f"the regression threshold must be a fraction in [0, 1), not {threshold!r}")
    index_a = {c.key: c for c in cells_a}
    index_b = {c.key: c for c in cells_b}
    order = list(dict.fromkeys(c.variant for c in [*cells_a, *cells_b]))
    sort = lambda key: (order.index(key[0]), key[1])  # noqa: E731
    pairs = tuple(pair_cells(index_a[k], index_b[k], threshold) for k in sorted(index_a.keys() & index_b.keys(),
                                                                                key=sort))
    return (pairs, tuple(sorted(index_a.keys() - index_b.keys(), key=sort)),
            tuple(sorted(index_b.keys() - index_a.keys(), key=sort)))


def compare_runs(dir_a: Path, dir_b: Path, threshold: float = 0.10) -> Comparison:
    """Read both folders (ResultError if either has no results) and compare them cell by cell."""
    dir_a, dir_b = Path(dir_a), Path(dir_b)
    manifest_a, cells_a = load_cells(dir_a)
    manifest_b, cells_b = load_cells(dir_b)
    pairs, only_a, only_b = compare_cells(cells_a, cells_b, threshold)
    label_a, label_b = run_label(manifest_a, dir_a), run_label(manifest_b, dir_b)
    if label_a == label_b:
        label_a, label_b = f"A ({label_a})", f"B ({label_b})"
    return Comparison(dir_a, dir_b, label_a, label_b, float(threshold), pairs, only_a, only_b,
                      manifest_a, manifest_b)


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"×{r:.2f}"


def metric_label(metric: str) -> str:
    return {m: label for m, label, _ in METRICS}[metric].replace(" ms", "")


def verdict(pair: Pair) -> str:
    def part(m: str) -> str:
        return "status " + pair.b.status if m == "status" else f"{metric_label(m)} {fmt_ratio(pair.ratio(m))}"
    if pair.regressions:
        return "REGRESSION: " + ", ".join(part(m) for m in pair.regressions)
    if not pair.reliable:
        why = ("generator-saturated" if pair.a.saturated or pair.b.saturated else f"{pair.a.status}/{pair.b.status}")
        return f"not comparable ({why})"
    if pair.improvements:
        return "better: " + ", ".join(part(m) for m in pair.improvements)
    return "same within threshold"


def comparison_rows(comp: Comparison) -> list[tuple[str, ...]]:
    rows = []
    for p in comp.pairs:
        cols = [p.variant, f"{p.users:,}"]
        for m, _, _ in METRICS:
            fmt = fmt_rate if m == "throughput" else fmt_ms
            cols += [f"{fmt(p.a.value(m))} → {fmt(p.b.value(m))}", fmt_ratio(p.ratio(m))]
        cols.append(verdict(p))
        rows.append(tuple(cols))
    return rows


def comparison_headers() -> tuple[str, ...]:
    heads = ["Variant", "Users"]
    for _, label, _ in METRICS:
        heads += [f"{label} A → B", "B/A"]
    return (*heads, "Verdict")


def summary_line(comp: Comparison) -> str:
    n = len(comp.regressions)
    pct = f"{comp.threshold * 100:g}%"
    if n == 0:
        return f"No regression beyond {pct} in {len(comp.pairs)} paired cell(s)."
    names = ", ".join(f"{p.variant} at {users_word(p.users)}" for p in comp.regressions)
    return f"{n} of {len(comp.pairs)} paired cell(s) regressed beyond {pct}: {names}."


def render_comparison_text(comp: Comparison) -> str:
    """A fixed-width table for terminals and CI logs (no colour codes, no width guessing)."""
    lines = [f"A: {comp.label_a}  ({comp.dir_a})", f"B: {comp.label_b}  ({comp.dir_b})",
             f"Ratios are B/A; a regression is {comp.threshold * 100:g}% worse (throughput lower, latency higher).",
             ""]
    table = [comparison_headers(), *comparison_rows(comp)]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for n, row in enumerate(table):
        cols = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:-1], widths[1:])]
        lines.append("  ".join(cols + [row[-1]]).rstrip())
        if n == 0:
            lines.append("-" * len(lines[-1]))
    if not comp.pairs:
        lines.append("(no cell ran in both runs)")
    lines += ["", summary_line(comp)]
    for label, keys in (("Only in A", comp.only_a), ("Only in B", comp.only_b)):
        if keys:
            lines.append(f"{label}: " + ", ".join(f"{v}@{u}" for v, u in keys))
    return "\n".join(lines) + "\n"
