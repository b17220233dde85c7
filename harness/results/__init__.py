"""The result model: what a sweep measured, as typed, immutable, versioned files.

- :mod:`harness.results.cells`: one cell (a variant at one concurrency);
- :mod:`harness.results.run`: the run manifest and the loader of a results folder;
- :mod:`harness.results.histogram_file`: what one Locust run recorded (``--hdr-file``);
- :mod:`harness.results.format`: the version, header check and percentile table they share;
- :mod:`harness.results.store`: the one atomic, durable writer every file goes through;
- :mod:`harness.results.capacity`: a capacity search's ``capacity.json``;
- :mod:`harness.results.reading`: how a cell is read (its headline latency, unanswered users,
  generator marks) and the units it is told in, shared by ``harness.verdict`` and ``reports/``.

``reports/`` reads only this package.
"""

from harness.results.cells import (
    STATUSES,
    CellResult,
    GeneratorStats,
    Latency,
    MachineStats,
    ServerStats,
    TimePoint,
    write_cell,
)
from harness.results.run import MANIFEST_NAME, RunManifest, load_run, read_json, replace_manifest
from harness.results.format import PERCENTILES, SCHEMA_VERSION, ResultError
from harness.results.store import write_bytes, write_json, write_new

__all__ = [
    "MANIFEST_NAME", "PERCENTILES", "SCHEMA_VERSION", "STATUSES", "CellResult", "GeneratorStats", "Latency",
    "MachineStats", "ResultError", "RunManifest", "ServerStats", "TimePoint", "load_run", "read_json", "replace_manifest",
    "write_bytes", "write_cell", "write_json", "write_new",
]  # fmt: skip
