"""The result model of one cell (a variant at one concurrency), in a versioned JSON format.

In the manner of pyperf: the data model knows nothing of how it is shown
(``reports/`` renders it), every file carries ``schema_version``, and a result
file is written once and never overwritten, so a crash mid-sweep loses nothing
that was finished.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.results import fields as F
from harness.results.format import CELL_KIND, check_header, header
from harness.results.store import write_loadable

#: Cell outcomes. "ok": ran its full window; "failed": the cell could not run
#: or the generator failed; "server-died": the server was gone at the end;
#: "interrupted": stopped by the user.
STATUSES = ("ok", "failed", "server-died", "interrupted")
#: How ``CellResult.generator_bound`` begins when only the generator's own loop lag decided it (the load
#: was delivered; its latencies are upper bounds for the server), as opposed to a saturated generator.
LAG_BOUND = "the generator's own loop lag"


@dataclass(frozen=True, slots=True)
class Latency:
    """Microsecond figures of one request name; ``None`` where there was nothing to measure."""

    count: int = 0
    min_us: float | None = None
    max_us: float | None = None
    mean_us: float | None = None
    p50_us: float | None = None
    p90_us: float | None = None
    p95_us: float | None = None
    p99_us: float | None = None
    p999_us: float | None = None
    p9999_us: float | None = None
    out_of_range: int = 0
    #: of ``count``, values that are lower bounds: messages with no reply (stuck at the window's end,
    #: or failed), each counted as the time it had waited (harness.census)
    censored: int = 0
    #: the figures (``"p99_us"``...) known only as lower bounds: they would be higher were the
    #: censored values larger (see harness.assemble.every_due_message)
    bounds: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "latency") -> Latency:
        """Numbers or null; a summary that counted something has every figure (reports divide them)."""
        data = F.obj(data, name)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                where = f"{name}.{f.name}"
                values[f.name] = F.integer(value, where) if f.name in INTEGERS else F.optional_number(value, where, low=0)
        values["bounds"] = tuple(key for key in FIGURES if _flag(data, f"{key[:-3]}_lower_bound", name))
        latency = cls(**values)
        if latency.count > 0:
            for key in FIGURES:
                if getattr(latency, key) is None:
                    F.fail(f"{name}.{key}", f"missing, though count is {latency.count}")
        if latency.censored > latency.count:
            F.fail(f"{name}.censored", f"{latency.censored} is more than the count ({latency.count})")
        if latency.bounds and not latency.censored:
            F.fail(f"{name}.{latency.bounds[0][:-3]}_lower_bound", "a bound, though nothing is censored")
        return latency

    @property
    def answered(self) -> int:
        """The values that are real latencies (replies), not lower bounds."""
        return self.count - self.censored

    def lower_bound(self, key: str) -> bool:
        """Whether the figure ``key`` (``"p99_us"``, ``"max_us"``...) is only known as a lower bound."""
        return key in self.bounds

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["bounds"]
        if self.censored:
            data.update({f"{key[:-3]}_lower_bound": key in self.bounds for key in FIGURES})
        return data


def _flag(data: Mapping[str, Any], key: str, name: str) -> bool:
    value = data.get(key, False)
    if type(value) is not bool:
        F.fail(f"{name}.{key}", f"not true or false: {str(value)[:40]!r}")
    return value


#: A latency summary's integer fields, and its figures in µs (the ones a censored value can make a bound).
INTEGERS = ("count", "out_of_range", "censored")
FIGURES = ("min_us", "max_us", "mean_us", "p50_us", "p90_us", "p95_us", "p99_us", "p999_us", "p9999_us")


@dataclass(frozen=True, slots=True)
class ServerStats:
    """What the sampler saw of the server over the window; None: not measured (no live sample)."""

    pid: int | None = None
    threads_mean: float | None = None
    threads_max: int | None = None
    cpu_percent_mean: float | None = None
    cpu_percent_max: float | None = None
    rss_bytes_max: int | None = None  # summed over the tree: a forked child's shared pages count again
    fds_max: int | None = None
    connections_mean: float | None = None
    connections_max: int | None = None
    samples: int = 0
    died: bool = False
    exit_code: int | None = None
    pss_bytes_max: int | None = None  # proportional set size summed over the tree: shared pages count once

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "server", version: int = 2) -> ServerStats:
        data = F.obj(data, name)
        values: dict[str, Any] = {}
        for key, value in data.items():
            where = f"{name}.{key}"
            if key == "pid":
                values[key] = F.optional_integer(value, where, low=0)
            elif key == "exit_code":
                values[key] = F.optional_integer(value, where)
            elif key == "died":
                values[key] = F.flag(value, where)
            elif key == "samples":
                values[key] = F.integer(value, where)
            elif key in ("threads_mean", "cpu_percent_mean", "cpu_percent_max", "connections_mean"):
                values[key] = F.optional_number(value, where, low=0)
            elif key in ("threads_max", "rss_bytes_max", "fds_max", "connections_max", "pss_bytes_max"):
                values[key] = F.optional_integer(value, where, low=0)
        if version < 2 and not values.get("samples"):
            # version 1 wrote 0 for figures it never measured
            values = {k: v for k, v in values.items() if k in ("pid", "samples", "died", "exit_code")}
        return cls(**values)

    @property
    def memory_bytes(self) -> tuple[str, int] | None:
        """("PSS" or "RSS", bytes): PSS where it was read, so prefork's shared pages count once."""
        if self.pss_bytes_max is not None:
            return "PSS", self.pss_bytes_max
        return ("RSS", self.rss_bytes_max) if self.rss_bytes_max is not None else None


