"""The kvcache_cluster_info module: nvidia-smi, mpirun and the engine's python mocked, the module never."""

import json
import os

import pytest
from ansible.module_utils import basic
from ansible_collections.storagebench.kvcache.plugins.modules import kvcache_cluster_info
from ansible_collections.storagebench.kvcache.tests.unit.plugins.modules import module_harness as harness
from ansible_collections.storagebench.kvcache.tests.unit.plugins.modules.module_harness import patch_exits

PROBE = {"version": "3.11.2", "executable": "/v/bin/python", "prefix": "/v", "mpi4py": "4.1.1", "numpy": "2.3.5",
         "hdrhistogram": "0.10.3", "engine": "0.1.0"}  # fmt: skip
SMI = "0, NVIDIA H100 80GB HBM3, 81559, 550.54.15, GPU-aaaa\n"


@pytest.fixture
def tools(monkeypatch):
    """Stand-ins for the programs the module runs; each answer can be replaced per test."""
    state = {"calls": [], "paths": {"nvidia-smi": None, "mpirun": "/usr/bin/mpirun"},
             "smi": (0, SMI, ""), "mpirun": (0, "mpirun (Open MPI) 4.1.4\n", ""),
             "python": (0, json.dumps(PROBE) + "\n", "")}  # fmt: skip

    def run_command(self, args, **kwargs):
        state["calls"].append(list(args))
        if args[0].endswith("nvidia-smi"):
            result = state["smi"]
        elif args[0].endswith("mpirun"):
            result = state["mpirun"]
        elif args[1] == "-c":
            result = state["python"]
        else:
            raise AssertionError(f"unexpected command {args!r}")
        if isinstance(result, OSError):
            raise OSError(result.errno, result.strerror)
        return result

    def get_bin_path(self, name, *args, **kwargs):
        return state["paths"].get(name)

    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", get_bin_path)
    patch_exits(monkeypatch)
    return state


def run_module(args, check_mode=False):
    return harness.run_module(kvcache_cluster_info.main, args, check_mode)


def test_everything_about_this_host(tools, tmp_path):
    result = run_module({"cache_dir": str(tmp_path)})
    assert result["changed"] is False
    assert result["hostname"]
    assert result["cpu"]["threads"] >= 1 and result["cpu"]["cores"] >= 1 and result["cpu"]["sockets"] >= 1
    assert result["numa"]["nodes"] >= 1
    assert result["memory"]["total_bytes"] >= result["memory"]["available_bytes"] > 0
    cache = result["cache_dir"]
    assert cache["exists"] is True and cache["probed_path"] == str(tmp_path.resolve())
    assert cache["fstype"] and cache["mount_point"] and 0 < cache["free_bytes"] <= cache["total_bytes"]
    assert cache["rotational"] in (True, False, None)
    assert result["mpi"] == {"mpirun": "/usr/bin/mpirun", "flavor": "openmpi", "implementation": "Open MPI",
                             "version": "4.1.4"}  # fmt: skip
    expected = {key: PROBE[key] for key in ("version", "mpi4py", "numpy", "hdrhistogram", "engine")}
    expected.update(executable="/opt/storagebench-kvcache/venv/bin/python", exists=True)
    assert result["python"] == expected
    assert result["kernel"] and result["os"]["id"]
    assert set(result["vm_dirty"]) == set(kvcache_cluster_info.VM_DIRTY_SETTINGS)
    assert result["ld_preload"]["set"] in (True, False)
    # the settings cluster_facts compares across hosts (None off a block device: tmpfs, overlay)
    device = cache["block_device"]
    if device is not None:
        assert set(device) == {"name", "scheduler", "read_ahead_kb", "model", "rotational"}
        assert os.path.isdir(f"/sys/class/block/{device['name']}") and device["rotational"] == cache["rotational"]
    assert isinstance(result["cpu_governors"], list)
    assert result["transparent_hugepages"] in ("always", "madvise", "never", None)


def test_no_nvidia_smi_means_zero_gpus_and_no_call(tools):
    result = run_module({"gather_subset": ["gpus"]})
    assert result["gpus"] == {"count": 0, "devices": [], "nvidia_smi": None}
    assert tools["calls"] == []


def test_gpus_listed_by_nvidia_smi(tools):
    tools["paths"]["nvidia-smi"] = "/usr/bin/nvidia-smi"
    result = run_module({"gather_subset": ["gpus"]})
    assert result["gpus"]["count"] == 1
    assert result["gpus"]["devices"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert tools["calls"][0][1].startswith("--query-gpu=")


def test_failing_nvidia_smi_is_zero_gpus_with_the_reason(tools):
    tools["paths"]["nvidia-smi"] = "/usr/bin/nvidia-smi"
    tools["smi"] = (9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", "")
    result = run_module({"gather_subset": ["gpus"]})
    assert result["gpus"]["count"] == 0
    assert "exited 9" in result["gpus"]["error"]


def test_missing_engine_python_is_reported_not_failed(tools):
    tools["python"] = OSError(2, "No such file or directory")
    result = run_module({"gather_subset": ["python"], "python": "/nowhere/bin/python"})
    assert result["python"]["exists"] is False and result["python"]["engine"] is None
    assert "/nowhere/bin/python" in result["python"]["error"]


def test_python_without_json_output(tools):
    tools["python"] = (0, "hello\n", "")
    result = run_module({"gather_subset": ["python"]})
    assert result["python"]["exists"] is False and "no JSON" in result["python"]["error"]


def test_missing_mpirun(tools):
    tools["paths"]["mpirun"] = None
    result = run_module({"gather_subset": ["mpi"]})
    assert result["mpi"] == {"mpirun": None, "flavor": None, "implementation": None, "version": None}


def test_intel_mpi_is_the_hydra_flavor_kvcache_command_takes(tools):
    tools["mpirun"] = (0, "Intel(R) MPI Library for Linux* OS, Version 2021.10 Build 20230619\n", "")
    result = run_module({"gather_subset": ["mpi"]})
    assert result["mpi"] == {"mpirun": "/usr/bin/mpirun", "flavor": "mpich", "implementation": "Intel MPI",
                             "version": "2021.10"}  # fmt: skip


def test_cache_dir_not_created_yet_describes_its_parent(tools, tmp_path):
    missing = tmp_path / "a" / "b"
    result = run_module({"cache_dir": str(missing), "gather_subset": ["cache_dir"]}, check_mode=True)
    assert result["cache_dir"]["exists"] is False
    assert result["cache_dir"]["probed_path"] == str(tmp_path.resolve())
    assert result["cache_dir"]["free_bytes"] > 0
    assert not missing.exists()


def test_subset_returns_only_what_was_asked(tools):
    result = run_module({"gather_subset": ["memory"], "cache_dir": "/var/tmp"}, check_mode=True)
    assert set(result) == {"changed", "hostname", "memory"}
    assert tools["calls"] == []


def test_bad_subset_is_refused(tools):
    failure = harness.fail_module(kvcache_cluster_info.main, {"gather_subset": ["disks"]})
    assert "gather_subset" in failure["msg"]
