"""The result model of a capacity search: its trials, what it found, and ``capacity.json``.

A search (:mod:`harness.capacity`) runs trials, each an ordinary cell at one load, and ends with the
highest load that held the SLO, the lowest that failed and what stopped it. Those figures are kept
here, typed and immutable, so ``reports/`` can rebuild a capacity table from the file alone, as it
does a sweep's from its cell files. The file is rewritten as entries finish (a search that is
stopped keeps what it knew), always whole (:func:`~harness.results.store.write_loadable`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.results import fields as F
from harness.results.format import ResultError
from harness.results.run import read_json
from harness.results.store import write_loadable

CAPACITY_KIND = "swarmbench.capacity"
CAPACITY_NAME = "capacity.json"
#: Where ``swarmbench run`` keeps its capacity search, inside its results folder.
CAPACITY_DIR = "capacity"
# capacity.json's own history (cells, manifest and histograms share format.SCHEMA_VERSION; this
# file began later, so it counts from 1; bump it with a loader for the older version):
#   1 - first format: axis, slo_ms, resolution, confirm, max_error_ratio, run_id; one entry per
#       design and level (users on the rate axis, rate_per_user on the users axis) with holds,
#       fails, limited_by, reason, confirmed and its trials in the order they ran.
CAPACITY_SCHEMA_VERSION = 1
#: Versions this Swarmbench reads.
CAPACITY_READABLE = frozenset({1})

Verdict = Literal["pass", "fail", "invalid"]
Limit = Literal["server", "generator", "fd-limit", "budget"]
Axis = Literal["rate", "users"]
#: pass: the SLO held; fail: the server missed it; invalid: the generator was the bottleneck,
#: so the trial says nothing about the server.
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "invalid")
#: What stopped a search: a trial the server failed, a generator that could offer no more (the
#: result is a lower bound), the file-descriptor limit (the users axis' end), the time or trial budget.
LIMITS: tuple[Limit, ...] = ("server", "generator", "fd-limit", "budget")
#: rate: the highest open-loop rate (msg/s over all users) at fixed users; users: the most users,
#: each at a fixed rate.
AXES: tuple[Axis, ...] = ("rate", "users")


@dataclass(frozen=True, slots=True)
class Trial:
    """One trial: a load, its verdict with the reason in words, and the figures that decided it."""

    load: int  # users on the users axis, msg/s asked on the rate axis
    verdict: Verdict
    reason: str
    p99_us: float | None = None  # message p99 over the window; None: no message completed
    p99_lower_bound: bool = False  # messages without a reply are not in it: the true p99 is at least this
    p50_us: float | None = None
    asked: float | None = None  # msg/s asked (open loop); None: closed loop
    achieved: float | None = None  # msg/s answered over the window
    unanswered: int = 0  # users still waiting for a reply, or never answered at all
    errors: int = 0  # failures in the window
    cell_file: str | None = None  # the trial's cell file, beside capacity.json
    seconds: float | None = None  # how long the trial took, as the search measured it

    def __post_init__(self) -> None:
        if self.load < 1 or self.verdict not in VERDICTS:
            raise ValueError(f"a trial needs a load of at least 1 and a verdict in {VERDICTS}: {self.load}, {self.verdict!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, name: str = "trial") -> Trial:
        data = F.obj(data, name)
        cell_file = data.get("cell_file")
        return cls(
            load=F.integer(F.get(data, "load", name), f"{name}.load", low=1),
            verdict=F.choice(F.get(data, "verdict", name), f"{name}.verdict", VERDICTS),  # type: ignore[arg-type]
            reason=F.text(F.get(data, "reason", name), f"{name}.reason"),
            p99_us=F.optional_number(data.get("p99_us"), f"{name}.p99_us", low=0),
            p99_lower_bound=F.flag(data.get("p99_lower_bound", False), f"{name}.p99_lower_bound"),
            p50_us=F.optional_number(data.get("p50_us"), f"{name}.p50_us", low=0),
            asked=F.optional_number(data.get("asked"), f"{name}.asked", low=0),
            achieved=F.optional_number(data.get("achieved"), f"{name}.achieved", low=0),
            unanswered=F.integer(data.get("unanswered", 0), f"{name}.unanswered"),
            errors=F.integer(data.get("errors", 0), f"{name}.errors"),
            cell_file=None if cell_file is None else F.relative_path(cell_file, f"{name}.cell_file"),
            seconds=F.optional_number(data.get("seconds"), f"{name}.seconds", low=0),
        )


@dataclass(frozen=True, slots=True)
class Capacity:
    """What a search found: the highest load that held, the lowest that failed, and what stopped it."""

    holds: int | None  # highest load whose every trial passed; None: none did
    fails: int | None  # lowest load the server failed; None: none did
    limited_by: Limit
    reason: str
    confirmed: bool = False  # ``holds`` passed its confirmation trials too
    trials: tuple[Trial, ...] = ()  # in the order they ran

    def __post_init__(self) -> None:
        if self.limited_by not in LIMITS:
            raise ValueError(f"limited_by must be one of {LIMITS}, not {self.limited_by!r}")
        if self.holds is not None and self.fails is not None and self.holds >= self.fails:
            raise ValueError(f"holds ({self.holds}) must lie below fails ({self.fails})")

    @property
    def lower_bound(self) -> bool:
        """True when the server's limit lies at or above ``holds`` ("≥ X"): nothing the server failed stopped it."""
        return self.limited_by != "server"

    def to_dict(self) -> dict[str, Any]:
        return {"holds": self.holds, "fails": self.fails, "limited_by": self.limited_by, "reason": self.reason,
                "confirmed": self.confirmed, "trials": [t.to_dict() for t in self.trials]}

    @classmethod
    def from_dict(cls, data: Any, name: str = "capacity") -> Capacity:
        data = F.obj(data, name)
        trials = data.get("trials", ())
        if not isinstance(trials, (list, tuple)):
            F.fail(f"{name}.trials", "expected a list")
        holds = F.optional_integer(F.get(data, "holds", name), f"{name}.holds", low=1)
        fails = F.optional_integer(F.get(data, "fails", name), f"{name}.fails", low=1)
        if holds is not None and fails is not None and holds >= fails:
            F.fail(f"{name}.holds", f"{holds} is not below fails ({fails})")
        return cls(
            holds=holds,
            fails=fails,
            limited_by=F.choice(F.get(data, "limited_by", name), f"{name}.limited_by", LIMITS),  # type: ignore[arg-type]
            reason=F.text(F.get(data, "reason", name), f"{name}.reason"),
            confirmed=F.flag(data.get("confirmed", False), f"{name}.confirmed"),
            trials=tuple(Trial.from_dict(t, f"{name}.trials[{i}]") for i, t in enumerate(trials)),
        )