@dataclass(frozen=True, slots=True)
class MachineStats:
    """The whole machine's CPU over the window (every process: server, generator, others)."""

    cores: int = 0
    busy_percent_mean: float | None = None  # mean over cores and seconds, 100 = every core busy
    idle_percent_min: float | None = None  # the least idle second (mean over cores)
    per_core_busy_mean: tuple[float, ...] = ()
    samples: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "machine") -> MachineStats:
        data = F.obj(data, name)
        per_core = _list(data.get("per_core_busy_mean", ()), f"{name}.per_core_busy_mean")
        return cls(
            cores=F.integer(data.get("cores", 0), f"{name}.cores"),
            busy_percent_mean=F.optional_number(data.get("busy_percent_mean"), f"{name}.busy_percent_mean", low=0),
            idle_percent_min=F.optional_number(data.get("idle_percent_min"), f"{name}.idle_percent_min", low=0),
            per_core_busy_mean=tuple(F.number(v, f"{name}.per_core_busy_mean", low=0) for v in per_core),
            samples=F.integer(data.get("samples", 0), f"{name}.samples"),
        )


@dataclass(frozen=True, slots=True)
class GeneratorStats:
    """The load generator's own health: its figures mean nothing when saturated."""

    cpu_percent_max: float = 0.0  # from spawning-complete on, when known
    saturated: bool = False
    processes: tuple[dict[str, Any], ...] = ()
    cpu_percent_max_all: float = 0.0  # the whole run
    rss_bytes_total: int = 0
    users_max: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "generator") -> GeneratorStats:
        data = F.obj(data, name)
        processes = data.get("processes", ())
        if not isinstance(processes, (list, tuple)) or not all(isinstance(p, Mapping) for p in processes):
            F.fail(f"{name}.processes", "expected a list of objects")
        return cls(
            cpu_percent_max=float(F.optional_number(data.get("cpu_percent_max", 0.0), f"{name}.cpu_percent_max", low=0) or 0.0),
            saturated=F.flag(data.get("saturated", False), f"{name}.saturated"),
            processes=tuple(dict(p) for p in processes),
            cpu_percent_max_all=float(F.optional_number(data.get("cpu_percent_max_all", 0.0), f"{name}.cpu_percent_max_all", low=0) or 0.0),
            rss_bytes_total=F.integer(data.get("rss_bytes_total", 0), f"{name}.rss_bytes_total"),
            users_max=F.integer(data.get("users_max", 0), f"{name}.users_max"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "processes": [dict(p) for p in self.processes]}


@dataclass(frozen=True, slots=True)
class TimePoint:
    """One second of a cell: what the generator and the sampler saw."""

    t: float  # seconds since the cell's start
    messages_per_s: float = 0.0
    p99_us: float | None = None
    threads: int | None = None
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    connections: int | None = None
    failures: int = 0
    p50_us: float | None = None
    machine_busy_percent: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "timeline") -> TimePoint:
        data = F.obj(data, name)
        return cls(
            t=F.number(F.get(data, "t", name), f"{name}.t"),
            messages_per_s=F.number(data.get("messages_per_s", 0.0), f"{name}.messages_per_s", low=0),
            p99_us=F.optional_number(data.get("p99_us"), f"{name}.p99_us", low=0),
            threads=F.optional_integer(data.get("threads"), f"{name}.threads", low=0),
            cpu_percent=F.optional_number(data.get("cpu_percent"), f"{name}.cpu_percent", low=0),
            rss_bytes=F.optional_integer(data.get("rss_bytes"), f"{name}.rss_bytes", low=0),
            connections=F.optional_integer(data.get("connections"), f"{name}.connections", low=0),
            failures=F.integer(data.get("failures", 0), f"{name}.failures"),
            p50_us=F.optional_number(data.get("p50_us"), f"{name}.p50_us", low=0),
            machine_busy_percent=F.optional_number(data.get("machine_busy_percent"), f"{name}.machine_busy_percent", low=0),
        )


