"""Typed readers for the fields of a result file: a wrong type or range is one line naming the field.

A result file may come from anywhere (a colleague's run, a CI artifact, a
hostile user): every value is checked for its type and range as it is read,
and a name that may become part of a file name is checked against
:data:`SAFE_NAME`, so no file can make a report write outside its folder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from harness.results.format import ResultError

#: A variant, a run id, a file name beside the cell: no '/', no '..', no leading dot or dash.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Larger integers than any counter can hold are malformed (and slow to print).
MAX_INT = 2**63
MAX_TEXT = 100_000
#: One command-line argument (a manifest's ``argv``, a cell's ``commands``): the longest Linux passes
#: (MAX_ARG_STRLEN, 128 KiB with 4 KiB pages, less its NUL), in bytes, so in characters too. The sweep
#: refuses a longer one before any cell (harness.arguments.arguments_fit): every argument it records loads.
MAX_ARGUMENT = 131_071
MISSING: Any = object()


def fail(name: str, why: str) -> NoReturn:
    raise ResultError(f"field {name!r}: {why}")


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text[:40]


def obj(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        fail(name, f"expected an object, got {_show(value)}")
    return value


def get(data: Mapping[str, Any], key: str, name: str, default: Any = MISSING) -> Any:
    if key in data:
        return data[key]
    if default is MISSING:
        fail(f"{name}.{key}" if name else key, "missing")
    return default


def number(value: Any, name: str, *, low: float = -math.inf, optional: bool = False) -> float:
    """A finite number (an int is one) at or above ``low``."""
    if value is None and optional:
        return None  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(name, f"expected a number, got {_show(value)}")
    if isinstance(value, int) and abs(value) >= MAX_INT:
        fail(name, "number out of range")
    if not math.isfinite(value) or value < low:
        fail(name, f"expected a finite number{f' of at least {low:g}' if low > -math.inf else ''}, got {_show(value)}")
    return value


def optional_number(value: Any, name: str, *, low: float = -math.inf) -> float | None:
    return None if value is None else number(value, name, low=low)


def integer(value: Any, name: str, *, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < MAX_INT:
        fail(name, f"expected a whole number of at least {low}, got {_show(value)}")
    return value


def optional_integer(value: Any, name: str, *, low: int = -MAX_INT) -> int | None:
    return None if value is None else integer(value, name, low=low)


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        fail(name, f"expected true or false, got {_show(value)}")
    return value


def text(value: Any, name: str, *, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        fail(name, f"expected a string, got {_show(value)}")
    if len(value) > limit:
        fail(name, f"a string of {len(value):,} characters, longer than {limit:,}")
    return value


def optional_text(value: Any, name: str) -> str | None:
    return None if value is None else text(value, name)


def safe_name(value: Any, name: str, *, empty: bool = False) -> str:
    """A name that may become part of a file name."""
    value = text(value, name)
    if not (empty and value == "") and not SAFE_NAME.fullmatch(value):
        fail(name, f"not a safe name (letters, digits, '.', '_', '-'; no '/' or '..'): {value[:40]!r}")
    if ".." in value:
        fail(name, f"not a safe name ('..'): {value[:40]!r}")
    return value


def relative_path(value: Any, name: str) -> str:
    """A file beside the cell (``raw/cell-...json``): safe names joined by '/'."""
    value = text(value, name)
    parts = value.split("/")
    for part in parts:
        safe_name(part, name)
    return value


def texts(value: Any, name: str, *, limit: int = MAX_TEXT) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        fail(name, f"expected a list, got {_show(value)}")
    return tuple(text(v, f"{name}[{i}]", limit=limit) for i, v in enumerate(value))


def arguments(value: Any, name: str) -> tuple[str, ...]:
    """A command line: a list of arguments, each up to :data:`MAX_ARGUMENT` characters."""
    return texts(value, name, limit=MAX_ARGUMENT)


def counts(value: Any, name: str, *, low: int = 0) -> dict[str, int]:
    """An object of whole numbers (``{"ConnectionResetError": 3}``)."""
    return {text(k, name): integer(v, f"{name}.{k}", low=low) for k, v in obj(value, name).items()}


def failures(value: Any, name: str) -> dict[str, dict[str, int]]:
    """Per request name, per failure class, a count."""
    return {text(k, name): counts(v, f"{name}.{k}") for k, v in obj(value, name).items()}


def choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        fail(name, f"expected one of {', '.join(allowed)}, got {_show(value)}")
    return value
