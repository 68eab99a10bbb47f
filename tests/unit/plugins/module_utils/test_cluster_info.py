"""The pure parsers behind kvcache_cluster_info, on texts as the kernel and the tools print them."""

import json

import pytest
from ansible_collections.storagebench.kvcache.plugins.module_utils import cluster_info as ci

TWO_SOCKETS_HT = "".join(
    f"processor\t: {n}\nmodel name\t: Intel(R) Xeon(R) Gold 6338\nphysical id\t: {n // 4}\ncore id\t\t: {n % 2}\n\n"
    for n in range(8)
)
VM_NO_TOPOLOGY = "processor\t: 0\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n"
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n\nprocessor\t: 1\nCPU part\t: 0xd0c\n"

MOUNTINFO = (
    "22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard\n"
    "30 22 0:25 / /var/tmp rw,nosuid shared:5 - tmpfs tmpfs rw,size=1024k\n"
    "31 22 259:2 / /mnt/nvme rw,noatime shared:6 - xfs /dev/nvme0n1p1 rw,attr2,inode64\n"
    "32 22 0:40 / /mnt/with\\040space rw - nfs4 srv:/export rw,vers=4.2\n"
)


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
    assert ci.parse_cpu_list(text) == ids


def test_cpu_list_rejects_garbage():
    with pytest.raises(ValueError):
        ci.parse_cpu_list("0-x")


def test_meminfo_in_bytes_with_and_without_memavailable():
    assert ci.parse_meminfo("MemTotal:  1000 kB\nMemFree: 100 kB\nMemAvailable:  600 kB\n") == {
        "total_bytes": 1024000, "available_bytes": 614400,
    }  # fmt: skip
    old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 200 kB\nHugePages_Total: 0\n"
    assert ci.parse_meminfo(old) == {"total_bytes": 1024000, "available_bytes": 350 * 1024}
    assert ci.parse_meminfo("") == {"total_bytes": None, "available_bytes": None}


@pytest.mark.parametrize(
    "path, point, fstype, device, options",
    [
        ("/var/tmp/kv", "/var/tmp", "tmpfs", "tmpfs", "rw,nosuid,size=1024k"),
        ("/var/tmpfoo", "/", "ext4", "/dev/vda", "rw,relatime,discard"),
        ("/mnt/nvme", "/mnt/nvme", "xfs", "/dev/nvme0n1p1", "rw,noatime,attr2,inode64"),
        ("/mnt/with space/x", "/mnt/with space", "nfs4", "srv:/export", "rw,vers=4.2"),
    ],
)
def test_find_mount_picks_the_longest_mount_point(path, point, fstype, device, options):
    assert ci.find_mount(MOUNTINFO, path) == {
        "mount_point": point, "fstype": fstype, "device": device, "options": options,
    }  # fmt: skip


def test_find_mount_last_mount_on_the_same_point_wins_and_nothing_found():
    stacked = MOUNTINFO + "40 30 0:50 / /var/tmp rw - xfs /dev/sdb rw\n"
    assert ci.find_mount(stacked, "/var/tmp/x")["fstype"] == "xfs"
    assert ci.find_mount("garbage\n", "/x") == {"mount_point": None, "fstype": None, "device": None, "options": None}


@pytest.mark.parametrize(
    "name, candidates",
    [
        ("sda1", ["sda1", "sda"]),
        ("sda", ["sda"]),
        ("nvme0n1p2", ["nvme0n1p2", "nvme0n1"]),
        ("nvme0n1", ["nvme0n1"]),
        ("mmcblk0p1", ["mmcblk0p1", "mmcblk0"]),
        ("dm-0", ["dm-0"]),
        ("md127", ["md127"]),
        ("", []),
    ],
)
def test_block_device_candidates(name, candidates):
    assert ci.block_device_candidates(name) == candidates


def test_rotational():
    assert ci.parse_rotational("1\n") is True
    assert ci.parse_rotational("0") is False
    assert ci.parse_rotational(None) is None


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


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mpirun (Open MPI) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/\n", ("openmpi", "4.1.4")),
        ("mpirun (Open MPI) 5.0.3\n", ("openmpi", "5.0.3")),
        ("prterun (PRRTE) 3.0.5\n", ("openmpi", "3.0.5")),
        ("HYDRA build details:\n    Version:                                 4.1.2\n", ("mpich", "4.1.2")),
        ("Intel(R) MPI Library for Linux* OS, Version 2021.10 Build 20230619\n", ("intelmpi", "2021.10")),
        ("bash: mpirun: command not found\n", (None, None)),
        ("", (None, None)),
    ],
)
def test_mpi_version(text, expected):
    assert ci.parse_mpi_version(text) == expected


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
    assert ci.parse_sysctl_value("20\n") == 20
    assert ci.parse_sysctl_value("") is None
    assert ci.parse_sysctl_value("a b") == "a b"


def test_nearest_existing():
    existing = {"/", "/var", "/var/tmp"}
    assert ci.nearest_existing("/var/tmp/a/b", existing.__contains__) == "/var/tmp"
    assert ci.nearest_existing("/var/tmp/", existing.__contains__) == "/var/tmp"
    assert ci.nearest_existing("/nope/x", existing.__contains__) == "/"
