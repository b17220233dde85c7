"""The one place a result reaches Locust: ``request`` events, with a fast path for successes.

Successful messages are not reported one by one: while Locust's own stats
listener is the request hook's only listener, each second's messages reach
Locust's stats in one batch (:class:`LocustBatch`), made from the recorder's
per-second count of equal µs values (see :mod:`harness.user.recorder`). The
batch does to ``stats.entries[("message", "tcp")]`` and ``stats.total`` what
``StatsEntry.log`` would have done for each message, so the console table,
``--csv``, ``--json``, ``--html`` and the web UI count and rank them as before,
up to one second later. The message loop tests the same condition at every
message; while another listener exists, each message goes through ``fire``
(which feeds Locust's stats too), and the batch leaves those out. Failures,
connects and sessions always go through ``fire`` at once.

``EventHook.fire`` copies its handler list and wraps each call in a try: about
a third of Locust's whole per-request work. While Locust's own stats listener
is the hook's only listener, a successful message calls it directly. The test
is made at every message (a length check and one identity test, in C) on the
hook's own list, so a listener added at any time, by a plugin or a locustfile,
gets every later message through the documented ``fire``.

The fast path reads ``EventHook._handlers`` and recognises Locust's listener by
its qualified name; both are checked against the Locust versions in
``FAST_PATH_VERSIONS`` (pyproject.toml bounds ``locust`` to them). On any other
version, or when the listener is not recognised, every result goes through ``fire``.
"""

from __future__ import annotations

import time
from importlib import metadata
from time import perf_counter_ns
from typing import Any

REQUEST_TYPE = "tcp"
#: Locust versions (major, minor) whose EventHook and stats listener the fast path was tested on.
FAST_PATH_VERSIONS = ((2, 30), (2, 47))


def locust_version() -> tuple[int, int]:
    try:
        parts = metadata.version("locust").split(".")
        return int(parts[0]), int(parts[1])
    except (metadata.PackageNotFoundError, ValueError, IndexError):
        return (0, 0)


def stats_listener(hook: Any) -> tuple[list[Any], list[Any] | None]:
    """``(listeners, solo)``: while ``listeners == solo``, Locust's stats listener is the only one.

    ``solo`` is None when the fast path is off (a Locust version outside the
    tested range, or a listener that is not recognised).
    """
    low, high = FAST_PATH_VERSIONS
    handlers = getattr(hook, "_handlers", None)
    if not isinstance(handlers, list) or not low <= locust_version() <= high:
        return [], None
    for handler in handlers:
        if getattr(handler, "__qualname__", "").startswith("Runner.__init__.") and handler.__module__ == "locust.runners":
            return handlers, [handler]
    return handlers, None


class _Cut:
    """One cut of the message buffer on its way to Locust: Locust's figures for its values, built in steps."""

    __slots__ = ("buckets", "count", "fired", "high", "low", "second", "stamp", "total_us")

    def __init__(self, second: int, fired: list[int]) -> None:
        now = time.time()
        self.second = second
        # Locust keeps the time of the last request: here, when the buffer was cut, within its second
        self.stamp = now if int(now) == second else second + 0.999999
        self.fired: dict[int, int] = {}
        for value in fired:  # messages Locust already logged through fire: not again
            self.fired[value] = self.fired.get(value, 0) + 1
        self.buckets: dict[int, int] = {}
        self.count = self.total_us = 0
        self.low: int | None = None
        self.high = 0


