"""The abstract Locust user of the chat protocol: scenarios subclass it and write tasks only.

As Locust's custom XML-RPC example does: the user holds a timed client
(:class:`~harness.user.client.TcpClient`) and offers building blocks
(``connect``, ``send_messages``, ``quit``, ``leave_abruptly``) that tasks call.
"""

from __future__ import annotations

import logging
import random
from time import perf_counter_ns
from typing import Any

import gevent
from locust import User
from locust.exception import StopUser

from harness.target import parse_host
from harness.user.client import TcpClient
from harness.user.options import DEFAULT_HOST, ScenarioOptions, scenario_options
from harness.user.pacing import Pacer
from harness.user.plugin import plugin_of
from harness.user.run import STALLED_S, Run
from harness.profiles import Profile
from harness.user.stats import StatsReporter
from harness.user.tls import TlsSettings, settings

LOG = logging.getLogger("swarmbench")
__all__ = ["STALLED_S", "TcpUser"]


class TcpUser(User):
    """Abstract Locust user for the chat server; scenarios subclass it and add tasks."""

    abstract = True
    host = DEFAULT_HOST
    #: None: ``--connect-timeout`` (35 s: SYNs dropped by a full listen queue are resent at 1, 3, 7, 15, 31 s)
    connect_timeout: float | None = None
    reply_timeout = 10.0
    quit_timeout = 2.0
    backoff_min = 0.05
    backoff_max = 1.0
    #: the protocol: None for ``--protocol``'s profile; a Profile subclass plugs in your own framing
    profile: type[Profile] | None = None

    options: ScenarioOptions
    client: TcpClient
    #: this process's current run (not ``run``: that is Locust's ``User.run()``)
    test_run: Run[Any]

    def on_start(self) -> None:
        self.client = None  # type: ignore[assignment]
        self.pacer: Pacer | None = None
        self._backoff = self.backoff_min
        self._in_phase = True
        self._established = False  # had its first reply (the window waits for every user's)
        self._connecting = 0  # perf_counter_ns when the current connect() began; 0 when not connecting

    def _setup(self) -> None:
        """Options and host, checked in a task (a bad value from the web UI: one log line, user stops)."""
        try:
            self.options = options = scenario_options(self.environment.parsed_options)
            family, address = parse_host(self.host or DEFAULT_HOST)
            profile, self.payload = options.profile(self.profile)
            tls: TlsSettings | None = None
            if options.tls:
                tls = settings(self.host or DEFAULT_HOST, options.tls_ca, options.tls_insecure)
        except ValueError as exc:
            LOG.error("%s", exc)
            raise StopUser() from None
        plugin = plugin_of(self.environment)
        self.test_run = test_run = plugin.current_run()
        users = plugin.total_users()
        self.client = TcpClient(
            test_run, StatsReporter(self.environment.events.request, self.environment.stats, test_run.recorder),
            family, address, profile=profile, tls=tls,
            connect_timeout=self.connect_timeout if self.connect_timeout is not None else options.connect_timeout,
            reply_timeout=self.reply_timeout, quit_timeout=self.quit_timeout,
            source_addresses=options.source_addresses, users=users,
        )  # fmt: skip
        if options.rate:
            self.pacer = Pacer(options.rate / users)

    # -- building blocks for scenario tasks ---------------------------------------------
    def connect(self) -> None:
        """Connect, retrying with bounded exponential backoff; returns once connected."""
        if self.client is None:
            self._setup()
        self._connecting = perf_counter_ns()
        while not self.client.connect():
            gevent.sleep(self._backoff * random.uniform(0.5, 1.0))
            self._backoff = min(self._backoff * 2, self.backoff_max)
        self._connecting = 0
        self._backoff = self.backoff_min
        if self.pacer is not None:
            self.pacer.resume()

    def send_messages(self, count: int | None = None) -> bool:
        """``count`` messages (default ``--messages-per-session``), open or closed loop."""
        count = self.options.messages_per_session if count is None else count
        if not self._established and count > 0:
            # the first reply on its own: the run's window waits for every user's (harness.user.phases)
            if not self._send(1):
                return False
            self._established = True
            self.test_run.phases.user_established()
            count -= 1
        return self._send(count) if count > 0 else True

    def _send(self, count: int) -> bool:
        if self.pacer is not None:
            return self.client.messages(count, self.payload, self.pacer)
        think = self.options.think_time
        if think and self._in_phase:
            # Locust spawns a second's users at once: without a random first pause they
            # would send in lockstep, a burst of them every think time
            self._in_phase = False
            gevent.sleep(random.random() * think)
        return self.client.messages(count, self.payload, think=think)

    def quit(self) -> bool:
        return self.client.quit()

    def leave_abruptly(self) -> None:
        """Close or reset, alternately over all sessions of the run in this process (half and half)."""
        self.test_run.leaving += 1
        if self.test_run.leaving % 2:
            self.client.reset()
        else:
            self.client.close()

    def on_stop(self) -> None:
        """The run stops: a connected user quits cleanly, so the server sees quits, not resets.

        A message still unanswered after ``STALLED_S`` is recorded (HDR only, as ``unanswered``,
        with its wait so far): a server that leaves users unserved must not look fast just
        because the messages it never answered are in no latency figure. A connect still
        in progress is recorded as ``connect_pending``, with its wait so far (retries included).
        """
        client = self.client
        if self._connecting and client is not None and not client.connected:
            waited = perf_counter_ns() - self._connecting
            client.recorder.buffer("connect_pending").append(waited // 1000)
            self._connecting = 0
        if client is not None and client.connected:
            if client.busy and not self.test_run.unanswered_recorded:  # else counted as the run began to stop
                waited = perf_counter_ns() - client.busy
                if waited > STALLED_S * 1e9:
                    client.recorder.buffer("unanswered").append(waited // 1000)
            client.busy = 0
            client.quit()
