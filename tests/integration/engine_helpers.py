"""Shared helpers for the engine's integration tests: run `python -m kvcache` and mpirun for real."""

import os
import shutil
import subprocess
import sys

from kvcache.result_reader import load_result

ENGINE = [sys.executable, "-m", "kvcache"]
SHORT_RUN = ["--model", "tiny-1b", "--num-users", "2", "--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--quiet"]


def kvcache(*args, timeout=120, **kwargs):
    return subprocess.run(
        ENGINE + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def load(path):
    """A result the engine wrote, read (and checked against the result/v1 schema) by the engine's one reader."""
    return load_result(str(path))


def mpirun_argv(ranks):
    """Debian's Open MPI: root needs --allow-run-as-root; more ranks than cores needs --oversubscribe."""
    argv = [shutil.which("mpirun"), "-n", str(ranks), "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        argv.append("--allow-run-as-root")
    return argv + ["-x", "PATH"]


def leftovers(directory):
    """Everything under a directory, relative paths (empty when a run cleaned up after itself)."""
    found = []
    for root, dirs, files in os.walk(directory):
        found += [os.path.relpath(os.path.join(root, n), directory) for n in dirs + files]
    return sorted(found)
