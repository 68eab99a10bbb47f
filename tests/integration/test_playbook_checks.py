"""The playbooks refuse bad shared variables and a missing or empty host group before anything runs.

Real ansible-playbook on this machine (local connection), from the checkout with a clean environment:
no ANSIBLE_* variable, so the collection is found through the playbook-adjacent link alone. Every
refusal happens in the first play, on the controller: no role starts, no fact is gathered, and
neither the cache dir nor the results dir is created.
"""

import json
import os
import re
import subprocess

import pytest
from ansible_cli import ROOT, clean_environment, collections_path, failed_task_messages, playbook_binary

PLAYBOOKS = ("kvcache_run.yml", "kvcache_setup.yml", "kvcache_datasize.yml")
MESSAGE_CHARS = 300
HOST = "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3"


def write_inventory(path, cache_dir, results_dir, groups="[kvcache]\n" + HOST + "\n"):
    path.write_text(
        groups + "\n[all:vars]\n"
        "kvcache_model=tiny-1b\nkvcache_num_users=2\nkvcache_duration=1\n"
        f"kvcache_cache_dir={cache_dir}\nkvcache_results_dir={results_dir}\n",
        encoding="utf-8",
    )
    return path


def run_playbook(tmp_path, inventory, playbook, *extra):
    return subprocess.run(
        [playbook_binary(), "-i", str(inventory), os.path.join("playbooks", playbook), *extra],
        cwd=ROOT,
        env=clean_environment(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def dirs(tmp_path):
    cache_dir, results_dir = tmp_path / "cache", tmp_path / "results"
    return cache_dir, results_dir, write_inventory(tmp_path / "hosts.ini", cache_dir, results_dir)


def assert_nothing_ran(proc, cache_dir, results_dir):
    assert "TASK [storagebench.kvcache." not in proc.stdout, "a role started"
    assert "Gathering Facts" not in proc.stdout
    assert not cache_dir.exists() and not results_dir.exists()


# (variable, value as -e JSON, what the message says, playbook)
BAD_VARIABLES = [
    ("kvcache_model", "no-such-model", "unknown model", "kvcache_run.yml"),
    ("kvcache_model", ["tiny-1b"], "single value", "kvcache_datasize.yml"),
    ("kvcache_cache_dir", "relative/cache", "absolute path", "kvcache_run.yml"),
    ("kvcache_cache_dir", "", "absolute path", "kvcache_run.yml"),
    ("kvcache_cache_dir", "/etc", "system directory", "kvcache_run.yml"),
    ("kvcache_cache_dir", "/usr/lib/kvcache", "system directory", "kvcache_datasize.yml"),
    ("kvcache_num_users", 0, ">= 1", "kvcache_run.yml"),
    ("kvcache_num_users", "abc", "integer", "kvcache_run.yml"),
    ("kvcache_num_users", 1.5, "integer", "kvcache_datasize.yml"),
    ("kvcache_duration", -1, "> 0", "kvcache_run.yml"),
    ("kvcache_duration", "inf", "finite", "kvcache_run.yml"),
    ("kvcache_gpu_mem_gb", 1e308, "<=", "kvcache_run.yml"),
    ("kvcache_cpu_mem_gb", -0.5, ">= 0", "kvcache_datasize.yml"),
    ("kvcache_seed", -3, ">= 0", "kvcache_run.yml"),
    ("kvcache_generation_mode", "slow", "one of", "kvcache_run.yml"),
    ("kvcache_performance_profile", "fastest", "one of", "kvcache_run.yml"),
    ("kvcache_processes_per_host", 0, ">= 1", "kvcache_run.yml"),
    ("kvcache_num_gpus", 0, ">= 1", "kvcache_datasize.yml"),
    ("kvcache_tensor_parallel", "two", "integer", "kvcache_run.yml"),
    ("kvcache_extra_args", {"io_dept": 4}, "did you mean io_depth", "kvcache_run.yml"),
    ("kvcache_extra_args", {"io_depth": 0}, "io_depth", "kvcache_run.yml"),
    ("kvcache_extra_args", {"io_engine": "fast"}, "one of", "kvcache_run.yml"),
    ("kvcache_extra_args", {"keep_cache": "yes"}, "true or false", "kvcache_run.yml"),
    ("kvcache_extra_args", {"model": "tiny-1b"}, "set kvcache_model instead", "kvcache_run.yml"),
    ("kvcache_extra_args", {"num_gpus": 2}, "set kvcache_num_gpus instead", "kvcache_datasize.yml"),
    ("kvcache_extra_args", {"user_loop": "sideways"}, "one of closed, open", "kvcache_run.yml"),
    ("kvcache_extra_args", {"rag_top_k": 0}, "rag_top_k: must be >= 1", "kvcache_run.yml"),
    ("kvcache_extra_args", {"output": "/tmp/x.json"}, "output", "kvcache_run.yml"),
    ("kvcache_extra_args", "io_depth=4", "mapping", "kvcache_datasize.yml"),
    ("kvcache_venv", "venv", "absolute path", "kvcache_setup.yml"),
    ("kvcache_config", "config.yaml", "absolute path", "kvcache_run.yml"),
    ("kvcache_ssh_mesh", "maybe", "true or false", "kvcache_setup.yml"),
    ("kvcache_run_id", "../elsewhere", "directory", "kvcache_run.yml"),
    ("kvcache_num_user", 4, "did you mean kvcache_num_users", "kvcache_run.yml"),
]


@pytest.mark.parametrize(
    ("variable", "value", "says", "playbook"),
    BAD_VARIABLES,
    ids=[f"{case[0]}={json.dumps(case[1])[:30]}" for case in BAD_VARIABLES],
)
def test_bad_shared_variable_fails_first_naming_it(tmp_path, dirs, variable, value, says, playbook):
    cache_dir, results_dir, inventory = dirs
    proc = run_playbook(tmp_path, inventory, playbook, "-e", json.dumps({variable: value}))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output  # ansible-playbook's exit code for a failed host
    messages = failed_task_messages(proc.stdout)
    assert len(messages) == 1, output
    assert messages[0].startswith(variable + ":"), messages[0]
    assert says in messages[0], messages[0]
    assert len(messages[0]) <= MESSAGE_CHARS, messages[0]
    assert "PLAY [Check the kvcache hosts and shared variables]" in proc.stdout
    assert re.search(r"localhost\s+: ok=0\s+changed=0\s+unreachable=0\s+failed=1", proc.stdout), proc.stdout
    assert_nothing_ran(proc, cache_dir, results_dir)


def test_good_variables_pass_the_check(tmp_path, dirs):
    """The same inventory, with nothing wrong, gets through the check play (and only that is run here)."""
    cache_dir, results_dir, inventory = dirs
    good = {
        "kvcache_extra_args": {"io_depth": 4, "user_loop": "open", "enable_rag": True, "log_level": "DEBUG"},
        "kvcache_num_gpus": 2,
        "kvcache_tensor_parallel": 2,
    }
    proc = run_playbook(tmp_path, inventory, "kvcache_check.yml", "-e", json.dumps(good))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"localhost\s+: ok=1\s+changed=0\s+unreachable=0\s+failed=0", proc.stdout), proc.stdout
    assert not cache_dir.exists() and not results_dir.exists()


def test_a_variable_that_needs_facts_is_left_for_later(tmp_path, dirs):
    """Facts are not gathered in the first play: a value built from them is checked where it is used."""
    cache_dir, results_dir, inventory = dirs
    with inventory.open("a", encoding="utf-8") as handle:
        handle.write('kvcache_processes_per_host="{{ ansible_facts.processor_vcpus }}"\n')
    proc = run_playbook(tmp_path, inventory, "kvcache_check.yml", "-e", "kvcache_num_users=0")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert failed_task_messages(proc.stdout) == ["kvcache_num_users: must be >= 1, got 0"]
    proc = run_playbook(tmp_path, inventory, "kvcache_check.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not cache_dir.exists() and not results_dir.exists()


RUN_ROLE_ALONE = """
- name: The run role on its own, with its own variable
  hosts: kvcache
  gather_facts: false
  roles:
    - role: storagebench.kvcache.run
"""


def test_run_role_creates_nothing_under_a_system_directory(tmp_path, dirs):
    """run_cache_dir set directly (not through kvcache_cache_dir) is checked before the role creates it."""
    inventory = dirs[2]
    playbook = tmp_path / "run_alone.yml"
    playbook.write_text(RUN_ROLE_ALONE, encoding="utf-8")
    target = "/etc/storagebench-kvcache-test-never-created"
    env = clean_environment(tmp_path / "home")
    env["ANSIBLE_COLLECTIONS_PATH"] = collections_path(tmp_path)
    proc = subprocess.run(
        [playbook_binary(), "-i", str(inventory), str(playbook), "-e", f"run_cache_dir={target}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (message,) = failed_task_messages(proc.stdout)
    assert message.startswith(f"run_cache_dir: '{target}' is a system directory"), message
    assert not os.path.lexists(target)
    assert "Create the cache directory" not in proc.stdout


# (inventory groups, extra arguments, what the message names)
NO_HOSTS = [
    pytest.param("[other]\n" + HOST + "\n", (), "no group or host 'kvcache'", id="no-kvcache-group"),
    pytest.param("[other]\n" + HOST + "\n[kvcache]\n", (), "group 'kvcache' has no hosts", id="empty-kvcache-group"),
    pytest.param(
        "[kvcache]\n" + HOST + "\n", ("-e", "kvcache_hosts=racks"), "no group or host 'racks'", id="unknown-group"
    ),
    pytest.param(
        "[kvcache]\n" + HOST + "\n[racks]\n",
        ("-e", "kvcache_hosts=racks"),
        "group 'racks' has no hosts",
        id="empty-group",
    ),
]


@pytest.mark.parametrize("playbook", PLAYBOOKS)
@pytest.mark.parametrize(("groups", "extra", "names"), NO_HOSTS)
def test_no_hosts_fails_at_once_naming_the_group(tmp_path, playbook, groups, extra, names):
    cache_dir, results_dir = tmp_path / "cache", tmp_path / "results"
    inventory = write_inventory(tmp_path / "hosts.ini", cache_dir, results_dir, groups=groups)
    proc = run_playbook(tmp_path, inventory, playbook, *extra)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "skipping: no hosts matched" not in output
    assert names in output, output
    assert "[kvcache] in the inventory" in output and "-e kvcache_hosts=GROUP" in output, output
    assert_nothing_ran(proc, cache_dir, results_dir)
