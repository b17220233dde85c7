"""The open loop's send timer and the raw message path: real sockets and a real gevent hub.

The tests of the send timer and the raw path run in a forked child (``forked``), where they import gevent
and ``harness.user``; the rest run Locust in child processes.
"""

from __future__ import annotations

import _socket
import socket as stdlib_socket
import socketserver
import ssl
import threading
from pathlib import Path
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import pytest
from helpers import assert_counts_match, failure_messages, run_locust, serving

if TYPE_CHECKING:
    from harness.user.send_timer import SendTimer

pytestmark = pytest.mark.slow  # real sockets (socketpairs), though quick


class Client:
    """What the send timer touches of a TcpClient, with what it did to it."""

    def __init__(self) -> None:
        self.pending = self.sent_at = self.busy = 0
        self.errors: list[OSError] = []
        self.rests: list[bytes] = []

    def send_failed(self, exc: OSError) -> None:
        self.errors.append(exc)

    def send_rest(self, rest: bytes) -> None:
        self.rests.append(rest)


@pytest.fixture
def pair() -> Any:
    from gevent import socket

    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture(params=["alarm", "libev"])
def send_timer(request: pytest.FixtureRequest) -> Any:
    from harness.user.alarm import make_alarm
    from harness.user.send_timer import SendTimer

    alarm = make_alarm() if request.param == "alarm" else None
    if request.param == "alarm" and alarm is None:
        pytest.skip("no timerfd here (Linux only)")
    made = SendTimer(alarm)
    yield made
    made.close()
    if alarm is not None:
        alarm.close()


def _queue(send_timer: SendTimer, client: Client, due: int, send: Any, data: bytes) -> None:
    client.pending = send_timer.send_at(due, client, send, data)


@pytest.mark.forked
def test_sends_leave_when_due_in_order_never_early(send_timer: SendTimer, pair: Any) -> None:
    """Queued out of order, sent earliest first, each at or after its instant, stamped on its client."""
    from harness.user.raw_socket import raw_socket

    a, b = pair
    send = raw_socket(a).send  # type: ignore[union-attr]
    start = perf_counter_ns()
    offsets_ms = [9, 3, 6, 4, 12, 2]
    clients = [Client() for _ in offsets_ms]
    for client, ms in zip(clients, offsets_ms):
        _queue(send_timer, client, start + ms * 1_000_000, send, b"%d," % ms)
    got = b""
    while got.count(b",") < len(offsets_ms):
        got += b.recv(100)
    assert got == b"".join(b"%d," % ms for ms in sorted(offsets_ms))
    for client, ms in zip(clients, offsets_ms):
        assert client.sent_at >= start + ms * 1_000_000, (ms, client.sent_at - start)
        assert client.busy == client.sent_at and client.pending == 0
    assert send_timer.heap == [] and send_timer.at == 0


@pytest.mark.forked
def test_a_client_that_left_gets_nothing_sent(send_timer: SendTimer, pair: Any) -> None:
    import gevent

    from harness.user.raw_socket import raw_socket

    a, b = pair
    send = raw_socket(a).send  # type: ignore[union-attr]
    due = perf_counter_ns() + 5_000_000
    gone, stays = Client(), Client()
    _queue(send_timer, gone, due, send, b"gone")
    _queue(send_timer, stays, due + 1_000_000, send, b"stays")
    gone.pending = 0  # what TcpClient does when its greenlet is killed or its socket closed
    assert b.recv(100) == b"stays"
    gevent.sleep(0.01)
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(100)
    assert gone.sent_at == 0


@pytest.mark.forked
def test_a_send_that_fails_is_handed_to_its_client(send_timer: SendTimer, pair: Any) -> None:
    from harness.user.raw_socket import raw_socket

    a, b = pair
    send = raw_socket(a).send  # type: ignore[union-attr]
    a.shutdown(stdlib_socket.SHUT_WR)  # its sends now raise EPIPE
    client = Client()
    _queue(send_timer, client, perf_counter_ns() + 2_000_000, send, b"x")
    assert _wait(lambda: client.errors)
    assert isinstance(client.errors[0], BrokenPipeError) and client.rests == []


