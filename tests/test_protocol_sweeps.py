"""Issue 11's "done when": whole sweeps with --check errors==0 against a line server and a TLS variant.

(The redis-server sweep is tests/test_redis_sweep.py.) Every target is on 127.0.0.1; the line
server and the test CA are the fixtures of test_profiles.py and test_tls.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme
from test_profiles import line_server  # noqa: F401  (a fixture)
from test_tls import ca, cert_files  # noqa: F401  (fixtures)

from harness.results import load_run

pytestmark = pytest.mark.slow

SHORT = ["--users", "1,3", "--duration", "1s", "--warmup", "0s", "--establish-timeout", "10s", "--quiet", "--no-report"]


def sweep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "sweep", *SHORT, *args, "--check", "errors==0"],
                          capture_output=True, text=True, timeout=150)  # fmt: skip


def test_a_line_protocol_sweep_has_no_errors(line_server: str, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "line"
    result = sweep("--target", line_server, "--protocol", "line", "--message", "hello line", "--out", str(out))
    assert result.returncode == 0, result.stderr
    manifest, cells = load_run(out)
    assert manifest is not None and manifest.outcome == "complete"
    assert [c.users for c in cells] == [1, 3] and all(c.status == "ok" and c.messages > 0 for c in cells)


def test_a_tls_sweep_against_a_tls_variant_has_no_errors(
    start: Any, ca: trustme.CA, cert_files: tuple[str, str], tmp_path: Path  # noqa: F811
) -> None:
    cert, key = cert_files
    server = start("asyncio", backlog=128, extra_args=("--tls-cert", cert, "--tls-key", key))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    out = tmp_path / "tls"
    result = sweep("--target", f"127.0.0.1:{server.port}", "--pid", str(server.pid), "--tls", "--tls-ca", str(ca_file),
                   "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    _, cells = load_run(out)
    assert all(c.status == "ok" and c.messages > 0 for c in cells)
    assert all(c.latency["tls_handshake"].count >= c.users for c in cells)  # every connection's handshake timed
