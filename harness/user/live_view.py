"""Swarmbench in Locust's own web UI and on a metrics endpoint, through Locust's extension points.

Where the figures are whole, a local runner or a master (its workers' reports
merged), :class:`LiveView` adds:

- two tabs to the web UI (``extended_tabs``/``extended_tables`` in its template
  arguments) whose rows ride on every ``/stats/requests`` answer as
  ``extended_stats``, as Locust's ``examples/extend_web_ui.py`` does: microsecond
  percentiles per request name (harness.live), the load, the generator's health
  and the server's;
- ``/metrics`` on the web UI's app and, with ``--metrics-port`` (headless runs
  too), on a port of its own (gevent's WSGI server, 127.0.0.1 unless
  ``--metrics-host`` says otherwise), in Prometheus's text format
  (harness.live_metrics);
- with ``--server-pid``, the server's threads, CPU, memory, descriptors and
  connections on the target's port (harness.server_sampler), read when the view
  is asked for, at most once a second.

A worker serves nothing: its master has its figures. The view is built when the
UI asks (every 2 s, Locust caches the answer) or Prometheus scrapes: nothing per message.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import gevent
import psutil
from gevent.pywsgi import WSGIServer
from locust.runners import MasterRunner

from harness.live import (
    LATENCY_COLUMNS, STATE_COLUMNS, Load, Process, Server, achieved_rate, latency_rows, p99, recent_histogram,
    request_figures, state_rows, window_end,
)  # fmt: skip
from harness.machine import bound_reason
from harness.server_sampler import Sampler
from harness.target import split_host
from harness.user.options import DEFAULT_HOST, scenario_options

LOG = logging.getLogger("swarmbench")
LATENCY_TAB = "swarmbench-latency"
STATE_TAB = "swarmbench-run"
#: At most one reading of the server and of the machine's idle CPU this often (seconds).
SAMPLE_PERIOD = 1.0


def add_arguments(parser: Any, **_kw: Any) -> None:
    """Locust's ``init_command_line_parser`` listener: the live view's options."""
    group = parser.add_argument_group("Swarmbench live view")
    group.add_argument("--server-pid", type=int, default=0, env_var="SWARMBENCH_SERVER_PID",
                       help="PID of the server under load: its threads, CPU, memory and connections, once a "
                            "second, in the web UI's Swarmbench tabs and on /metrics")  # fmt: skip
    group.add_argument("--metrics-port", type=int, default=None, env_var="SWARMBENCH_METRICS_PORT",
                       help="serve Prometheus metrics on this port too (headless runs included); the web UI "
                            "serves them at /metrics")  # fmt: skip
    group.add_argument("--metrics-host", type=str, default="127.0.0.1", env_var="SWARMBENCH_METRICS_HOST",
                       help="the address --metrics-port listens on (default 127.0.0.1)")


def usage_error(message: str) -> None:
    """A bad live-view option: one line and exit 2 (as argparse exits for a bad argument)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


