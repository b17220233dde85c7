"""The histogram file's model and loader: bytes in, a model or one clean error out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.results import ResultError
from harness.results.histogram_file import load_histogram_file


def test_loader_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "swarmbench.histograms", "schema_version": 99}))
    with pytest.raises(ResultError, match="schema_version '99'"):
        load_histogram_file(bad)
    bad.write_text("not json")
    with pytest.raises(ResultError, match="not a readable histogram file"):
        load_histogram_file(bad)
    bad.write_text(json.dumps({"kind": "swarmbench.histograms", "schema_version": 1, "started_at": 0}))
    with pytest.raises(ResultError, match=f"{bad}: malformed histogram file: KeyError"):
        load_histogram_file(bad)


