"""How much does the load generator cost? Messages/s and generator CPU µs per message.

One server (the asyncio/uvloop variant when server/variants.py has one, else the
threaded reference), then for 1, 10 and 100 connections: a bare gevent socket
loop, a bare asyncio loop (uvloop when installed) and the Locust ``TcpUser``
(scenarios/chat.py, headless, as a subprocess). Each client runs in its own
process, so its CPU time is its own. Prints the Locust user's ratios against
the bare loops.

    python bench/bench_generator.py [--duration 10] [--connections 1,10,100] [--server VARIANT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.servers import ServerStartError, start_server  # noqa: E402

PAYLOAD = b"Hello, world"
RECV = 5120


def pick_variant() -> str:
    """The uvloop/asyncio variant if one is registered, else the threaded reference."""
    from server.variants import VARIANTS

    for wanted in ("uvloop", "asyncio"):
        for name in VARIANTS:
            if wanted in name:
                return name
    return "threaded"


# -- the bare clients (each runs in a child process: --client KIND) -------------------------------
def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def gevent_client(host: str, port: int, conns: int, duration: float) -> dict[str, float]:
    import gevent
    from gevent import socket as gsocket

    socks = [gsocket.create_connection((host, port)) for _ in range(conns)]
    for s in socks:
        s.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
    counts = [0] * conns
    deadline = time.perf_counter() + duration

    def loop(i: int, s: gsocket.socket) -> None:
        n, clock = 0, time.perf_counter
        while clock() < deadline:
            s.sendall(PAYLOAD)
            s.recv(RECV)
            n += 1
        counts[i] = n

    cpu0, t0 = _cpu(), time.perf_counter()
    gevent.joinall([gevent.spawn(loop, i, s) for i, s in enumerate(socks)])
    cpu1, t1 = _cpu(), time.perf_counter()
    for s in socks:
        s.sendall(b"--quit--")
        s.close()
    return {"messages": sum(counts), "seconds": t1 - t0, "cpu_seconds": cpu1 - cpu0}


def asyncio_client(host: str, port: int, conns: int, duration: float) -> dict[str, float]:
    import asyncio
    import socket

    try:
        import uvloop

        loop = uvloop.new_event_loop()
        flavour = "uvloop"
    except ImportError:
        loop = asyncio.new_event_loop()
        flavour = "asyncio"
    counts = [0] * conns
    deadline = time.perf_counter() + duration

    async def one(i: int, sock: socket.socket) -> None:
        n, clock = 0, time.perf_counter
        sendall, recv = loop.sock_sendall, loop.sock_recv
        while clock() < deadline:
            await sendall(sock, PAYLOAD)
            await recv(sock, RECV)
            n += 1
        counts[i] = n
        await sendall(sock, b"--quit--")
        sock.close()

    socks = []
    for _ in range(conns):
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)

    async def run() -> None:
        await asyncio.gather(*(one(i, s) for i, s in enumerate(socks)))

    cpu0, t0 = _cpu(), time.perf_counter()
    loop.run_until_complete(run())
    cpu1, t1 = _cpu(), time.perf_counter()
    loop.close()
    return {"messages": sum(counts), "seconds": t1 - t0, "cpu_seconds": cpu1 - cpu0, "flavour": flavour}


# -- the parent --------------------------------------------------------------------------------------
def run_child(kind: str, host: str, port: int, conns: int, duration: float) -> dict[str, float]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--client", kind, "--host", host,
            "--port", str(port), "--connections", str(conns), "--duration", str(duration)]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_locust(host: str, port: int, conns: int, duration: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="swarmbench-bench-") as tmp:
        hdr = Path(tmp) / "hdr.json"
        argv = [sys.executable, "-m", "locust", "-f", str(ROOT / "scenarios" / "chat.py"), "--headless",
                "-u", str(conns), "-r", str(max(conns, 1000)), "-t", f"{duration:g}s",
                "--host", f"tcp://{host}:{port}", "--hdr-file", str(hdr), "--messages-per-session", "100000000",
                "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "0"]  # fmt: skip
        subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=duration + 60)
        data = json.loads(hdr.read_text())
    proc = data["generator"]["processes"][0]
    messages = data["names"]["message"]["count"]
    return {
        "messages": messages,
        "seconds": data["stopping_at"] - data["spawned_at"],
        "cpu_seconds": proc["cpu_seconds"],
        "rate": data["summary"]["achieved_rate"],
    }


def per_message(result: dict[str, float]) -> tuple[float, float]:
    """(messages/s, CPU µs per message)."""
    n = max(result["messages"], 1)
    rate = result.get("rate") or n / max(result["seconds"], 1e-9)
    return rate, result["cpu_seconds"] / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement, 1..60 (default 10)")
    parser.add_argument("--connections", default="1,10,100", help="comma-separated (default 1,10,100)")
    parser.add_argument("--server", default=None, help="server variant (default: uvloop/asyncio if present, else threaded)")
    parser.add_argument("--client", choices=("gevent", "asyncio"), help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 60:
        parser.error("--duration must be 1..60 seconds")
    try:
        conns_list = [int(c) for c in args.connections.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--connections: comma-separated integers, not {args.connections!r}")
    if not conns_list or not all(1 <= c <= 1000 for c in conns_list):
        parser.error("--connections: each count must be 1..1000")
    if args.client:
        client = gevent_client if args.client == "gevent" else asyncio_client
        print(json.dumps(client(args.host, args.port, conns_list[0], args.duration)))
        return 0

    variant = args.server or pick_variant()
    try:
        server = start_server(variant, backlog=128)
    except ServerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = []
    try:
        print(f"server: {variant} on {server.host}:{server.port}, {args.duration:g} s per run")
        print(f"{'conns':>5} {'client':<8} {'msgs/s':>10} {'cpu us/msg':>11}")
        for conns in conns_list:
            results = {
                "gevent": run_child("gevent", server.host, server.port, conns, args.duration),
                "asyncio": run_child("asyncio", server.host, server.port, conns, args.duration),
                "locust": run_locust(server.host, server.port, conns, args.duration),
            }
            figures = {kind: per_message(r) for kind, r in results.items()}
            for kind, (rate, cpu) in figures.items():
                label = results[kind].get("flavour", kind)
                print(f"{conns:>5} {label:<8} {rate:>10.0f} {cpu:>11.1f}")
            rows.append((conns, figures))
    except (subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
        print(f"error: a measurement failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    print("\nLocust TcpUser against the bare loops (cpu: lower is better; msgs/s: higher is better)")
    print(f"{'conns':>5} {'cpu/gevent':>11} {'rate/gevent':>12} {'cpu/asyncio':>12} {'rate/asyncio':>13}")
    for conns, f in rows:
        (lr, lc), (gr, gc), (ar, ac) = f["locust"], f["gevent"], f["asyncio"]
        print(f"{conns:>5} {lc / gc:>10.2f}x {lr / gr:>11.2f}x {lc / ac:>11.2f}x {lr / ar:>12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
