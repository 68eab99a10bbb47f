"""The kvcache_command example from issue 4, exactly as a user types it, through the `ansible` command line.

    ansible localhost -m storagebench.kvcache.kvcache_command \\
        -a 'command=run exec_type=mpi hosts=h1,h2 model=llama3.1-8b' --check

The collection is found through a temporary ANSIBLE_COLLECTIONS_PATH that holds
ansible_collections/storagebench/kvcache as a link to this checkout. ansible-core has no json stdout
callback of its own (it lives in ansible.posix), so the module's result is read from the ad-hoc
output, "localhost | SUCCESS => {...}".
"""

import json
import os
import subprocess

import pytest
from ansible_cli import ansible_binary, collections_path, open_mpi_mpirun

EXAMPLE_ARGS = "command=run exec_type=mpi hosts=h1,h2 model=llama3.1-8b"
EXPECTED_PREFIX = ["mpirun", "-n", "2", "-host", "h1:1,h2:1", "--bind-to", "none", "--map-by", "node"]


def test_issue_4_example_builds_the_open_mpi_prefix(tmp_path):
    if not open_mpi_mpirun():
        pytest.skip("Open MPI's mpirun is not installed")
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=collections_path(tmp_path),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
    )
    env.pop("ANSIBLE_CONFIG", None)
    command = [
        ansible_binary(),
        "localhost",
        "-m",
        "storagebench.kvcache.kvcache_command",
        "-a",
        EXAMPLE_ARGS,
        "--check",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    header, _sep, body = done.stdout.partition(" => ")
    assert header.strip() == "localhost | SUCCESS", done.stdout
    result = json.loads(body)
    assert result["argv"][: len(EXPECTED_PREFIX)] == EXPECTED_PREFIX
    assert result["cmd"].startswith("mpirun -n 2 -host h1:1,h2:1 --bind-to none --map-by node ")
    assert result["argv"][len(EXPECTED_PREFIX) :][-5:] == ["-m", "kvcache", "run", "--model", "llama3.1-8b"]
    assert result["mpi_flavor"] == "openmpi" and result["num_processes"] == 2
    assert result["hostfile"] is None and result["changed"] is False
