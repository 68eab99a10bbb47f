"""Helpers shared by the bench scripts: how to start the engine from this checkout, and small statistics."""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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


def storage_only(model: str, num_users: int, duration: float) -> List[str]:
    """`kvcache run` options of a bench workload that only the storage tier serves (no GPU or CPU tier)."""
    return ["--model", model, "--num-users", str(num_users), "--gpu-mem-gb", "0", "--cpu-mem-gb", "0",
            "--duration", str(duration)]  # fmt: skip


def mpirun_prefix(mpirun: str, ranks: int) -> List[str]:
    """Open MPI on this host, as root too, the checkout's PYTHONPATH passed to every rank."""
    return [mpirun, "--allow-run-as-root", "--oversubscribe", "-n", str(ranks), "-x", "PYTHONPATH"]


def add_engine_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """--engine-arg (repeatable) and --python: how a bench script's engine run is started."""
    parser.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="ARG",
        help=f"extra argument for `kvcache run` (repeat it; e.g. {example})",
    )
    parser.add_argument("--python", default=sys.executable, help="Python that runs the engine")


def measured_run(command: Sequence[str], output: str, stderr=None):
    """Run the engine as a child and return (its rusage, wall seconds, the result it wrote). os.wait4 gives
    exactly this child's resource usage (ru_maxrss in KiB on Linux), the kernel accounting `time -v` prints;
    under mpirun that includes the ranks it waited for. `stderr`: a file for the child's stderr (else ours)."""
    print("running:", " ".join(command), flush=True)
    started = time.perf_counter()
    child = subprocess.Popen(list(command), env=engine_env(), stdout=subprocess.DEVNULL, stderr=stderr)
    _pid, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode != 0 or not os.path.exists(output):
        die(f"engine run failed (exit {child.returncode})")
    result = load_json(output)
    if result["status"] != "ok":
        die(f"engine run failed: {result.get('error')}")
    return usage, wall, result


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


def require_program(program: str, package: str) -> None:
    """Exit with the package that brings `program` when it is not on PATH."""
    if shutil.which(program) is None:
        die(f"{program} not found (apt-get install {package})")


def die(message: str) -> None:
    sys.stderr.write(f"{os.path.basename(sys.argv[0])}: error: {message}\n")
    sys.exit(1)
