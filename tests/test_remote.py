"""Remote targets: any address or name, one resolver seam, and bad targets refused before any cell.

Every address here is loopback (127.0.0.0/8 or ::1): names resolve through a
replaced :func:`harness.target.resolve` (no query leaves the machine) or from
/etc/hosts (``localhost``); refused, timed-out and TLS failures are simulated
on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from helpers import free_port

from harness import cli, target
from harness.probe import ProbeError, TlsSettings, probe
from harness.results import load_run
from harness.server_process import RunningServer

SHORT = ["--users", "1", "--duration", "1s", "--warmup", "0s", "--quiet"]


def fake_resolver(answer: str | None) -> tuple[Callable[[str, int], list], list[tuple[str, int]]]:
    """A resolver that answers ``answer`` (an address) for every name, or fails like an unknown name."""
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list:
        asked.append((host, port))
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = socket.AF_INET6 if ":" in answer else socket.AF_INET
        return [(family, (answer, port))]

    return resolve, asked


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = cli.main(list(args))
    return code, capsys.readouterr().err.strip().splitlines()


# -- parsing and the resolver seam (no sockets) ------------------------------------------


def test_a_name_is_resolved_through_the_seam(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve, asked = fake_resolver("127.0.0.5")
    monkeypatch.setattr(target, "resolve", resolve)
    assert target.parse_host("tcp://db.test:6379") == (socket.AF_INET, ("127.0.0.5", 6379))
    assert target.parse_host("cache.test:11211")[1] == ("127.0.0.5", 11211)
    assert asked == [("db.test", 6379), ("cache.test", 11211)]
    assert target.split_host("tcp://db.test:6379") == ("db.test", 6379)  # the name is kept for Locust and SNI


def test_address_literals_need_no_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve, asked = fake_resolver(None)
    monkeypatch.setattr(target, "resolve", resolve)
    assert target.parse_host("tcp://127.0.0.9:80") == (socket.AF_INET, ("127.0.0.9", 80))
    assert target.parse_host("[::1]:8000") == (socket.AF_INET6, ("::1", 8000))
    assert asked == []


def test_a_name_that_does_not_resolve_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target, "resolve", fake_resolver(None)[0])
    with pytest.raises(ValueError, match="'nosuch.test' does not resolve"):
        target.parse_host("nosuch.test:80")


def test_localhost_resolves_from_etc_hosts() -> None:
    family, address = target.parse_host("localhost:8000")
    assert address[1] == 8000 and address[0] in ("127.0.0.1", "::1")


@pytest.mark.parametrize("host", ["http://127.0.0.1:80", "tcp://127.0.0.1:0", "tcp://:80", "127.0.0.1:x", "127.0.0.1:"])
def test_malformed_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="malformed host"):
        target.split_host(host)


def test_a_scoped_ipv6_literal_is_decoded_and_its_zone_becomes_the_scope_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 6874 writes the zone's ``%`` as ``%25`` (issue 22): ``[::1%25lo]`` is ::1 on the loopback interface.

    The C library reads ``%lo`` in a link-local address only: the zone goes as the sockaddr's scope id.
    """
    resolve, asked = fake_resolver(None)
    monkeypatch.setattr(target, "resolve", resolve)
    lo = socket.if_nametoindex("lo")
    assert target.split_host("[::1%25lo]:8000") == ("::1%lo", 8000)
    assert target.split_host("tcp://[fe80::1%25Eth0]:80") == ("fe80::1%Eth0", 80)  # an interface name keeps its case
    assert target.parse_host("[::1%25lo]:8000") == (socket.AF_INET6, ("::1", 8000, 0, lo))
    assert target.parse_host("[::1%251]:8000") == (socket.AF_INET6, ("::1", 8000, 0, 1))  # an index
    assert target.Target("::1%lo", 8000).url == "tcp://[::1%25lo]:8000"  # what the Locust runs are given
    assert target.split_host(target.Target("::1%lo", 8000).url) == ("::1%lo", 8000)
    assert asked == []
    with pytest.raises(ValueError, match="no network interface 'nosuch0'"):
        target.parse_host("[::1%25nosuch0]:8000")


@pytest.mark.parametrize("host", ["[::1%25]:80", "[::1%25a%2Fb]:80", "[127.0.0.1%25lo]:80"])
def test_malformed_zones_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="malformed host"):
        target.split_host(host)


