"""A test-only server: every variant, slowed on purpose by ``--delay-ms N`` before each reply.

``python tests/slow_server.py VARIANT --delay-ms N --port 0 ...`` takes every
option ``python -m server`` takes, plus ``--delay-ms``. The slowness lives
here, not in the servers: production code has no sleep on its per-message path.
Start it from a test with ``start(VARIANT, entry=(str(SLOW_SERVER),), extra_args=["--delay-ms", "20"])``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __name__ == "__main__":  # run as a script: the project root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.__main__ import main as server_main  # noqa: E402
from server.args import Parser, non_negative_float  # noqa: E402
from server.base import BaseServer, Session  # noqa: E402
from server.variants import VARIANTS  # noqa: E402

PROG = "python tests/slow_server.py"


class SlowSession(Session):
    """A Session that sleeps ``delay`` seconds after each read it answers (blocking its thread or loop)."""

    __slots__ = ()
    delay = 0.0

    def feed(self, data: bytes) -> tuple[int, bool]:
        result = super().feed(data)
        if self.delay:
            time.sleep(self.delay)
        return result


def slow_variants() -> dict[str, type[BaseServer]]:
    """Every variant, each with SlowSession as its session class."""
    return {name: type(f"Slow{cls.__name__}", (cls,), {"session_class": SlowSession}) for name, cls in VARIANTS.items()}


def main(argv: Sequence[str] | None = None) -> int:
    pre = Parser(prog=PROG, add_help=False)
    pre.add_argument("--delay-ms", type=non_negative_float, default=0.0)
    known, rest = pre.parse_known_args(argv)
    SlowSession.delay = known.delay_ms / 1000.0
    return server_main(rest, slow_variants(), prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
