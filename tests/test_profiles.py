"""Protocol profiles with bytes alone, then each against a real server under Locust (chat, line, redis, TLS)."""

from __future__ import annotations

import socket
import socketserver
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (ROOT, RUN_TIMEOUT, ThreadingServer, assert_counts_match, failure_messages, free_port, kill_group,
                     locust_argv, redis_binary, run_locust, wait_for)

from harness.failures import ServerError, UnexpectedReply
from harness.profiles import PROFILES, ChatProfile, LineProfile, RedisProfile, resp_end

#: Locust writes its failures CSV once a second and not at exit (2.47), and a loaded machine's -t can end
#: a run soon after its users spawn: runs read through that CSV last long enough for a write after failures.
CSV_SECONDS = 4

# -- bytes alone ------------------------------------------------------------------------------------


def test_registry_offers_the_three_profiles() -> None:
    assert sorted(PROFILES) == ["chat", "line", "redis"]


def test_chat_profile() -> None:
    chat = ChatProfile()
    assert chat.encode("hello") == b"hello" and chat.known_reply(b"hello") == b"-"
    assert chat.reply_end(b"") == 0 and chat.reply_end(b"-") == 1 and chat.reply_end(b"--") == 1
    with pytest.raises(ValueError):
        chat.reply_end(b"x")
    for bad in ("", "--quit--", "x" * 5121):
        with pytest.raises(ValueError):
            chat.encode(bad)
    assert chat.quit_bytes == b"--quit--" and chat.closes_after_quit


def test_line_profile() -> None:
    line = LineProfile()
    assert line.encode("hi there") == b"hi there\n"
    assert line.reply_end(b"par") == 0 and line.reply_end(b"partial\nnext") == 8
    assert line.check(b"anything\n") is None and line.known_reply(b"x\n") is None
    with pytest.raises(ValueError):
        line.encode("two\nlines")
    assert line.quit_bytes == b"" and not line.closes_after_quit  # no quit message: just close
    bye = LineProfile(quit_message="QUIT")
    assert bye.quit_bytes == b"QUIT\n" and bye.closes_after_quit


def test_redis_encodes_commands_as_arrays_of_bulk_strings() -> None:
    redis = RedisProfile()
    assert redis.encode("PING") == b"*1\r\n$4\r\nPING\r\n"
    assert redis.encode("SET k 'two words'") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$9\r\ntwo words\r\n"
    assert redis.encode("SET k é") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\xc3\xa9\r\n"
    assert redis.known_reply(redis.encode("PING")) == b"+PONG\r\n" and redis.known_reply(redis.encode("GET k")) is None
    for bad in ("", "   ", "SET 'unclosed", "QUIT"):
        with pytest.raises(ValueError):
            redis.encode(bad)


@pytest.mark.parametrize(
    "reply",
    [b"+OK\r\n", b"-ERR wrong\r\n", b":42\r\n", b":-1\r\n", b"$5\r\nhello\r\n", b"$0\r\n\r\n", b"$-1\r\n",
     b"*-1\r\n", b"*0\r\n", b"*2\r\n$1\r\na\r\n:1\r\n", b"*2\r\n*1\r\n+x\r\n*2\r\n$-1\r\n-ERR e\r\n",
     b"$4\r\na\r\nb\r\n"],
)  # fmt: skip
def test_redis_finds_the_end_of_every_reply_type_in_any_split(reply: bytes) -> None:
    redis = RedisProfile()
    assert redis.reply_end(reply) == len(reply)
    assert redis.reply_end(reply + b"+next\r\n") == len(reply)
    for cut in range(len(reply)):  # as several recv calls would deliver it
        assert redis.reply_end(reply[:cut]) == 0, cut


@pytest.mark.parametrize("junk", [b"?what\r\n", b":12x\r\n", b"$3\r\nabcd\r\n", b"$-2\r\n", b"*-3\r\n", b"$ 3\r\nabc\r\n"])
def test_redis_refuses_what_is_not_resp(junk: bytes) -> None:
    with pytest.raises(ValueError):
        RedisProfile().reply_end(junk)


def test_redis_error_reply_is_a_server_error_and_others_succeed() -> None:
    redis = RedisProfile()
    failure = redis.check(b"-ERR value is not an integer or out of range\r\n")
    assert isinstance(failure, ServerError) and not failure.fatal
    assert str(failure) == "ERR value is not an integer or out of range"
    assert redis.check(b"$-1\r\n") is None and redis.check(b"*1\r\n-ERR inner\r\n") is None


def test_resp_nesting_is_bounded() -> None:
    with pytest.raises(ValueError):
        resp_end(b"*1\r\n" * 100 + b":1\r\n")


def test_unexpected_reply_shows_its_first_bytes_escaped() -> None:
    from harness.failures import escaped

    text = escaped(b"\x00\xffHTTP/1.1 400 Bad Request\r\n" + b"x" * 100)
    assert text.startswith("b'\\x00\\xffHTTP/1.1 400") and "..." in text and "(128 bytes)" in text
    assert "\n" not in str(UnexpectedReply(text))


# -- real servers ---------------------------------------------------------------------------------------


