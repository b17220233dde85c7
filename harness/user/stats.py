"""The one place a result reaches Locust: ``request`` events, with a fast path for successes.

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


class StatsReporter:
    """Reports one client's results to Locust's ``request`` event."""

    __slots__ = ("context", "fire", "listeners", "solo", "stats")

    def __init__(self, hook: Any) -> None:
        self.fire = hook.fire
        self.context: dict[str, Any] = {}
        self.listeners, self.solo = stats_listener(hook)
        self.stats = self.solo[0] if self.solo else None

    def ok(self, name: str, elapsed_ns: int, length: int = 1) -> None:
        """A success, ``elapsed_ns`` long: straight to Locust's stats while they listen alone."""
        if self.listeners == self.solo:
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
