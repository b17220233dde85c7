"""A capacity trial's verdict from its cell: pass, fail (the server's) or invalid (the generator's).

A trial is an ordinary cell (:class:`~harness.results.CellResult`) at one load. It passes when
message p99 is under the SLO, at least 99% of the asked rate was answered, no user was left
unanswered and the window's errors are within ``max_error_ratio``. It is *invalid*, never the
server's failure, when it missed while the generator was the bottleneck: the cell's own
generator-bound mark (:func:`harness.machine.generator_bound`: a saturated Locust process, a machine
with no idle CPU, the generator's loop lag), or sends late beyond a bound for reasons the server's
replies do not explain. Two rules keep this from hiding a server's failure or inventing one:

- a trial that meets every criterion passes even when the generator was in trouble, if its load
  was delivered (open loop, the achieved rate checked): latencies count from when each message was
  due, so the generator's delays only add to them;
- users the server never answered are the server's, whatever the generator did (as
  :func:`reports.findings.slo_limit` decides for a sweep).

The sweep's findings (:func:`reports.findings.miss_reason`) allow 1% of users unanswered and 95%
of the rate: a capacity trial is stricter, since it decides where the server's limit lies.
"""

from __future__ import annotations

from harness.machine import LOOP_LAG_FLOOR_US, LOOP_LAG_SHARE
from harness.results import CellResult
from harness.results.capacity import Trial
from harness.results.reading import fmt_duration_ms, fmt_rate, generator_note, lag_bound_only, latency, unanswered

#: A trial passes only if at least this share of the asked rate was answered over the window.
MIN_ACHIEVED = 0.99
SEND_LAG = "send_lag"  # the open loop: how late each message left, against when it was due (µs)
UNCORRECTED = "message_uncorrected"  # the open loop: from the send to the whole reply (µs)


def send_lag_bound_us(slo_ms: float) -> float:
    """Sends later than this (p99) are the generator's trouble: a third of the SLO, as for its loop lag, at least 1 ms."""
    return max(LOOP_LAG_FLOOR_US, LOOP_LAG_SHARE * slo_ms * 1000.0)


def late_sends(cell: CellResult, bound_us: float) -> str | None:
    """Why the cell's sends were late by the generator's fault, or None.

    ``send_lag`` also holds the wait for the previous reply of the same user (a message is sent
    only once that reply is in), so late sends are the server's doing when it answered slower than
    a user's interval between messages. Only when the replies came within that interval (p99 of
    send to reply) is a late send the generator's own delay.
    """
    if not cell.rate:
        return None
    lag, answered = latency(cell, SEND_LAG), latency(cell, UNCORRECTED)
    if lag is None or lag.p99_us is None or lag.p99_us <= bound_us:
        return None
    interval_us = cell.users / cell.rate * 1e6
    if answered is None or answered.p99_us is None or answered.p99_us > interval_us:
        return None
    return (f"sends were late: send lag p99 {fmt_duration_ms(lag.p99_us / 1000)} (over "
            f"{fmt_duration_ms(bound_us / 1000)}) while the server answered each within "
            f"{fmt_duration_ms(answered.p99_us / 1000)} (p99), under a user's interval of {fmt_duration_ms(interval_us / 1000)}")


def judge(cell: CellResult, *, load: int, slo_ms: float, max_error_ratio: float = 0.0,
          min_achieved: float = MIN_ACHIEVED, max_send_lag_ms: float | None = None,
          cell_file: str | None = None) -> Trial:
    """The trial at ``load`` (users, or msg/s asked), judged from its cell."""
    lat = latency(cell)
    errors = cell.errors_in_window
    failed_messages = sum(cell.failures.get("message", {}).values())
    waiting = max(unanswered(cell), cell.users_not_established or 0)
    # p99 counts every due message; where it rests on one that had no reply it is only a lower bound (a
    # file from before the census holds none: its p99 is one of replies alone, so a bound when some were missing)
    lower = lat.lower_bound("p99_us") if lat is not None and lat.censored else (waiting > 0 or failed_messages > 0)
    figures = dict(p99_us=lat.p99_us if lat else None, p99_lower_bound=lower and lat is not None,
                   p50_us=lat.p50_us if lat else None, asked=cell.rate,
                   achieved=cell.throughput if cell.status in ("ok", "server-died") else None,
                   unanswered=waiting, errors=errors, cell_file=cell_file)

    def trial(verdict: str, reason: str) -> Trial:
        return Trial(load, verdict, reason, **figures)  # type: ignore[arg-type]

    if cell.status == "interrupted":
        return trial("invalid", "the trial was interrupted")
    if cell.status == "server-died":
        code = cell.server.exit_code
        return trial("fail", "the server died" + (f" (exit code {code})" if code is not None else ""))
    if cell.status == "failed":
        refused = cell.failures_total.get("connect", {})
        if refused and not latency(cell, "connect"):  # the server (or its kernel) let nobody in
            kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(refused.items()))
            return trial("fail", f"no user could connect ({kinds})")
        return trial("invalid", f"the trial could not run: {cell.error or 'no reason recorded'}")

    bound_us = send_lag_bound_us(slo_ms) if max_send_lag_ms is None else max_send_lag_ms * 1000.0
    trouble = generator_note(cell) or late_sends(cell, bound_us)
    servers: list[str] = []  # the server's, whatever the generator did
    if waiting:
        servers.append(f"{waiting:,} of {cell.users:,} users left unanswered")
    misses: list[str] = []  # the server's, unless the generator was in trouble
    if lat is None or lat.p99_us is None:
        misses.append("no message completed")
    elif lat.p99_us >= slo_ms * 1000.0:
        misses.append(f"p99 {'≥ ' if lower else ''}{fmt_duration_ms(lat.p99_us / 1000)}, over the {slo_ms:g} ms SLO")
    if errors and errors > (errors + cell.messages) * max_error_ratio:
        misses.append(f"{errors:,} errors in the window ({errors / (errors + cell.messages):.1%} of requests, "
                      f"over {max_error_ratio:.1%})")
    if cell.rate and cell.throughput < cell.rate * min_achieved:
        misses.append(f"achieved {fmt_rate(cell.throughput)} of the {fmt_rate(cell.rate)} msg/s asked "
                      f"({cell.throughput / cell.rate:.1%}, under {min_achieved:.0%})")
    if servers:
        return trial("fail", "; ".join(servers + misses))
    if misses:
        if trouble:
            return trial("invalid", f"{trouble}, so this says nothing of the server: {'; '.join(misses)}")
        return trial("fail", "; ".join(misses))
    if trouble and not cell.rate and not lag_bound_only(cell):  # closed loop: a slow generator asked for less
        return trial("invalid", f"{trouble}: in the closed loop the generator offered less than the users could")
    assert lat is not None and lat.p99_us is not None
    held = f"p99 {fmt_duration_ms(lat.p99_us / 1000)} under the {slo_ms:g} ms SLO"
    if cell.rate:
        held += f", {fmt_rate(cell.throughput)} of {fmt_rate(cell.rate)} msg/s answered"
    return trial("pass", held + (f" (though {trouble}: its delays only add to these figures)" if trouble else ""))