class _LineEcho(socketserver.StreamRequestHandler):
    """Echoes each line; ``QUIT`` gets ``BYE`` and a close; ``LATER`` is answered in two pieces."""

    def handle(self) -> None:
        for line in self.rfile:
            if line.strip() == b"QUIT":
                self.wfile.write(b"BYE\n")
                return
            if line.strip() == b"LATER":
                self.wfile.write(b"LA")
                self.wfile.flush()
                threading.Event().wait(0.002)
                self.wfile.write(b"TER\n")
                continue
            self.wfile.write(line)


@pytest.fixture
def line_server() -> Iterator[str]:
    server = ThreadingServer(("127.0.0.1", 0), _LineEcho)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_chat_profile_against_the_asyncio_variant(start: Any, tmp_path: Path) -> None:
    server = start("asyncio")
    result = run_locust("chat.py", tmp_path, server.url, "--protocol", "chat", "--message", "hello there", users=3, seconds=2)
    assert result.code == 0, result.output
    assert result.hdr.failures == {} and result.hdr.names["message"].count > 100
    assert_counts_match(result)


@pytest.mark.slow
@pytest.mark.parametrize("message", ["hello line", "LATER"])
def test_line_profile_against_a_line_echo_server(line_server: str, tmp_path: Path, message: str) -> None:
    result = run_locust("chat.py", tmp_path, line_server, "--protocol", "line", "--message", message,
                        "--quit-message", "QUIT", users=3, seconds=2)  # fmt: skip
    assert result.code == 0, result.output
    assert result.hdr.failures == {}, result.hdr.failures
    assert result.hdr.names["message"].count > 20 and result.hdr.names["session"].count > 0
    assert_counts_match(result)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    binary = redis_binary()
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--save", "", "--appendonly", "no", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: _accepts(port) or proc.poll() is not None, 10) and proc.poll() is None
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        kill_group(proc)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _redis(port_host: str, command: bytes) -> bytes:
    host, port = port_host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(command)
        return sock.recv(1024)


@pytest.mark.slow
@pytest.mark.parametrize("message", ["PING", "SET k 'some value'", "GET missing", "LRANGE list 0 -1"])
def test_redis_profile_against_redis_server(redis_server: tuple[str, int], tmp_path: Path, message: str) -> None:
    host, _pid = redis_server
    _redis(host, RedisProfile().encode("RPUSH list a b") )
    result = run_locust("chat.py", tmp_path, host, "--protocol", "redis", "--message", message, users=3, seconds=2)
    assert result.code == 0, result.output
    assert result.hdr.failures == {}, result.hdr.failures
    assert result.hdr.names["message"].count > 100 and result.hdr.names["session"].count > 0  # QUIT ended them
    assert_counts_match(result)


@pytest.mark.slow
def test_redis_error_reply_is_counted_as_server_error(redis_server: tuple[str, int], tmp_path: Path) -> None:
    host, _pid = redis_server
    assert _redis(host, RedisProfile().encode("SET notanumber abc")) == b"+OK\r\n"
    result = run_locust("chat.py", tmp_path, host, "--protocol", "redis", "--message", "INCR notanumber",
                        "--messages-per-session", "5", "--csv", str(tmp_path / "stats"), users=2, seconds=CSV_SECONDS)  # fmt: skip
    assert result.code == 1, result.output
    errors = result.hdr.failures["message"]
    assert set(errors) == {"ServerError"} and errors["ServerError"] > 20
    assert "session" not in result.hdr.failures  # an error reply does not break the session
    assert result.hdr.names["session"].count > 0
    assert "message" not in result.hdr.names  # no success to time
    assert result.locust["message"]["num_failures"] == result.locust["message"]["num_requests"] == errors["ServerError"]
    assert any("ERR value is not an integer" in m for m in failure_messages(tmp_path))


class _Http(socketserver.BaseRequestHandler):
    """Not the protocol the client speaks: an HTTP error to anything."""

    def handle(self) -> None:
        while self.request.recv(65536):
            self.request.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")


@pytest.mark.slow
def test_a_reply_that_does_not_parse_is_an_unexpected_reply(tmp_path: Path) -> None:
    """An HTTP server is no Redis: every message fails, its first bytes shown escaped."""
    server = ThreadingServer(("127.0.0.1", 0), _Http)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_locust("chat.py", tmp_path, f"127.0.0.1:{server.server_address[1]}", "--protocol", "redis",
                            "--csv", str(tmp_path / "stats"), users=1, seconds=CSV_SECONDS)  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result.code == 1, result.output
    assert set(result.hdr.failures["message"]) == {"UnexpectedReply"}
    messages = failure_messages(tmp_path)
    assert any("a reply redis does not parse" in m and "b'HTTP/1.1 400 Bad Request" in m for m in messages), messages


class _LengthPrefixedEcho(socketserver.BaseRequestHandler):
    """scenarios/custom_framing.py's server: u32 length + bytes, echoed."""

    def handle(self) -> None:
        buf = b""
        while data := self.request.recv(65536):
            buf += data
            while len(buf) >= 4 and len(buf) >= (end := 4 + int.from_bytes(buf[:4], "big")):
                self.request.sendall(buf[:end])
                buf = buf[end:]


