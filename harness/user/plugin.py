"""Swarmbench inside Locust: one plugin per Locust process, a class per role, as Locust has a runner per role.

Importing this module adds the scenario options and a listener for ``init``,
which chooses the plugin of the process's role once, from Locust's runner, and
hangs it on the environment (``environment.swarmbench``):

- :class:`LocalPlugin` (a local runner) runs the users, the phases and writes the file at ``test_stop``;
- :class:`MasterPlugin` runs no users: it adds the workers' reports second by second, runs the phases over
  every worker's count, ends the run when the window is over and writes the file;
- :class:`WorkerPlugin` runs users and ships what they recorded to the master inside Locust's own
  ``report_to_master`` message (the message that carries Locust's stats, so both are cut at the same
  instant); it writes no file.

Each registers only its own listeners, bound to itself, and starts a new
:class:`~harness.user.run.Run` at every ``test_start``, built for its role.
Nothing lives in module globals, so two environments in one process (tests do
this) do not mix.
"""

from __future__ import annotations

import logging
import resource
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from locust import events
from locust.runners import MasterRunner, WorkerRunner

from harness.host import raise_nofile_limit
from harness.results.worker_report import BadReport, check_report
from harness.target import parse_host
from harness.user.live_view import LiveView
from harness.user.live_view import add_arguments as add_live_arguments
from harness.user.options import DEFAULT_HOST, add_arguments, scenario_options
from harness.user.phases import (
    ESTABLISHED_MESSAGE, STOP_AT_MESSAGE, LocalPhases, MasterPhases, WorkerPhases, phase_options, run_token,
)  # fmt: skip
from harness.user.phases import add_arguments as add_phase_arguments
from harness.user.recorder import Recorder, WorkerRecorder
from harness.user.run import Run

LOG = logging.getLogger("swarmbench")

#: A worker flushes its open second this often (in steps), so a report's own flush is small.
WORKER_FLUSH_PERIOD = 0.1
#: Senders named in the log when their reports are dropped; past this many, the rest go unnamed.
MAX_REFUSED_NAMED = 100


class Plugin:
    """What every role does: a run per test, its start, spawn and stop; the file where the role writes one."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.run: Run[Any] | None = None
        self.live: LiveView | None = None  # the web UI's tabs and /metrics (not on a worker)
        ev = environment.events
        ev.test_start.add_listener(self.on_test_start)
        ev.spawning_complete.add_listener(self.on_spawning_complete)
        ev.test_stopping.add_listener(self.on_test_stopping)
        ev.test_stop.add_listener(self.on_test_stop)

    def new_run(self, users: int) -> Run[Any]:
        """A run built for this role (each role says what its runs have)."""
        raise NotImplementedError

    def register_message(self, kind: str, handler: Any) -> None:
        """A custom message of Locust's runner this role listens to (none without a runner, as in tests)."""
        runner = getattr(self.environment, "runner", None)
        if runner is not None:
            runner.register_message(kind, handler)

    def current_run(self) -> Run[Any]:
        """The run users record into (one is made when Locust is driven without test_start)."""
        if self.run is None:
            self.run = self.new_run(0)
        return self.run

    def total_users(self) -> int:
        """All users of the test, over every worker."""
        return int(getattr(self.environment.runner, "target_user_count", 0) or 1)

    def check_options(self) -> None:
        """At ``init``: the options and hosts, one line and exit 1 when one is wrong (never a traceback)."""
        environment = self.environment
        if environment.parsed_options is None:
            return
        try:
            scenario_options(environment.parsed_options)
            phase_options(environment.parsed_options)
            hosts = {environment.host} if environment.host else {u.host for u in environment.user_classes}
            for host in hosts:
                parse_host(host or DEFAULT_HOST)
        except ValueError as exc:
            fail(str(exc))
        hdr = environment.parsed_options.hdr_file
        if hdr and Path(hdr).is_dir():
            fail(f"--hdr-file {hdr}: is a directory")

    # -- listeners ------------------------------------------------------------------------
    def on_test_start(self, environment: Any, **_kw: Any) -> None:
        if self.run is not None:
            self.run.stop()
        self.run = self.new_run(self.total_users())
        self.run.phases.start()

    def on_spawning_complete(self, user_count: int = 0, **_kw: Any) -> None:
        if self.run is not None:
            self.run.spawned(user_count)

    def on_test_stopping(self, **_kw: Any) -> None:
        if self.run is not None:
            self.run.mark_stopping()

    def on_test_stop(self, **_kw: Any) -> None:
        if self.run is not None:
            self.run.stop()

    def on_quitting(self) -> None:
        """After Locust's own quitting listeners (see ``_on_quitting``): only a master has work left."""

    # -- the file ---------------------------------------------------------------------------
    def write(self, final: bool) -> None:
        run = self.run
        if run is None:
            return
        run.recorder.flush()
        parsed = self.environment.parsed_options
        path = getattr(parsed, "hdr_file", "") if parsed is not None else ""
        if path:
            run.write(Path(path))
        run.recorder.changed = False
        if final:
            run.log_summary(path)


