"""The pure parsers behind kvcache_cluster_info, on texts as the kernel and the tools print them."""

import json
import os

import pytest
from ansible_collections.storagebench.kvcache.plugins.module_utils import cluster_info as ci
from ansible_collections.storagebench.kvcache.plugins.module_utils import host_probe

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))))

TWO_SOCKETS_HT = "".join(
    f"processor\t: {n}\nmodel name\t: Intel(R) Xeon(R) Gold 6338\nphysical id\t: {n // 4}\ncore id\t\t: {n % 2}\n\n"
    for n in range(8)
)
VM_NO_TOPOLOGY = "processor\t: 0\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n"
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n\nprocessor\t: 1\nCPU part\t: 0xd0c\n"


def test_cpuinfo_counts_sockets_cores_and_threads():
    assert ci.parse_cpuinfo(TWO_SOCKETS_HT) == {
        "model": "Intel(R) Xeon(R) Gold 6338", "sockets": 2, "cores": 4, "threads": 8,
    }  # fmt: skip


def test_cpuinfo_without_topology_counts_each_processor_as_a_core():
    assert ci.parse_cpuinfo(VM_NO_TOPOLOGY) == {"model": "AMD EPYC", "sockets": 1, "cores": 2, "threads": 2}


def test_cpuinfo_arm_model_and_empty_text():
    assert ci.parse_cpuinfo(ARM)["model"] == "0xd0c"
    assert ci.parse_cpuinfo("") == {"model": None, "sockets": 0, "cores": 0, "threads": 0}


@pytest.mark.parametrize(
    "text, ids",
    [("0\n", [0]), ("0-3", [0, 1, 2, 3]), ("0-1,4,6-7\n", [0, 1, 4, 6, 7]), ("", [])],
)
def test_cpu_list(text, ids):
    assert host_probe.parse_cpu_list(text) == ids


def test_cpu_list_rejects_garbage():
    with pytest.raises(ValueError):
        host_probe.parse_cpu_list("0-x")


def test_nvidia_smi_rows():
    text = (
        "0, NVIDIA H100 80GB HBM3, 81559, 550.54.15, GPU-aaaa\n1, NVIDIA H100 80GB HBM3, [N/A], 550.54.15, GPU-bbbb\n"
    )
    gpus = ci.parse_nvidia_smi(text)
    assert [g["index"] for g in gpus] == [0, 1]
    assert gpus[0] == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 81559 * 1024 * 1024,
                       "driver_version": "550.54.15", "uuid": "GPU-aaaa"}  # fmt: skip
    assert gpus[1]["memory_total_bytes"] is None
    assert ci.parse_nvidia_smi("No devices were found\n") == []


def test_os_release():
    text = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n# c\n'
    assert ci.parse_os_release(text) == {
        "id": "debian", "id_like": None, "version_id": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)",
    }  # fmt: skip
    rocky = 'NAME=\'Rocky Linux\'\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n'
    assert ci.parse_os_release(rocky)["pretty_name"] == "Rocky Linux"
    assert ci.parse_os_release(rocky)["id_like"] == "rhel centos fedora"


def test_python_probe_takes_the_last_json_object():
    line = json.dumps({"version": "3.11.2", "engine": "0.1.0"})
    assert ci.parse_python_probe(f"some warning\n{line}\n")["engine"] == "0.1.0"
    with pytest.raises(ValueError):
        ci.parse_python_probe("Traceback ...\n[1, 2]\n")


def test_python_probe_script_runs_and_parses():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", ci.PYTHON_PROBE], capture_output=True, text=True, check=True).stdout
    probe = ci.parse_python_probe(out)
    assert probe["version"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert set(probe) >= {"mpi4py", "numpy", "hdrhistogram", "engine"}


def test_sysctl_values():
    assert host_probe.parse_sysctl_value("20\n") == 20
    assert host_probe.parse_sysctl_value("") is None
    assert host_probe.parse_sysctl_value("a b") == "a b"


def test_the_modules_host_probe_is_the_engines_file():
    # One parser of mountinfo, meminfo, rotational and `mpirun --version` for the engine and the modules:
    # module_utils/host_probe.py is a link to kvcache/host_probe.py (its tests: tests/unit/engine/test_host_probe.py).
    link = os.path.join(COLLECTION_ROOT, "plugins", "module_utils", "host_probe.py")
    assert os.path.islink(link)
    assert os.path.realpath(host_probe.__file__) == os.path.realpath(
        os.path.join(COLLECTION_ROOT, "kvcache", "host_probe.py")
    )
