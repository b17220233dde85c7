"""Anything that reaches a Locust master's port can send a stats message: the master merges only its own workers'.

A real master with two workers loads a real server on 127.0.0.1 while a process that never
registered sends Locust's ``stats`` message to the master's port, twice a second: once with a
payload that is not one, once with a well-formed one that claims 5,000 latencies of 900 ms; and
Swarmbench's own message that counts established users, claiming 10,000.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, assert_counts_match, free_port, kill_group, run_locust

pytestmark = pytest.mark.slow

ROGUE = """
import sys, time
from locust.rpc import Message, zmqrpc
from locust.stats import RequestStats
from hdrh.histogram import HdrHistogram

port, seconds = int(sys.argv[1]), float(sys.argv[2])
client = zmqrpc.Client("127.0.0.1", port, "rogue_never_registered")
forged = HdrHistogram(1, 60_000_000, 3)
forged.record_value(900_000, 5000)
locust_part = {"stats": [], "stats_total": RequestStats().total.serialize(), "errors": {}, "user_classes_count": {},
               "user_count": 0}
end = time.monotonic() + seconds
while time.monotonic() < end:
    now = str(int(time.time()))
    for swarmbench in ("junk", {"report": {"intervals": {now: {"message": forged.encode()}}, "failures": {},
                                           "out_of_range": {}},
                                "cpu": "x", "established": 10_000, "final": True}):
        client.send(Message("stats", {**locust_part, "swarmbench": swarmbench}, "rogue_never_registered"))
    client.send(Message("swarmbench_established", {"count": 10_000}, "rogue_never_registered"))
    time.sleep(0.5)
client.close()
"""


def test_a_process_that_never_registered_cannot_fail_or_forge_the_run(start: Any, tmp_path: Path) -> None:
    server = start("asyncio", backlog=128)
    port = free_port()
    rogue = subprocess.Popen([sys.executable, "-c", ROGUE, str(port), "12"], cwd=ROOT, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        result = run_locust("chat.py", tmp_path, server.url, "--processes", "2", "--think-time", "0.01",
                            "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                            "--master-host", "127.0.0.1", "--master-port", str(port), users=4, seconds=5)  # fmt: skip
    finally:
        kill_group(rogue)
    assert rogue.stdout is not None and "Traceback" not in rogue.stdout.read()
    assert result.code == 0, result.output[-3000:]
    hdr = result.hdr
    assert hdr is not None
    message = hdr.names["message"]
    assert message.count > 0 and message.max_us < 900_000, message  # the real ones only, never the forged
    assert_counts_match(result)  # and the histograms count what the registered workers' Locust stats counted
    assert hdr.users_established == 4  # not the forged 10,000
    assert len([p for p in hdr.generator.processes if p.get("role") == "worker"]) == 2
    # dropped, and said once per sender, not twice a second
    dropped = [line for line in result.output.splitlines() if "rogue_never_registered" in line and "Swarmbench" in line]
    assert len(dropped) == 1, dropped
