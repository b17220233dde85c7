"""A run while it goes: microsecond figures per request name, the load, the generator and the server.

Locust's web UI rounds response times to whole milliseconds from coarse buckets;
this module reads what the recorder already keeps (each closed second's
encoded HdrHistograms and the totals) and turns it into rows for the web UI's
Swarmbench tabs (:mod:`harness.user.live_view`) and numbers for the metrics
endpoint (:mod:`harness.live_metrics`). Nothing here runs per message: a view is
built when someone asks for one (the web UI polls every couple of seconds).

A figure nobody measured is ``None`` and shows as "-", never 0: a closed loop
has no asked rate, a run without ``--server-pid`` no server. On a master the
workers' seconds arrive with their reports (every 3 s), so its "last seconds"
end :data:`MASTER_LAG_S` behind the clock. A run that stopped keeps its last
window: the view ends where the run stopped, not at the clock.

Pure: imports neither Locust, gevent nor Flask (tested with recorders in, rows out).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from hdrh.histogram import HdrHistogram

from harness.results.histogram_file import HIGHEST_US, Failures, add_into, decode, new_histogram

#: The view's recent stretch: this many whole seconds, the newest closed one last.
WINDOW_S = 5
#: A master's recent stretch ends this far behind its clock (Locust's workers report every 3 s).
MASTER_LAG_S = 4
#: The request names a user times, in the order the view shows them (those that occurred).
REQUEST_NAMES = ("message", "connect", "tls_handshake", "session")
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
MISSING = "-"


class Recorded(Protocol):
    """What the view reads of a recorder (:class:`harness.user.recorder.Recorder`)."""

    intervals: dict[int, dict[str, str]]
    interval_failures: dict[int, Failures]
    totals: dict[str, HdrHistogram]
    failures: Failures
    per_second: dict[str, dict[int, int]]


@dataclass(frozen=True, slots=True)
class Figures:
    """One request name over one stretch; percentiles and max in µs, None when nothing was measured."""

    name: str
    stretch: str  # "last 5 s", "since start"
    count: int
    failures: int
    seconds: int  # whole seconds covered (the rate's denominator); 0: none yet
    p50_us: int | None = None
    p90_us: int | None = None
    p99_us: int | None = None
    p999_us: int | None = None
    max_us: int | None = None
    clamped: bool = False  # the max reached the histograms' ceiling (60 s): a lower bound

    @property
    def rate(self) -> float | None:
        return (self.count + self.failures) / self.seconds if self.seconds > 0 else None


def figures(name: str, stretch: str, hist: HdrHistogram | None, failures: int, seconds: int) -> Figures:
    """The figures of ``hist`` (one request name over ``seconds`` whole seconds)."""
    count = hist.get_total_count() if hist is not None else 0
    if hist is None or not count:
        return Figures(name, stretch, 0, failures, seconds)
    p = hist.get_percentile_to_value_dict(list(PERCENTILES))
    top = hist.get_max_value()
    return Figures(name, stretch, count, failures, seconds, p[50.0], p[90.0], p[99.0], p[99.9], top,
                   top >= HIGHEST_US)  # fmt: skip


def window_end(now: float, *, master: bool, stopped_at: float | None) -> int:
    """The newest second the recent stretch includes: the last closed one (a master's: older), or the stop's."""
    end = int(now) - 1 - (MASTER_LAG_S if master else 0)
    if stopped_at is not None:
        end = min(end, int(stopped_at))
    return end


def request_figures(recorded: Recorded, end: int, window_s: int = WINDOW_S) -> list[Figures]:
    """For each request name that occurred: its last ``window_s`` seconds up to ``end``, and its whole run."""
    first = min(recorded.intervals, default=None)
    recent = recent_seconds(recorded, end, window_s)
    span = max(recorded.intervals) - first + 1 if first is not None else 0
    out: list[Figures] = []
    for name in (n for n in REQUEST_NAMES if n in recorded.totals or n in recorded.failures):
        failed = sum(sum(recorded.interval_failures.get(t, {}).get(name, {}).values()) for t in recent)
        out.append(figures(name, f"last {window_s} s", recent_histogram(recorded, name, end, window_s), failed,
                           len(recent)))  # fmt: skip
        out.append(figures(name, "since start", recorded.totals.get(name),
                           sum(recorded.failures.get(name, {}).values()), span))  # fmt: skip
    return out


def achieved_rate(recorded: Recorded, end: int, window_s: int = WINDOW_S) -> float | None:
    """Messages per second answered over the recent stretch (None before the first closed second)."""
    per_second = recorded.per_second.get("message", {})
    seconds = recent_seconds(recorded, end, window_s)
    return sum(per_second.get(t, 0) for t in seconds) / len(seconds) if seconds else None


def recent_seconds(recorded: Recorded, end: int, window_s: int = WINDOW_S) -> list[int]:
    """The recent stretch's whole seconds up to ``end``, none before the run's first recorded second."""
    first = min(recorded.intervals, default=None)
    return [] if first is None else [t for t in range(max(first, end - window_s + 1), end + 1)]


@dataclass(frozen=True, slots=True)
class Process:
    """One Locust process of the generator, as its last second saw it."""

    label: str  # "local", "master", a worker's id
    cpu_percent: float | None  # of one core, over its last second
    rss_bytes: int | None


@dataclass(frozen=True, slots=True)
class Server:
    """The server under load (``--server-pid``), sampled once a second."""

    pid: int
    alive: bool
    threads: int | None
    cpu_percent: float | None  # of one core (can exceed 100)
    rss_bytes: int | None
    fds: int | None
    connections: int | None


@dataclass(frozen=True, slots=True)
class Load:
    """The run's load and health now; None where nothing measures it."""

    state: str  # Locust's runner state
    users: int | None
    established: int | None
    unanswered: int | None  # users waiting longer than the stall bound (final: as the run stopped)
    asked_rate: float | None  # the open loop's --rate; None in a closed loop
    achieved_rate: float | None
    processes: tuple[Process, ...] = ()
    loop_lag_p99_us: int | None = None
    generator_bound: str | None = None  # the report's words for a generator that measured itself
    server: Server | None = None


# -- text for the web UI ------------------------------------------------------------------------------
def count_text(value: float | None) -> str:
    return MISSING if value is None else f"{round(value):,}"


def rate_text(value: float | None) -> str:
    return MISSING if value is None else f"{value:,.1f}"


def us_text(value: int | None, clamped: bool = False) -> str:
    return MISSING if value is None else ("≥ " if clamped else "") + f"{value:,}"


def percent_text(value: float | None) -> str:
    return MISSING if value is None else f"{value:.0f}%"


def bytes_text(value: int | None) -> str:
    return MISSING if value is None else f"{value / 2**20:,.1f} MiB"


#: The latency table's columns: (row key, title). Keys are single words: the web UI camel-cases keys.
LATENCY_COLUMNS = (
    ("name", "Name"), ("stretch", "Over"), ("count", "Count"), ("failures", "Failures"), ("rate", "Per second"),
    ("p50", "p50 (µs)"), ("p90", "p90 (µs)"), ("p99", "p99 (µs)"), ("p999", "p99.9 (µs)"), ("max", "Max (µs)"),
)  # fmt: skip
STATE_COLUMNS = (("name", "Figure"), ("value", "Now"))


def latency_rows(rows: Iterable[Figures]) -> list[dict[str, str]]:
    """The web UI's latency table: one row per name and stretch, every cell text (µs, "-" when missing)."""
    return [
        {"name": f.name, "stretch": f.stretch, "count": count_text(f.count), "failures": count_text(f.failures),
         "rate": rate_text(f.rate), "p50": us_text(f.p50_us), "p90": us_text(f.p90_us), "p99": us_text(f.p99_us),
         "p999": us_text(f.p999_us), "max": us_text(f.max_us, f.clamped)}
        for f in rows
    ]  # fmt: skip


def state_rows(load: Load) -> list[dict[str, str]]:
    """The web UI's run table: the load, the generator, the server; "-" for what is not measured."""
    rows = [
        ("Locust state", load.state),
        ("users", count_text(load.users)),
        ("users established", count_text(load.established)),
        ("users unanswered (waiting > 1 s)", count_text(load.unanswered)),
        ("asked rate (msg/s)", rate_text(load.asked_rate)),
        ("achieved rate (msg/s)", rate_text(load.achieved_rate)),
        ("generator loop lag p99 (µs)", us_text(load.loop_lag_p99_us)),
        ("generator", f"generator-bound: {load.generator_bound}" if load.generator_bound else
         ("not saturated" if load.processes else MISSING)),
    ]  # fmt: skip
    for p in load.processes:
        rows.append((f"generator {p.label} CPU (of one core)", percent_text(p.cpu_percent)))
        rows.append((f"generator {p.label} memory", bytes_text(p.rss_bytes)))
    server = load.server
    rows.append(("server PID", MISSING if server is None else f"{server.pid}" + ("" if server.alive else " (exited)")))
    rows += [
        ("server threads", count_text(server.threads if server else None)),
        ("server CPU (of one core)", percent_text(server.cpu_percent if server else None)),
        ("server memory (RSS)", bytes_text(server.rss_bytes if server else None)),
        ("server connections", count_text(server.connections if server else None)),
        ("server open files", count_text(server.fds if server else None)),
    ]  # fmt: skip
    return [{"name": name, "value": value} for name, value in rows]


def p99(hist: HdrHistogram | None) -> int | None:
    """A histogram's p99 in µs; None when it is empty."""
    if hist is None or not hist.get_total_count():
        return None
    return int(hist.get_value_at_percentile(99.0))


def recent_histogram(recorded: Recorded, name: str, end: int, window_s: int = WINDOW_S) -> HdrHistogram | None:
    """One name's histogram over the recent stretch (None when it recorded nothing there)."""
    hist = None
    for t in range(end - window_s + 1, end + 1):
        encoded = recorded.intervals.get(t, {}).get(name)
        if encoded is not None:
            if hist is None:
                hist = new_histogram()
            add_into(hist, decode(encoded))
    return hist