@pytest.mark.forked
def test_a_full_buffer_hands_the_rest_to_its_client(send_timer: SendTimer, pair: Any) -> None:
    from harness.user.raw_socket import raw_socket

    a, _ = pair
    raw = raw_socket(a)
    assert raw is not None
    a.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
    filled = 0
    try:
        while True:
            filled += raw.send(b"f" * 65536)
    except BlockingIOError:
        pass
    assert filled > 0
    client = Client()
    _queue(send_timer, client, perf_counter_ns() + 1_000_000, raw.send, b"message")
    assert _wait(lambda: client.rests)
    assert client.rests == [b"message"] and client.errors == []


@pytest.mark.forked
def test_close_drops_what_is_pending(send_timer: SendTimer, pair: Any) -> None:
    import gevent

    from harness.user.raw_socket import raw_socket

    a, b = pair
    client = Client()
    _queue(send_timer, client, perf_counter_ns() + 5_000_000, raw_socket(a).send, b"late")  # type: ignore[union-attr]
    send_timer.close()
    gevent.sleep(0.02)
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(100)
    assert client.sent_at == 0 and send_timer.heap == []


def _wait(condition: Any, timeout: float = 10.0) -> bool:
    """Run the hub until ``condition()`` (the send timer runs in it), for at most ``timeout`` seconds."""
    import gevent

    with gevent.Timeout(timeout, False):
        while not condition():
            gevent.sleep(0.001)
    return bool(condition())


# -- the raw message path ---------------------------------------------------------------------------------


@pytest.mark.forked
def test_gevents_socket_has_the_internals_the_message_path_uses(pair: Any) -> None:
    """Locust's sockets are gevent's: if an upgrade drops these, every message would take the slow path."""
    from harness.user.raw_socket import raw_socket

    a, b = pair
    raw = raw_socket(a)
    assert raw is not None
    assert raw.send(b"ping") == 4
    assert b.recv(10) == b"ping"
    b.sendall(b"pong")
    raw.wait(raw.readable)
    assert raw.recv(10) == b"pong"


@pytest.mark.forked
def test_tls_and_plain_sockets_take_their_own_methods() -> None:
    import gevent.ssl
    from gevent import socket

    from harness.user.raw_socket import raw_socket

    plain = _socket.socket()  # the OS socket itself (the socket module may be gevent's: Locust patches it)
    try:
        assert raw_socket(plain) is None  # not gevent's
    finally:
        plain.close()
    context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_CLIENT)  # Locust's ssl is gevent's (monkey-patched)
    wrapped = context.wrap_socket(socket.socket(), server_hostname="localhost", do_handshake_on_connect=False)
    try:
        assert all(hasattr(wrapped, name) for name in ("_sock", "_wait", "_read_event"))  # gevent's internals...
        assert raw_socket(wrapped) is None  # ... but its bytes are not the OS socket's
    finally:
        wrapped.close()


# -- under Locust -----------------------------------------------------------------------------------------


class _TwoReplies(socketserver.BaseRequestHandler):
    """Answers each message twice, 20 ms apart: the second ``-`` comes while the next message waits its turn."""

    def handle(self) -> None:
        sock = self.request
        try:
            while (data := sock.recv(5120)) and data != b"--quit--":
                sock.sendall(b"-")
                threading.Event().wait(0.02)
                sock.sendall(b"-")
        except OSError:
            pass


def test_a_reply_before_the_message_was_sent_is_an_unexpected_reply(tmp_path: Path) -> None:
    """1 user at 4 msg/s: each message is queued 230 ms ahead, and the stray ``-`` arrives first."""
    with serving(_TwoReplies) as port:
        result = run_locust("chat.py", tmp_path, f"127.0.0.1:{port}", "--rate", "4", "--csv", str(tmp_path / "stats"),
                            users=1, seconds=2)  # fmt: skip
    assert result.code == 1, result.output
    assert set(result.hdr.failures["message"]) == {"UnexpectedReply"}, result.hdr.failures
    errors = failure_messages(tmp_path)
    assert any("a reply before the message was sent: b'-'" in e for e in errors), errors


