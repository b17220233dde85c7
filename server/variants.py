"""The one registry of server variants: name -> class.

Adding a design means adding one module and one line here; the command line
(``python -m server``) and the harness both read this dict.
"""

from __future__ import annotations

from server.aio import AsyncioServer
from server.base import BaseServer
from server.pool import PoolServer
from server.prefork import PreforkServer
from server.selecting import SelectorServer
from server.threaded import ThreadedServer

VARIANTS: dict[str, type[BaseServer]] = {
    ThreadedServer.name: ThreadedServer,
    PoolServer.name: PoolServer,
    SelectorServer.name: SelectorServer,
    AsyncioServer.name: AsyncioServer,
    PreforkServer.name: PreforkServer,
}