@pytest.mark.slow
def test_custom_framing_example_runs_under_locust(tmp_path: Path) -> None:
    server = ThreadingServer(("127.0.0.1", 0), _LengthPrefixedEcho)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        result = run_locust("custom_framing.py", tmp_path, f"127.0.0.1:{port}", users=2, seconds=2)
    finally:
        server.shutdown()
        server.server_close()
    assert result.code == 0, result.output
    assert result.hdr.failures == {} and result.hdr.names["message"].count > 50
    assert_counts_match(result)


@pytest.mark.slow
@pytest.mark.parametrize(("args", "needle"), [
    (["--protocol", "smtp"], "invalid choice"), (["--protocol", "redis", "--message", "SET 'x"], "--message"),
    (["--message", "a\nb", "--protocol", "line"], "one line"), (["--tls-insecure"], "need --tls"),
    (["--tls", "--tls-ca", "/nonexistent/ca.pem"], "--tls-ca"),
])  # fmt: skip
def test_bad_profile_options_are_one_line(args: list[str], needle: str) -> None:
    proc = subprocess.run(
        locust_argv("chat.py", "--headless", "-t", "1s", "--host", f"127.0.0.1:{free_port()}", *args),
        cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert needle in proc.stderr.strip().splitlines()[-1], proc.stderr


# -- TLS ---------------------------------------------------------------------------------------------------


class _TlsChat(socketserver.BaseRequestHandler):
    """The chat protocol over TLS (or plain, when the server has no context)."""

    def handle(self) -> None:
        sock = self.request
        context: ssl.SSLContext | None = self.server.context  # type: ignore[attr-defined]
        try:
            if context is not None:
                sock = context.wrap_socket(sock, server_side=True)
            while data := sock.recv(5120):
                if data == b"--quit--":
                    break
                sock.sendall(b"-")
        except OSError:
            pass
        finally:
            sock.close()


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    trustme = pytest.importorskip("trustme")
    ca, other = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "other_ca", "chain", "localhost_only")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    other.cert_pem.write_to_path(str(paths["other_ca"]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths["chain"]))
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(paths["localhost_only"]))
    return paths


def _tls_server(chain: Path | None) -> tuple[ThreadingServer, int]:
    server = ThreadingServer(("127.0.0.1", 0), _TlsChat)
    context = None
    if chain is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(chain))
    server.context = context  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.mark.slow
@pytest.mark.parametrize(("chain", "host", "ca", "failure"), [
    ("chain", "127.0.0.1", "ca", None),
    ("chain", "localhost", "ca", None),
    ("localhost_only", "127.0.0.1", "ca", "certificate not accepted: IP address mismatch"),
    ("chain", "127.0.0.1", "other_ca", "certificate not accepted: unable to get local issuer certificate"),
    (None, "127.0.0.1", "ca", "TLS handshake timed out"),  # the chat server answers the ClientHello with '-'
])  # fmt: skip
def test_tls(start: Any, tls_files: dict[str, Path], tmp_path: Path, chain: str | None, host: str, ca: str,
             failure: str | None) -> None:
    if chain is None:
        plain = start("threaded")
        server, port = None, plain.port
    else:
        server, port = _tls_server(tls_files[chain])
    try:
        result = run_locust("chat.py", tmp_path, f"{host}:{port}", "--tls", "--tls-ca", str(tls_files[ca]),
                            "--connect-timeout", "0.5", "--csv", str(tmp_path / "stats"), users=2, seconds=CSV_SECONDS)  # fmt: skip
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    assert "Traceback" not in result.output
    if failure is None:
        assert result.code == 0, result.output
        assert result.hdr.failures == {}
        connects = result.hdr.names["connect"].count
        assert connects - 2 <= result.hdr.names["tls_handshake"].count <= connects  # a stop may cut a handshake
        assert result.hdr.names["message"].count > 50
    else:
        assert result.code == 1, result.output
        assert set(result.hdr.failures) == {"tls_handshake"}, result.hdr.failures
        assert set(result.hdr.failures["tls_handshake"]) == {"TlsFailure"}
        messages = failure_messages(tmp_path)
        assert any(failure in m for m in messages) and all("\n" not in m for m in messages), messages
        assert "message" not in result.hdr.names
        handshakes = result.locust["tls_handshake"]
        assert handshakes["num_failures"] == handshakes["num_requests"] == result.hdr.failures["tls_handshake"]["TlsFailure"]
        return
    assert_counts_match(result)


@pytest.mark.slow
def test_tls_insecure_is_warned_about_once(tls_files: dict[str, Path], tmp_path: Path) -> None:
    server, port = _tls_server(tls_files["chain"])
    try:
        result = run_locust("chat.py", tmp_path, f"127.0.0.1:{port}", "--tls", "--tls-insecure", users=3, seconds=2)
    finally:
        server.shutdown()
        server.server_close()
    assert result.code == 0, result.output
    assert result.output.count("NOT verified") == 1, result.output
    assert result.hdr.names["message"].count > 50
