"""Command-line pieces shared by the server and the client: one-line usage errors.

Every number is checked here, at parsing, against the range the code behind it
can take: a value out of range is one line and exit 2, never a traceback (or a
server that starts and then fails every client).
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
from collections.abc import Callable
from typing import NoReturn

#: What listen() and a C int take.
MAX_INT = 2**31 - 1
#: The longest timeout: a day. Every variant can wait that long; past ~8.6e6 s selectors' poll
#: overflows (it waits a quarter of --idle-timeout, in int milliseconds), past ~9.2e9 s a socket's.
MAX_SECONDS = 86400.0
#: The shortest: poll() and epoll time in whole milliseconds; less would only make a loop spin.
MIN_SECONDS = 0.001
#: A last label the C library reads as a number (decimal, octal or hex): the text is an IPv4 address attempt.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


def _cut(text: str) -> str:
    """The user's text in an error line, cut: a 5,000-digit typo must not fill the terminal."""
    return text if len(text) <= 40 else text[:40] + "..."


def _whole(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {_cut(text)!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{what}, got {_cut(str(value))}")
    return value


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        return _whole(text, low, high, f"must be {low}-{high}")

    parse.__name__ = f"whole number {low}-{high}"
    return parse


def port_number(text: str) -> int:
    return _whole(text, 0, 65535, "port must be 0-65535 (0: any free port)")


def positive_int(text: str) -> int:
    return _whole(text, 1, MAX_INT, f"must be 1-{MAX_INT}")


def bind_host(text: str) -> str:
    """An address or name to bind; a numeric one must be a whole IPv4 address (``a.b.c.d``) or IPv6.

    The C library reads the legacy forms as another address: ``127.1`` as 127.0.0.1, ``1.2.3`` as
    1.2.0.3, ``0x7f.1`` in hex. The server would listen somewhere the user did not write.
    """
    if ":" in text or not _NUMERIC_LABEL.fullmatch(text.rstrip(".").rpartition(".")[2]):
        return text  # a name, or IPv6 (which has no legacy forms)
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_cut(text)!r} is no IPv4 address (four parts a.b.c.d, each 0-255, "
                                         "no leading zeros)") from None
    return text


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {_cut(text)!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {_cut(text)!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value:g}")
    return value


def seconds(text: str) -> float:
    """A timeout, MIN_SECONDS to MAX_SECONDS (0 or less means nothing; a huge one overflows)."""
    value = _finite(text)
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be {MIN_SECONDS:g}-{MAX_SECONDS:g} seconds (a day), got {value:g}")
    return value


class Parser(argparse.ArgumentParser):
    """Usage errors in one line (and exit 2), not argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
