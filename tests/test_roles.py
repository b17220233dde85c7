"""A run and the plugin of each role, driven directly: a real gevent hub and stubs of Locust's runner, no Locust run.

Each test runs in a forked child (``forked``) and imports ``harness.user`` (and so gevent and Locust)
inside its body. Whole Locust runs check the same claims end to end in test_plugin.py and test_worker.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_phases import Runner

pytestmark = pytest.mark.forked


def environment(runner: Runner) -> Any:
    return SimpleNamespace(runner=runner, parsed_options=None)


def test_the_achieved_rate_counts_the_whole_seconds_between_spawned_and_stopping() -> None:
    from harness.user.phases import LocalPhases
    from harness.user.recorder import Recorder
    from harness.user.run import Run

    run = Run(environment(Runner()), label="local", recorder=Recorder(), phases=LocalPhases, runs_users=False)
    try:
        run.recorder.per_second["message"] = {99: 1000, 100: 10, 101: 20, 102: 30, 103: 1000}
        run.spawned_at, run.stopping_at = 99.5, 103.2
        assert run.achieved_rate() == pytest.approx(20.0)  # seconds 100, 101 and 102
        run.recorder.buffer("message").extend([5] * 30)
        run.recorder.flush()
        run.started_at = run.spawned_at = time.time() - 0.5  # no whole second yet: the count over the run so far
        run.stopping_at = None
        assert 30 / 0.6 < run.achieved_rate() <= 30 / 0.5
    finally:
        run.stop()


def test_the_generator_figures_join_every_process_and_judge_saturation_in_the_steady_stretch() -> None:
    from harness.machine import SATURATED_PERCENT
    from harness.user.phases import LocalPhases
    from harness.user.recorder import Recorder
    from harness.user.run import Run

    run = Run(environment(Runner()), label="master", recorder=Recorder(), phases=LocalPhases, runs_users=False)
    try:
        worker = {"cpu_percent_max": 99.0, "cpu_percent_max_steady": SATURATED_PERCENT + 1, "rss_bytes_max": 1000,
                  "users_max": 7}
        run.remote_cpu = {"w1": worker, "w2": {**worker, "cpu_percent_max_steady": 10.0, "users_max": 3}}
        stats = run.generator()
        own = stats.processes[0]
        assert own["role"] == "master" and len(stats.processes) == 3
        assert stats.cpu_percent_max == SATURATED_PERCENT + 1 and stats.saturated
        assert stats.cpu_percent_max_all == max(99.0, own["cpu_percent_max"])
        assert stats.users_max == 10 + own["users_max"]
        assert stats.rss_bytes_total == 2000 + own["rss_bytes_max"]
        run.remote_cpu["w1"] = {**worker, "cpu_percent_max_steady": 50.0}  # a spawn-time peak only
        assert not run.generator().saturated
    finally:
        run.stop()


class Stalled:
    """A client whose message is in flight (its ``busy``), as the watchdog keeps it (closed loop)."""

    busy = 0
    pending = 0
    pacer = None
    connected = True


def test_the_file_carries_what_the_phases_found(tmp_path: Path) -> None:
    from time import perf_counter_ns

    from harness.results.histogram_file import load_histogram_file
    from harness.user.phases import LocalPhases
    from harness.user.recorder import Recorder
    from harness.user.run import Run

    run = Run(environment(Runner(user_count=2)), label="local", recorder=Recorder(), phases=LocalPhases, users=2)
    stalled = Stalled()
    stalled.busy = perf_counter_ns() - 2_000_000_000  # waiting 2 s for a reply
    run.watchdog.clients.add(stalled)  # type: ignore[arg-type]
    run.phases.user_established()
    run.spawned(2)
    run.recorder.buffer("message").extend([100, 200])
    run.mark_stopping()
    run.stop()
    assert run.phases.closed and run.stopping_at is not None and run.ended_at is not None
    path = tmp_path / "hdr.json"
    run.write(path)
    data = load_histogram_file(path)
    found = run.phases.result()
    assert data.established_at is None and found.established_at is None  # one user of two
    assert (data.users_established, data.users_not_established) == (1, 1)
    assert data.establish_timeout == found.establish_timeout and data.workers_missing_final == ()
    assert data.names["message"].count == 2
    assert data.names["unanswered"].count == 1 and data.names["unanswered"].max_us >= 2_000_000
    # the census, taken as the run began to stop (no window here): its message, as the time it had waited
    assert data.names["message_censored"].count == 1 and data.names["message_censored"].max_us >= 2_000_000
    assert data.options.users == 2


def test_the_live_unanswered_count_comes_from_the_watchdogs_pass_and_the_workers_reports() -> None:
    from time import perf_counter_ns

    import gevent

    from harness.user.phases import LocalPhases
    from harness.user.recorder import Recorder
    from harness.user.run import Run

    run = Run(environment(Runner(user_count=3)), label="local", recorder=Recorder(), phases=LocalPhases, users=3)
    try:
        waiting: list[Any] = []
        for seconds in (2.0, 3.0, 0.1):  # two users stuck, one merely in flight
            client = Stalled()
            client.busy, client.reply_timeout_ns = perf_counter_ns() - int(seconds * 1e9), 60 * 10**9
            client.expire = lambda: pytest.fail("expired before its reply timeout")  # type: ignore[attr-defined]
            run.watchdog.add(client)  # type: ignore[arg-type]
            waiting.append(client)
        gevent.sleep(0.4)  # one pass of the watchdog (every 0.25 s)
        assert run.watchdog.stalled == 2 and run.unanswered() == 2
        run.remote_stalled = {"w1": 5}
        assert run.stalled_now() == 7
        run.remote_stalled = {}
        waiting[0].busy = waiting[2].busy = 0  # answered
        gevent.sleep(0.4)
        assert run.unanswered() == 1
        run.mark_stopping()  # from here on: the count recorded as the run began to stop
        waiting[1].busy = 0
        gevent.sleep(0.4)
        assert run.watchdog.stalled == 0 and run.unanswered() == 1
    finally:
        run.stop()


def test_a_workers_rotation_never_stays_in_a_second_the_clock_has_left() -> None:
    """A worker flushes every 0.1 s between its cuts at each second; a process starved past a boundary (here
    blocked 2.2 s) must cut at once, not file what comes next under a second long gone (once, three seconds
    of values went into one, and the master's window found no message)."""
    import gevent
    from gevent import monkey

    from harness.user.phases import LocalPhases
    from harness.user.recorder import WorkerRecorder
    from harness.user.run import Run

    starve = monkey.get_original("time", "sleep")  # holds the whole process: no greenlet runs
    run = Run(environment(Runner()), label="worker", recorder=WorkerRecorder(), phases=LocalPhases,
              runs_users=False, flush_period=0.1)  # fmt: skip
    try:
        gevent.sleep(0.15)
        before = run.recorder.second
        starve(2.2)
        gevent.sleep(0.05)  # the rotation wakes
        run.recorder.buffer("message").append(123)
        now = int(time.time())
        gevent.sleep(0.25)  # a flush within the second (or the next cut) takes it
        seconds = [t for t, row in run.recorder.outbox.items() if "message" in row]
        assert seconds and seconds[0] >= before + 2 and seconds[0] in (now, now + 1), (before, now, seconds)
    finally:
        run.stop()


class PluginRunner(Runner):
    """What the plugins use of Locust's runner besides the phases' part: custom messages, counts, reports."""

    def __init__(self, target_user_count: int = 0, workers: tuple[str, ...] = ()) -> None:
        super().__init__(workers=workers)
        self.target_user_count = target_user_count
        self.messages: dict[str, Any] = {}
        self.reports = 0

    def register_message(self, kind: str, handler: Any) -> None:
        self.messages[kind] = handler

    def _send_stats(self) -> None:
        self.reports += 1


def plugin_environment(runner: PluginRunner, hdr_file: str = "") -> Any:
    from locust.event import Events

    parsed = SimpleNamespace(hdr_file=hdr_file)
    return SimpleNamespace(runner=runner, parsed_options=parsed, events=Events(), host="", user_classes=[])


def bound_to(hook: Any, plugin: Any) -> list[str]:
    return [h.__name__ for h in hook._handlers if getattr(h, "__self__", None) is plugin]


def test_each_role_is_one_class_that_registers_only_its_own_listeners() -> None:
    from locust.runners import LocalRunner, MasterRunner, WorkerRunner

    from harness.user.phases import ESTABLISHED_MESSAGE, STOP_AT_MESSAGE
    from harness.user.plugin import LocalPlugin, MasterPlugin, WorkerPlugin, plugin_for

    made = {}
    for kind, cls in (("local", LocalRunner), ("master", MasterRunner), ("worker", WorkerRunner)):
        runner = PluginRunner()
        env = plugin_environment(runner)
        made[kind] = (plugin_for(env, cls.__new__(cls)), env, runner)  # a runner of the class, never started
    assert [type(plugin) for plugin, _, _ in made.values()] == [LocalPlugin, MasterPlugin, WorkerPlugin]
    assert type(plugin_for(plugin_environment(PluginRunner()), None)) is LocalPlugin
    common = ["on_test_start", "on_spawning_complete", "on_test_stopping", "on_test_stop"]
    for kind, (plugin, env, runner) in made.items():
        ev = env.events
        assert [n for hook in (ev.test_start, ev.spawning_complete, ev.test_stopping, ev.test_stop)
                for n in bound_to(hook, plugin)] == common, kind
        assert bound_to(ev.worker_report, plugin) == (["on_worker_report"] if kind == "master" else []), kind
        assert bound_to(ev.report_to_master, plugin) == (["on_report_to_master"] if kind == "worker" else []), kind
        expected = {"local": set(), "master": {ESTABLISHED_MESSAGE}, "worker": {STOP_AT_MESSAGE}}[kind]
        assert set(runner.messages) == expected, kind


def test_a_worker_report_reaches_the_master_and_its_file(tmp_path: Path) -> None:
    """A worker's recordings, CPU and established count go out with Locust's report; the master adds them."""
    import gevent

    from harness.results.histogram_file import load_histogram_file
    from harness.user.plugin import MasterPlugin, WorkerPlugin
    from harness.user.recorder import WorkerRecorder

    hdr = tmp_path / "hdr.json"
    master_env = plugin_environment(PluginRunner(target_user_count=4, workers=("w1",)), str(hdr))
    master = MasterPlugin(master_env)
    worker_env = plugin_environment(PluginRunner(target_user_count=2))
    worker = WorkerPlugin(worker_env)
    master_env.events.test_start.fire(environment=master_env)
    assert master_env.parsed_options.swarmbench_users == 4  # travels to the workers with each spawn message
    token = master_env.parsed_options.swarmbench_token  # and so does the run's token
    assert len(token) == 32 and token == master.token
    worker_env.parsed_options.swarmbench_users, worker_env.parsed_options.swarmbench_token = 4, token
    worker_env.events.test_start.fire(environment=worker_env)
    run = worker.current_run()
    assert isinstance(run.recorder, WorkerRecorder) and run.users == 4
    assert run.send_timer is not None and master.current_run().send_timer is None  # the master runs no users
    run.recorder.buffer("message").extend([100, 300])
    run.phases.user_established()
    data: dict[str, Any] = {}
    worker_env.events.report_to_master.fire(client_id="w1", data=data)
    sent = data["swarmbench"]
    assert sent["established"] == 1 and sent["final"] is False and sent["cpu"]["role"] == "worker"
    assert sent["token"] == token
    master_env.events.worker_report.fire(client_id="w2", data=data)  # not a worker of this master: dropped
    assert master.current_run().phases.total() == 0 and master.refused == {"w2"}
    master_env.events.worker_report.fire(client_id="w1", data=data)
    assert master.current_run().phases.total() == 1
    worker_env.events.test_stop.fire()
    # the final report is sent at once, from the listener itself: before Locust's stop handler tells the master
    # "client_stopped" (after which the master discards a worker's reports)
    assert worker.current_run().stopped and worker_env.runner.reports == 1
    final: dict[str, Any] = {}
    worker_env.events.report_to_master.fire(client_id="w1", data=final)
    assert final["swarmbench"]["final"] is True
    master_env.events.worker_report.fire(client_id="w1", data=final)
    master_env.events.test_stop.fire()  # every worker's final is in: no wait
    written = load_histogram_file(hdr)
    assert written.names["message"].count == 2
    assert written.users_established == 1 and written.users_not_established == 3
    assert written.workers_missing_final == ()
    assert {p["role"] for p in written.generator.processes} == {"master", "worker"}


def test_a_local_runner_starts_a_run_per_test_and_writes_its_file_at_the_stop(tmp_path: Path) -> None:
    from harness.results.histogram_file import load_histogram_file
    from harness.user.phases import LocalPhases
    from harness.user.plugin import LocalPlugin

    hdr = tmp_path / "hdr.json"
    env = plugin_environment(PluginRunner(target_user_count=2), str(hdr))
    plugin = LocalPlugin(env)
    env.events.test_start.fire(environment=env)
    first = plugin.current_run()
    assert isinstance(first.phases, LocalPhases) and first.users == 2 and first.send_timer is not None
    env.events.test_start.fire(environment=env)  # a new test (the web UI's restart): a new run
    assert first.stopped and plugin.current_run() is not first
    run = plugin.current_run()
    env.events.spawning_complete.fire(user_count=3)
    assert run.users == 3 and run.spawned_at is not None
    run.recorder.buffer("message").append(250)
    env.events.test_stopping.fire()
    assert run.stopping_at is not None
    env.events.test_stop.fire()
    assert run.stopped
    written = load_histogram_file(hdr)
    assert written.names["message"].count == 1 and written.options.users == 3
    assert written.users_not_established == 3 and written.generator.processes[0]["role"] == "local"