@pytest.mark.parametrize("host", ["::1:8000", "tcp://::1:8000", "::1", "fe80::1%lo:80"])
def test_an_unbracketed_ipv6_address_is_told_to_go_in_brackets(host: str) -> None:
    with pytest.raises(ValueError, match=r"IPv6 addresses go in brackets: \[::1\]:PORT$"):
        target.split_host(host)


# -- bad targets and options: one line, exit 2, before any cell --------------------------


def test_sweep_refuses_a_name_that_does_not_resolve(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    resolve, asked = fake_resolver(None)
    monkeypatch.setattr(target, "resolve", resolve)
    code, err = run_cli(capsys, "sweep", "--target", "nosuch.test:6379", "--out", str(tmp_path / "r"))
    assert code == 2 and len(err) == 1 and "does not resolve" in err[0], err
    assert asked == [("nosuch.test", 6379)]
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--protocol", "smtp"], "invalid choice: 'smtp'"),
        (["--protocol", "line", "--message", "two\nlines"], "a line profile message is one line"),
        (["--message", ""], "chat carries 1..5120 bytes (got 0)"),
        (["--tls-insecure"], "go with --tls"),
        (["--tls", "--tls-ca", "/nonexistent/ca.pem"], "no such file"),
        (["--tls", "--tls-insecure", "--tls-ca", __file__], "choose one"),
        (["--locust-arg=--protocol=redis"], "give swarmbench's own --protocol"),
        (["--worker-wait", "0s"], "--worker-wait must be at least 1s"),
    ],
)
def test_bad_protocol_and_tls_options_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], needle: str) -> None:
    code, err = run_cli(capsys, "sweep", *args, "--out", str(tmp_path / "r"))
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_sweep_refuses_an_unbracketed_ipv6_target_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run_cli(capsys, "sweep", "--target", "::1:8000", "--out", str(tmp_path / "r"))
    assert code == 2 and len(err) == 1 and "IPv6 addresses go in brackets: [::1]:PORT" in err[0], err


@pytest.mark.slow
def test_a_refused_port_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run_cli(capsys, "sweep", "--target", f"127.0.0.1:{free_port()}", "--out", str(tmp_path / "r"))
    assert code == 2 and len(err) == 1 and "connection refused" in err[0], err


@pytest.fixture
def full_listener() -> Iterator[int]:
    """A port whose listen queue is full and never accepted: a connect to it times out (SYNs dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):  # Linux takes backlog + 1 into the queue; the rest wait in SYN-SENT
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    try:
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


@pytest.mark.slow
def test_a_target_that_never_accepts_times_out_in_one_line(full_listener: int, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run_cli(capsys, "sweep", "--target", f"127.0.0.1:{full_listener}", "--out", str(tmp_path / "r"))
    assert code == 2 and len(err) == 1 and "connect timed out after 3 s" in err[0], err


@pytest.mark.slow
def test_pid_must_be_a_local_process(start: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    server = start("threaded")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    code, err = run_cli(capsys, "sweep", "--target", f"127.0.0.1:{server.port}", "--pid", str(gone.pid), "--out", str(tmp_path / "r"))
    assert code == 2 and len(err) == 1 and "no such process on this machine" in err[0], err


# -- TLS: a stdlib TLS listener on 127.0.0.1 with a test CA (trustme) ---------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """(port, CA file) of a TLS listener whose certificate names localhost and 127.0.0.1 only."""
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    current: list[socket.socket] = []  # the connection being served, shut down at teardown

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            current[:] = [conn]
            conn.settimeout(5)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except OSError:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], ca_file
    finally:
        stop.set()
        for sock in (listener, *current):  # wakes the thread from accept() or recv() at once
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        thread.join(5)
        assert not thread.is_alive()
        listener.close()


@pytest.mark.slow
def test_tls_probe_accepts_the_right_ca_and_names(tls_server: tuple[int, Path]) -> None:
    port, ca_file = tls_server
    probe("127.0.0.1", port, TlsSettings(ca_file))
    probe("localhost", port, TlsSettings(ca_file))
    probe("127.0.0.1", port, TlsSettings(insecure=True))


@pytest.mark.slow
def test_tls_failures_are_one_line(tls_server: tuple[int, Path], start: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    port, ca_file = tls_server
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    plain = start("threaded")
    cases = [
        ([f"127.0.0.1:{port}", "--tls"], "certificate not accepted"),  # the system's CAs do not know the test CA
        ([f"127.0.0.1:{port}", "--tls", "--tls-ca", str(other_ca)], "certificate not accepted"),
        ([f"127.0.0.2:{port}", "--tls", "--tls-ca", str(ca_file)], "refused"),  # listens on 127.0.0.1 only
        ([f"127.0.0.1:{plain.port}", "--tls", "--tls-ca", str(ca_file)], "is it a TLS server?"),
    ]
    for i, (args, needle) in enumerate(cases):
        code, err = run_cli(capsys, "sweep", "--target", *args, "--out", str(tmp_path / f"r{i}"))
        assert code == 2 and len(err) == 1 and needle in err[0], (args, err)


@pytest.mark.slow
def test_tls_wrong_host_name_is_one_line(tls_server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    port, ca_file = tls_server
    monkeypatch.setattr(target, "resolve", fake_resolver("127.0.0.1")[0])  # db.test -> 127.0.0.1, not on the certificate
    code, err = run_cli(capsys, "sweep", "--target", f"db.test:{port}", "--tls", "--tls-ca", str(ca_file), "--out", str(tmp_path / "r"))
    assert code == 2 and len(err) == 1 and "certificate not accepted" in err[0] and "db.test" in err[0], err
    with pytest.raises(ProbeError, match="mismatch"):
        probe("db.test", port, TlsSettings(ca_file))


@pytest.mark.forked
def test_the_users_tls_name_leaves_an_ipv6_zone_out() -> None:
    """SNI and the certificate check take the address: a zone (``%25eth0``) is this machine's, on no certificate."""
    from harness.user.tls import server_name  # harness.user imports Locust

    assert server_name("[::1%25lo]:8000") == "::1"
    assert server_name("tcp://[fe80::1%25eth0]:1") == "fe80::1"
    assert server_name("localhost:80") == "localhost"