class LocalPlugin(Plugin):
    """A local runner: users, phases and the file, all in this process."""

    def new_run(self, users: int) -> Run[LocalPhases]:
        return Run(self.environment, label="local", recorder=Recorder(), phases=LocalPhases, users=users)

    def on_test_start(self, environment: Any, **_kw: Any) -> None:
        users, soft = self.total_users(), resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if users + 256 > soft:
            LOG.warning("Swarmbench: %d users but only %d file descriptors (ulimit -n): connects will fail "
                        "with EMFILE; raise the hard limit or use --processes", users, soft)
        super().on_test_start(environment)

    def on_test_stop(self, **_kw: Any) -> None:
        super().on_test_stop()
        self.write(final=True)


class MasterPlugin(Plugin):
    """A master: no users; the workers' reports merged, the phases over all of them, the file.

    Its run ends only once every worker's final report is in (``MasterPhases.await_finals``),
    and the file is written again for a report that comes later.
    """

    run: Run[MasterPhases] | None

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        environment.events.worker_report.add_listener(self.on_worker_report)
        self.register_message(ESTABLISHED_MESSAGE, self.on_established_message)
        self.token = ""  # this run's, handed to the workers with the spawn message; no report matches ""
        self.refused: set[str] = set()  # senders already named in the log: once each, not per message

    def new_run(self, users: int) -> Run[MasterPhases]:
        # no users here: no alarm, probe or send timer (its idle loop would only dilute the workers' lag)
        return Run(self.environment, label="master", recorder=Recorder(), phases=MasterPhases, users=users,
                   runs_users=False)

    def on_test_start(self, environment: Any, **_kw: Any) -> None:
        self.token = secrets.token_hex(16)
        if environment.parsed_options is not None:
            # custom options travel to the workers with every spawn message
            environment.parsed_options.swarmbench_users = environment.runner.target_user_count
            environment.parsed_options.swarmbench_token = self.token
        super().on_test_start(environment)

    def on_test_stopping(self, **_kw: Any) -> None:
        super().on_test_stopping()
        if self.run is not None:  # Locust's quit does not stop workers before its last 0.5 s
            self.run.phases.announce_stop(time.time())

    def on_test_stop(self, **_kw: Any) -> None:
        if self.run is not None:
            self.run.phases.await_finals()  # before Locust sends "quit": every worker's last report
        super().on_test_stop()
        self.write(final=False)  # again at quitting, with the workers' final reports

    def on_quitting(self) -> None:
        if self.run is not None:
            self.run.stop()
            self.write(final=True)

    def on_established_message(self, environment: Any = None, msg: Any = None, **_kw: Any) -> None:
        if self.run is None or msg is None:
            return
        sender, data = str(msg.node_id), msg.data
        count = data.get("count") if isinstance(data, dict) else None
        if not self.registered(sender):
            self.refuse(sender, "it is not a worker of this master")
        elif data.get("token") != self.token or isinstance(count, bool) or not isinstance(count, int) or count < 0:
            self.refuse(sender, "an established count that is not this run's or not a count")
        else:
            self.run.phases.on_remote_count(sender, count)

    def on_worker_report(self, client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        """A worker's report, merged only when it comes from a registered worker and is well formed whole."""
        run = self.run
        payload = data.get("swarmbench") if isinstance(data, dict) else None
        if run is None or payload is None:
            return
        if not self.registered(client_id):
            self.refuse(client_id, "it is not a worker of this master")
            return
        try:
            report = check_report(payload, self.token, run.started_at, time.time())
        except BadReport as exc:
            self.refuse(client_id, str(exc))
            return
        run.recorder.merge_report(report.recording)
        run.remote_cpu[client_id] = report.cpu
        run.remote_stalled[client_id] = report.stalled
        run.phases.on_remote_count(client_id, report.established)
        if report.final:
            run.phases.on_final(client_id, report.established)
        if run.stopped and run.recorder.changed:
            self.write(final=False)  # a late report (after the master stopped): keep the file whole

    def registered(self, client_id: str) -> bool:
        """A worker that announced itself to this master's runner (Locust's own ``clients``)."""
        clients = getattr(self.environment.runner, "clients", None)
        return clients is not None and client_id in clients

    def refuse(self, sender: str, why: str) -> None:
        """Drop what ``sender`` sent, and say so the first time (a flood of reports must not flood the log)."""
        if sender not in self.refused and len(self.refused) < MAX_REFUSED_NAMED:
            self.refused.add(sender)
            LOG.warning("Swarmbench: dropped a report from %r: %s (further ones are dropped silently)",
                        sender[:80], why[:200])


class WorkerPlugin(Plugin):
    """A worker: users whose recordings go to the master with each of Locust's reports; no file.

    It stops its users at the master's planned end (``WorkerPhases.on_stop_at``) and sends its
    final report at once. Its options were checked by the master.
    """

    run: Run[WorkerPhases] | None

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        environment.events.report_to_master.add_listener(self.on_report_to_master)
        self.register_message(STOP_AT_MESSAGE, self.on_stop_at_message)

    def check_options(self) -> None:
        """Nothing: the master checked them."""

    def token(self) -> str:
        """The run's token, from the master's spawn message: the master merges only reports that carry it."""
        return run_token(self.environment)

    def total_users(self) -> int:
        """Learnt from the master's options (it sets ``swarmbench_users``), else this worker's own target."""
        runner = self.environment.runner
        return int(getattr(self.environment.parsed_options, "swarmbench_users", 0) or runner.target_user_count or 1)

    def new_run(self, users: int) -> Run[WorkerPhases]:
        # flushed within each second too, so that a report's own flush is small
        return Run(self.environment, label="worker", recorder=WorkerRecorder(), phases=WorkerPhases, users=users,
                   flush_period=WORKER_FLUSH_PERIOD)

    def on_test_stop(self, **_kw: Any) -> None:
        super().on_test_stop()
        # the last recordings go now, not at the next periodic report (up to 3 s later), and from here, not
        # from a greenlet of their own: on the master's "stop" (the web UI's Stop) Locust's handler tells the
        # master this worker stopped as soon as this returns, and the master discards a report sent after that
        send = getattr(self.environment.runner, "_send_stats", None)
        if self.run is not None and send is not None:
            send()

    def on_stop_at_message(self, environment: Any = None, msg: Any = None, **_kw: Any) -> None:
        if self.run is not None and msg is not None and isinstance(msg.data, dict):
            self.run.phases.on_stop_at(float(msg.data["stop_at"]))

    def on_report_to_master(self, client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        run = self.run
        if run is not None and isinstance(run.recorder, WorkerRecorder):
            data["swarmbench"] = {
                "token": self.token(), "report": run.recorder.take_report(), "cpu": run.cpu.summary(),
                "established": run.phases.count_at_stop(),
                "final": run.stopped,  # everything this worker will record is in this report
                "stalled": run.stalled_now(),  # the master's live view (harness.user.live_view)
            }  # fmt: skip


def plugin_for(environment: Any, runner: Any) -> Plugin:
    """The plugin of ``runner``'s role (a local one without a runner)."""
    if isinstance(runner, MasterRunner):
        return MasterPlugin(environment)
    if isinstance(runner, WorkerRunner):
        return WorkerPlugin(environment)
    return LocalPlugin(environment)


def plugin_of(environment: Any) -> Plugin:
    """The environment's plugin (made here when Locust's ``init`` event was never fired, as in tests)."""
    plugin = getattr(environment, "swarmbench", None)
    if plugin is None:
        plugin = environment.swarmbench = plugin_for(environment, getattr(environment, "runner", None))
    return plugin


def fail(message: str) -> None:
    """A one-line error and exit 1 (never a traceback) for a bad command line."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)


events.init_command_line_parser.add_listener(add_arguments)
events.init_command_line_parser.add_listener(add_phase_arguments)
events.init_command_line_parser.add_listener(add_live_arguments)


@events.init.add_listener
def _on_init(environment: Any, runner: Any = None, web_ui: Any = None, **_kw: Any) -> None:
    plugin = environment.swarmbench = plugin_for(environment, runner)
    raise_nofile_limit()  # Locust raises it only to 10,000: not enough for 10,000 users and the rest
    plugin.check_options()
    if not isinstance(plugin, WorkerPlugin):  # a worker's figures are its master's to show
        plugin.live = LiveView(environment, plugin, web_ui)


@events.quitting.add_listener
def _on_quitting(environment: Any, **_kw: Any) -> None:
    # Registered at import, before the runner's own listener: quitting fires with reverse=True,
    # so this runs after the master has sent "quit" and waited for the workers' final reports
    # (a local runner writes at test_stop, which on Ctrl-C comes after this).
    plugin = getattr(environment, "swarmbench", None)
    if plugin is not None:
        plugin.on_quitting()
        if plugin.live is not None:
            plugin.live.close()