@dataclass(frozen=True, slots=True)
class CapacityEntry:
    """One design at one level: users (rate axis) or msg/s per user (users axis), and its capacity."""

    variant: str
    capacity: Capacity
    users: int | None = None  # the rate axis: the users the rate is spread over
    rate_per_user: float | None = None  # the users axis: each user's msg/s

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "users": self.users, "rate_per_user": self.rate_per_user,
                **self.capacity.to_dict()}

    @classmethod
    def from_dict(cls, data: Any, axis: Axis, name: str) -> CapacityEntry:
        data = F.obj(data, name)
        users = F.optional_integer(data.get("users"), f"{name}.users", low=1)
        rate = F.optional_number(data.get("rate_per_user"), f"{name}.rate_per_user", low=0)
        if axis == "rate" and (users is None or rate is not None):
            F.fail(f"{name}.users", "the rate axis needs users (and no rate_per_user)")
        if axis == "users" and (rate is None or rate <= 0 or users is not None):
            F.fail(f"{name}.rate_per_user", "the users axis needs a positive rate_per_user (and no users)")
        return cls(variant=F.safe_name(F.get(data, "variant", name), f"{name}.variant"),
                   capacity=Capacity.from_dict(data, name), users=users, rate_per_user=rate)


@dataclass(frozen=True, slots=True)
class CapacityResults:
    """``capacity.json``: how the search was asked, and one entry per design and level."""

    axis: Axis
    slo_ms: float
    resolution: float
    confirm: int
    max_error_ratio: float = 0.0
    run_id: str = ""
    entries: tuple[CapacityEntry, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": CAPACITY_SCHEMA_VERSION, "kind": CAPACITY_KIND, "axis": self.axis,
                "slo_ms": self.slo_ms, "resolution": self.resolution, "confirm": self.confirm,
                "max_error_ratio": self.max_error_ratio, "run_id": self.run_id,
                "entries": [e.to_dict() for e in self.entries]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> CapacityResults:
        """Every field checked; a bad one is a one-line ResultError (a ValueError) naming it."""
        if not isinstance(data, Mapping):
            raise ResultError("not a JSON object")
        if data.get("kind") != CAPACITY_KIND:
            raise ResultError(f"not a {CAPACITY_KIND} file (kind={str(data.get('kind'))[:40]!r})")
        version = data.get("schema_version")
        if type(version) is not int or version not in CAPACITY_READABLE:
            raise ResultError(f"schema_version {str(version)[:20]!r} is not supported (this Swarmbench reads "
                              f"{', '.join(map(str, sorted(CAPACITY_READABLE)))})")
        axis: Axis = F.choice(F.get(data, "axis", ""), "axis", AXES)  # type: ignore[assignment]
        entries = data.get("entries", ())
        if not isinstance(entries, (list, tuple)):
            F.fail("entries", "expected a list")
        loaded = tuple(CapacityEntry.from_dict(e, axis, f"entries[{i}]") for i, e in enumerate(entries))
        seen: set[tuple[str, float | None]] = set()
        for i, entry in enumerate(loaded):
            key = (entry.variant, entry.users if axis == "rate" else entry.rate_per_user)
            if key in seen:
                F.fail(f"entries[{i}]", f"a second entry for {entry.variant} at the same level")
            seen.add(key)
        resolution = F.number(F.get(data, "resolution", ""), "resolution", low=0)
        slo_ms = F.number(F.get(data, "slo_ms", ""), "slo_ms", low=0)
        if resolution <= 0 or slo_ms <= 0:
            F.fail("resolution" if resolution <= 0 else "slo_ms", "must be above 0")
        return cls(
            axis=axis, slo_ms=slo_ms, resolution=resolution,
            confirm=F.integer(F.get(data, "confirm", ""), "confirm"),
            max_error_ratio=F.number(data.get("max_error_ratio", 0.0), "max_error_ratio", low=0),
            run_id=F.safe_name(data.get("run_id", ""), "run_id", empty=True),
            entries=loaded,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> CapacityResults:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ResultError(f"not valid JSON: {str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__}") from None
        return cls.from_dict(data)


def write_capacity(directory: Path, results: CapacityResults) -> Path:
    """``capacity.json`` replaced whole, and only if it loads back (it grows as entries finish)."""
    return write_loadable(directory / CAPACITY_NAME, results.to_dict(), CapacityResults.from_dict)


def load_capacity(path: Path) -> CapacityResults:
    """A ``capacity.json`` (or the folder holding it), or a one-line ResultError naming the file."""
    path = path / CAPACITY_NAME if path.is_dir() else path
    try:
        return CapacityResults.from_dict(read_json(path))
    except ResultError as exc:
        message = str(exc)
        raise ResultError(message if str(path) in message else f"{path.name}: {message}") from None
