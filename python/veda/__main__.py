"""`python -m veda ARGS`: the bundled `veda` CLI, as the console script `veda ARGS` runs it."""

import sys

from veda_cli import main

sys.exit(main())
