"""kvcache_command through the `ansible` command line against hostile input: refused before anything runs or changes.

The module runs out of process on this machine, as in a playbook (no check mode, so it would write
its hostfile if it accepted the input); the hostfile it does write is then read by Open MPI itself.
"""

import json
import os
import re
import subprocess
import sys

import pytest
from ansible_cli import ROOT, ansible_binary, collections_path, open_mpi_mpirun

pytestmark = [pytest.mark.slow]
MARKER = "# written by storagebench.kvcache.kvcache_command"


def ansible_module(tmp_path, args):
    """(succeeded, result) of storagebench.kvcache.kvcache_command run on localhost with `args`."""
    ansible = ansible_binary()
    if not ansible:
        pytest.skip("the ansible command line is not installed")
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=collections_path(tmp_path),
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_NOCOLOR="true",
        PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
    )
    env.pop("ANSIBLE_CONFIG", None)
    args = dict({"python": sys.executable, "model": "tiny-1b"}, **args)
    command = [ansible, "localhost", "-m", "storagebench.kvcache.kvcache_command", "-a", json.dumps(args)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120, check=False)
    # The ad-hoc result is "localhost | SUCCESS|CHANGED|FAILED! => {...}", after an [ERROR] summary on a failure.
    found = re.search(r"^localhost \| (SUCCESS|CHANGED|FAILED!) => (\{.*)", done.stdout, re.MULTILINE | re.DOTALL)
    assert found, done.stdout + done.stderr
    return found.group(1) != "FAILED!", json.loads(found.group(2))


def test_a_bare_word_in_mpi_params_fails_the_task(tmp_path):
    ok, result = ansible_module(tmp_path, {"exec_type": "mpi", "mpi_flavor": "openmpi", "hosts": ["localhost"],
                                           "mpi_params": ["echo", "INJECTED"]})  # fmt: skip
    assert not ok
    assert result["msg"].startswith("mpi_params: 'echo'")
    assert "argv" not in result


def test_a_hostfile_the_module_did_not_write_is_left_alone(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    precious = files / "hosts"
    precious.write_text("precious user data\n")
    ok, result = ansible_module(tmp_path, {"exec_type": "mpi", "mpi_flavor": "openmpi", "hosts": ["h1", "h2"],
                                           "hostfile": str(precious)})  # fmt: skip
    assert not ok
    assert result["msg"].startswith("hostfile: ")
    assert precious.read_text() == "precious user data\n"
    assert os.listdir(files) == ["hosts"]


def test_open_mpi_reads_the_marked_hostfile_the_module_writes(tmp_path):
    mpirun = open_mpi_mpirun()
    if not mpirun:
        pytest.skip("Open MPI's mpirun is not installed")
    path = tmp_path / "hosts"
    ok, result = ansible_module(tmp_path, {"exec_type": "mpi", "mpi_bin": mpirun, "hosts": ["localhost:3"],
                                           "hostfile": str(path), "allow_run_as_root": os.geteuid() == 0})  # fmt: skip
    assert ok, result
    assert result["changed"] is True
    assert path.read_text().splitlines() == [MARKER, "localhost slots=3"]
    prefix = result["mpi_prefix"]
    assert prefix[prefix.index("--hostfile") + 1] == str(path)
    # The marker is a comment to Open MPI and the slots line is read: three ranks start on a 2-core machine
    # without oversubscribing.
    done = subprocess.run(prefix + ["hostname"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(done.stdout.splitlines()) == 3
