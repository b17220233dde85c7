"""A run: its manifest (what was asked, where, when, how it ended) and the loader of a results folder."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.results import fields as F
from harness.results.cells import CellResult, _list
from harness.results.format import RUN_KIND, ResultError, check_header, header
from harness.results.store import write_loadable

MANIFEST_NAME = "run.json"
#: Run outcomes: "failed" means a result file could not be written (disk full, read-only).
OUTCOMES = ("running", "complete", "interrupted", "failed")


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
    outcome: str = "running"  # one of OUTCOMES

    def to_dict(self) -> dict[str, Any]:
        return {**header(RUN_KIND), **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunManifest:
        check_header(data, RUN_KIND)
        planned = []
        for i, pair in enumerate(_list(data.get("planned", ()), "planned")):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                F.fail(f"planned[{i}]", "expected [variant, users]")
            planned.append((F.safe_name(pair[0], f"planned[{i}]"), F.integer(pair[1], f"planned[{i}]", low=1)))
        return cls(
            run_id=F.safe_name(F.get(data, "run_id", ""), "run_id"),
            started_at=F.number(F.get(data, "started_at", ""), "started_at"),
            argv=F.arguments(data.get("argv", ()), "argv"),
            options=dict(F.obj(data.get("options", {}), "options")),
            host=dict(F.obj(data.get("host", {}), "host")),
            versions={F.text(k, "versions"): F.text(v, f"versions.{k}") for k, v in F.obj(data.get("versions", {}), "versions").items()},
            git_commit=F.optional_text(data.get("git_commit"), "git_commit"),
            planned=tuple(planned),
            ended_at=F.optional_number(data.get("ended_at"), "ended_at"),
            outcome=F.choice(data.get("outcome", "running"), "outcome", OUTCOMES),
        )


def replace_manifest(directory: Path, manifest: RunManifest) -> Path:
    """The manifest alone is updated in place (its end time and outcome), atomically, if it loads back."""
    return write_loadable(directory / MANIFEST_NAME, manifest.to_dict(), RunManifest.from_dict)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise ResultError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except UnicodeDecodeError:
        raise ResultError(f"{path} is not valid JSON: not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:  # a number of 5,000 digits; brackets nested 100,000 deep
        raise ResultError(f"{path} is not valid JSON: {exc.__class__.__name__}") from None


def load_run(directory: Path) -> tuple[RunManifest | None, list[CellResult]]:
    """Read a results folder: its manifest (if any) and every cell, in sweep order."""
    if not directory.is_dir():
        raise ResultError(f"{directory} is not a results folder")
    manifest = None
    manifest_path = directory / MANIFEST_NAME
    if manifest_path.exists():
        try:
            manifest = RunManifest.from_dict(read_json(manifest_path))
        except ResultError as exc:
            raise ResultError(f"{MANIFEST_NAME}: {exc}") from None
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
