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

from time import monotonic

from server.base import (
    HANDSHAKE_TIMEOUT,
    LOG,
    RESOURCE_ERRNOS,
    BaseServer,
    ServerOptions,
    Session,
    format_address,
    handshake_failed,
)
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
        server = self.server
        self.session = server.session_class(format_address(peer) if peer else "?", server.options.recv_size)
        server.transports.add(transport)

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


class IdleChatProtocol(ChatProtocol):
    """ChatProtocol with ``--idle-timeout``: one timer per connection, not one per message.

    Each read only stamps the time; when the timer fires it closes the
    connection if nothing came since, or re-arms for the time that is left.
    """

    __slots__ = ("last", "timer")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.last = monotonic()
        self.timer = asyncio.get_running_loop().call_later(self.server.idle_timeout, self._expire)

    def data_received(self, data: bytes) -> None:
        self.last = monotonic()
        count, close = self.session.feed(data)  # type: ignore[union-attr]
        if count:
            self.transport.write(REPLY if count == 1 else REPLY * count)  # type: ignore[union-attr]
        if close:
            self.transport.close()  # type: ignore[union-attr]

    def _expire(self) -> None:
        idle = self.server.idle_timeout
        left = self.last + idle - monotonic()
        if left > 0:
            self.timer = asyncio.get_running_loop().call_later(left, self._expire)
        elif not self.transport.is_closing():  # type: ignore[union-attr]
            self.session.idle(idle)  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()
        super().connection_lost(exc)


class TLSAccept(asyncio.Protocol):
    """Plain TCP until the TLS handshake is done; then the connection is a ChatProtocol's.

    ``loop.start_tls`` rather than ``create_server(ssl=...)``: asyncio drops a
    failed server-side handshake silently, and a server must say why a client
    could not connect (one line, no traceback). During the handshake this is
    also the TLS transport's protocol: what arrives before the switch is kept
    (one chunk, one message) and fed to the ChatProtocol in order.
    """

    def __init__(self, server: AsyncioServer) -> None:
        self.server = server
        self.pending: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's loop has not started reading yet: the ClientHello is start_tls's to read.
        transport.pause_reading()  # type: ignore[attr-defined]
        task = asyncio.get_running_loop().create_task(self._handshake(transport))
        self.server.handshakes[task] = transport
        task.add_done_callback(self.server.handshakes.pop)

    async def _handshake(self, transport: asyncio.BaseTransport) -> None:
        server = self.server
        peer = transport.get_extra_info("peername")
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport, self, server.options.tls, server_side=True,  # type: ignore[arg-type]
                ssl_handshake_timeout=min(HANDSHAKE_TIMEOUT, server.idle_timeout or HANDSHAKE_TIMEOUT),
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - SSLError, reset, timeout: one line each
            handshake_failed(format_address(peer) if peer else "?", exc)
            transport.abort()
            return
        if tls is None or self.lost:  # closed as the handshake ended
            return
        chat = server.protocol_class(server)
        tls.set_protocol(chat)
        chat.connection_made(tls)
        for chunk in self.pending:
            if tls.is_closing():
                break
            if chunk:
                chat.data_received(chunk)
            elif not chat.eof_received():
                tls.close()
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.pending.append(data)

    def eof_received(self) -> bool:
        self.pending.append(b"")
        return True  # the ChatProtocol decides, once it has the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class WatchedListener(socket.socket):
    """The listener asyncio's accept loop calls: the first accept that succeeds after running
    out of descriptors ends the episode (a connection made is no sign: it may have been
    accepted before)."""

    __slots__ = ("server",)

    def __init__(self, server: BaseServer, listener: socket.socket) -> None:
        super().__init__(fileno=listener.detach())
        self.server = server

    def accept(self) -> tuple[socket.socket, Any]:
        pair = super().accept()
        if self.server.starved:
            self.server.recovered()
        return pair


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
        #: TLS handshakes under way (task -> its plain transport), cancelled at shutdown.
        self.handshakes: dict[asyncio.Task, asyncio.BaseTransport] = {}
        self.idle_timeout = options.idle_timeout
        self.protocol_class: type[ChatProtocol] = IdleChatProtocol if options.idle_timeout else ChatProtocol
        #: Extra file descriptors whose readability (data or EOF) means "stop" (prefork's parent pipe).
        self.stop_fds: list[int] = []

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_loop_argument(parser)

    def serve(self) -> None:
        loop = new_event_loop(self.loop_name)
        loop.set_exception_handler(self._one_line_handler)
        try:
            loop.run_until_complete(self._serve(loop))
        finally:
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.listener is not None
        if self.loop_name == "asyncio":  # its accept loop calls our accept(): an episode's end is seen there
            self.listener = WatchedListener(self, self.listener)
        tls = self.options.tls
        if tls is not None and self.loop_name == "uvloop":
            # uvloop starts reading right after connection_made, so the ClientHello could reach
            # TLSAccept before start_tls: uvloop does its handshakes itself (failures go unlogged).
            protocol_class = self.protocol_class
            server = await loop.create_server(
                lambda: protocol_class(self), sock=self.listener, backlog=self.options.backlog, ssl=tls,
                ssl_handshake_timeout=min(HANDSHAKE_TIMEOUT, self.idle_timeout or HANDSHAKE_TIMEOUT),
            )  # fmt: skip
        else:
            factory = TLSAccept if tls is not None else self.protocol_class
            server = await loop.create_server(lambda: factory(self), sock=self.listener, backlog=self.options.backlog)
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
            for task, transport in list(self.handshakes.items()):
                task.cancel()
                transport.abort()
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

    def _one_line_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's default handler prints a traceback; a server under load logs one line.

        Out of descriptors, asyncio's accept loop reports every failed accept
        (one per backlog slot, then again each second): one line per episode.
        """
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            self.out_of_descriptors(exc)
            return
        detail = f": {exc.__class__.__name__}: {exc}" if exc is not None else ""
        LOG.log(logging.WARNING, "%s%s", context.get("message", "event loop error"), detail)
