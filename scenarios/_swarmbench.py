"""Imported first by every shipped scenario: ``harness`` and ``server`` are Swarmbench's, wherever Locust runs.

``locust -f scenarios/chat.py`` started in a project with its own ``harness/`` or ``server/``
package would import that project's: before it loads a locustfile Locust puts the working
directory first on ``sys.path``, behind only the locustfile's own folder (this one). Found there,
this module imports Swarmbench's packages from the folder above it, by location, without touching
``sys.path``; later imports of those names, and of their submodules, come from ``sys.modules``.
Names already imported are left alone (``swarmbench`` starts Locust through
:mod:`harness.locust_main`, which binds them before Locust runs, for any scenario file).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

#: The folder holding Swarmbench's packages: the checkout, or site-packages when installed.
HOME = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "server")


def bind(name: str) -> None:
    """Import Swarmbench's package ``name`` from :data:`HOME` unless a package of that name is imported already."""
    if name in sys.modules:
        return
    folder = HOME / name
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None or not folder.is_dir():
        raise ImportError(f"Swarmbench's {name!r} package is not in {HOME}", name=name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


for _name in PACKAGES:
    bind(_name)
