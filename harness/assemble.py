"""Assembling one cell's result from what its run left: Locust's histogram file, the server samples, the kernel counters.

Reads typed objects only (the :class:`~harness.results.histogram_file.HistogramFile`,
the sampler's samples, the :class:`~harness.target.Target`) and returns an
immutable :class:`~harness.results.CellResult`; nothing here runs anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from hdrh.histogram import HdrHistogram

from harness.locust_run import LocustJob, LocustOutcome
from harness.machine import MachineSample, generator_bound, summarize_machine
from harness.results import CellResult, GeneratorStats, Latency, ResultError, ServerStats, TimePoint
from harness.results.cells import FIGURES
from harness.results.reading import ANSWERED
from harness.results.histogram_file import (CENSORED, FAILED, HIGHEST_US, Failures, HistogramFile, add_into, hgrm_text,
                                            load_histogram_file, new_histogram, summarize)
from harness.server_sampler import Sample, summarize as summarize_samples
from harness.target import Target

#: Beside the cell results: Locust's logs and files, histograms, .hgrm, server logs.
RAW = "raw"
#: Percentiles of the spectrum each cell carries (wrk2 and HdrHistogram plot latency by percentile).
SPECTRUM = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0)
#: Names whose figures cover the whole cell, not the window: every connect (the ramp is where
#: connects happen), connects still pending at the stop, users left unanswered at the stop, and the
#: census of messages with no reply by the window's end (taken once, as the window ends).
WHOLE_CELL = ("connect", "connect_pending", "unanswered", CENSORED)


@dataclass(frozen=True, slots=True)
class CellPlan:
    """What every cell of a sweep shares."""

    scenario: str
    warmup_s: float
    duration_s: float
    rate: float | None
    workers: int
    run_id: str

    @property
    def cell_seconds(self) -> float:
        return self.warmup_s + self.duration_s


@dataclass(frozen=True, slots=True)
class CellRun:
    """What one cell's run produced, before it is summarised."""

    variant: str
    users: int
    job: LocustJob
    outcome: LocustOutcome
    samples: tuple[Sample, ...]
    kernel: dict[str, int | None]
    died: bool
    #: Size of the server's log when the cell started: its lines from here on are the cell's.
    log_offset: int = 0
    machine: tuple[MachineSample, ...] = ()


def load_hdr(job: LocustJob, outcome: LocustOutcome) -> tuple[HistogramFile | None, str | None]:
    """The cell's histogram file and the first error that explains a missing or broken one."""
    error = outcome.error(job.log_file)
    if not job.hdr_file.exists():
        if error is None:
            error = f"Locust wrote no histogram file: {job.log_file.name} says: " + last_line(job.log_file)
        return None, error
    try:
        return load_histogram_file(job.hdr_file), error
    except ResultError as exc:
        return None, error or f"histogram file unreadable: {exc}"


def steady_window(data: HistogramFile | None, start: float, plan: CellPlan) -> tuple[int, int]:
    """Whole seconds after the warm-up and after the last user spawned, before Locust began to stop.

    Locust arms ``-t`` before ``test_start``, so the planned end can fall after
    the real stop; a second half-empty or holding the stop would bias the figures.
    """
    spawned = data.spawned_at if data is not None and data.spawned_at is not None else start
    stopping = data.stopping_at if data is not None and data.stopping_at is not None else math.inf
    ended = data.ended_at if data is not None else math.inf
    begin = max(start + plan.warmup_s, spawned)
    end = min(start + plan.cell_seconds, stopping, ended)
    return math.ceil(begin), math.floor(end)


def measured_window(data: HistogramFile | None, start: float, plan: CellPlan) -> tuple[int, int]:
    """The whole seconds measured: from the end of the settle after establishment (``measure_from``)
    for ``duration`` seconds, cut at the stop; files without phases fall back to the warm-up rule."""
    if data is None or data.measure_from is None:
        return steady_window(data, start, plan)
    t0 = math.ceil(data.measure_from)
    end = min(data.stopping_at if data.stopping_at is not None else math.inf, data.ended_at)
    return t0, min(t0 + math.ceil(plan.duration_s), math.floor(end))


