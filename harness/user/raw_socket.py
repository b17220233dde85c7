"""A gevent socket's own OS socket and wait primitive: the message path without gevent's retry loop.

gevent's ``socket.recv`` first calls the OS socket's ``recv``; when no reply is in
yet (nearly always, right after a send) that raises ``BlockingIOError``, gevent
waits for the fd to be readable, then calls ``recv`` again: two syscalls and an
exception per message. The message path waits first and reads once; gevent's
``send``/``recv`` stay the fallback (a full send buffer, a spurious wake-up).
That saves a syscall and an exception on nearly every message; ``bench/bench_generator.py``
measures it (its ``gev-raw`` loop against gevent's own), and the README has the figures.

These are gevent internals (``_sock``, ``_wait``, ``_read_event``; gevent 20 to
26 have them all): :func:`raw_socket` returns None when one is missing, or for
anything but gevent's plain socket (a TLS socket is a subclass whose bytes are
not the OS socket's), and callers use the socket's own methods.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from gevent.socket import socket as gevent_socket


class RawSocket(NamedTuple):
    send: Any  # the OS socket's send: non-blocking, BlockingIOError when the buffer is full
    recv: Any  # the OS socket's recv: non-blocking, BlockingIOError when nothing is in
    wait: Any  # gevent's wait for a watcher: wait(readable) returns when the fd is readable
    readable: Any  # the socket's read watcher


def raw_socket(sock: Any) -> RawSocket | None:
    """``sock``'s OS socket and gevent's wait for it, or None (not a plain gevent socket)."""
    if type(sock) is not gevent_socket:  # gevent's SSLSocket has the same internals, over TLS
        return None
    os_sock, wait, readable = (getattr(sock, name, None) for name in ("_sock", "_wait", "_read_event"))
    if os_sock is None or wait is None or readable is None or not hasattr(os_sock, "recv"):
        return None
    return RawSocket(os_sock.send, os_sock.recv, wait, readable)