# -- real sweeps at localhost and [::1] ------------------------------------------------------


def sweep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "sweep", *args], capture_output=True, text=True, timeout=150)


@pytest.mark.slow
def test_localhost_as_target_keeps_the_name_and_runs(start: Callable[..., RunningServer], tmp_path: Path) -> None:
    server = start("threaded")
    out = tmp_path / "run"
    result = sweep("--target", f"localhost:{server.port}", "--pid", str(server.pid), *SHORT, "--out", str(out), "--check", "errors==0")
    assert result.returncode == 0, result.stderr
    _, cells = load_run(out)
    assert cells[0].status == "ok" and cells[0].messages > 0
    assert any(f"tcp://localhost:{server.port}" in cmd for c in cells for cmd in c.commands[-1])
    # a --target --pid run is sampled: the threads plot and the timeline have the server's threads
    assert cells[0].server.samples > 0 and cells[0].server.threads_max >= 1
    assert any(p.threads for p in cells[0].timeline)
    assert (out / "plots").is_dir() and any("thread" in p.name for p in (out / "plots").glob("*.png"))


@pytest.mark.slow
def test_ipv6_loopback_as_target_without_pid_says_server_figures_are_not_available(start: Callable[..., RunningServer], tmp_path: Path) -> None:
    server = start("threaded", host="::1")
    out = tmp_path / "run"
    result = sweep("--target", f"[::1]:{server.port}", *SHORT, "--out", str(out), "--check", "errors==0")
    assert result.returncode == 0, result.stderr
    _, cells = load_run(out)
    assert cells[0].status == "ok" and cells[0].messages > 0 and cells[0].server.samples == 0
    html = (out / "report.html").read_text()
    assert "server figures not available: no --pid" in html
    lines = (out / "summary.csv").read_text().splitlines()
    header, values = lines[0].split(","), next(line for line in lines if line.startswith("target,")).split(",")
    for column in ("threads_max", "cpu_percent_mean", "memory_mib_max"):
        assert values[header.index(column)] == "", (column, values)  # missing, never 0


@pytest.mark.slow
def test_a_scoped_ipv6_loopback_target_is_probed_and_loaded(start: Callable[..., RunningServer], tmp_path: Path) -> None:
    """``[::1%25lo]``: the probe, the sweep and its Locust run all connect through the zone's scope id."""
    server = start("threaded", host="::1")
    probe("::1%lo", server.port)  # the C library would not resolve "::1%lo" itself
    out = tmp_path / "run"
    result = sweep("--target", f"[::1%25lo]:{server.port}", *SHORT, "--no-report", "--out", str(out), "--check",
                   "errors==0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    _, cells = load_run(out)
    assert cells[0].status == "ok" and cells[0].messages > 0
    assert any(f"tcp://[::1%25lo]:{server.port}" in cmd for cmd in cells[0].commands[-1])