def window_latency(data: HistogramFile, t0: int, t1: int) -> dict[str, Latency]:
    """Each name's figures over the window, but ``WHOLE_CELL`` names over the whole cell; ``message``
    counts every due message (:func:`every_due_message`), ``message_answered`` the replies alone."""
    window = data.window(t0, t1)
    whole = data.window()
    latency = {name: Latency.from_dict(summarize(hist)) for name, hist in window.items() if name not in WHOLE_CELL}
    for name in WHOLE_CELL:
        if name in whole:
            latency[name] = Latency.from_dict(summarize(whole[name]))
    if "message" in latency:
        latency[ANSWERED] = latency["message"]
    censored = [h for h in (window.get(FAILED), whole.get(CENSORED)) if h is not None and h.get_total_count()]
    if censored:
        latency["message"] = every_due_message(window.get("message"), censored)
    return latency


def every_due_message(answered: HdrHistogram | None, censored: list[HdrHistogram]) -> Latency:
    """The window's replies with the waits of the messages that had none (lower bounds), as one figure.

    Which figures are bounds: each is computed twice, with the censored values as they are and
    with them pushed to the top of the range (as if never answered); a figure that moves is only
    known from below. A few messages in flight when a connection broke leave p99 exact; users
    left waiting for seconds make it a bound.
    """
    low, high = new_histogram(), new_histogram()
    if answered is not None:
        add_into(low, answered)
        add_into(high, answered)
    count = 0
    for hist in censored:
        add_into(low, hist)
        count += hist.get_total_count()
    high.record_value(HIGHEST_US, count)
    at, top = summarize(low), summarize(high)
    bounds = tuple(key for key in FIGURES if at[key] != top[key])
    return replace(Latency.from_dict(at), censored=count, bounds=bounds)


def every_due_histogram(data: HistogramFile, t0: int, t1: int) -> HdrHistogram | None:
    """The window's message histogram with the censored values added (for the spectrum)."""
    window, whole = data.window(t0, t1), data.window()
    parts = [h for h in (window.get("message"), window.get(FAILED), whole.get(CENSORED)) if h is not None]
    if not parts:
        return None
    hist = new_histogram()
    for part in parts:
        add_into(hist, part)
    return hist


def spectrum(hist: HdrHistogram | None) -> tuple[tuple[float, float], ...]:
    """(percentile, µs) at ``SPECTRUM``: the latency-by-percentile curve of the window."""
    if hist is None or not hist.get_total_count():
        return ()
    values = hist.get_percentile_to_value_dict(list(SPECTRUM))
    return tuple((p, float(values[p])) for p in SPECTRUM)


def window_hgrm(data: HistogramFile, t0: int, t1: int) -> dict[str, bytes]:
    """HdrHistogram's percentile text (values in ms) of each name over the window, for ``.hgrm`` files."""
    return {name: hgrm_text(hist) for name, hist in data.window(t0, t1).items()}


def cell_status(outcome: LocustOutcome, died: bool, error: str | None) -> str:
    if outcome.interrupted:
        return "interrupted"
    if died:
        return "server-died"
    return "failed" if error is not None else "ok"


