"""``python -m harness`` is ``swarmbench``."""

import sys

from harness.cli import main

sys.exit(main())
