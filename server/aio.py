"""asyncio with a Protocol (callbacks, no streams), on asyncio's loop or uvloop.

A ``Protocol`` costs one callback per read and a ``transport.write`` per reply;
the streams API adds a reader buffer, a future and a task switch per message,
which is what this variant avoids. It serves on the listener BaseServer opened
(the same backlog), so every variant binds and logs the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from typing import Any

from server.base import LOG, BaseServer, ServerOptions, Session, format_address
from server.protocol import REPLY

LOOPS = ("asyncio", "uvloop")


class ChatProtocol(asyncio.Protocol):
    """One connection: bytes in, ``-`` replies out, via the shared Session."""

    __slots__ = ("server", "transport", "session")

    def __init__(self, server: AsyncioServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        peer = transport.get_extra_info("peername")
        opts = self.server.options
        self.session = Session(format_address(peer) if peer else "?", opts.delay, opts.recv_size)
        self.server.transports.add(transport)

    def data_received(self, data: bytes) -> None:
        count, close = self.session.feed(data)  # type: ignore[union-attr]
        if count:
            self.transport.write(REPLY if count == 1 else REPLY * count)  # type: ignore[union-attr]
        if close:
            self.transport.close()  # type: ignore[union-attr]  # flushes what is written first

    def eof_received(self) -> bool:
        self.session.feed(b"")  # type: ignore[union-attr]
        return False  # the transport closes itself

    def pause_writing(self) -> None:
        """A client that sends without reading: stop reading it until it catches up."""
        self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.transport.resume_reading()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is None:
            return
        if exc is not None:
            self.session.reset(exc)
        self.session.closed()
        self.server.transports.discard(self.transport)  # type: ignore[arg-type]


def new_event_loop(name: str) -> asyncio.AbstractEventLoop:
    """A fresh loop of the kind ``--loop`` names (uvloop is imported only when asked for)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def check_loop(name: str) -> None:
    """Raise ValueError (a one-line error, exit 2) for an unknown or missing loop."""
    if name not in LOOPS:
        raise ValueError(f"--loop must be one of {', '.join(LOOPS)}, got {name!r}")
    if name == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise ValueError("--loop uvloop: uvloop is not installed (pip install uvloop)") from None


def add_loop_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loop", choices=LOOPS, default="asyncio",
        help="event loop implementation (default %(default)s; uvloop must be installed)",
    )  # fmt: skip


class AsyncioServer(BaseServer):
    """One event loop, one ChatProtocol per connection."""

    name = "asyncio"
    description = "asyncio with a Protocol (callbacks), on asyncio's loop or uvloop (--loop)"

    def __init__(self, options: ServerOptions, loop: str = "asyncio") -> None:
        check_loop(loop)
        super().__init__(options)
        self.loop_name = loop
        self.transports: set[asyncio.Transport] = set()
        #: Extra file descriptors whose readability (data or EOF) means "stop" (prefork's parent pipe).
        self.stop_fds: list[int] = []

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_loop_argument(parser)

    def serve(self) -> None:
        loop = new_event_loop(self.loop_name)
        loop.set_exception_handler(_one_line_handler)
        try:
            loop.run_until_complete(self._serve(loop))
        finally:
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.listener is not None
        server = await loop.create_server(
            lambda: ChatProtocol(self), sock=self.listener, backlog=self.options.backlog
        )
        stop = loop.create_future()

        def wake() -> None:
            if not stop.done():
                stop.set_result(None)

        watched: list[socket.socket | int] = [self.wake_socket, *self.stop_fds]
        for fd in watched:
            loop.add_reader(fd, wake)
        try:
            if not self.stopping:  # a signal before the loop ran has already written its byte
                await stop
        finally:
            for fd in watched:
                loop.remove_reader(fd)
            server.close()
            # Connections accepted just before the stop are still being set up (a task
            # each, on asyncio's loop): let them reach connection_made, then close them too.
            await asyncio.sleep(0)
            setting_up = asyncio.all_tasks() - {asyncio.current_task()}
            if setting_up:
                await asyncio.wait(setting_up, timeout=0.5)
            await self._close_clients()

    async def _close_clients(self) -> None:
        """Close every client (flushing its replies); abort what is still open after 0.5 s."""
        for transport in list(self.transports):
            transport.close()
        for _ in range(50):
            if not self.transports:
                return
            await asyncio.sleep(0.01)
        for transport in list(self.transports):
            transport.abort()
        await asyncio.sleep(0)


def _one_line_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's default handler prints a traceback; a server under load logs one line."""
    exc = context.get("exception")
    detail = f": {exc.__class__.__name__}: {exc}" if exc is not None else ""
    LOG.log(logging.WARNING, "%s%s", context.get("message", "event loop error"), detail)
