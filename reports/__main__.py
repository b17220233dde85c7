"""``python -m reports DIR [DIR_B]``: a report of one results folder, or the comparison of two."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from harness.results import ResultError


class Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit 2, like every Swarmbench entry point."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0 <= value < 1):
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1) (0.10 = 10%): {text!r}")
    return value


def parser() -> Parser:
    p = Parser(prog="python -m reports", description="Build the HTML report of a Swarmbench results folder, "
               "or compare two folders (A = reference, B = change).")
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="results folder; a second one compares")
    p.add_argument("--slo-ms", type=positive, default=10.0, help="message p99 target for the findings (ms)")
    p.add_argument("--threshold", type=fraction, default=0.10, help="compare: worse by this much is a "
                   "regression (default 0.10)")
    p.add_argument("--out", type=Path, default=None, help="report file (*.html) or folder; default: inside DIR "
                   "(compare: inside DIR_B)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help (0): a return code, not an exception
        return exc.code if isinstance(exc.code, int) else 2
    if len(args.dirs) > 2:
        print("python -m reports: error: give one results folder, or two to compare", file=sys.stderr)
        return 2
    try:
        if len(args.dirs) == 1:
            from reports.build import build_report

            path = build_report(args.dirs[0], args.out, slo_ms=args.slo_ms)
        else:
            from reports.compare import compare_runs, render_comparison_text
            from reports.compare_report import build_comparison_report

            comp = compare_runs(args.dirs[0], args.dirs[1], threshold=args.threshold)
            print(render_comparison_text(comp), end="")
            path = build_comparison_report(comp, args.out if args.out is not None else args.dirs[1])
    except (ResultError, ValueError) as exc:
        print(f"python -m reports: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"python -m reports: error: cannot write the report: {exc.strerror or exc}"
              + (f": {exc.filename}" if exc.filename else ""), file=sys.stderr)
        return 2
    print(f"Report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
