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
    """What the sampler saw of the server over the steady window."""

    pid: int | None = None
    threads_mean: float = 0.0
    threads_max: int = 0
    cpu_percent_mean: float = 0.0
    cpu_percent_max: float = 0.0
    rss_bytes_max: int = 0
    fds_max: int = 0
    connections_mean: float = 0.0
    connections_max: int = 0
    samples: int = 0
    died: bool = False
    exit_code: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerStats:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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
    threads: int | None = None
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    connections: int | None = None
    failures: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TimePoint:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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
    throughput: float = 0.0  # messages/s over the steady window
    messages: int = 0
    rate: float | None = None  # asked-for messages/s (open loop), None for closed loop
    workers: int = 0
    latency: dict[str, Latency] = field(default_factory=dict)
    failures: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> class -> count, steady window
    failures_total: dict[str, dict[str, int]] = field(default_factory=dict)  # the whole cell, warm-up included
    server: ServerStats = field(default_factory=ServerStats)
    kernel: dict[str, int] = field(default_factory=dict)
    generator: GeneratorStats = field(default_factory=GeneratorStats)
    timeline: tuple[TimePoint, ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()
    files: dict[str, str] = field(default_factory=dict)  # role -> file name beside the cell
    error: str | None = None
    run_id: str = ""

    @property
    def key(self) -> tuple[str, int]:
        return self.variant, self.users

    @property
    def errors(self) -> int:
        """Every failure of every request name in the steady window."""
        return sum(sum(by_class.values()) for by_class in self.failures.values())

    @property
    def total_errors(self) -> int:
        """Every failure of the whole cell, warm-up included (what ``errors==0`` means)."""
        return sum(sum(by_class.values()) for by_class in self.failures_total.values())

    @property
    def file_stem(self) -> str:
        return f"cell-{self.variant}-u{self.users:05d}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {**header(CELL_KIND), **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellResult:
        check_header(data, CELL_KIND)
        try:
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
                latency={k: Latency.from_dict(v) for k, v in data.get("latency", {}).items()},
                failures={k: dict(v) for k, v in data.get("failures", {}).items()},
                failures_total={k: dict(v) for k, v in data.get("failures_total", {}).items()},
                server=ServerStats.from_dict(data.get("server", {})),
                kernel=dict(data.get("kernel", {})),
                generator=GeneratorStats.from_dict(data.get("generator", {})),
                timeline=tuple(TimePoint.from_dict(p) for p in data.get("timeline", ())),
                commands=tuple(tuple(c) for c in data.get("commands", ())),
                files=dict(data.get("files", {})),
                error=data.get("error"),
                run_id=str(data.get("run_id", "")),
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