class LiveView:
    """The live view of one Locust process (local or master), for every run it makes."""

    def __init__(self, environment: Any, plugin: Any, web_ui: Any = None) -> None:
        self.environment = environment
        self.plugin = plugin
        self.master = isinstance(getattr(environment, "runner", None), MasterRunner)
        parsed = environment.parsed_options
        self.server_pid = int(getattr(parsed, "server_pid", 0) or 0)
        self.sampler: Sampler | None = None
        self.server: Server | None = None
        self.idle_percent: float | None = None
        self.read_at = -SAMPLE_PERIOD  # monotonic time of the last reading
        self.read_before = self.server_read = False
        self.registry: Any = None  # prometheus_client's, made only where metrics are served
        self.metrics_server: WSGIServer | None = None
        self._check_and_bind(parsed)
        if web_ui is not None:
            self._extend(web_ui)

    def _metrics(self) -> Any:
        """The metrics registry, made on first use: a headless run without --metrics-port (a sweep's
        cell) imports nothing of prometheus_client and lays out no buckets."""
        if self.registry is None:
            from prometheus_client import CollectorRegistry

            from harness.live_metrics import RunCollector, prepare

            prepare()
            self.registry = CollectorRegistry(auto_describe=False)
            self.registry.register(RunCollector(self.source, pause=lambda: gevent.sleep(0.0001)))
        return self.registry

    # -- options, checked at init: one line and exit 2 --------------------------------------------
    def _check_and_bind(self, parsed: Any) -> None:
        if self.server_pid:
            if self.server_pid < 0:
                usage_error(f"--server-pid {self.server_pid}: not a process ID")
            try:
                port = split_host(self.environment.host or DEFAULT_HOST)[1]
            except ValueError:
                port = None  # the plugin names a bad host
            try:
                self.sampler = Sampler(self.server_pid, port, interval=SAMPLE_PERIOD)
            except ProcessLookupError:
                usage_error(f"--server-pid {self.server_pid}: no such process")
        port = getattr(parsed, "metrics_port", None)
        if port is None:
            return
        host = str(getattr(parsed, "metrics_host", "127.0.0.1") or "127.0.0.1")
        if not 0 < port < 65536:
            usage_error(f"--metrics-port {port}: not a TCP port (1-65535)")
        from prometheus_client import make_wsgi_app

        server = WSGIServer((host, port), make_wsgi_app(self._metrics()), log=None, error_log=None)
        try:
            server.start()
        except OSError as exc:
            usage_error(f"--metrics-port {port} on {host}: {exc.strerror or exc}")
        self.metrics_server = server
        LOG.info("Swarmbench: Prometheus metrics on http://%s:%d/metrics", host, port)

    # -- what the view reads ---------------------------------------------------------------------
    def _read(self) -> None:
        """The server's reading and the machine's idle CPU, at most once a :data:`SAMPLE_PERIOD`.

        Read when the view is asked for (the web UI, a scrape), not on a timer: a
        run nobody watches (a sweep's cell) pays nothing. CPU figures cover the
        time since the previous reading.
        """
        now = time.monotonic()
        if now - self.read_at < SAMPLE_PERIOD:
            return
        self.read_at = now
        times = psutil.cpu_times_percent(interval=None)
        self.idle_percent = times.idle + getattr(times, "iowait", 0.0) if self.read_before else None
        self.read_before = True
        if self.sampler is None or (self.server is not None and not self.server.alive):
            return
        s = self.sampler.read()
        known = s.alive and self.server_read
        self.server_read = True  # the first reading is the CPU's baseline
        self.server = Server(self.server_pid, s.alive, s.threads if s.alive else None,
                             s.cpu_percent if known else None, s.rss_bytes if s.alive else None,
                             s.fds if s.alive and s.fds >= 0 else None,
                             s.connections if s.alive and self.sampler.port is not None else None)  # fmt: skip

    def source(self) -> tuple[Any, Load | None]:
        """The current run's recorder and its load (the metrics collector's source)."""
        run = self.plugin.run
        return (run.recorder if run is not None else None), self.load()

    def end(self) -> int:
        run = self.plugin.run
        return window_end(time.time(), master=self.master, stopped_at=run.stopping_at if run is not None else None)

    def load(self) -> Load:
        self._read()
        runner = self.environment.runner
        state, users = str(getattr(runner, "state", "-")), getattr(runner, "user_count", None)
        run = self.plugin.run
        opts = scenario_options(self.environment.parsed_options)
        asked = opts.rate or None
        if run is None:
            return Load(state, users, None, None, asked, None, server=self.server)
        end = self.end()
        own = run.cpu.summary()
        processes = [Process("master" if self.master else "local", own.get("cpu_percent_now"), own.get("rss_bytes_now"))]
        processes += [Process(str(cpu.get("host", "")) + f" pid {cpu.get('pid')}", cpu.get("cpu_percent_now"),
                              cpu.get("rss_bytes_now")) for cpu in run.remote_cpu.values()]  # fmt: skip
        working = processes[1:] if self.master else processes  # a master's own CPU is no measure
        lag = p99(recent_histogram(run.recorder, "loop_lag", end))
        message = p99(recent_histogram(run.recorder, "message", end))
        cpu_max = max((p.cpu_percent for p in working if p.cpu_percent is not None), default=0.0)
        reason = bound_reason(cpu_max, self.idle_percent, lag, message) if run.spawned_at is not None else None
        return Load(state, users, run.phases.total(), run.unanswered(), asked, achieved_rate(run.recorder, end),
                    tuple(processes), lag, reason, self.server)  # fmt: skip

    def extended_stats(self) -> list[dict[str, Any]]:
        run = self.plugin.run
        rows = latency_rows(request_figures(run.recorder, self.end())) if run is not None else []
        return [{"key": LATENCY_TAB, "data": rows}, {"key": STATE_TAB, "data": state_rows(self.load())}]

    # -- Locust's web UI -----------------------------------------------------------------------------
    def _extend(self, web_ui: Any) -> None:
        from flask import Response, request  # Locust's own dependency, imported where its app is

        web_ui.template_args["extended_tabs"] = [
            {"title": "Swarmbench latency", "key": LATENCY_TAB}, {"title": "Swarmbench run", "key": STATE_TAB},
        ]  # fmt: skip
        web_ui.template_args["extended_tables"] = [
            {"key": LATENCY_TAB, "structure": [{"key": k, "title": t} for k, t in LATENCY_COLUMNS]},
            {"key": STATE_TAB, "structure": [{"key": k, "title": t} for k, t in STATE_COLUMNS]},
        ]  # fmt: skip
        app = web_ui.app

        @app.after_request
        def add_extended_stats(response: Any) -> Any:
            if not request.path.endswith("/stats/requests") or response.status_code != 200 or not response.is_json:
                return response
            data = response.get_json()
            data["extended_stats"] = self.extended_stats()
            response.set_data(json.dumps(data))
            return response

        registry = self._metrics()

        def metrics() -> Any:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

        app.add_url_rule("/metrics", "swarmbench_metrics", web_ui.auth_required_if_enabled(metrics))

    def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.stop(timeout=1)
            self.metrics_server = None
