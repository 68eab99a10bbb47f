"""Helpers shared by the bench scripts: how to start the engine from this checkout, and small statistics."""

import json
import os
import shutil
import statistics
import sys
import tempfile
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the engine's package from this checkout, installed or not (as engine_env does)

# The bench scripts take the units from here.
from kvcache.units import GIB, MIB  # noqa: E402, F401  pylint: disable=wrong-import-position,unused-import


def engine_env() -> Dict[str, str]:
    """The environment for `python -m kvcache`: this checkout first on PYTHONPATH, so the engine
    runs from the working tree whether or not it is installed in the venv."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def engine_command(args: Sequence[str], python: Optional[str] = None) -> List[str]:
    return [python or sys.executable, "-m", "kvcache", "run", *args]


@contextmanager
def work_directory(chosen: Optional[str], prefix: str) -> Iterator[str]:
    """A fresh directory made inside `chosen` (which must exist), or under /var/tmp, removed at the end: the
    benchmark deletes only what it created. /var/tmp, not /tmp: /tmp may be tmpfs, which is RAM, not storage."""
    if chosen and not os.path.isdir(chosen):
        print(f"--dir: {chosen} does not exist or is not a directory", file=sys.stderr)
        raise SystemExit(2)
    path = tempfile.mkdtemp(prefix=prefix, dir=os.path.abspath(chosen) if chosen else "/var/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def spread(values: Sequence[float]) -> str:
    """'median (min .. max)' with 2 decimals."""
    return f"{statistics.median(values):.2f} ({min(values):.2f} .. {max(values):.2f})"


def die(message: str) -> None:
    sys.stderr.write(f"{os.path.basename(sys.argv[0])}: error: {message}\n")
    sys.exit(1)
