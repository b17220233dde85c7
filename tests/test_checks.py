"""``--check`` expressions: parsing, units, and which cells break them."""

from __future__ import annotations

import pytest

from harness.checks import CheckError, cell_metrics, evaluate, parse_check
from harness.results import CellResult, Latency, ServerStats


def cell(variant: str = "threaded", users: int = 10, p99_us: float = 900.0, throughput: float = 12000.0, errors: int = 0) -> CellResult:
    return CellResult(
        variant=variant, users=users, scenario="chat", status="ok", started_at=0.0, ended_at=10.0,
        warmup_s=2.0, duration_s=8.0, throughput=throughput, messages=int(throughput * 8),
        latency={"message": Latency(count=100, p50_us=80.0, p99_us=p99_us, p999_us=p99_us * 2)},
        failures_total={"message": {"ServerClosed": errors}} if errors else {},
        server=ServerStats(threads_max=users + 1),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "metric", "op", "value"),
    [
        ("message.p99<5ms", "message.p99", "<", 5000.0),
        ("message.p99.9 <= 1.5 s", "message.p99.9", "<=", 1_500_000.0),
        ("errors==0", "errors", "==", 0.0),
        ("throughput>=10000", "throughput", ">=", 10000.0),
        ("connect.p50<250us", "connect.p50", "<", 250.0),
    ],
)
def test_parse(text: str, metric: str, op: str, value: float) -> None:
    check = parse_check(text)
    assert (check.metric, check.op, check.value) == (metric, op, value)


@pytest.mark.parametrize("text", ["message.p99", "p99<<5", "throughput>=10ms", "errors==0%", ""])
def test_bad_expressions_are_one_line_errors(text: str) -> None:
    with pytest.raises(CheckError) as info:
        parse_check(text)
    assert "\n" not in str(info.value)


def test_p999_alias_reads_the_same_metric() -> None:
    metrics = cell_metrics(cell())
    assert metrics["message.p99.9"] == metrics["message.p999"] == 1800.0


def test_evaluate_reports_each_broken_cell_once_per_check() -> None:
    cells = [cell(users=10), cell(users=100, p99_us=7000.0, throughput=8000.0, errors=3)]
    rows = [(f"{c.variant} u={c.users}", cell_metrics(c)) for c in cells]
    checks = [parse_check("message.p99<5ms"), parse_check("errors==0"), parse_check("throughput>=10000")]
    broken = evaluate(checks, rows)
    assert broken == [
        "check message.p99<5ms: threaded u=100: message.p99 = 7.000 ms",
        "check errors==0: threaded u=100: errors = 3",
        "check throughput>=10000: threaded u=100: throughput = 8000",
    ]
    assert evaluate([parse_check("message.p99<10ms")], rows) == []


def test_unknown_metric_is_broken_not_ignored() -> None:
    rows = [("threaded u=10", cell_metrics(cell()))]
    broken = evaluate([parse_check("sesion.p99<5ms")], rows)
    assert len(broken) == 1 and "no metric 'sesion.p99'" in broken[0]
