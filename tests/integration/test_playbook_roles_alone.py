"""A role used alone, outside the kvcache playbooks, gets the shared kvcache_* defaults (roles/kvcache).

Real ansible-playbook on this machine (local connection), with a clean environment and a collections path that
holds this checkout: a play that lists one role, and a play that includes one with include_role. Neither sets a
kvcache_* variable, so every value below comes from roles/kvcache/defaults/main.yml through the role's dependency.
"""

import json
import os
import subprocess

import yaml
from ansible_cli import ROOT, clean_environment, collections_path, playbook_binary

SHARED_DEFAULTS = os.path.join(ROOT, "roles", "kvcache", "defaults", "main.yml")
HOST = "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3"

ROLE_ALONE = """
- name: The cluster_facts role alone
  hosts: all
  gather_facts: false
  roles:
    - role: storagebench.kvcache.cluster_facts

- name: The deps role's OS variables, included alone
  hosts: all
  gather_facts: false
  tasks:
    - name: Include the deps role's first tasks
      ansible.builtin.include_role:
        name: storagebench.kvcache.deps
        tasks_from: os_vars.yml

    - name: Record the engine's interpreter the deps role publishes
      ansible.builtin.copy:
        content: "{{ deps_python_bin }}"
        dest: "{{ playbook_dir }}/deps_python_bin.txt"
        mode: "0644"
"""


def test_a_role_alone_gets_the_shared_defaults(tmp_path):
    with open(SHARED_DEFAULTS, encoding="utf-8") as stream:
        shared = yaml.safe_load(stream)
    (tmp_path / "hosts.ini").write_text(HOST + "\n", encoding="utf-8")
    (tmp_path / "alone.yml").write_text(ROLE_ALONE, encoding="utf-8")
    env = clean_environment(tmp_path / "home")
    env["ANSIBLE_COLLECTIONS_PATH"] = collections_path(tmp_path)
    proc = subprocess.run(
        [playbook_binary(), "-i", "hosts.ini", "alone.yml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    # kvcache_results_dir: results/ under the directory ansible-playbook ran in; no run id: cluster/.
    with open(tmp_path / "results" / "cluster" / "cluster_information.json", encoding="utf-8") as stream:
        host = json.load(stream)["hosts"]["localhost"]
    assert host["cache_dir"]["path"] == shared["kvcache_cache_dir"]
    assert host["python"]["executable"] == shared["kvcache_venv"] + "/bin/python"
    assert (tmp_path / "deps_python_bin.txt").read_text(encoding="utf-8") == shared["kvcache_venv"] + "/bin/python"
