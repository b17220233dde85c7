"""The result model: immutable cells and a run manifest, in a versioned JSON format.

In the manner of pyperf: the data model knows nothing of how it is shown
(``reports/`` renders it), every file carries ``schema_version``, and a result
file is written once and never overwritten, so a crash mid-sweep loses nothing
that was finished.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.results.format import CELL_KIND, RUN_KIND, ResultError, check_header, header
from harness.results.store import write_json, write_new

MANIFEST_NAME = "run.json"

#: Cell outcomes. "ok": ran its full window; "failed": the cell could not run
#: or the generator failed; "server-died": the server was gone at the end;
#: "interrupted": stopped by the user.
STATUSES = ("ok", "failed", "server-died", "interrupted")


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Latency:
        if not isinstance(data, Mapping):
            raise TypeError(f"a latency summary must be an object, not {type(data).__name__}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                values[f.name] = _count(value) if f.name in ("count", "out_of_range") else _number(value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> float | None:
    """A finite number or None (missing); anything else is malformed."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {str(value)[:40]!r}")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a count: {str(value)[:40]!r}")
    return value


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
    def from_dict(cls, data: Mapping[str, Any], version: int = 2) -> ServerStats:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
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
    def from_dict(cls, data: Mapping[str, Any]) -> MachineStats:
        if not isinstance(data, Mapping):
            raise TypeError(f"machine must be an object, not {type(data).__name__}")
        return cls(
            cores=_count(data.get("cores", 0)),
            busy_percent_mean=_number(data.get("busy_percent_mean")),
            idle_percent_min=_number(data.get("idle_percent_min")),
            per_core_busy_mean=tuple(float(_number(v) or 0.0) for v in data.get("per_core_busy_mean", ())),
            samples=_count(data.get("samples", 0)),
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
    def from_dict(cls, data: Mapping[str, Any]) -> GeneratorStats:
        if not isinstance(data, Mapping):
            raise TypeError(f"generator must be an object, not {type(data).__name__}")
        processes = data.get("processes", ())
        if not isinstance(processes, (list, tuple)) or not all(isinstance(p, Mapping) for p in processes):
            raise TypeError("generator.processes must be a list of objects")
        return cls(
            cpu_percent_max=float(_number(data.get("cpu_percent_max", 0.0)) or 0.0),
            saturated=bool(data.get("saturated", False)),
            processes=tuple(dict(p) for p in processes),
            cpu_percent_max_all=float(_number(data.get("cpu_percent_max_all", 0.0)) or 0.0),
            rss_bytes_total=_count(data.get("rss_bytes_total", 0)),
            users_max=_count(data.get("users_max", 0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "processes": [dict(p) for p in self.processes]}


@dataclass(frozen=True, slots=True)
class TimePoint:
    """One second of a cell: what the generator and the sampler saw."""

    t: float  # seconds since the cell's start
    messages_per_s: float = 0.0
    p99_us: float | None = None
    p50_us: float | None = None
    machine_busy_percent: float | None = None
    threads: int | None = None
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    connections: int | None = None
    failures: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TimePoint:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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
        return {**header(CELL_KIND), **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellResult:
        version = check_header(data, CELL_KIND)
        try:
            latency = {k: Latency.from_dict(v) for k, v in data.get("latency", {}).items()}
            machine = data.get("machine")
            return cls(
                variant=str(data["variant"]),
                users=int(data["users"]),
                scenario=str(data["scenario"]),
                status=str(data["status"]),
                started_at=float(data["started_at"]),
                ended_at=float(data["ended_at"]),
                warmup_s=float(data["warmup_s"]),
                duration_s=float(data["duration_s"]),
                throughput=float(data.get("throughput", 0.0)),
                messages=int(data.get("messages", 0)),
                rate=data.get("rate"),
                workers=int(data.get("workers", 0)),
                latency=_v1_latency(latency) if version < 2 else latency,
                failures={k: dict(v) for k, v in data.get("failures", {}).items()},
                failures_total={k: dict(v) for k, v in data.get("failures_total", {}).items()},
                server=ServerStats.from_dict(data.get("server", {}), version),
                kernel={str(k): (None if v is None else _count(v)) for k, v in data.get("kernel", {}).items()},
                generator=GeneratorStats.from_dict(data.get("generator", {})),
                timeline=tuple(TimePoint.from_dict(p) for p in data.get("timeline", ())),
                commands=tuple(tuple(c) for c in data.get("commands", ())),
                files=dict(data.get("files", {})),
                error=data.get("error"),
                run_id=str(data.get("run_id", "")),
                window_s=_number(data.get("window_s")),
                window_from=_number(data.get("window_from")),
                established_at=_number(data.get("established_at")),
                users_not_established=None if data.get("users_not_established") is None
                else _count(data["users_not_established"]),
                spectrum=tuple((float(p), float(v)) for p, v in data.get("spectrum", ())),
                machine=MachineStats.from_dict(machine) if machine is not None else None,
                generator_bound=data.get("generator_bound"),
                workers_missing_final=tuple(str(w) for w in data.get("workers_missing_final", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultError(f"malformed cell result: {exc.__class__.__name__}: {exc}") from None


@dataclass(frozen=True, slots=True)
class RunManifest:
    """What was asked, on what machine and software, and when."""

    run_id: str
    started_at: float
    argv: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    planned: tuple[tuple[str, int], ...] = ()
    ended_at: float | None = None
    outcome: str = "running"  # running, complete, interrupted, failed

    def to_dict(self) -> dict[str, Any]:
        return {**header(RUN_KIND), **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunManifest:
        check_header(data, RUN_KIND)
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["argv"] = tuple(values.get("argv", ()))
        values["planned"] = tuple((str(v), int(u)) for v, u in values.get("planned", ()))
        try:
            return cls(**values)
        except TypeError as exc:
            raise ResultError(f"malformed run manifest: {exc}") from None


def replace_manifest(directory: Path, manifest: RunManifest) -> Path:
    """The manifest alone is updated in place (its end time and outcome), atomically."""
    return write_json(directory / MANIFEST_NAME, manifest.to_dict())


def write_cell(directory: Path, cell: CellResult) -> Path:
    return write_new(directory / f"{cell.file_stem}.json", cell.to_dict())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ResultError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None


def load_run(directory: Path) -> tuple[RunManifest | None, list[CellResult]]:
    """Read a results folder: its manifest (if any) and every cell, in sweep order."""
    if not directory.is_dir():
        raise ResultError(f"{directory} is not a results folder")
    manifest = None
    manifest_path = directory / MANIFEST_NAME
    if manifest_path.exists():
        manifest = RunManifest.from_dict(read_json(manifest_path))
    cells = []
    for path in sorted(directory.glob("cell-*.json")):
        try:
            cells.append(CellResult.from_dict(read_json(path)))
        except ResultError as exc:
            raise ResultError(f"{path.name}: {exc}") from None
    if manifest is None and not cells:
        raise ResultError(f"{directory} holds no Swarmbench results (no {MANIFEST_NAME}, no cell-*.json)")
    cells.sort(key=lambda c: (c.started_at, c.variant, c.users))
    return manifest, cells
