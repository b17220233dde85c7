"""The sweep's argument types and checks: everything is refused before any work starts.

Each check raises a one-line :class:`UsageError` (or argparse's
``ArgumentTypeError`` inside a type), so ``swarmbench`` exits 2 with one line and
never runs a cell on arguments it would have to abandon later.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import psutil

from harness.checks import Check, CheckError, parse_check
from harness.profiles import PROFILES, max_reply_bytes
from harness.results.fields import MAX_ARGUMENT
from server.tls import make_tls_context
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
    """Refuse extra Locust arguments that would fight the sweep's own, in any spelling, or that the scenario would refuse."""
    for index, arg in enumerate(extra):
        if _OwnedOptions((("--max-reply-bytes",),)).owned(arg):  # checked now, not in the first cell
            value = arg.partition("=")[2] if "=" in arg else (extra[index + 1] if index + 1 < len(extra) else "")
            try:
                max_reply_bytes(value)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
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


# -- files, TLS and texts the children get -------------------------------------------------


def file_problem(path: Path) -> str | None:
    """What keeps ``path`` from being read as a file, in words, or None.

    Checked before anything opens it: a directory or /dev/null is not "no such file",
    and a FIFO would block its reader (a server given one as a certificate never starts).
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return exc.strerror or str(exc)
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe): reading it waits for a writer"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    for test, kind in kinds:
        if test(mode):
            return f"{kind}, not a regular file"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    if path.stat().st_size == 0:
        return "an empty file"
    return None


class _ServerTlsOptions(_OwnedOptions):
    """The server's --tls-cert and --tls-key among --server-arg values, in the spellings its parser takes."""

    def __init__(self) -> None:
        super().__init__(())
        self.add_argument("--tls-cert", type=Path, default=None)
        self.add_argument("--tls-key", type=Path, default=None)


def started_tls_ok(server_args: Sequence[str], tls: bool) -> None:
    """Started variants serve TLS only with a certificate (``--server-arg``): check it before any server starts.

    ``--tls`` without one would load plain servers with TLS clients; a certificate without
    ``--tls``, TLS servers with plain clients. Both fail every cell, so both are refused here.
    """
    try:
        given, _ = _ServerTlsOptions().parse_known_args(list(server_args))
    except _Refused as exc:
        raise UsageError(f"--server-arg: {exc}") from None
    cert, key = given.tls_cert, given.tls_key
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path is not None and (problem := file_problem(path)):
            raise UsageError(f"--server-arg {option} {path}: {problem}")
    if tls and cert is None and key is None:
        raise UsageError("--tls: the started variants serve TLS only with a certificate: add "
                         "--server-arg=--tls-cert=FILE --server-arg=--tls-key=FILE, and --tls-ca FILE to verify it")
    if not tls and (cert is not None or key is not None):
        raise UsageError("--server-arg --tls-cert/--tls-key: the started variants will serve TLS; add --tls "
                         "(with --tls-ca FILE or --tls-insecure)")
    try:
        make_tls_context(None if cert is None else str(cert), None if key is None else str(key))
    except ValueError as exc:
        raise UsageError(f"--server-arg {exc}") from None


def quit_message_ok(protocol: str, quit_message: str | None) -> None:
    """``--quit-message`` is the line profile's, and one line: checked before any cell, as --message is."""
    if not quit_message:
        return  # empty: just close, whatever the profile
    if protocol != "line":
        raise UsageError(f"--quit-message is the line profile's (--protocol line); {protocol} ends a session its own way")
    try:
        PROFILES[protocol]().encode(quit_message)
    except ValueError as exc:
        reason = re.sub(r"^--message:?\s*", "", str(exc))
        raise UsageError(f"--quit-message: {reason}; got {quit_message[:60]!r}") from None


def arguments_fit(*groups: Sequence[str]) -> None:
    """Every argument the sweep passes on or records fits in one command-line argument (MAX_ARGUMENT bytes).

    Longer, Locust could not be started with it (E2BIG) and the results could not be read
    back (harness.results.fields); so it is refused before any cell.
    """
    for args in groups:
        for arg in args:
            size = len(os.fsencode(arg))
            if size > MAX_ARGUMENT:
                name = arg.split("=", 1)[0] if arg.startswith("-") else f"an argument starting {arg[:20]!r}"
                raise UsageError(f"{name}: {size:,} bytes in one argument; at most {MAX_ARGUMENT:,} "
                                 "(Linux's limit on one command-line argument; Locust gets it as one)")
