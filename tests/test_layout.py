"""The servers' layout (issue 9), checked from their source with no sockets: one contract, one path.

Fast tier: nothing here starts a process or opens a socket.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import server.base
import server.blocking
import server.pool
import server.prefork
import server.threaded
from server.base import ServerOptions, Session
from server.protocol import ServerConnection

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server"


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
    """The thread-based designs' shared code is in blocking.py (as socketserver's ThreadingMixIn), not in
    the contract every design takes (base.py), and pool.py takes it from there, not from threaded.py."""
    assert "server.threaded" not in imported_modules(SERVER / "pool.py")
    shared = {"serve_blocking", "ClientRegistry", "BlockingServer"}
    assert shared <= set(vars(server.blocking))
    assert not shared & set(vars(server.base))
    assert not {"accept_loop", "serve_client"} & set(vars(server.base.BaseServer))
    for variant in (server.pool.PoolServer, server.threaded.ThreadedServer):
        assert issubclass(variant, server.blocking.BlockingServer), variant
        assert "server.blocking" in imported_modules(SERVER / f"{variant.__module__.rsplit('.', 1)[1]}.py")
    for event_driven in ("selecting.py", "aio.py", "prefork.py"):
        assert "server.blocking" not in imported_modules(SERVER / event_driven), event_driven


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


def _collect(*paths: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-p", "conftest", *map(str, paths)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "tests"), **(env or {})})  # fmt: skip


@pytest.mark.slow  # three pytest processes
def test_collecting_a_test_that_imports_gevent_is_refused(tmp_path: Path) -> None:
    """The guard in conftest.py that keeps the pytest process unpatched (collect the suite: no gevent, no Locust)."""
    patched = tmp_path / "test_patched.py"
    patched.write_text("import gevent\n\ndef test_nothing():\n    pass\n")
    plain = tmp_path / "test_plain.py"
    plain.write_text("def test_nothing():\n    pass\n")
    refused = _collect(patched)
    assert refused.returncode != 0 and "imported gevent into the pytest process" in refused.stdout + refused.stderr
    assert _collect(plain).returncode == 0  # (and the suite's own collection passes the guard in every run)


@pytest.mark.slow  # a pytest process
def test_a_forked_test_that_ends_its_module_tears_the_module_down(tmp_path: Path) -> None:
    """conftest.py runs a forked test's own setup in the child: the parent still ends the module before the next one's."""
    (tmp_path / "test_a.py").write_text("import pytest\n\ndef test_here():\n    pass\n\n"
                                        "@pytest.mark.forked\ndef test_last_forked():\n    pass\n")
    (tmp_path / "test_b.py").write_text("def test_next_module():\n    pass\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "conftest",
                          str(tmp_path / "test_a.py"), str(tmp_path / "test_b.py")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})  # fmt: skip
    assert run.returncode == 0 and "3 passed" in run.stdout, run.stdout[-2000:]


def test_the_run_watch_tells_loopback_listeners_from_the_rest() -> None:
    """conftest.py fails a run in which anything listened beyond loopback; its reading of the kernel's tables."""
    from conftest import outside_listeners

    header = "  sl  local_address rem_address   st\n"
    tcp = header + "".join(f"   0: {local} 00000000:0000 {state} 0\n" for local, state in [
        ("0100007F:1F40", "0A"),  # 127.0.0.1:8000, listening
        ("0200007F:15B5", "0A"),  # 127.0.0.2:5557
        ("00000000:15B5", "0A"),  # 0.0.0.0:5557: Locust's master without a bind host
        ("0A00000A:0050", "0A"),  # 10.0.0.10:80
        ("00000000:1F41", "01"),  # established, not listening
    ])  # fmt: skip
    assert outside_listeners(tcp) == {"00000000:5557", "0A00000A:80"}
    tcp6 = header + "".join(f"   0: {local} {'0' * 32}:0000 0A 0\n" for local in [
        "00000000000000000000000001000000:1F40",  # ::1
        "0000000000000000FFFF00000100007F:1F40",  # ::ffff:127.0.0.1
        "00000000000000000000000000000000:15B5",  # ::
    ])  # fmt: skip
    assert outside_listeners(tcp6) == {"00000000000000000000000000000000:5557"}


