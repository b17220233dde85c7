"""Findings in plain words, derived from the numbers: what a reader wants before the plots.

Pure functions of the result model. Each finding carries the structured facts
it states (variant, users, value), so tests and other tools need not parse prose.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from harness.results import CellResult, RunManifest
from harness.results.reading import ANSWERED, UNANSWERED, unanswered
from reports.summary import CONNECT, fmt_duration_ms, fmt_rate, generator_limited, generator_note, is_valid
from reports.summary import kernel_counter, lag_bound_only, latency, missing_cells, users_word, variant_order

#: A connect p99 at or above this means SYNs were retried (Linux's first SYN timeout is 1 s).
CONNECT_JUMP_MS = 900.0
#: Failures above this share of requests disqualify a cell from meeting the SLO.
MAX_FAILURE_SHARE = 0.01
#: Slope of threads against users that counts as "one thread per connection".
TRACKING_SLOPE = (0.75, 1.25)
#: Open loop: a cell that delivered less than this share of its asked rate misses the SLO
#: (the server, or the generator, could not keep the pace; the latency of what was sent says less).
MIN_RATE_SHARE = 0.95


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # slo, headline, threads, connect, failures, generator, status, server, missing
    severity: str  # good, info, warn, bad
    text: str
    variant: str | None = None
    users: int | None = None
    value: float | None = None


@dataclass(frozen=True, slots=True)
class SloLimit:
    """The highest concurrency at which a variant met the SLO, counting from the lowest level."""

    variant: str
    users: int | None  # None: not even the lowest valid level met it
    throughput: float | None
    p99_ms: float | None
    first_miss_users: int | None  # the first valid level that missed, None if none did
    first_miss_p99_ms: float | None
    untested_above: tuple[int, ...]  # higher levels with no valid figures (generator-bound, failed)
    first_miss_why: str | None = None  # "p99 12.2 ms", "68 of 100 users left unanswered", ...


def by_variant(cells: Sequence[CellResult]) -> dict[str, list[CellResult]]:
    groups: dict[str, list[CellResult]] = {}
    for cell in sorted(cells, key=lambda c: c.users):
        groups.setdefault(cell.variant, []).append(cell)
    return groups


def meets_slo(cell: CellResult, slo_ms: float) -> bool:
    return miss_reason(cell, slo_ms) is None


def miss_reason(cell: CellResult, slo_ms: float) -> str | None:
    """Why a cell misses the SLO, in words; None when it meets it."""
    lat = latency(cell)
    if lat is None:
        return "no message completed"
    if lat.p99_us >= slo_ms * 1000.0:  # every due message counts (a bound is over the SLO all the more)
        return f"p99 {'≥ ' if lat.lower_bound('p99_us') else ''}{fmt_duration_ms(lat.p99_us / 1000)}"
    answered = latency(cell, ANSWERED) or lat
    # Messages only (a broken message also fails its session), over the whole cell: a server that
    # leaves users waiting shows it as they time out, often while the run stops, after the window.
    failed = sum((cell.failures_total or cell.failures).get("message", {}).values())
    if failed > (failed + answered.count) * MAX_FAILURE_SHARE:
        return f"{failed:,} messages failed, though p99 of the answered was {fmt_duration_ms(answered.p99_us / 1000)}"
    waiting = unanswered(cell)
    if waiting > cell.users * MAX_FAILURE_SHARE:
        return (f"{waiting:,} of {cell.users:,} users left unanswered, though p99 of the answered was "
                f"{fmt_duration_ms(answered.p99_us / 1000)}")
    if lat.lower_bound("p99_us"):
        return f"p99 ≥ {fmt_duration_ms(lat.p99_us / 1000)}: it rests on messages that had no reply"
    never = cell.users_not_established or 0
    if never > cell.users * MAX_FAILURE_SHARE:
        return f"{never:,} of {cell.users:,} users never had a reply"
    if cell.rate and cell.throughput < cell.rate * MIN_RATE_SHARE:
        return (f"achieved {fmt_rate(cell.throughput)} of the {fmt_rate(cell.rate)} messages/s asked "
                f"({cell.throughput / cell.rate:.0%}, under {MIN_RATE_SHARE:.0%})")
    return None


def unanswered_finding(variant: str, cells: Sequence[CellResult]) -> list[Finding]:
    found = []
    for cell in cells:
        waiting = unanswered(cell)
        if not waiting:
            continue
        longest = fmt_duration_ms(cell.latency[UNANSWERED].max_us / 1000)
        severity = "bad" if waiting > cell.users * MAX_FAILURE_SHARE else "warn"
        found.append(Finding(
            "unanswered", severity,
            f"{variant} at {users_word(cell.users)}: {waiting:,} of {cell.users:,} users were still waiting for a "
            f"reply when the run stopped (the longest for {longest}): the server left them unserved, and no "
            "latency figure holds their messages.", variant, cell.users, float(waiting)))
    return found


def not_established_finding(variant: str, cells: Sequence[CellResult]) -> list[Finding]:
    """Users that never had a first reply before the cell stopped: a finding with their count."""
    found = []
    for cell in cells:
        never = cell.users_not_established
        if never:
            found.append(Finding(
                "established", "bad",
                f"{variant} at {users_word(cell.users)}: {never:,} of {cell.users:,} users never had a reply "
                "(not established by the deadline or the stop), so the window began at the establishment "
                "deadline.", variant, cell.users, float(never)))
    return found


def missing_report_finding(cells: Sequence[CellResult]) -> Finding | None:
    hit = [c for c in cells if c.workers_missing_final]
    if not hit:
        return None
    names = "; ".join(f"{c.variant} at {users_word(c.users)}: {', '.join(c.workers_missing_final)}" for c in hit)
    return Finding("generator", "warn", f"A worker's final report never came, so its last seconds are missing "
                   f"from these cells: {names}.")


def slo_limit(variant: str, cells: Sequence[CellResult], slo_ms: float) -> SloLimit:
    """Walk up the valid levels; stop at the first that misses (a later lucky level does not count).

    A cell marked only for the generator's loop lag that meets the SLO counts as held (its latencies
    include the generator's own delays: the server did at least as well). A generator-bound cell that
    misses is skipped, unless the server left users unanswered there.
    """
    best: CellResult | None = None
    miss: CellResult | None = None
    for cell in sorted(cells, key=lambda c: c.users):
        if cell.status != "ok":
            continue
        if meets_slo(cell, slo_ms) and (is_valid(cell) or lag_bound_only(cell)):
            best = cell
        elif is_valid(cell) or unanswered(cell) or cell.users_not_established:
            miss = cell  # users the server never answered are the server's, whatever the generator did
            break
    top = best.users if best else 0
    limit = miss.users if miss else None
    untested = tuple(c.users for c in cells
                     if c.users > top and (limit is None or c.users < limit) and not is_valid(c)
                     and not (c.status == "ok" and lag_bound_only(c) and meets_slo(c, slo_ms)))
    best_lat, miss_lat = (latency(best) if best else None), (latency(miss) if miss else None)
    return SloLimit(
        variant=variant,
        users=best.users if best else None,
        throughput=best.throughput if best else None,
        p99_ms=best_lat.p99_us / 1000 if best_lat else None,
        first_miss_users=miss.users if miss else None,
        first_miss_p99_ms=miss_lat.p99_us / 1000 if miss_lat else None,
        untested_above=untested,
        first_miss_why=miss_reason(miss, slo_ms) if miss else None,
    )


def slo_finding(lim: SloLimit, slo_ms: float) -> Finding:
    slo = f"{slo_ms:g} ms"
    if lim.users is None:
        if lim.first_miss_users is None:
            return Finding("slo", "info", f"{lim.variant}: no cell with valid figures, so nothing can be said "
                           f"about the {slo} p99 target.", lim.variant)
        why = lim.first_miss_why or "no message completed"
        return Finding("slo", "bad", f"{lim.variant}: misses the {slo} p99 target already at "
                       f"{users_word(lim.first_miss_users)} ({why}).", lim.variant, None, None)
    text = (f"{lim.variant}: holds message p99 under {slo} up to {users_word(lim.users)}, "
            f"serving {fmt_rate(lim.throughput)} messages/s there (p99 {fmt_duration_ms(lim.p99_ms or 0)})")
    if lim.first_miss_users is not None:
        text += f"; at {users_word(lim.first_miss_users)}: {lim.first_miss_why}"
    elif not lim.untested_above:
        text += ", the highest level tested: its limit lies beyond this sweep"
    if lim.untested_above:
        levels = ", ".join(f"{u:,}" for u in lim.untested_above)
        text += f" (no valid figures at {levels} users, so the limit may be higher)"
    severity = "good" if lim.first_miss_users is None else "info"
    return Finding("slo", severity, text + ".", lim.variant, lim.users, lim.throughput)


def headline(groups: dict[str, list[CellResult]]) -> Finding | None:
    """The designs side by side at the highest concurrency that at least two ran validly."""
    levels: Counter[int] = Counter(c.users for cells in groups.values() for c in cells if is_valid(c))
    common = [u for u, n in levels.items() if n >= 2]
    if not common:
        return None
    users = max(common)
    parts = []
    for variant, cells in groups.items():
        for cell in cells:
            lat = latency(cell)
            if cell.users == users and is_valid(cell) and lat is not None:
                parts.append((cell.throughput, f"{variant} {fmt_rate(cell.throughput)} messages/s "
                              f"at p99 {fmt_duration_ms(lat.p99_us / 1000)}"))
    parts.sort(reverse=True)
    return Finding("headline", "info", f"At {users_word(users)}: " + "; ".join(p for _, p in parts) + ".",
                   None, users)


def thread_finding(variant: str, cells: Sequence[CellResult]) -> Finding | None:
    """Does the server's thread count follow its connections (one thread each) or stay flat?"""
    pts = [(c.users, c.server.threads_max) for c in cells
           if (c.server.samples or 0) > 0 and c.server.threads_max is not None and c.server.threads_max > 0]
    if len({u for u, _ in pts}) < 2:
        return None
    xs, ys = [float(u) for u, _ in pts], [float(t) for _, t in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x in xs)
    lo, hi = min(pts), max(pts)
    span = f"{lo[1]:,} threads at {users_word(lo[0])}, {hi[1]:,} at {users_word(hi[0])}"
    tmin, tmax = min(ys), max(ys)
    if tmax - tmin <= max(2.0, 0.1 * tmin):
        flat = f"{int(tmin):,}" if tmin == tmax else f"{int(tmin):,}–{int(tmax):,}"
        return Finding("threads", "good", f"{variant}: thread count stays flat ({flat}) from "
                       f"{users_word(lo[0])} to {users_word(hi[0])}: connections do not cost threads.",
                       variant, None, slope)
    if TRACKING_SLOPE[0] <= slope <= TRACKING_SLOPE[1]:
        offsets = sorted(t - u for u, t in pts)
        const = offsets[len(offsets) // 2]
        sign = "+" if const >= 0 else "−"
        return Finding("threads", "warn", f"{variant}: thread count tracks its connections, one thread per "
                       f"user: threads ≈ users {sign} {abs(const)} ({span}). Memory and scheduling cost grow "
                       f"with every client.", variant, None, slope)
    return Finding("threads", "info", f"{variant}: thread count grows with concurrency, about {slope:.2f} "
                   f"threads per added user ({span}).", variant, None, slope)


def connect_finding(variant: str, cells: Sequence[CellResult], backlog: object) -> list[Finding]:
    """Connect p99 of ~1 s or more is the SYN retry timeout: say whether the listen queue explains it.

    One finding per variant and kind, listing the levels, so a long sweep reads as a few lines.
    """
    found = []
    queue = f" (backlog {backlog})" if backlog is not None else ""
    explained: list[str] = []  # "2.05 s at 1,000 users (29,111 overflows)"
    unexplained: list[str] = []
    unread: list[str] = []  # connect jumps where the kernel's counters could not be read
    quiet: list[tuple[int, int]] = []  # (users, overflows) where connects stayed fast, measured
    first: dict[str, tuple[int, float]] = {}
    for cell in cells:
        conn = latency(cell, CONNECT)  # every connect of the cell, ramp included
        overflows = kernel_counter(cell, "ListenOverflows")
        if conn is not None and conn.p99_us / 1000 >= CONNECT_JUMP_MS:
            p99 = conn.p99_us / 1000
            at = f"{fmt_duration_ms(p99)} at {users_word(cell.users)}"
            if overflows is None:
                unread.append(at)
            elif overflows > 0:
                explained.append(f"{at} ({overflows:,} overflows)")
                first.setdefault("bad", (cell.users, p99))
            else:
                unexplained.append(at)
                first.setdefault("warn", (cell.users, p99))
        elif conn is not None and overflows:
            quiet.append((cell.users, overflows))
    if explained:
        users, p99 = first["bad"]
        found.append(Finding("connect", "bad", (
            f"{variant}: connect p99 jumps to " + ", ".join(explained) + ". The kernel counted listen-queue "
            f"overflows (machine-wide) during these cells: the accept queue{queue} was full, SYNs were dropped "
            "and clients retried after the SYN timeouts of 1 s, 3 s, 7 s."), variant, users, p99))
    if unexplained:
        users, p99 = first["warn"]
        found.append(Finding("connect", "warn", (
            f"{variant}: connect p99 jumps to " + ", ".join(unexplained) + ". The kernel counted no listen-queue "
            "overflows during these cells, so the listen queue does not explain it."), variant, users, p99))
    if unread:
        found.append(Finding("connect", "warn", f"{variant}: connect p99 jumps to " + ", ".join(unread) + ". The "
                             "kernel's counters could not be read, so whether the listen queue overflowed is unknown.",
                             variant))
    if quiet:
        levels = ", ".join(f"{users_word(u)} ({n:,})" for u, n in quiet)
        found.append(Finding("connect", "info", f"{variant}: listen queues overflowed (machine-wide counts) at "
                             f"{levels}, yet connect p99 stayed under 1 s.", variant, quiet[-1][0], None))
    return found


def failure_finding(variant: str, cells: Sequence[CellResult]) -> Finding | None:
    """Errors: every failure of the whole cell (ramp, window and stop), by class."""
    hit = [c for c in cells if c.errors > 0]
    if not hit:
        return None
    parts = []
    for cell in hit:
        classes: Counter[str] = Counter()
        for by_class in cell.failures_total.values():
            classes.update(by_class)
        top = ", ".join(f"{name} {n:,}" for name, n in classes.most_common(3))
        parts.append(f"{cell.errors:,} at {users_word(cell.users)} ({top})")
    return Finding("failures", "warn", f"{variant}: errors over the whole cell: " + "; ".join(parts) + ".", variant)


def loop_lag_words(cell: CellResult) -> str:
    """", its own loop lag p99 2.1 ms of message p99 4.0 ms": how much of a round trip is the generator."""
    lag, msg = cell.latency.get("loop_lag"), latency(cell)
    if lag is None or not lag.count or msg is None or not msg.count:
        return ""
    return f", its own loop lag p99 {fmt_duration_ms(lag.p99_us / 1000)} of message p99 {fmt_duration_ms(msg.p99_us / 1000)}"


def generator_findings(cells: Sequence[CellResult]) -> list[Finding]:
    """Saturated generators say nothing about the server; a large share of loop lag makes latencies upper bounds."""
    found = []
    bound = [c for c in cells if generator_limited(c) and not lag_bound_only(c)]
    if bound:
        names = ", ".join(f"{c.variant} at {users_word(c.users)} ({generator_note(c)}{loop_lag_words(c)})" for c in bound)
        found.append(Finding("generator", "warn", f"Generator-bound, so these cells say nothing about the server: "
                             f"{names}. Their latency and throughput measure the load generator; rerun them with "
                             "more --workers or a lower --rate."))
    lagged = [c for c in cells if lag_bound_only(c)]
    if lagged:
        names = ", ".join(f"{c.variant} at {users_word(c.users)} ({c.generator_bound})" for c in lagged)
        found.append(Finding("generator", "info", f"The generator's own scheduling is a large share of these "
                             f"cells' message p99: {names}. The load was delivered, so their latencies are upper "
                             "bounds for the server: an SLO they hold, the server holds; one they miss may be the "
                             "generator's (the SLO verdicts skip those)."))
    return found


STATUS_WORDS = {"failed": "the cell failed", "server-died": "the server died",
                "interrupted": "the cell was interrupted"}


def status_findings(cells: Sequence[CellResult]) -> list[Finding]:
    out = []
    for cell in cells:
        if cell.status == "ok":
            continue
        text = f"{cell.variant} at {users_word(cell.users)}: {STATUS_WORDS.get(cell.status, cell.status)}"
        if cell.status == "server-died" and cell.server.exit_code is not None:
            text += f" (exit code {cell.server.exit_code})"
        text += f": {cell.error}." if cell.error else "."
        severity = "warn" if cell.status == "interrupted" else "bad"
        out.append(Finding("status", severity, text, cell.variant, cell.users))
    return out


def note_findings(cells: Sequence[CellResult]) -> list[Finding]:
    """What the server's log said during a cell (a prefork worker died and was replaced): not in the figures."""
    return [Finding("note", "warn", f"{cell.variant} at {users_word(cell.users)}: the server log says: {note} "
                    "(the cell ran at reduced capacity for a moment).", cell.variant, cell.users)
            for cell in cells for note in cell.notes]


def find(manifest: RunManifest | None, cells: Sequence[CellResult], slo_ms: float = 10.0) -> list[Finding]:
    """Every finding, most telling first: SLO limits, the side-by-side, threads, connects, trouble."""
    groups = by_variant(cells)
    order = [v for v in variant_order(manifest, cells) if v in groups]
    groups = {v: groups[v] for v in order}
    # the backlog only where the harness set it: not for a --target server
    options = manifest.options if manifest is not None else {}
    backlog = options.get("backlog") if options.get("target") is None else None
    found: list[Finding] = [slo_finding(slo_limit(v, cs, slo_ms), slo_ms) for v, cs in groups.items()]
    top = headline(groups)
    if top is not None:
        found.append(top)
    for variant, vcells in groups.items():
        threads = thread_finding(variant, vcells)
        if threads is not None:
            found.append(threads)
    for variant, vcells in groups.items():
        found += connect_finding(variant, vcells, backlog)
    for variant, vcells in groups.items():
        found += not_established_finding(variant, vcells)
    for variant, vcells in groups.items():
        found += unanswered_finding(variant, vcells)
    for variant, vcells in groups.items():
        fail = failure_finding(variant, vcells)
        if fail is not None:
            found.append(fail)
    found += generator_findings(cells)
    lost = missing_report_finding(cells)
    if lost is not None:
        found.append(lost)
    found += status_findings(cells)
    found += note_findings(cells)
    unsampled = [v for v, vcells in groups.items() if all(c.server.pid is None and not c.server.samples for c in vcells)]
    if unsampled:
        found.append(Finding("server", "info", "server figures not available: no --pid, so the threads, CPU and "
                             f"memory of {', '.join(unsampled)} are shown as \"-\" (sampling is local: give "
                             "--pid PID when the server runs on this machine)."))
    missing = missing_cells(manifest, cells)
    if missing:
        names = ", ".join(f"{v} at {users_word(u)}" for v, u in missing)
        found.append(Finding("missing", "warn", f"Partial run: {len(missing)} planned "
                             f"cell{'s' if len(missing) != 1 else ''} ha{'ve' if len(missing) != 1 else 's'} "
                             f"no result: {names}."))
    return found
