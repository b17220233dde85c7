"""The servers' layout (issue 9), checked from their source with no sockets: one contract, one path.

Fast tier: nothing here starts a process or opens a socket.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import server.base
import server.prefork
from server.base import ServerOptions, Session
from server.protocol import ServerConnection

SERVER = Path(__file__).resolve().parent.parent / "server"


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def function(path: Path, qualname: str) -> ast.FunctionDef:
    cls, name = qualname.split(".")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == name:
                    return item
    raise AssertionError(f"{qualname} not found in {path}")


def test_server_imports_neither_harness_nor_locust() -> None:
    for path in SERVER.glob("*.py"):
        roots = {module.split(".")[0] for module in imported_modules(path)}
        assert not roots & {"harness", "locust", "gevent"}, path


def test_variants_build_on_the_contract_not_on_the_reference() -> None:
    """pool.py takes serve_blocking and ClientRegistry from base.py, not from threaded.py."""
    assert "server.threaded" not in imported_modules(SERVER / "pool.py")
    assert {"serve_blocking", "ClientRegistry"} <= set(vars(server.base))


def test_one_listener_factory() -> None:
    """BaseServer.open() and prefork's workers listen through base.make_listener, and nothing else."""
    assert not hasattr(server.prefork, "reuseport_listener")
    assert server.prefork.make_listener is server.base.make_listener
    for path in SERVER.glob("*.py"):
        calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute) and n.attr == "listen"]
        assert not calls or path.name == "base.py", f"{path.name} calls listen() itself"


def test_one_definition_of_the_work() -> None:
    """The protocol's per-piece step uses process() and is_quit(): no second copy of either."""
    piece = function(SERVER / "protocol.py", "ServerConnection._piece")
    names = {n.id for n in ast.walk(piece) if isinstance(n, ast.Name)}
    assert {"process", "is_quit"} <= names
    assert not any(isinstance(n, ast.Constant) and n.value == "Hello " for n in ast.walk(piece))
    assert ServerConnection().receive_data(b"Zack")[0].result == "Hello ZACK"


def test_no_test_only_delay_in_production_code() -> None:
    assert "delay" not in {f.name for f in dataclasses.fields(ServerOptions)}
    assert "delay" not in Session.__slots__
    for path in SERVER.glob("*.py"):
        assert "delay_ms" not in path.read_text() and "delay-ms" not in path.read_text(), path
    feed = function(SERVER / "base.py", "Session.feed")
    assert not any(isinstance(n, ast.Attribute) and n.attr == "sleep" for n in ast.walk(feed))
