"""The `veda` command-line tool inside the package: veda/bin/veda, built and installed by
`pip install .` (tools/veda; pyproject.toml). The console script `veda` and `python -m veda` run it
with their own arguments; veda.calibrate runs its `calibrate` subcommand.

A package of its own, next to veda, so that the console script starts without importing veda
(whose import loads torch and registers the custom ops: ~2 s before the CLI could print --help):
the binary is found through veda's import spec, which runs none of its code.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def _package_folder() -> Path:
    """veda's folder (veda/__init__.py's), or this package's sibling when veda is not found."""
    spec = importlib.util.find_spec("veda")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else Path(__file__).resolve().parent.parent / "veda"


BINARY = _package_folder().resolve() / "bin" / "veda"


def executable() -> Path:
    """The bundled binary; FileNotFoundError saying how to get it when it is missing."""
    if not BINARY.is_file():
        raise FileNotFoundError(
            f"the veda CLI is not in the installed package: expected the binary {BINARY}, which "
            "`pip install .` builds from tools/veda (a CMake build has it as "
            "build/tools/veda/veda); reinstall the package from the repository"
        )
    if not os.access(BINARY, os.X_OK):
        raise PermissionError(f"the veda CLI {BINARY} is not executable; reinstall the package")
    return BINARY


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the bundled CLI with `argv` (default: this process's arguments) and returns its exit
    status: 128 + N when signal N ended it (as a shell reports it), 127 when it is missing."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        binary = executable()
    except OSError as error:
        print(f"veda: error: {error}", file=sys.stderr)
        return 127
    # A child process rather than exec, so that the status comes back to the caller of main().
    with subprocess.Popen([str(binary), *arguments]) as process:
        try:
            status = process.wait()
        except KeyboardInterrupt:
            # The terminal sent SIGINT to the child too; let it finish its own way.
            status = process.wait()
    return 128 - status if status < 0 else status