def assemble_cell(plan: CellPlan, target: Target, run: CellRun) -> CellResult:
    """Join Locust's histograms, the server samples and the kernel counters of one cell."""
    data, error = load_hdr(run.job, run.outcome)
    start = data.started_at if data is not None else run.outcome.started_at
    t0, t1 = measured_window(data, start, plan)
    if t1 <= t0 and error is None and not run.outcome.interrupted:
        error = "no window: Locust stopped before the window began (users established late?)"
    latency: dict[str, Latency] = {}
    failures: Failures = {}
    timeline: tuple[TimePoint, ...] = ()
    curve: tuple[tuple[float, float], ...] = ()
    if data is not None:
        latency = window_latency(data, t0, t1)
        failures = data.window_failures(t0, t1)
        timeline = build_timeline(data, run.samples, start, run.machine)
        curve = spectrum(every_due_histogram(data, t0, t1)) if t1 > t0 else ()
        if error is None and not run.outcome.interrupted and not (latency.get("connect") or Latency()).count:
            tried = ", ".join(f"{kind} {n}" for kind, n in sorted(data.failures.get("connect", {}).items()))
            error = f"no user ever connected ({tried or 'no connect finished'})"  # the probe's success is not the users'
    window_s = float(t1 - t0) if t1 > t0 else 0.0
    messages = latency[ANSWERED].count if ANSWERED in latency else 0  # replies: what throughput counts
    stats = summarize_samples(list(run.samples), t0, t1) if run.samples else {}
    machine = summarize_machine(run.machine, t0, t1) if t1 > t0 else None
    generator = data.generator if data is not None else GeneratorStats()
    bound = generator_bound(machine, latency.get("loop_lag"), latency.get(ANSWERED), generator.cpu_percent_max)
    server = target.server
    exit_code = server.process.returncode if server is not None and run.died else None
    job = run.job
    return CellResult(
        variant=run.variant,
        users=run.users,
        scenario=plan.scenario,
        status=cell_status(run.outcome, run.died, error),
        started_at=start,
        ended_at=run.outcome.ended_at,
        warmup_s=plan.warmup_s,
        duration_s=plan.duration_s,
        throughput=messages / window_s if window_s else 0.0,
        messages=messages,
        rate=plan.rate,
        workers=plan.workers,
        latency=latency,
        failures=failures,
        failures_total=dict(data.failures) if data is not None else {},
        server=ServerStats.from_dict({**stats, "pid": target.pid, "died": run.died, "exit_code": exit_code}),
        kernel=run.kernel,
        generator=generator,
        timeline=timeline,
        commands=tuple(c for c in (tuple(server.argv) if server else (), run.outcome.argv) if c),
        files={
            "histograms": f"{RAW}/{job.hdr_file.name}",
            "locust_log": f"{RAW}/{job.log_file.name}",
            "locust_json": f"{RAW}/{job.json_file.name}",
            **({"server_log": f"{RAW}/{server.log_path.name}"} if server is not None else {}),
        },
        error=error,
        run_id=plan.run_id,
        notes=server_log_notes(server.log_path, run.log_offset) if server is not None else (),
        window_s=window_s if data is not None else None,
        window_from=float(t0) if t1 > t0 else None,
        established_at=data.established_at if data is not None else None,
        users_not_established=data.users_not_established if data is not None else None,
        spectrum=curve,
        machine=machine,
        generator_bound=bound,
        workers_missing_final=data.workers_missing_final if data is not None else (),
    )


def build_timeline(
    data: HistogramFile, samples: tuple[Sample, ...], start: float, machine: tuple[MachineSample, ...] = ()
) -> tuple[TimePoint, ...]:
    """One point a second: messages/s, p50, p99 from Locust, threads/CPU/RSS/connections from the
    sampler, the machine's CPU from the machine sampler."""
    points = []
    for t in sorted({iv.t for iv in data.intervals}):
        message = data.window(t, t + 1).get("message")
        fails = data.window_failures(t, t + 1)
        in_second = [s for s in samples if t <= s.t < t + 1 and s.alive]
        last = in_second[-1] if in_second else None
        counted = message is not None and message.get_total_count() > 0
        busy = [sum(m.busy) / len(m.busy) for m in machine if t < m.t <= t + 1 and m.busy]
        points.append(
            TimePoint(
                t=round(t - start, 3),
                messages_per_s=float(message.get_total_count()) if message is not None else 0.0,
                p99_us=float(message.get_value_at_percentile(99)) if counted else None,
                p50_us=float(message.get_value_at_percentile(50)) if counted else None,
                machine_busy_percent=round(busy[0], 1) if busy else None,
                threads=max(s.threads for s in in_second) if in_second else None,
                cpu_percent=sum(s.cpu_percent for s in in_second) / len(in_second) if in_second else None,
                rss_bytes=last.rss_bytes if last else None,
                connections=last.connections if last else None,
                failures=sum(sum(v.values()) for v in fails.values()),
            )
        )
    return tuple(points)


#: The server lines a cell notes: a prefork worker that died (and was replaced).
NOTE_WORDS = ("died",)
MAX_NOTES = 10


def log_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def server_log_notes(path: Path, offset: int) -> tuple[str, ...]:
    """The server's log lines since ``offset`` that say a worker died: the cell's figures do not show it."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            text = log.read(1 << 20).decode(errors="replace")
    except OSError:
        return ()
    notes = []
    for line in text.splitlines():
        if any(word in line for word in NOTE_WORDS):
            notes.append("".join(c if c.isprintable() else "?" for c in line.strip())[:300])
    if len(notes) > MAX_NOTES:
        notes = notes[: MAX_NOTES - 1] + [f"... and {len(notes) - MAX_NOTES + 1} more such lines"]
    return tuple(notes)


def last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "nothing"
    return lines[-1][:300] if lines else "nothing"
