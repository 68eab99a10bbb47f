"""The deps role on hosts that share the venv's filesystem installs it from one of them, and in parallel elsewhere.

Real ansible-playbook on this machine: three inventory aliases of localhost (local connection), so a directory they
are given is one real shared filesystem. alpha and beta share one venv and source directory, gamma has its own. The
role's engine tasks (tasks_from engine.yml, after os_vars.yml; the OS packages are this machine's already).
"""

import os
import re
import stat
import subprocess

import pytest
import yaml
from ansible_cli import clean_environment, collections_path, playbook_binary

pytestmark = pytest.mark.slow  # two venvs from scratch (about a minute)

PLAY = """
- name: The deps role's venv on hosts that may share it
  hosts: all
  gather_facts: false
  tasks:
    - name: Load the deps role's OS variables
      ansible.builtin.include_role:
        name: storagebench.kvcache.deps
        tasks_from: os_vars.yml

    - name: Install the engine and mpi4py in the venv
      ansible.builtin.include_role:
        name: storagebench.kvcache.deps
        tasks_from: engine.yml
"""
STALE_PROBE = ".storagebench-kvcache-probe-venv-gamma"  # what the role calls gamma's probe beside its venv


def write_inventory(path, shared, own):
    def host(directory):
        return {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
                "deps_venv": str(directory / "venv"), "deps_src_dir": str(directory / "src")}  # fmt: skip

    hosts = {"alpha": host(shared), "beta": host(shared), "gamma": host(own)}
    # No extras: the engine alone keeps the installs short.
    inventory = {"all": {"hosts": hosts, "vars": {"deps_engine_extras": []}}}
    path.write_text(yaml.safe_dump(inventory), encoding="utf-8")
    return path


def run_play(tmp_path, inventory):
    env = clean_environment(tmp_path / "home")
    env["ANSIBLE_COLLECTIONS_PATH"] = collections_path(tmp_path)
    env["ANSIBLE_FORKS"] = "5"  # all three hosts at once, as on a fleet
    return subprocess.run(
        [playbook_binary(), "-i", str(inventory), str(tmp_path / "play.yml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def task_hosts(output, task):
    """{status: [hosts]} of the task named `task` (the default callback's `changed: [alpha]` lines)."""
    found = {}
    section = None
    for line in output.splitlines():
        if line.startswith("TASK ["):
            section = line.partition("[")[2].split("]")[0].split(" : ")[-1]
            continue
        match = re.match(r"(ok|changed|skipping|fatal|failed): \[(\w+)\]", line)
        if match and section == task:
            found.setdefault(match.group(1), []).append(match.group(2))
    return {status: sorted(set(names)) for status, names in found.items()}


def test_hosts_sharing_a_venv_install_it_once_and_others_in_parallel(tmp_path):
    shared, own = tmp_path / "shared", tmp_path / "own"
    shared.mkdir(mode=0o750)
    os.chmod(shared, 0o750)
    # A probe left by a killed run, named after gamma: it holds no token of this play, so it makes no host share.
    stale = shared / STALE_PROBE
    stale.write_text("an old token\n", encoding="utf-8")
    (tmp_path / "play.yml").write_text(PLAY, encoding="utf-8")
    inventory = write_inventory(tmp_path / "hosts.yml", shared, own)

    done = run_play(tmp_path, inventory)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for task in ("Install mpi4py against the host's MPI (creates the venv)", "Install the engine into the venv"):
        assert task_hosts(done.stdout, task) == {"changed": ["alpha", "gamma"], "skipping": ["beta"]}, task
    check = "Check that the engine runs and mpi4py loads the host's MPI"
    assert task_hosts(done.stdout, check) == {"ok": ["alpha", "beta", "gamma"]}
    for directory in (shared, own):
        version = subprocess.run([str(directory / "venv" / "bin" / "python"), "-m", "kvcache", "--version"],
                                 capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert version.returncode == 0 and version.stdout.startswith("kvcache "), version.stderr
    # The role's probes are gone, the stale one is not the role's and stays; an existing directory kept its mode.
    assert sorted(os.listdir(shared)) == sorted(["src", "venv", stale.name])
    assert stale.read_text(encoding="utf-8") == "an old token\n"
    assert sorted(os.listdir(own)) == ["src", "venv"]
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(own).st_mode) == 0o755
