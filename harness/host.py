"""What a result must say about where it was measured, and the process limits a sweep needs."""

from __future__ import annotations

import os
import platform
import resource
import socket
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("swarmbench", "locust", "gevent", "hdrhistogram", "psutil", "uvloop", "matplotlib", "jinja2", "rich")
ROOT = Path(__file__).resolve().parent.parent


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def host_info() -> dict[str, object]:
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    info: dict[str, object] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in load],
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_kib"] = int(f.readline().split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return info


def git_commit() -> str | None:
    if not (ROOT / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


#: How far a run raises its descriptor limit, at most (Locust's own figure).
NOFILE_WANTED = 1_048_576


def nofile_reachable(wanted: int = NOFILE_WANTED) -> int:
    """The descriptor limit :func:`raise_nofile_limit` would reach, found without changing it (to refuse
    arguments that need more before any work)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(soft, min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted)


def raise_nofile_limit(wanted: int = NOFILE_WANTED) -> int:
    """Raise the soft RLIMIT_NOFILE toward the hard limit (children inherit it), as Locust does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft
