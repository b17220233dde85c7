"""``python -P -m harness.locust_main ARGS``: Locust's own command line, with Swarmbench's packages bound first.

Every Locust process the harness starts (a sweep's cells, ``swarmbench worker``) runs this
instead of ``python -m locust``, for two reasons:

- **Any working directory.** Before it loads a locustfile, Locust puts the working directory
  first on ``sys.path`` (``locust.util.load_locustfile``), so in a project with its own
  ``server/`` or ``harness/`` package (common names) the scenario's ``from harness.user import
  TcpUser`` would import that project's package. Started with ``-P`` the working directory is not
  on ``sys.path`` yet, so the imports below find Swarmbench's packages; once in ``sys.modules``
  they stay bound, and their submodules are found through their own ``__path__``, whatever
  ``sys.path`` says later. The working directory itself is kept: a scenario may open files
  relative to it, and relative paths in ``--locust-arg`` keep their meaning.
- **A master that went silent.** A Locust worker quits when its master has sent no heartbeat for
  ``locust.runners.MASTER_HEARTBEAT_TIMEOUT`` (60 s, not an option). ``swarmbench worker`` sets
  :data:`MASTER_SILENCE_ENV` from its ``--master-timeout`` so that a stopped or vanished master
  does not leave its workers loading the target for a minute.

Locust's own arguments, exit codes and output are unchanged.
"""

from __future__ import annotations

import importlib
import math
import os

#: Seconds without a heartbeat from the master after which a Locust worker quits (unset: Locust's 60 s).
MASTER_SILENCE_ENV = "SWARMBENCH_MASTER_SILENCE_S"
#: Swarmbench's top-level packages (pyproject.toml), bound before Locust touches ``sys.path``.
PACKAGES = ("harness", "server", "scenarios", "reports")


def bind_packages() -> None:
    """Import Swarmbench's top-level packages now, while ``sys.path`` has no working directory (``-P``)."""
    for name in PACKAGES:
        importlib.import_module(name)


def master_silence_s() -> float | None:
    """:data:`MASTER_SILENCE_ENV` as seconds, or None when unset or not a positive number."""
    try:
        value = float(os.environ.get(MASTER_SILENCE_ENV, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def main() -> None:
    bind_packages()
    from locust import runners  # imports locust: gevent patches the process here, as `python -m locust` does
    from locust.main import main as locust_main

    silence = master_silence_s()
    if silence is not None and hasattr(runners, "MASTER_HEARTBEAT_TIMEOUT"):
        runners.MASTER_HEARTBEAT_TIMEOUT = silence  # read at every check (WorkerRunner.heartbeat_timeout_checker)
    locust_main()


if __name__ == "__main__":
    main()
