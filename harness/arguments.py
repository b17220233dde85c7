"""The sweep's argument types and checks: everything is refused before any work starts.

Each check raises a one-line :class:`UsageError` (or argparse's
``ArgumentTypeError`` inside a type), so ``swarmbench`` exits 2 with one line and
never runs a cell on arguments it would have to abandon later.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import psutil

from harness.checks import Check, CheckError, parse_check
from server.variants import VARIANTS

#: A name that may become part of a file name: a variant, a run id, a results folder.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class UsageError(Exception):
    """Bad arguments: one line, exit 2."""


def duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 20s, 1m, 500ms)")
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


def user_counts(text: str) -> tuple[int, ...]:
    """Concurrency levels, each once, in the order given."""
    try:
        counts = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of user counts: {text!r} (e.g. 1,10,100)") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"user counts must be whole numbers of at least 1: {text!r}")
    return tuple(dict.fromkeys(counts))


def variant_names(text: str) -> tuple[str, ...]:
    """Variants, each once, in the order given."""
    names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown variant {', '.join(unknown) or text!r}: choose from {', '.join(sorted(VARIANTS))}")
    return names


def number_in(low: float, high: float, *, low_open: bool, what: str) -> Callable[[str], float]:
    """An argparse type: a finite number in the range (``low_open``: ``low`` itself refused; ``high`` never)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (math.isfinite(value) and (low < value if low_open else low <= value) and value < high):
            raise argparse.ArgumentTypeError(f"must be {what}: {text!r}")
        return value

    return parse


positive_number = number_in(0.0, math.inf, low_open=True, what="a finite number above 0")
fraction = number_in(0.0, 1.0, low_open=False, what="a fraction in [0, 1) (0.10 = 10%)")


def check_expr(text: str) -> Check:
    try:
        return parse_check(text)
    except CheckError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- options the sweep owns ---------------------------------------------------------------


class _Refused(Exception):
    pass


class _OwnedOptions(argparse.ArgumentParser):
    """A parser of only the options someone else owns; its errors (an ambiguous prefix) are refusals."""

    def __init__(self, options: Sequence[tuple[str, ...]]) -> None:
        # allow_abbrev: Locust's and the server's parsers expand prefixes (`--use 5` is --users), so must this one.
        super().__init__(add_help=False, allow_abbrev=True, prog="")
        for spellings in options:
            self.add_argument(*spellings, nargs="?", const=True, default=None)

    def error(self, message: str) -> NoReturn:
        raise _Refused(message)

    def owned(self, arg: str) -> str | None:
        """The owned option ``arg`` names (one argv element, e.g. ``-u5``, ``--users=5``, ``--use``), or None."""
        if not arg.startswith("-") or arg == "-" or arg == "--":
            return None
        try:
            given, _ = self.parse_known_args([arg])
        except _Refused:
            return arg.split("=", 1)[0]  # an ambiguous prefix of owned options
        names = ["--" + name.replace("_", "-") for name, value in vars(given).items() if value is not None]
        return names[0] if names else None


#: What `swarmbench sweep` sets on Locust's command line itself (harness.locust_run.LocustJob.argv).
LOCUST_OWNED: tuple[tuple[str, ...], ...] = (
    ("-f", "--locustfile"), ("-H", "--host"), ("-u", "--users"), ("-r", "--spawn-rate"), ("-t", "--run-time"),
    ("--headless",), ("--autostart",), ("--config",), ("--hdr-file",), ("--json-file",), ("--json",),
    ("--processes",), ("--master",), ("--master-bind-host",), ("--master-bind-port",), ("--master-host",),
    ("--master-port",), ("--worker",), ("--expect-workers",), ("--expect-workers-max-wait",), ("--rate",),
    ("--swarmbench-last-cell",), ("--establish-timeout",), ("--swarmbench-settle",), ("--swarmbench-window",),
)  # fmt: skip
#: Locust options swarmbench takes itself (checked, probed, forwarded): never through --locust-arg.
FORWARDED: tuple[tuple[str, ...], ...] = (
    ("--protocol",), ("--message",), ("--quit-message",), ("--tls",), ("--tls-ca",), ("--tls-insecure",),
)  # fmt: skip
#: What `swarmbench sweep` sets on every server it starts (harness.server_process).
SERVER_OWNED: tuple[tuple[str, ...], ...] = (("--host",), ("--port",), ("--backlog",))


def locust_args_ok(extra: Sequence[str]) -> None:
    """Refuse extra Locust arguments that would fight the sweep's own, in any spelling."""
    for arg in extra:
        if _OwnedOptions(LOCUST_OWNED).owned(arg):
            raise UsageError(f"--locust-arg {arg}: the sweep sets this itself (use the sweep's own option)")
        if name := _OwnedOptions(FORWARDED).owned(arg):
            raise UsageError(f"--locust-arg {arg}: give swarmbench's own {name}, which is checked before any cell")


def server_args_ok(extra: Sequence[str]) -> None:
    """Refuse server arguments that would move the server away from where the sweep looks for it."""
    for arg in extra:
        if _OwnedOptions(SERVER_OWNED).owned(arg):
            raise UsageError(f"--server-arg {arg}: the sweep sets the server's host, port and backlog itself (--backlog is the sweep's option)")


def master_bind(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--master-bind {text!r}: expected HOST:PORT, e.g. 127.0.0.1:5557")
    return host.strip("[]"), int(port)


def live_pid(pid: int) -> int:
    """A mistyped PID is refused now, not taken for a server that died."""
    if pid <= 0 or not psutil.pid_exists(pid):
        raise UsageError(f"--pid {pid}: no such process on this machine (server sampling is local)")
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            raise UsageError(f"--pid {pid}: the process has exited (a zombie)")
    except psutil.Error:
        raise UsageError(f"--pid {pid}: no such process") from None
    return pid


def out_name_ok(out: Path) -> None:
    if not SAFE_NAME.fullmatch(out.name):
        raise UsageError(f"--out {out}: its name must be letters, digits, '.', '_' or '-' (at most 64), as a run id is")
    if out.exists():
        what = "a file" if not out.is_dir() else "a folder" + (" that is not empty" if any(out.iterdir()) else "")
        raise UsageError(f"--out {out} exists already ({what}): results are never overwritten; choose a new --out")


def make_out_dir(out: Path | None, default_parent: Path) -> Path:
    """Create the results folder atomically: ``--out`` must be new; a default name never collides.

    ``mkdir`` without ``exist_ok`` is the check: two sweeps started in the same
    second get ``STAMP`` and ``STAMP-2``, never one folder.
    """
    if out is not None:
        try:
            out.mkdir(parents=True)
        except FileExistsError:
            raise UsageError(f"--out {out} exists already: results are never overwritten; choose a new --out") from None
        return out
    default_parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        candidate = default_parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise UsageError(f"no free results folder name under {default_parent} for {stamp}; give --out")
