"""What every Swarmbench file shares: its header, its version, and the percentiles it reports.

One version for the whole family of files (cell results, the run manifest,
histogram files), checked in one place, as pyperf checks its ``version``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The format's history (bump it with a loader for the older version):
#   1 - first format: cells (swarmbench.cell), manifest (swarmbench.run),
#       histogram files (swarmbench.histograms)
#   2 - establish, then measure: cells carry established_at, window_s, users_not_established,
#       spectrum, machine CPU and generator_bound; `connect` covers the whole cell (v1's
#       `connect_all`; v1's window-only `connect` is dropped on reading); server and kernel
#       figures that were not measured are null (v1 wrote 0); histogram files carry the phases.
#       Version-1 files are read with every new field None.
#   3 - every due message counts: a cell's `message` adds, to the replies of its window, each message
#       with no reply by the window's end as the time it had waited (`censored` of `count`,
#       `censored_min_us`, and `<figure>_lower_bound` flags where a figure is only a bound);
#       `message_answered` is the replies alone (v2's `message`), `message_censored` the census.
#       Histogram files carry `message_censored`. Version-2 files are read with nothing censored.
SCHEMA_VERSION = 3
#: Versions this Swarmbench reads.
READABLE_VERSIONS = frozenset({1, 2, 3})

CELL_KIND = "swarmbench.cell"
RUN_KIND = "swarmbench.run"
HISTOGRAM_KIND = "swarmbench.histograms"

#: (key in a latency summary, label, percentile): the one table of percentiles.
PERCENTILES: tuple[tuple[str, str, float], ...] = (
    ("p50_us", "p50", 50.0),
    ("p90_us", "p90", 90.0),
    ("p95_us", "p95", 95.0),
    ("p99_us", "p99", 99.0),
    ("p999_us", "p99.9", 99.9),
    ("p9999_us", "p99.99", 99.99),
)


class ResultError(ValueError):
    """A result file that cannot be read or written; the message is one line."""


def check_header(data: Any, kind: str) -> int:
    """Return the file's schema version; a one-line ResultError when it is not a ``kind`` file we read."""
    if not isinstance(data, Mapping):
        raise ResultError("not a JSON object")
    if data.get("kind") != kind:
        raise ResultError(f"not a {kind} file (kind={str(data.get('kind'))[:40]!r})")
    version = data.get("schema_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ResultError(
            f"schema_version {str(version)[:20]!r} is not supported (this Swarmbench reads "
            f"{', '.join(map(str, sorted(READABLE_VERSIONS)))})"
        )
    return version


def header(kind: str) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "kind": kind}
