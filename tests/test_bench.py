"""The benchmarks' output still parses into figures (one cheap run); their long runs are the bench's job.

What a benchmark measures is not asserted here (shared machines are noisy): only that a run gives
every figure its table promises, as numbers, and that bad arguments get one line and exit 2.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ("gevent", "gev-raw", "uvloop", "locust")
NUMBER = r"([\d,]+(?:\.\d+)?)"


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True, text=True, timeout=170, cwd=ROOT,  # below pytest's own 180 s
    )  # fmt: skip


def number(text: str) -> float:
    return float(text.replace(",", ""))


def test_generator_bench_output_parses_into_figures() -> None:
    """One connection, one 2 s window per client, one open-loop rate: every figure is there and a number.

    2 s, not 1: the open loop's figures come from its whole steady seconds, and a slow machine left a
    1 s run with none ("no whole steady second").
    """
    result = run("bench_generator.py", "--connections", "1", "--repeat", "1", "--duration", "2",
                 "--open-rates", "200", "--no-ceiling", "--no-profiles")  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    # the summary table: per client, messages/s and CPU µs per message (median [min-max])
    rows = {m[1]: (number(m[2]), number(m[3])) for m in re.finditer(
        rf"^\s+1 (\S+)\s+{NUMBER} \[[\d,.-]+\]\s+{NUMBER} \[", out, re.M)}  # fmt: skip
    assert set(rows) == set(CLIENTS), out
    assert all(rate > 0 and cpu_us > 0 for rate, cpu_us in rows.values()), rows
    # the ratios against each baseline, and they are the table's own figures divided
    ratios = re.search(rf"^\s+1\s+{NUMBER} \[.*?\]x\s+{NUMBER} \[.*?\]x", out, re.M)
    assert ratios, out
    cpu_ratio, rate_ratio = number(ratios[1]), number(ratios[2])
    assert cpu_ratio == pytest.approx(rows["locust"][1] / rows["gevent"][1], rel=0.02, abs=0.01)
    assert rate_ratio == pytest.approx(rows["locust"][0] / rows["gevent"][0], rel=0.02, abs=0.01)
    # the open loop: asked, achieved (never more than asked by more than rounding), send lag, and the wake-ups
    open_loop = re.search(rf"asked\s+{NUMBER}/s\s+achieved\s+{NUMBER}/s \(.*?\)\s+send_lag p99\s+{NUMBER} ms", out)
    assert open_loop, out
    asked, achieved, lag_ms = (number(open_loop[i]) for i in (1, 2, 3))
    assert asked == 200 and 0 < achieved <= asked * 1.01 and lag_ms >= 0
    wake = re.search(rf"gevent.sleep p50 {NUMBER} ms, p99 {NUMBER} ms; alarm p50 {NUMBER} ms, p99 {NUMBER} ms", out)
    assert wake and all(number(wake[i]) >= 0 for i in range(1, 5)), out


@pytest.mark.parametrize(
    ("script", "args"),
    [("bench_generator.py", ["--open-rates", "fast"]), ("bench_generator.py", ["--connections", "0"]),
     ("bench_scale.py", ["--connections", "2000,200"]), ("bench_redis.py", ["--duration", "1"])],
)  # fmt: skip
def test_benches_refuse_bad_arguments_in_one_line(script: str, args: list[str]) -> None:
    result = run(script, *args)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert args[0] in result.stderr
