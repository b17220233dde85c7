"""Master and workers of a distributed sweep: who joined, and the word that the sweep ends.

Loaded as a second locustfile (``-f SCENARIO,.../harness/user/sweep_link.py``) by
the sweep's master when it expects workers, and by every Locust worker that
``swarmbench worker`` starts; it adds no user class, so a scenario is unchanged.

- On the master it logs each worker as it joins (``swarmbench: worker joined (1
  of 2)``), so a cell that gave up waiting can say how many came; on the sweep's
  last cell (``--swarmbench-last-cell``) it sends :data:`SWEEP_END` to every
  worker at ``test_start``, once all have joined.
- On a worker started by ``swarmbench worker`` (``$SWARMBENCH_WORKER_STATE`` names
  a folder) it leaves two marks there: a cell started, the sweep ends. The loop
  outside Locust reads them when the worker exits and starts it again or stops.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from locust import events
from locust.runners import MasterRunner, WorkerRunner

LOG = logging.getLogger("swarmbench")
SWEEP_END = "swarmbench_sweep_end"
STATE_ENV = "SWARMBENCH_WORKER_STATE"
CELL_STARTED = "cell-started"
SWEEP_ENDED = "sweep-ended"


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    parser.add_argument(
        "--swarmbench-last-cell", action="store_true", default=False, include_in_web_ui=False,
        help="(set by swarmbench sweep) the sweep's last cell: tell every worker the sweep ends",
    )  # fmt: skip


def mark(folder: str, name: str) -> None:
    """An empty file: the loop only asks whether it exists."""
    try:
        Path(folder, name).touch()
    except OSError as exc:
        LOG.warning("swarmbench: cannot mark %s in %s: %s", name, folder, exc)


@events.init.add_listener
def _on_init(environment: Any, runner: Any = None, **_kw: Any) -> None:
    if isinstance(runner, MasterRunner):
        expected = getattr(environment.parsed_options, "expect_workers", 0)
        joined: set[str] = set()

        def on_connect(client_id: str, **_kw: Any) -> None:
            joined.add(client_id)
            LOG.warning("swarmbench: worker joined (%d of %d)", len(joined), expected)

        def on_test_start(**_kw: Any) -> None:
            runner.send_message(SWEEP_END)

        environment.events.worker_connect.add_listener(on_connect)
        if getattr(environment.parsed_options, "swarmbench_last_cell", False):
            environment.events.test_start.add_listener(on_test_start)
    elif isinstance(runner, WorkerRunner):
        folder = os.environ.get(STATE_ENV)
        if not folder:
            return
        runner.register_message(SWEEP_END, lambda **_kw: mark(folder, SWEEP_ENDED))
        environment.events.test_start.add_listener(lambda **_kw: mark(folder, CELL_STARTED))
