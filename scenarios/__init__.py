"""The shipped scenarios (Locust loads each by path, as a top-level module).

Each imports ``_swarmbench`` first (:mod:`scenarios._swarmbench`), found beside it when Locust
loads it; imported as a package module instead (``import scenarios.chat``), the name is this one.
"""

import sys

from . import _swarmbench

sys.modules.setdefault("_swarmbench", _swarmbench)
