"""The metrics endpoint, scraped by a real Prometheus (Debian's), and its option's bad values.

Prometheus scrapes a headless run's ``--metrics-port`` on loopback every second;
after the run, its HTTP API's last value of the message counter must equal the
run's final histogram count, give or take what the run answered after the last
scrape (its last seconds).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.results.histogram_file import decode
from helpers import ROOT, free_port, kill_group, locust_argv, run_locust, wait_until

pytestmark = pytest.mark.slow


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("SWARMBENCH_REQUIRE_PROMETHEUS") == "1":
            pytest.fail("SWARMBENCH_REQUIRE_PROMETHEUS=1 but no prometheus on PATH (.ci/run installs it)")
        pytest.skip("prometheus is not installed")
    return path


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        return json.load(response)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A Prometheus on loopback scraping 127.0.0.1:PORT every second: yields (its URL, PORT)."""
    exe = prometheus_binary()
    target, web = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: swarmbench\n"
                      f"    static_configs:\n      - targets: ['127.0.0.1:{target}']\n")  # fmt: skip
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([exe, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{web}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{web}"
    try:
        wait_until(lambda: ready(url), 30, "prometheus ready")
        yield url, target
    finally:
        kill_group(proc)
        proc.wait(timeout=10)
        log.close()


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def last_value(url: str, query: str) -> float | None:
    data = get_json(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    result = data["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.mark.timeout(120)
def test_prometheus_scrapes_a_run_and_its_counter_matches_the_histograms(
    start: Any, prometheus: tuple[str, int], tmp_path: Path
) -> None:
    url, port = prometheus
    server = start("selectors")
    result = run_locust("chat.py", tmp_path, f"tcp://127.0.0.1:{server.port}", "--rate", "300",
                        "--metrics-port", str(port), "--server-pid", str(server.pid), users=10, seconds=8)
    assert result.code == 0 and result.hdr is not None, result.output[-3000:]
    final = result.hdr.names["message"].count
    query = 'last_over_time(swarmbench_requests_total{name="message"}[10m])'
    scraped = last_value(url, query)
    assert scraped is not None, get_json(f"{url}/api/v1/targets")
    # what the run answered after the last scrape: at most its last seconds (1 s scrapes, 1 s recorder cuts)
    per_second = [decode(i.histograms["message"]).get_total_count()
                  for i in sorted(result.hdr.intervals, key=lambda i: i.t) if "message" in i.histograms]
    allowance = sum(per_second[-3:])
    assert final - allowance <= scraped <= final, (scraped, final, per_second)
    assert scraped > 0.5 * final
    # the latency histogram, users and the server came through too, under Prometheus's conventions
    assert last_value(url, 'last_over_time(swarmbench_request_duration_seconds_count{name="message"}[10m])') == scraped
    assert last_value(url, "last_over_time(swarmbench_server_threads[10m])") == 1.0  # selectors: one thread
    assert last_value(url, "last_over_time(swarmbench_asked_messages_per_second[10m])") == 300.0
    p99 = last_value(url, 'histogram_quantile(0.99, last_over_time(swarmbench_request_duration_seconds_bucket'
                          '{name="message"}[10m]))')  # fmt: skip
    assert p99 is not None and 0 < p99 < 60


def test_a_bad_metrics_port_or_server_pid_is_one_line_and_exit_2() -> None:
    """Out of range, negative, in use; a server PID that names no process. Run side by side: each is a Locust start."""
    gone = subprocess.Popen(["sleep", "0"])
    gone.wait()  # a PID just freed
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        in_use = str(taken.getsockname()[1])
        cases = [(["--metrics-port", "70000"], "error: --metrics-port 70000: not a TCP port (1-65535)"),
                 (["--metrics-port", "-1"], "error: --metrics-port -1: not a TCP port (1-65535)"),
                 (["--metrics-port", in_use], f"error: --metrics-port {in_use} on 127.0.0.1: "),
                 (["--server-pid", str(gone.pid)], f"error: --server-pid {gone.pid}: no such process")]  # fmt: skip
        procs = [subprocess.Popen(locust_argv("chat.py", "--headless", "--loglevel", "WARNING", "-u", "1", "-t", "1s",
                                              "--host", "tcp://127.0.0.1:1", *args),
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
                 for args, _ in cases]  # fmt: skip
        try:
            outcomes = [proc.communicate(timeout=90) for proc in procs]
        finally:
            for proc in procs:
                kill_group(proc)
    for proc, (_, err), (args, says) in zip(procs, outcomes, cases):
        lines = err.strip().splitlines()
        if args[0] == "--server-pid" and os.path.exists(f"/proc/{gone.pid}"):
            continue  # the PID was reused at once: nothing to say
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err, (args, err[-2000:])
        assert lines[0].startswith(says), (args, lines[0])
    assert "in use" in outcomes[2][1]
