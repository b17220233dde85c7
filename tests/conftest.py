"""Shared fixtures: real servers on 127.0.0.1, on ports the OS picks, always stopped."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from _pytest.runner import runtestprotocol

from harness.server_process import RunningServer, start_server

ROOT = Path(__file__).resolve().parent.parent

# A shell that starts the suite in the background without job control (`cmd &` in a script) leaves
# SIGINT ignored, and every process a test starts would inherit that: the tests that send SIGINT
# would send it to processes that cannot hear it. With Python's own handler here, children start
# with the default disposition (a handler does not survive exec; an ignored signal does).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """``start(variant, **kwargs)`` -> a running server; every one is stopped at teardown."""
    started: list[RunningServer] = []

    def _start(variant: str = "threaded", **kwargs: object) -> RunningServer:
        kwargs.setdefault("log_path", tmp_path / f"{variant}-{len(started)}.log")
        server = start_server(variant, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield _start
    for server in started:
        if server.alive():
            server.stop(timeout=3.0)
        if server.alive():
            server.kill()


# -- tests that need gevent or Locust in their own process -------------------------------------------------
# Importing locust patches the whole process with gevent (monkey.patch_all). A test marked ``forked`` imports
# them inside its body and runs, with its fixtures, in a forked child, so the pytest process (and every other
# test in it) never sees the patching. pytest-forked does this too, but its reports no longer cross the fork
# under pytest 9; this one sends them as the JSON that pytest-xdist uses.


_PATCHERS = ("gevent", "locust")


def _patchers_loaded() -> list[str]:
    import sys

    return [name for name in _PATCHERS if name in sys.modules]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Collecting imports neither gevent nor Locust: every test then runs in the same unpatched process."""
    if loaded := _patchers_loaded():
        raise pytest.UsageError(f"collecting the tests imported {', '.join(loaded)} into the pytest process: "
                                "import them inside a test marked forked, or run Locust in a child process")


# -- tests that need the machine to themselves ----------------------------------------------------------------
# Under pytest-xdist every test holds a shared lock for its duration; a test marked ``alone`` (heavy load,
# thousands of sockets, figures a neighbour would disturb) takes it exclusively, so it starts once the tests
# running beside it have ended and nothing starts beside it until it ends. The turnstile keeps a stream of
# shared holders from starving it.


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: a run with -p no:xdist does not know it
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: three workers per two cores. Most tests wait on timers (a window, a time-out, a slow
    server), not on a core: with one worker per core a third of the run's CPU time went unused. The tests
    that need the machine say so (``alone``)."""
    return max(1, len(os.sched_getaffinity(0)) * 3 // 2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``alone`` tests last: at the start the other workers are still collecting the suite (seconds of
    CPU each), so an alone test that ran first was not alone (a capacity trial saw the machine 0.5% idle)."""
    items.sort(key=lambda item: item.get_closest_marker("alone") is not None)  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _machine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if not hasattr(request.config, "workerinput"):  # one process: every test is alone already
        yield
        return
    folder = tmp_path_factory.getbasetemp().parent  # shared by the run's workers
    alone = request.node.get_closest_marker("alone") is not None
    with open(folder / "machine.lock", "a") as lock, open(folder / "turnstile.lock", "a") as turnstile:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield


@pytest.fixture(autouse=True)
def _stays_unpatched(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that is not forked must leave the pytest process as it found it."""
    yield
    if request.node.get_closest_marker("forked") is None and (loaded := _patchers_loaded()):
        pytest.fail(f"this test imported {', '.join(loaded)} into the pytest process: mark it forked")


def pytest_configure(config: pytest.Config) -> None:
    for name in ("forked", "pytest_forked"):  # the plugin, if installed, would take the marker
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            config.pluginmanager.unregister(plugin)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if item.get_closest_marker("forked") is None:
        return None
    hook = item.ihook
    hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reports = _run_in_child(item)
    # the parent's own stack: the module an earlier test set up here ends if this was its last test
    # (else the next module's first test finds it still set up: "previous item was not torn down properly")
    done = pytest.CallInfo.from_call(lambda: item.session._setupstate.teardown_exact(nextitem), "teardown")
    if done.excinfo is not None:
        reports.append(hook.pytest_runtest_makereport(item=item, call=done))
    for report in reports:
        hook.pytest_runtest_logreport(report=report)
    hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def _run_in_child(item: pytest.Item) -> list[pytest.TestReport]:
    config = item.config
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: set up, run and tear down the test's own fixtures, send the reports, leave
        os.close(read_fd)
        code = 0
        try:
            # the parent node as "next": the test's own fixtures are torn down here, its module's stay
            reports = runtestprotocol(item, log=False, nextitem=item.parent)  # type: ignore[arg-type]
            data = [config.hook.pytest_report_to_serializable(config=config, report=r) for r in reports]
            with os.fdopen(write_fd, "w") as out:
                json.dump(data, out)
        except BaseException:  # noqa: BLE001 - nothing may escape a forked child into pytest's own loop
            code = 3
        os._exit(code)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as pipe:
            text = pipe.read()
        _, status = os.waitpid(pid, 0)
    except BaseException:  # pytest-timeout's alarm or Ctrl-C in the parent: the child goes too
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    if text:
        return [config.hook.pytest_report_from_serializable(config=config, data=d) for d in json.loads(text)]
    crashed: Any = pytest.TestReport(
        item.nodeid, item.location, {}, "failed", f"the forked child ended without a report ({_status(status)})",
        "call", [],
    )  # fmt: skip
    return [crashed]


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"


# -- loopback only ----------------------------------------------------------------------------------------
# Every listener a test starts (servers, Locust masters, web UIs) binds loopback. The whole run is watched:
# a TCP listener on any other address that was not there when the run began fails the run at its end.

_LOOPBACK_HEX = ("7F",)  # /proc/net/tcp: an IPv4 address as little-endian hex, so 127.x.y.z ends in 7F
_LOOPBACK6_HEX = ("00000000000000000000000001000000",)  # ::1 (and ::ffff:127.x.y.z, below)


def outside_listeners(table: str) -> set[str]:
    """The listeners in the text of /proc/net/tcp or /proc/net/tcp6 that are not on loopback, as HEXADDR:PORT."""
    found = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A":  # LISTEN
            continue
        address, _, port = fields[1].partition(":")
        if len(address) == 8:
            loopback = address.endswith(_LOOPBACK_HEX)
        else:
            loopback = address in _LOOPBACK6_HEX or (address[:24] == "0000000000000000FFFF0000" and address.endswith("7F"))
        if not loopback:
            found.add(f"{address}:{int(port, 16)}")
    return found


def _outside_listeners() -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            found |= outside_listeners(Path(table).read_text())
        except OSError:
            continue
    return found


class _ListenerWatch:
    def __init__(self) -> None:
        self.before = _outside_listeners()
        self.seen: set[str] = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="listener-watch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.2):
            self.seen |= _outside_listeners() - self.before

    def stop(self) -> set[str]:
        self.done.set()
        self.thread.join()
        return self.seen | (_outside_listeners() - self.before)


_WATCH = pytest.StashKey[_ListenerWatch]()


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller watches for every worker
        session.config.stash[_WATCH] = _ListenerWatch()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    watch = session.config.stash.get(_WATCH, None)
    if watch is None:
        return
    if outside := watch.stop():
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"a test listened beyond loopback: {', '.join(sorted(outside))}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