#: Latency names a version-1 cell had that version 2 folds: v1's `connect` was the window
#: only and `connect_all` the whole cell; version 2's `connect` is the whole cell.
def _v1_latency(latency: dict[str, Latency]) -> dict[str, Latency]:
    latency = dict(latency)
    whole = latency.pop("connect_all", None)
    latency.pop("connect", None)
    if whole is not None:
        latency["connect"] = whole
    return latency


@dataclass(frozen=True, slots=True)
class CellResult:
    """One variant at one concurrency: everything the report needs, nothing Locust-shaped."""

    variant: str
    users: int
    scenario: str
    status: str
    started_at: float
    ended_at: float
    warmup_s: float
    duration_s: float
    throughput: float = 0.0  # messages/s over the window: the achieved rate (``rate`` is the asked one)
    messages: int = 0
    rate: float | None = None  # asked-for messages/s (open loop), None for closed loop
    workers: int = 0
    latency: dict[str, Latency] = field(default_factory=dict)
    failures: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> class -> count, the window
    failures_total: dict[str, dict[str, int]] = field(default_factory=dict)  # the whole cell, ramp included
    server: ServerStats = field(default_factory=ServerStats)
    kernel: dict[str, int | None] = field(default_factory=dict)  # None: the counter could not be read
    generator: GeneratorStats = field(default_factory=GeneratorStats)
    timeline: tuple[TimePoint, ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()
    files: dict[str, str] = field(default_factory=dict)  # role -> file name beside the cell
    error: str | None = None
    run_id: str = ""
    #: What happened to the server during the cell that its figures do not show (a worker died and was replaced).
    notes: tuple[str, ...] = ()
    # version 2 (None in version-1 files)
    window_s: float | None = None  # the whole seconds the window's figures cover, as measured
    window_from: float | None = None  # epoch second the window began
    established_at: float | None = None  # every user had had its first reply
    users_not_established: int | None = None  # users with no reply yet when the cell stopped
    spectrum: tuple[tuple[float, float], ...] = ()  # (percentile, message µs) over the window
    machine: MachineStats | None = None
    generator_bound: str | None = None  # why the figures describe the generator, with the deciding figure
    workers_missing_final: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, int]:
        return self.variant, self.users

    @property
    def errors(self) -> int:
        """Failures of every request name over the whole cell, ramp and stop included: what ``errors`` means
        everywhere (checks, tables, findings)."""
        return sum(sum(by_class.values()) for by_class in self.failures_total.values())

    @property
    def errors_in_window(self) -> int:
        """Failures of every request name in the measured window only."""
        return sum(sum(by_class.values()) for by_class in self.failures.values())

    @property
    def total_errors(self) -> int:
        """The same as :attr:`errors` (the older name)."""
        return self.errors

    @property
    def file_stem(self) -> str:
        return f"cell-{self.variant}-u{self.users:05d}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency"] = {name: lat.to_dict() for name, lat in self.latency.items()}  # bounds as flags
        return {**header(CELL_KIND), **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellResult:
        """Every field checked for type and range; a bad one is a one-line ResultError naming it."""
        version = check_header(data, CELL_KIND)

        def req(key: str) -> Any:
            return F.get(data, key, "")

        latency = F.obj(data.get("latency", {}), "latency")
        commands = data.get("commands", ())
        if not isinstance(commands, (list, tuple)):
            F.fail("commands", "expected a list of lists of strings")
        files = F.obj(data.get("files", {}), "files")
        lat = {F.text(k, "latency"): Latency.from_dict(v, f"latency.{k}") for k, v in latency.items()}
        machine = data.get("machine")
        spectrum = _list(data.get("spectrum", ()), "spectrum")
        return cls(
            variant=F.safe_name(req("variant"), "variant"),
            users=F.integer(req("users"), "users", low=1),
            scenario=F.text(req("scenario"), "scenario"),
            status=F.choice(req("status"), "status", STATUSES),
            started_at=F.number(req("started_at"), "started_at"),
            ended_at=F.number(req("ended_at"), "ended_at"),
            warmup_s=F.number(req("warmup_s"), "warmup_s", low=0),
            duration_s=F.number(req("duration_s"), "duration_s", low=0),
            throughput=F.number(data.get("throughput", 0.0), "throughput", low=0),
            messages=F.integer(data.get("messages", 0), "messages"),
            rate=F.optional_number(data.get("rate"), "rate", low=0),
            workers=F.integer(data.get("workers", 0), "workers"),
            latency=_v1_latency(lat) if version < 2 else lat,
            failures=F.failures(data.get("failures", {}), "failures"),
            failures_total=F.failures(data.get("failures_total", {}), "failures_total"),
            server=ServerStats.from_dict(data.get("server", {}), version=version),
            kernel={F.text(k, "kernel"): F.optional_integer(v, f"kernel.{k}")
                    for k, v in F.obj(data.get("kernel", {}), "kernel").items()},
            generator=GeneratorStats.from_dict(data.get("generator", {})),
            timeline=tuple(TimePoint.from_dict(p, f"timeline[{i}]") for i, p in enumerate(_list(data.get("timeline", ()), "timeline"))),
            commands=tuple(F.arguments(c, f"commands[{i}]") for i, c in enumerate(commands)),
            files={F.safe_name(k, "files"): F.relative_path(v, f"files.{k}") for k, v in files.items()},
            error=F.optional_text(data.get("error"), "error"),
            run_id=F.safe_name(data.get("run_id", ""), "run_id", empty=True),
            notes=F.texts(data.get("notes", ()), "notes"),
            window_s=F.optional_number(data.get("window_s"), "window_s", low=0),
            window_from=F.optional_number(data.get("window_from"), "window_from"),
            established_at=F.optional_number(data.get("established_at"), "established_at"),
            users_not_established=F.optional_integer(data.get("users_not_established"), "users_not_established", low=0),
            spectrum=tuple(_point(p, f"spectrum[{i}]") for i, p in enumerate(spectrum)),
            machine=MachineStats.from_dict(machine) if machine is not None else None,
            generator_bound=F.optional_text(data.get("generator_bound"), "generator_bound"),
            workers_missing_final=F.texts(data.get("workers_missing_final", ()), "workers_missing_final"),
        )


def _point(value: Any, name: str) -> tuple[float, float]:
    pair = _list(value, name)
    if len(pair) != 2:
        F.fail(name, "expected [percentile, microseconds]")
    return F.number(pair[0], name, low=0), F.number(pair[1], name, low=0)


def _list(value: Any, name: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        F.fail(name, f"expected a list, got {type(value).__name__}")
    return value


def write_cell(directory: Path, cell: CellResult, stem: str | None = None) -> Path:
    """A new cell file (never overwritten), written only if it loads back; ``stem``: a name other than
    ``cell.file_stem`` (a capacity trial's, with its load), which must start ``cell-`` for the loader to find it."""
    stem = stem or cell.file_stem
    if not stem.startswith("cell-"):
        raise ValueError(f"a cell file's name starts with 'cell-': {stem!r}")
    return write_loadable(directory / f"{stem}.json", cell.to_dict(), CellResult.from_dict, exclusive=True)
