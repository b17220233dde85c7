"""``python -m server VARIANT``: run one server variant.

Lifecycle lines (created, listening, the address bound, stopped) are always
printed; ``--log-level`` sets the per-connection and per-message lines, which
cost the tutorial's design about 40% of its throughput when printed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Mapping, Sequence

from server.args import Parser, bind_host, port_number, positive_int, seconds
from server.base import CONN_LOG, LOG, BaseServer, BindError, ServerOptions
from server.tls import make_tls_context
from server.protocol import DEFAULT_BACKLOG, DEFAULT_HOST, DEFAULT_PORT
from server.variants import VARIANTS

COMMON = frozenset({"variant", "host", "port", "backlog", "log_level", "idle_timeout", "tls_cert", "tls_key"})
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def build_parser(variants: Mapping[str, type[BaseServer]] = VARIANTS, prog: str = "python -m server") -> argparse.ArgumentParser:
    parser = Parser(
        prog=prog,
        description="Run one of Swarmbench's chat servers (the tutorial's protocol).",
    )
    sub = parser.add_subparsers(dest="variant", metavar="VARIANT", required=True)
    for name in sorted(variants):
        cls = variants[name]
        p = sub.add_parser(name, help=cls.description, description=cls.__doc__)
        p.add_argument("--host", type=bind_host, default=DEFAULT_HOST, help="address to bind (default %(default)s)")
        p.add_argument("--port", type=port_number, default=DEFAULT_PORT, help="0 binds a free port (default %(default)s)")
        p.add_argument("--backlog", type=positive_int, default=DEFAULT_BACKLOG, help="listen() backlog (default %(default)s, the tutorial's)")
        p.add_argument("--log-level", default="INFO", type=str.upper, choices=LEVELS, help="per-connection and per-message lines (default %(default)s; WARNING silences them)")
        p.add_argument("--idle-timeout", type=seconds, default=None, metavar="SECONDS", help="close a connection that sends nothing for this long, 0.001-86400 (default: never, as the tutorial)")
        p.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate chain (PEM; with --tls-key)")
        p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM, unencrypted)")
        cls.add_arguments(p)
    return parser


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    CONN_LOG.setLevel(level)


def make_server(args: argparse.Namespace, variants: Mapping[str, type[BaseServer]] = VARIANTS) -> BaseServer:
    """The server the arguments name; ValueError is a one-line usage error."""
    options = ServerOptions(
        host=args.host, port=args.port, backlog=args.backlog, idle_timeout=args.idle_timeout,
        tls=make_tls_context(args.tls_cert, args.tls_key),
    )  # fmt: skip
    extra = {k: v for k, v in vars(args).items() if k not in COMMON}
    return variants[args.variant](options, **extra)


def main(
    argv: Sequence[str] | None = None,
    variants: Mapping[str, type[BaseServer]] = VARIANTS,
    prog: str = "python -m server",
) -> int:
    """Run the variant ``argv`` names until a signal; ``variants``/``prog``: a test server reuses this."""
    args = build_parser(variants, prog).parse_args(argv)
    configure_logging(args.log_level)
    try:
        server = make_server(args, variants)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def stop(signum: int, frame: object) -> None:
        server.shutdown()

    # Before open(): once "Serving on" is printed, a signal must already mean "stop cleanly".
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        server.open()
    except BindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
