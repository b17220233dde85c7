"""Command-line pieces shared by the server and the client: one-line usage errors."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn


def _whole(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{what}, got {value}")
    return value


def port_number(text: str) -> int:
    return _whole(text, 0, 65535, "port must be 0-65535 (0: any free port)")


def positive_int(text: str) -> int:
    return _whole(text, 1, 2**31 - 1, "must be at least 1")


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value:g}")
    return value


def positive_float(text: str) -> float:
    """Seconds that must be more than 0 (a timeout of 0 or less means nothing)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {value:g}")
    return value


class Parser(argparse.ArgumentParser):
    """Usage errors in one line (and exit 2), not argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
