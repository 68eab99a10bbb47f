"""The cluster_facts role on two hosts that differ: both are this machine (local connection), one describing a
cache dir on the disk under tmp_path, the other one on tmpfs (/dev/shm), so their filesystems, mount options and
block devices differ while the rest (kernel, CPUs, governors, THP, vm.dirty_*) is the same. Nothing is made in the
cache dirs: the module describes the closest existing parent of a missing one.
"""

import json
import os
import subprocess

import pytest
from ansible_cli import clean_environment, collections_path, playbook_binary

LOCAL = "ansible_connection=local ansible_python_interpreter=/usr/bin/python3"
PLAY = """
- name: Describe the hosts
  hosts: all
  gather_facts: false
  roles:
    - role: storagebench.kvcache.cluster_facts
"""
TMPFS = "/dev/shm"


@pytest.mark.skipif(not os.path.isdir(TMPFS), reason=f"needs {TMPFS} (tmpfs) for a host whose cache dir differs")
def test_hosts_that_differ_in_the_cache_dirs_storage_are_warned_about(tmp_path):
    on_disk, on_tmpfs = tmp_path / "cache", os.path.join(TMPFS, f"kvcache-not-made-{os.getpid()}")
    (tmp_path / "hosts.ini").write_text(
        f"disk {LOCAL} cluster_facts_cache_dir={on_disk}\nshm {LOCAL} cluster_facts_cache_dir={on_tmpfs}\n",
        encoding="utf-8",
    )
    (tmp_path / "facts.yml").write_text(PLAY, encoding="utf-8")
    env = clean_environment(tmp_path / "home")
    env["ANSIBLE_COLLECTIONS_PATH"] = collections_path(tmp_path)
    proc = subprocess.run([playbook_binary(), "-i", "hosts.ini", "facts.yml", "-e", f"kvcache_results_dir={tmp_path}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    with open(tmp_path / "cluster" / "cluster_information.json", encoding="utf-8") as stream:
        information = json.load(stream)
    hosts = information["hosts"]
    assert hosts["shm"]["cache_dir"]["fstype"] == "tmpfs" and hosts["shm"]["cache_dir"]["block_device"] is None
    warned = {warning["what"]: warning["per_host"] for warning in information["warnings"]}
    assert warned["the cache dirs' filesystems differ"] == {
        "disk": hosts["disk"]["cache_dir"]["fstype"],
        "shm": "tmpfs",
    }
    assert "the cache dirs' mount options differ" in warned
    disk_device = hosts["disk"]["cache_dir"]["block_device"]
    if disk_device is not None:  # tmp_path on a block device, as on these machines
        assert warned["the cache dirs' devices differ in I/O scheduler"]["shm"] == "(none)"
        # no block device and a device that names no model (many virtual disks) are alike
        assert ("the cache dirs' devices differ in model" in warned) == (disk_device["model"] is not None)
    # One machine: what is the host's, not the cache dir's, is the same on both and not warned about.
    for same in ("kernels differ", "CPU frequency governors differ", "transparent huge page modes differ",
                 "the kernel's dirty-page settings (vm.dirty_*) differ", "LD_PRELOAD differs"):  # fmt: skip
        assert same not in warned
    assert "WARNING: the cache dirs' filesystems differ: " in proc.stdout  # printed too
    assert not os.path.exists(on_tmpfs) and not on_disk.exists()
