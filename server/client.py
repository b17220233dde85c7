"""The tutorial's interactive client: type lines, each is answered with ``-``.

``python -m server.client --host 127.0.0.1 --port 8000``. Typing ``quit`` (or
closing standard input) sends ``--quit--`` and exits. Fixed from the tutorial:
an empty line no longer hangs waiting for a reply that never comes, and a
server that goes away is reported instead of ignored.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

from server.args import Parser, port_number, seconds
from server.protocol import DEFAULT_HOST, DEFAULT_PORT, MAX_MESSAGE, QUIT, ReplyCounter, encode_message


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m server.client", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help="server address (default %(default)s)")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT, help="server port (default %(default)s)")
    parser.add_argument("--timeout", type=seconds, default=10.0, help="seconds to wait for connect and for each reply (0.001-86400)")
    return parser


def converse(sock: socket.socket) -> int:
    """Read lines from stdin until ``quit`` or EOF; return the exit code."""
    print("Please enter 'quit' to exit")
    counter = ReplyCounter()
    while True:
        try:
            line = input(" -> ")
        except EOFError:
            line = "quit"
        if line == "quit":
            sock.sendall(QUIT)
            return 0
        if not line:
            continue  # sending b"" would wait forever for a reply
        try:
            data = encode_message(line)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            continue
        sock.sendall(data)
        reply = sock.recv(MAX_MESSAGE)
        if not reply:
            print("Connection closed by server", file=sys.stderr)
            return 1
        if counter.receive_data(reply) == 0:
            print(f"Unexpected reply from server: {reply!r}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
    except OSError:
        print("Connection Error")
        return 1
    with sock:
        try:
            return converse(sock)
        except TimeoutError:
            print("error: no reply from server", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"error: connection lost: {exc.strerror or exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            sock.sendall(QUIT)
            return 130


if __name__ == "__main__":
    sys.exit(main())
