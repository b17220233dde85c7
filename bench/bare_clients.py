"""The bare clients the generator bench compares Locust with: a gevent loop and an asyncio/uvloop loop.

Each runs in a child process (``bench_generator.py --client KIND``) against loopback only, for at
most its ``limit`` seconds; SIGTERM ends it. They send chat.py's default message, as Locust does.
"""

from __future__ import annotations

import importlib.util
import math
import signal
import time
from pathlib import Path
from typing import Any

from server.protocol import MAX_MESSAGE, QUIT, REPLY

#: chat.py's default message (harness.user.options: --message-size 12 of "Hello, world! ..."): same bytes.
PAYLOAD = b"Hello, world"


def _to_next_second() -> float:
    """Seconds to sleep until just after the next wall-clock second starts (as Locust's per-second rotator)."""
    now = time.time()
    return math.floor(now) + 1.0005 - now


def gevent_client(host: str, port: int, conns: int, per_session: int, limit: float,
                  raw: bool = False) -> dict[str, object]:
    """gevent's ``send``/``recv``; ``raw``: the harness's message path instead (harness.user.raw_socket:
    the OS socket's send, gevent's wait for readable, one recv): the floor of the same primitives."""
    import gevent
    from gevent import socket as gsocket

    stop = [False]
    counts, ticks = [0] * conns, {}
    gevent.signal_handler(signal.SIGTERM, lambda: stop.__setitem__(0, True))
    gevent.spawn_later(limit, lambda: stop.__setitem__(0, True))

    def connect() -> gsocket.socket:
        s = gsocket.create_connection((host, port))
        s.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        return s

    def quit_(s: gsocket.socket) -> None:
        s.sendall(QUIT)
        while s.recv(MAX_MESSAGE):
            pass
        s.close()

    def loop(i: int) -> None:
        s, size, left = connect(), len(PAYLOAD), per_session
        while not stop[0]:
            if s.send(PAYLOAD) != size:
                raise RuntimeError("short send")
            if s.recv(MAX_MESSAGE) != REPLY:
                raise RuntimeError("a reply other than '-'")
            counts[i] += 1
            left -= 1
            if not left:
                quit_(s)
                s, left = connect(), per_session
        quit_(s)

    def raw_loop(i: int) -> None:
        raw_socket = _raw_socket_function()
        s, size, left = connect(), len(PAYLOAD), per_session
        r = raw_socket(s)
        assert r is not None, "gevent's socket internals are missing"
        send, recv, wait, readable = r  # bound once per connection, as the harness does
        while not stop[0]:
            if send(PAYLOAD) != size:
                raise RuntimeError("short send")
            wait(readable)
            try:
                reply = recv(MAX_MESSAGE)
            except BlockingIOError:  # woken, yet nothing to read: as the harness, gevent's recv waits
                reply = s.recv(MAX_MESSAGE)
            if reply != REPLY:
                raise RuntimeError("a reply other than '-'")
            counts[i] += 1
            left -= 1
            if not left:
                quit_(s)
                s, left = connect(), per_session
                r = raw_socket(s)
                assert r is not None
                send, recv, wait, readable = r
        quit_(s)

    def ticker() -> None:
        ticks[round(time.time(), 4)] = sum(counts)  # where the count starts: a window's first second lies after it
        while not stop[0]:
            gevent.sleep(_to_next_second())
            ticks[round(time.time(), 4)] = sum(counts)  # messages so far, and when (just after each second starts)

    tick = gevent.spawn(ticker)
    loops = [gevent.spawn(raw_loop if raw else loop, i) for i in range(conns)]
    gevent.joinall(loops, raise_error=True)
    tick.kill()
    return {"ticks": ticks, "flavour": "gev-raw" if raw else "gevent"}


def asyncio_client(host: str, port: int, conns: int, per_session: int, limit: float) -> dict[str, object]:
    """Protocols (callbacks), asyncio's fastest API: the loop's sock_recv/sock_sendall cost about 3x more per message."""
    import asyncio
    import socket

    try:
        import uvloop

        loop, flavour = uvloop.new_event_loop(), "uvloop"
    except ImportError:
        loop, flavour = asyncio.new_event_loop(), "asyncio"
    stop = [False]
    counts, ticks = [0] * conns, {}
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.__setitem__(0, True))
    loop.call_later(limit, lambda: stop.__setitem__(0, True))

    class Chat(asyncio.Protocol):
        """Send, wait for one '-', send again; --quit-- after ``per_session`` or at the stop."""

        def __init__(self, i: int, done: asyncio.Future) -> None:
            self.i, self.done, self.left, self.quitting = i, done, per_session, False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport.write(PAYLOAD)

        def data_received(self, data: bytes) -> None:
            if self.quitting:
                return  # the server closes after --quit--
            if data != REPLY:
                raise RuntimeError("a reply other than '-'")
            counts[self.i] += 1
            self.left -= 1
            if self.left and not stop[0]:
                self.transport.write(PAYLOAD)
            else:
                self.quitting = True
                self.transport.write(QUIT)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.done.done():
                self.done.set_result(self.quitting and exc is None)

    async def one(i: int) -> None:
        while not stop[0]:
            done = loop.create_future()
            await loop.create_connection(lambda done=done: Chat(i, done), host, port)
            if not await done:
                raise RuntimeError("the server closed the connection")

    async def ticker() -> None:
        ticks[round(time.time(), 4)] = sum(counts)
        while not stop[0]:
            await asyncio.sleep(_to_next_second())
            ticks[round(time.time(), 4)] = sum(counts)

    async def run() -> None:
        tick = asyncio.ensure_future(ticker())
        await asyncio.gather(*(one(i) for i in range(conns)))
        tick.cancel()

    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
    return {"ticks": ticks, "flavour": flavour}


# -- the parent: one measurement ---------------------------------------------------------------------


def _raw_socket_function() -> Any:
    """The harness's ``raw_socket``, loaded from its file: importing it through ``harness.user`` would import
    Locust, whose gevent patching has no place in a bare loop."""
    path = Path(__file__).resolve().parent.parent / "harness" / "user" / "raw_socket.py"
    spec = importlib.util.spec_from_file_location("swarmbench_raw_socket", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.raw_socket
