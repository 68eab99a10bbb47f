"""Running the collection's playbooks against the fleet: inventory, environment, result lookup."""

import glob
import json
import os
import subprocess
import sys

from fleet import SHARED_CACHE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
ENGINE_PYTHON = "/opt/storagebench-kvcache/venv/bin/python"  # where the deps role installs the engine (kvcache_venv)

# Open MPI over ssh between the namespace hosts, TCP pinned to the test subnet: no shared-memory
# shortcut may cross "hosts", and no other interface is ever used.
FLEET_MPI_PARAMS = [
    "--mca", "pml", "ob1", "--mca", "btl", "tcp,self",
    "--mca", "btl_tcp_if_include", "10.77.0.0/24", "--mca", "oob_tcp_if_include", "10.77.0.0/24",
]  # fmt: skip


def collections_path(directory):
    """A collections path holding storagebench.kvcache as a link to this checkout."""
    link = os.path.join(directory, "ansible_collections", "storagebench", "kvcache")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(REPO, link)
    return directory


def write_inventory(fleet, path, hosts=None, extra_hosts=(), **overrides):
    """The fleet's inventory with a short workload: 2 ranks per host, the private cache at the shared path."""
    variables = {
        "ansible_user": "root",
        "ansible_ssh_common_args": f"-F {fleet.ssh_config}",
        "ansible_python_interpreter": "/usr/bin/python3",
        "kvcache_model": "tiny-1b",
        "kvcache_num_users": 2,
        "kvcache_duration": 4,
        "kvcache_gpu_mem_gb": 0,
        "kvcache_cpu_mem_gb": 0,
        "kvcache_processes_per_host": 2,
        "kvcache_cache_dir": SHARED_CACHE,
        "run_ssh_command": f"ssh -F {fleet.ssh_config}",
        "run_mpi_params": json.dumps(FLEET_MPI_PARAMS),
        # mpirun gets addresses: the namespace hosts' names resolve only through the ssh config.
        "run_mpi_hosts": "{{ ansible_play_hosts | map('extract', hostvars, 'ansible_host') | list }}",
    }
    variables.update(overrides)
    names = hosts if hosts is not None else list(zip(fleet.names, fleet.addresses))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[kvcache]\n")
        for name, address in list(names) + list(extra_hosts):
            handle.write(f"{name} ansible_host={address}\n")
        handle.write("\n[kvcache:vars]\n")
        for key, value in variables.items():
            handle.write(f"{key}={value}\n")
    return path


def ansible_environment(fleet, collections):
    env = dict(os.environ)
    env.update(
        {
            "PATH": BIN + os.pathsep + env.get("PATH", ""),
            "ANSIBLE_COLLECTIONS_PATH": collections,
            "ANSIBLE_SSH_CONTROL_PATH_DIR": fleet.control_dir,  # the fleet's teardown closes these masters
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORKS": "10",
        }
    )
    return env


def playbook_argv(inventory, results, *extra):
    return [
        os.path.join(BIN, "ansible-playbook"),
        "-i",
        str(inventory),
        os.path.join(REPO, "playbooks", "kvcache_run.yml"),
        "-e",
        f"kvcache_results_dir={results}",
        *extra,
    ]


def run_playbook(fleet, collections, inventory, results, *extra, timeout=600):
    return subprocess.run(
        playbook_argv(inventory, results, *extra),
        env=ansible_environment(fleet, collections),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def result_files(results):
    """Result files of the runs, one per run (the `latest` link is not a run)."""
    found = glob.glob(os.path.join(str(results), "*", "result.json"))
    return sorted(path for path in found if not os.path.islink(os.path.dirname(path)))


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