# -- the in-Locust code (harness/user): read with ast, never imported (it would patch this process) -----------
USER = ROOT / "harness" / "user"
#: The roles of a Locust process: classes, never strings to compare (harness.user.plugin).
ROLE_NAMES = {"local", "master", "worker"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def user_imports(path: Path) -> set[str]:
    """The harness.user modules ``path`` imports anywhere, ``TYPE_CHECKING`` blocks and functions included."""
    modules = {_module_name(p) for p in USER.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found.update(name for name in names if name in modules)  # from harness.user import client
            if node.module in modules and not any(name in modules for name in names):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
    return found - {_module_name(path)}


def test_no_import_circle_in_the_in_locust_code_not_even_for_types() -> None:
    graph = {_module_name(path): user_imports(path) for path in USER.glob("*.py")}
    assert graph["harness.user.plugin"] and graph["harness.user.client"]  # the reading itself works
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph.get(module, ())):
            assert state.get(other) != 1, "import circle: " + " -> ".join([*path[path.index(other):], other])
            if other not in state:
                visit(other, [*path, other])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_role_is_compared_as_a_string() -> None:
    for path in [*USER.glob("*.py"), *(ROOT / "scenarios").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                constants = [n.value for n in [node.left, *node.comparators] if isinstance(n, ast.Constant)]
                assert not ROLE_NAMES & set(filter(lambda v: isinstance(v, str), constants)), \
                    f"{path.name}:{node.lineno} compares a role as a string"


def _user_classes(trees: dict[Path, ast.Module]) -> list[tuple[Path, ast.ClassDef]]:
    """Every class that subclasses Locust's User, directly or through one of these files' classes."""
    users, found = {"User", "HttpUser", "FastHttpUser"}, []
    grew = True
    while grew:
        grew = False
        for path, tree in trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name not in users:
                    bases = {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases}
                    if bases & users:
                        users.add(node.name)
                        found.append((path, node))
                        grew = True
    return found


def _assigned(cls: ast.ClassDef) -> dict[str, int]:
    """Attribute names a class sets on its instances (``self.x = ...``) or declares without a value (``x: T``)."""
    names: dict[str, int] = {}
    for item in cls.body:
        if isinstance(item, ast.AnnAssign) and item.value is None and isinstance(item.target, ast.Name):
            names[item.target.id] = item.lineno
    for node in ast.walk(cls):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) and leaf.value.id == "self":
                    names[leaf.attr] = leaf.lineno
    return names


@pytest.mark.slow  # Locust is listed in a child process
def test_no_attribute_of_a_locust_user_shadows_a_method_of_locusts_user() -> None:
    """``TcpUser.run`` held the Run and hid Locust's ``User.run()`` on every user: no name of the kind again."""
    listing = subprocess.run(  # Locust is imported in a child: this process must stay unpatched
        [sys.executable, "-c", "import inspect, json, locust; "
         "print(json.dumps([n for n, v in inspect.getmembers(locust.User) if isinstance(v, property) or callable(v) and not inspect.isclass(v)]))"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    methods = set(json.loads(listing.stdout))
    assert {"run", "start", "stop", "on_start", "on_stop"} <= methods
    trees = {path: ast.parse(path.read_text()) for path in [*USER.glob("*.py"), *(ROOT / "scenarios").glob("*.py")]}
    classes = _user_classes(trees)
    assert "TcpUser" in {cls.name for _, cls in classes}
    for path, cls in classes:
        shadowing = {name: line for name, line in _assigned(cls).items() if name in methods}
        assert not shadowing, f"{path.name}: {cls.name} sets {shadowing} (Locust's User methods)"


def test_no_source_file_over_400_lines() -> None:
    """Issue 23: a file over 400 lines holds more than one topic; the tests' own files included."""
    paths = [p for folder in ("harness", "scenarios", "reports", "bench", "server", "tests")
             for p in (ROOT / folder).rglob("*.py")]  # fmt: skip
    long = {str(p.relative_to(ROOT)): n for p in paths if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"files over 400 lines: {long}"


#: The command line composes everything: it alone may build a report (lazily, so matplotlib loads only then).
REPORT_USERS = {"harness/cli.py"}


def test_no_harness_module_imports_reports() -> None:
    """``reports -> harness.results``, never harness -> reports: how a cell is read lives in harness.results.reading."""
    importing = set()
    for path in (ROOT / "harness").rglob("*.py"):
        if any(module.split(".")[0] == "reports" for module in imported_modules(path)):
            importing.add(str(path.relative_to(ROOT)))
    assert importing <= REPORT_USERS, f"harness modules that import reports: {sorted(importing - REPORT_USERS)}"
    assert "reports" in {m.split(".")[0] for m in imported_modules(ROOT / "harness" / "cli.py")}  # the reading works
