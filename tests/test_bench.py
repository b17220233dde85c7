"""The benchmarks still run end to end (smallest settings); their figures are not asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import redis_binary

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True, text=True, timeout=170, cwd=ROOT,  # below pytest's own 180 s
    )  # fmt: skip


def test_generator_bench_prints_its_ratios() -> None:
    result = run("bench_generator.py", "--connections", "10", "--repeat", "1", "--duration", "2",
                 "--open-rates", "2000", "--no-ceiling")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cpu/gevent" in result.stdout and "rate/gevent" in result.stdout
    assert "10 conns: cpu" in result.stdout
    assert "asked     2,000/s  achieved" in result.stdout  # the open loop
    assert "gevent.sleep p50" in result.stdout and "alarm p50" in result.stdout  # and its timer's precision
    for profile in ("chat", "line"):  # redis too where redis-server is installed
        assert any(line.startswith(profile) and line.endswith("x") for line in result.stdout.splitlines()), profile


def test_generator_bench_refuses_a_bad_rate_in_one_line() -> None:
    result = run("bench_generator.py", "--open-rates", "fast")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_redis_bench_prints_its_ratios() -> None:
    redis_binary("redis-server")
    redis_binary("redis-benchmark")
    result = run("bench_redis.py", "--connections", "1", "--duration", "2", "--repeat", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rate ratio" in result.stdout and "p50 ratio" in result.stdout


def test_generator_bench_refuses_bad_arguments_in_one_line() -> None:
    result = run("bench_generator.py", "--connections", "0")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_scale_bench_prints_costs_per_1000_connections() -> None:
    result = run("bench_scale.py", "--connections", "50,200", "--window", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "per 1,000" in result.stdout or "per 1000" in result.stdout, result.stdout[-2000:]
