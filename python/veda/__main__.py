"""`python -m veda ARGS`: the bundled `veda` CLI, as the console script `veda ARGS` runs it."""

import sys

from ._cli import main

sys.exit(main())