class LocustBatch:
    """A recorder tap: each cut of the ``message`` buffer goes to Locust's stats in one batch.

    Reads and writes ``StatsEntry`` attributes and its ``_cache_response_times``
    as Locust 2.30-2.47's ``StatsEntry.log`` does (checked by the tests against
    per-message logging); used only on those versions (:data:`FAST_PATH_VERSIONS`).
    """

    def __init__(self, stats: Any, name: str = "message", length: int = 1) -> None:
        self.stats = stats  # Locust's RequestStats (environment.stats)
        self.name = name
        self.length = length  # response_length per message, as the fired path reports it
        self.fired: list[int] = []  # µs of messages reported through fire since the last cut

    # -- the recorder's Tap protocol ------------------------------------------------------------
    def cut(self, second: int) -> _Cut:
        """At the instant the recorder takes the buffer: what was fired since belongs to this cut."""
        fired, self.fired = self.fired, []
        return _Cut(second, fired)

    def add(self, cut: _Cut, items: list[tuple[int, int]]) -> None:
        """Some (µs value, count) pairs of the cut: bucket them as Locust would (its own rounding function)."""
        from locust.stats import bucket_response_time  # looked up each time: Locust lets users replace it

        fired, buckets = cut.fired, cut.buckets
        total = count = 0
        low, high = cut.low, cut.high
        for value, n in items:
            if fired:
                n -= fired.pop(value, 0)
                if n <= 0:
                    continue
            bucket = bucket_response_time(value / 1000)
            buckets[bucket] = buckets.get(bucket, 0) + n
            count += n
            total += value * n
            if low is None or value < low:
                low = value
            if value > high:
                high = value
        cut.count += count
        cut.total_us += total
        cut.low, cut.high = low, high

    def done(self, cut: _Cut) -> None:
        """The whole cut is bucketed: add it to the name's entry and to the total, as ``log`` would."""
        if cut.count:
            stats = self.stats
            self._log(stats.total, cut)
            self._log(stats.entries[(self.name, REQUEST_TYPE)], cut)

    def _log(self, entry: Any, cut: _Cut) -> None:
        second, n = cut.second, cut.count
        last = entry.last_request_timestamp
        if entry.use_response_times_cache and last and second > int(last):
            entry._cache_response_times(second - 1)  # log() keeps the state at each second's end
        entry.num_requests += n
        per_second = entry.num_reqs_per_sec
        per_second[second] = per_second.get(second, 0) + n
        if last is None or cut.stamp > last:
            entry.last_request_timestamp = cut.stamp
        entry.total_response_time += cut.total_us / 1000
        low, high = cut.low / 1000, cut.high / 1000  # type: ignore[operator]
        entry.min_response_time = low if entry.min_response_time is None else min(entry.min_response_time, low)
        entry.max_response_time = max(entry.max_response_time, high)
        times = entry.response_times
        for bucket, count in cut.buckets.items():
            times[bucket] = times.get(bucket, 0) + count
        entry.total_content_length += n * self.length
        # a request fired in a later second already closed that second's cache: it missed this batch
        cache = entry.response_times_cache if entry.use_response_times_cache else None
        if cache:
            for t in [t for t in cache if t >= second]:
                cached = cache[t]
                for bucket, count in cut.buckets.items():
                    cached.response_times[bucket] = cached.response_times.get(bucket, 0) + count
                cache[t] = cached._replace(num_requests=cached.num_requests + n)


def locust_batch(stats: Any, recorder: Any, solo: list[Any] | None) -> LocustBatch | None:
    """The recorder's batch into ``stats`` (made at the first call); None when the fast path is off."""
    if solo is None or stats is None:
        return None
    batch = recorder.taps.get("message")
    if batch is None or batch.stats is not stats:
        batch = recorder.taps["message"] = LocustBatch(stats)
    return batch


class StatsReporter:
    """Reports one client's results to Locust's ``request`` event.

    ``batched`` (the message loop's test, at each message): ``listeners == solo``
    means a success is left to the recorder's batch; otherwise :meth:`message`
    fires it.
    """

    __slots__ = ("batch", "context", "fire", "listeners", "solo", "stats")

    def __init__(self, hook: Any, stats: Any = None, recorder: Any = None) -> None:
        self.fire = hook.fire
        self.context: dict[str, Any] = {}
        self.listeners, self.solo = stats_listener(hook)
        self.stats = self.solo[0] if self.solo else None
        self.batch = locust_batch(stats, recorder, self.solo) if recorder is not None else None
        if self.batch is None:
            self.solo = None  # no batch: every message goes through fire

    def message(self, elapsed_ns: int, elapsed_us: int, length: int = 1) -> None:
        """A successful message while Locust's stats are not alone: fired now, left out of the batch."""
        if self.batch is not None:
            self.batch.fired.append(elapsed_us)
        self.fire(
            request_type=REQUEST_TYPE, name="message", response_time=elapsed_ns / 1e6,
            response_length=length, exception=None, context=self.context,
        )  # fmt: skip

    def ok(self, name: str, elapsed_ns: int, length: int = 1) -> None:
        """A success, ``elapsed_ns`` long: straight to Locust's stats while they listen alone."""
        if self.solo is not None and self.listeners == self.solo:
            self.stats(request_type=REQUEST_TYPE, name=name, response_time=elapsed_ns / 1e6, response_length=length)
        else:
            self.fire(
                request_type=REQUEST_TYPE, name=name, response_time=elapsed_ns / 1e6,
                response_length=length, exception=None, context=self.context,
            )  # fmt: skip

    def failure(self, name: str, start_ns: int, exc: BaseException) -> None:
        self.fire(
            request_type=REQUEST_TYPE, name=name, response_time=(perf_counter_ns() - start_ns) / 1e6,
            response_length=0, exception=exc, context=self.context,
        )  # fmt: skip