def test_the_open_loop_over_tls_sleeps_until_due(tmp_path: Path) -> None:
    """TLS takes the sleeping path (its writes are not the OS socket's): on schedule, every count right."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    chain, ca_file = tmp_path / "chain.pem", tmp_path / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(chain))
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(chain))

    class Chat(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                with context.wrap_socket(self.request, server_side=True) as sock:
                    while (data := sock.recv(5120)) and data != b"--quit--":
                        sock.sendall(b"-")
            except OSError:
                pass

    with serving(Chat) as port:
        result = run_locust("chat.py", tmp_path, f"127.0.0.1:{port}", "--tls", "--tls-ca", str(ca_file), "--rate", "100",
                            users=2, seconds=3)  # fmt: skip
    assert result.code == 0, result.output
    assert result.hdr.failures == {}
    assert result.hdr.names["send_lag"].count == result.hdr.names["message"].count > 50
    # whole seconds of a 3 s run: a second that fell behind on a busy machine is caught up in the next (due
    # messages are sent late, never dropped), so one or two seconds can read a few percent over the rate
    assert 0 < result.hdr.options.achieved_rate <= 100 * 1.1, result.hdr.options.achieved_rate
    assert_counts_match(result)


QUEUED_THEN = """
import socket
from time import perf_counter_ns

import gevent
from locust import task
from locust.exception import StopUser

from harness.user import TcpUser
from harness.user.pacing import Pacer


class Queued(TcpUser):
    @task
    def once(self) -> None:
        self.connect()
        pacer = Pacer(1.0)
        pacer.next_ns = perf_counter_ns() + {due_ms} * 1_000_000  # not due yet: the send timer holds it
        {then}
        self.client.messages(1, b"x" * {size}, pacer)
        raise StopUser()
"""


class _Silent(socketserver.BaseRequestHandler):
    """Accepts, reads nothing and keeps the connection open for a while (a peer's end seen or not)."""

    def handle(self) -> None:
        threading.Event().wait(5)


def test_a_queued_send_that_fails_is_the_sessions_failure(tmp_path: Path) -> None:
    """The client's own write side is shut before the message is due: the send timer's send raises
    EPIPE, and the user waiting for the reply reports that error, not the shutdown's end of file."""
    locustfile = tmp_path / "queued.py"
    locustfile.write_text(QUEUED_THEN.format(due_ms=300, size=5, then=(
        "gevent.spawn_later(0.05, self.client.sock.shutdown, socket.SHUT_WR)")))
    with serving(_Silent) as port:
        result = run_locust(locustfile, tmp_path, f"127.0.0.1:{port}", users=1, seconds=2)
    assert "Traceback" not in result.output, result.output
    assert result.hdr.failures["message"] == {"ResetByServer": 1}, result.hdr.failures
    assert result.locust["message"]["min_response_time"] >= 0


BIG = 32 << 20  # more than a loopback socket's buffers take at once: the send timer's send is partial


class _WholeThenReply(socketserver.BaseRequestHandler):
    """Reads BIG bytes, then answers ``-``; then waits for the quit."""

    def handle(self) -> None:
        sock, got = self.request, 0
        try:
            while got < BIG:
                data = sock.recv(1 << 20)
                if not data:
                    return
                got += len(data)
            sock.sendall(b"-")
            while (data := sock.recv(5120)) and b"--quit--" not in data:
                pass
        except OSError:
            pass


def test_the_rest_of_a_big_queued_message_follows_it(tmp_path: Path) -> None:
    """The send timer sends what the socket takes of 32 MB; the client's sender sends the rest, so
    the server sees the whole message and answers it, and the session quits cleanly."""
    locustfile = tmp_path / "queued.py"
    locustfile.write_text(QUEUED_THEN.format(due_ms=50, size=BIG, then="pass"))
    with serving(_WholeThenReply) as port:
        result = run_locust(locustfile, tmp_path, f"127.0.0.1:{port}", users=1, seconds=3)
    assert "Traceback" not in result.output, result.output
    assert result.hdr.failures == {}, result.hdr.failures
    assert result.hdr.names["message"].count == 1 and result.hdr.names["session"].count == 1
