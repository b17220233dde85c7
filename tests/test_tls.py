"""TLS on the servers (--tls-cert/--tls-key), with certificates made by trustme at test time.

No key is committed: each test gets a fresh CA and a certificate for 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import trustme
from helpers import resources, steady_resources, wait_for

from harness.server_process import RunningServer
from server.protocol import QUIT, REPLY

pytestmark = pytest.mark.slow  # every test here starts a process

ROOT = Path(__file__).resolve().parent.parent
Start = Callable[..., RunningServer]
#: (id, variant, extra arguments): every variant that serves TLS.
TLS_CONFIGS = [
    ("threaded", "threaded", ()), ("pool", "pool", ()), ("selectors", "selectors", ()), ("asyncio", "asyncio", ()),
    ("asyncio-uvloop", "asyncio", ("--loop", "uvloop")), ("prefork", "prefork", ("--processes", "2")),
]  # fmt: skip


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cert_files(ca: trustme.CA, tmp_path: Path) -> tuple[str, str]:
    """(certificate chain, key) files for 127.0.0.1, signed by ``ca``."""
    leaf = ca.issue_cert("127.0.0.1")
    chain, key = tmp_path / "server.pem", tmp_path / "server.key"
    leaf.private_key_pem.write_to_path(str(key))
    with open(chain, "wb") as out:
        for blob in leaf.cert_chain_pems:
            out.write(blob.bytes())
    return str(chain), str(key)


@pytest.fixture(params=TLS_CONFIGS, ids=[c[0] for c in TLS_CONFIGS])
def tls_start(request: pytest.FixtureRequest, start: Start, cert_files: tuple[str, str]) -> Callable[..., RunningServer]:
    """``tls_start(*extra_args)``: this test's variant, serving TLS."""
    _, variant, extra = request.param
    if "uvloop" in extra and importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop is not installed (the project's uvloop extra)")
    cert, key = cert_files
    return lambda *more: start(variant, log_level="INFO", extra_args=(*extra, "--tls-cert", cert, "--tls-key", key, *more))


@pytest.fixture
def tls_server(tls_start: Callable[..., RunningServer]) -> RunningServer:
    return tls_start()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def tls_converse(server: RunningServer, context: ssl.SSLContext, messages: list[bytes]) -> None:
    """A verified TLS client: each message then its ``-``, then quit and wait for the close."""
    with socket.create_connection(server.address, timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            for message in messages:
                sock.sendall(message)
                assert sock.recv(16) == REPLY
            sock.sendall(QUIT)
            assert sock.recv(16) == b""


def assert_clean(server: RunningServer) -> None:
    assert server.alive(), server.log_text()[-2000:]
    assert "Traceback" not in server.log_text(), server.log_text()[-4000:]


def test_verified_round_trip(tls_server: RunningServer, ca: trustme.CA) -> None:
    assert ", tls)" in tls_server.log_text().split("Serving on", 1)[1].splitlines()[0]
    tls_converse(tls_server, client_context(ca), [b"Zack", b"Python", "é".encode()])
    assert wait_for(lambda: "Processed result: Hello PYTHON" in tls_server.log_text(), 30.0)
    with socket.create_connection(tls_server.address, timeout=30) as raw:
        with client_context(ca).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"x" * 12000)  # one TLS record, more than one read: one reply per 5120-byte piece
            replies = b""
            while len(replies) < 3:
                chunk = sock.recv(16)
                assert chunk, f"closed after {replies!r}"
                replies += chunk
            sock.sendall(QUIT)
            assert replies == REPLY * 3 and sock.recv(16) == b""
    assert_clean(tls_server)


def logs_handshakes(server: RunningServer) -> bool:
    """uvloop does its own handshakes and does not report the failed ones (see server/aio.py)."""
    return "uvloop" not in server.argv


def test_wrong_ca_fails_its_handshake_and_the_server_goes_on(tls_server: RunningServer, ca: trustme.CA) -> None:
    failed_before = tls_server.log_text().count("TLS handshake with")  # the start-up probe's, if any
    with socket.create_connection(tls_server.address, timeout=30) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            client_context(trustme.CA()).wrap_socket(raw, server_hostname="127.0.0.1")
    if logs_handshakes(tls_server):
        assert wait_for(lambda: tls_server.log_text().count("TLS handshake with") > failed_before, 30.0)
    tls_converse(tls_server, client_context(ca), [b"still served"])
    assert_clean(tls_server)


def test_plain_tcp_client_is_refused_not_a_crash(tls_server: RunningServer, ca: trustme.CA) -> None:
    tls_converse(tls_server, client_context(ca), [b"warm up"])
    idle = steady_resources(tls_server.pid)
    with socket.create_connection(tls_server.address, timeout=30) as sock:
        sock.sendall(b"Zack, in plain text\n")  # not a TLS record: the handshake fails, the server closes
        try:
            while sock.recv(4096):  # a TLS alert, perhaps, then the close
                pass
        except ConnectionResetError:
            pass
    if logs_handshakes(tls_server):
        assert wait_for(lambda: "TLS handshake with 127.0.0.1:" in tls_server.log_text(), 30.0)
    tls_converse(tls_server, client_context(ca), [b"still served"])
    # No thread or descriptor left behind by the failed handshake.
    back = wait_for(lambda: all(now <= then for now, then in zip(resources(tls_server.pid), idle)), 30.0)
    assert back, (resources(tls_server.pid), idle)
    assert_clean(tls_server)


def test_stalled_handshake_is_closed(tls_start: Callable[..., RunningServer], ca: trustme.CA) -> None:
    """A client that connects and never says hello does not hold a thread or descriptor forever."""
    server = tls_start("--idle-timeout", "0.5")
    with socket.create_connection(server.address, timeout=30) as silent:
        try:
            assert silent.recv(16) == b""
        except ConnectionResetError:
            pass
    tls_converse(server, client_context(ca), [b"served"])
    assert_clean(server)


def _run_server(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args, "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )


def test_tls_option_errors_are_one_line(ca: trustme.CA, cert_files: tuple[str, str], tmp_path: Path) -> None:
    cert, key = cert_files
    other_key = tmp_path / "other.key"
    trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(str(other_key))
    fifo = tmp_path / "cert.fifo"
    os.mkfifo(fifo)  # opened for reading, it would block the server's start for good
    cases = {
        "a FIFO, not a PEM file": ["threaded", "--tls-cert", str(fifo), "--tls-key", key],
        "a folder, not a PEM file": ["asyncio", "--tls-cert", cert, "--tls-key", str(tmp_path)],
        "together": ["threaded", "--tls-cert", cert],
        "No such file": ["asyncio", "--tls-cert", cert, "--tls-key", str(tmp_path / "missing.key")],
        "matching key": ["pool", "--tls-cert", cert, "--tls-key", str(other_key)],
        "go together": ["selectors", "--tls-key", key],
    }
    for expected, args in cases.items():
        result = _run_server(args)
        assert result.returncode == 2, (args, result)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr, (args, result.stderr)
