"""kvcache_command end to end: Ansible builds the argv for 2 processes on localhost, Open MPI really runs it.

The module runs through the `ansible` command line (collection on a temporary collections path),
exactly as a playbook would call it; the argv it returns is then executed without a shell.
"""

import json
import os
import subprocess
import sys

import pytest
from ansible_cli import ROOT, ansible_binary, collections_path, open_mpi_mpirun

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def run_module(tmp_path, args, env):
    """Run storagebench.kvcache.kvcache_command on localhost in check mode; return its result."""
    ansible = ansible_binary()
    if not ansible:
        pytest.skip("the ansible command line is not installed")
    env = dict(
        env,
        ANSIBLE_COLLECTIONS_PATH=collections_path(tmp_path),
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_NOCOLOR="true",
    )
    command = [ansible, "localhost", "--check", "-m", "storagebench.kvcache.kvcache_command", "-a", json.dumps(args)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The ad-hoc output is "localhost | SUCCESS => {...the module's result as JSON...}".
    header, _sep, body = proc.stdout.partition(" => ")
    assert header.strip().startswith("localhost | SUCCESS"), proc.stdout
    return json.loads(body)


def test_two_processes_on_localhost_really_run_under_open_mpi(tmp_path):
    mpirun = open_mpi_mpirun()
    if not mpirun:
        pytest.skip("Open MPI's mpirun is not installed")
    pytest.importorskip("mpi4py")

    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    output = tmp_path / "result.json"
    # The engine must be importable by this interpreter on every rank, installed or not.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    as_root = os.geteuid() == 0
    args = {
        "command": "run",
        "exec_type": "mpi",
        "hosts": ["localhost"],
        "num_processes": 2,
        "mpi_bin": mpirun,
        "allow_run_as_root": as_root,
        "python": sys.executable,
        "env": {"PYTHONPATH": env["PYTHONPATH"]},
        "model": "tiny-1b",
        "num_users": 2,
        "duration": 3,
        "gpu_mem_gb": 0,
        "cpu_mem_gb": 0,
        "cache_dir": str(cache_dir),
        "output": str(output),
        "extra_args": {"quiet": True},
    }
    result = run_module(tmp_path, args, env)

    expected_prefix = [mpirun, "-n", "2", "-host", "localhost:2", "--bind-to", "none", "--map-by", "socket"]
    expected_prefix += ["--allow-run-as-root"] if as_root else []
    expected_prefix += ["-x", "PYTHONPATH=" + env["PYTHONPATH"]]
    assert result["mpi_prefix"] == expected_prefix
    assert result["argv"] == expected_prefix + result["engine_argv"]
    assert result["engine_argv"][:4] == [sys.executable, "-m", "kvcache", "run"]
    assert result["mpi_flavor"] == "openmpi"
    assert result["num_processes"] == 2
    assert result["slots"] == {"localhost": 2}
    assert result["changed"] is False

    proc = subprocess.run(result["argv"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(output, encoding="utf-8") as handle:
        report = json.load(handle)
    assert report["status"] == "ok"
    assert report["ranks"] == 2
    assert len(report["per_rank"]) == 2
