"""The host audit on synthetic /sys and /proc trees, on this host, and the result's block across hosts."""

import os

from kvcache.audit_result import audit_block, audit_warnings
from kvcache.host_audit import audit, changes, numa_nodes_of, shares_device, vm_dirty_settings
from kvcache.host_probe import block_device_settings, cpu_governors, selected_choice


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def test_choice_files():
    assert selected_choice("none [mq-deadline] kyber bfq\n") == "mq-deadline"
    assert selected_choice("always [madvise] never") == "madvise"
    assert selected_choice("performance\n") == "performance" and selected_choice(None) is None


def test_the_block_device_of_a_partition_is_read_from_its_disk(tmp_path):
    sys_root = tmp_path / "sys"
    disk = sys_root / "devices" / "sdz"
    write(str(disk / "queue" / "scheduler"), "[none] mq-deadline\n")
    write(str(disk / "queue" / "read_ahead_kb"), "128\n")
    write(str(disk / "queue" / "rotational"), "0\n")
    write(str(disk / "device" / "model"), "Fast SSD 1TB   \n")
    (disk / "sdz1").mkdir()
    st_dev = os.stat(tmp_path).st_dev
    os.makedirs(sys_root / "dev" / "block")
    os.symlink(disk / "sdz1", sys_root / "dev" / "block" / f"{os.major(st_dev)}:{os.minor(st_dev)}")
    settings = block_device_settings(str(tmp_path), str(sys_root))
    assert settings == {"name": "sdz1", "scheduler": "none", "read_ahead_kb": 128, "model": "Fast SSD 1TB",
                        "rotational": False}  # fmt: skip
    assert block_device_settings(str(tmp_path), str(tmp_path / "nosys")) is None


def test_governors_numa_nodes_and_dirty_settings(tmp_path):
    sys_root, proc_root = tmp_path / "sys", tmp_path / "proc"
    for cpu, governor in ((0, "performance"), (1, "powersave"), (2, "performance")):
        write(str(sys_root / f"devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"), governor + "\n")
    write(str(sys_root / "devices/system/node/node0/cpulist"), "0-1\n")
    write(str(sys_root / "devices/system/node/node1/cpulist"), "2-3\n")
    write(str(proc_root / "sys/vm/dirty_ratio"), "20\n")
    assert cpu_governors(str(sys_root)) == ["performance", "powersave"]
    assert cpu_governors(str(tmp_path / "none")) == []
    assert numa_nodes_of([1, 2], str(sys_root)) == [0, 1] and numa_nodes_of([3], str(sys_root)) == [1]
    write(str(sys_root / "devices/system/node/node1/cpulist"), "2-x\n")
    assert numa_nodes_of([3], str(sys_root)) == []  # a list it cannot read claims no CPU
    dirty = vm_dirty_settings(str(proc_root))
    assert dirty["dirty_ratio"] == 20 and dirty["dirty_bytes"] is None


def test_shared_devices_and_this_hosts_audit(tmp_path):
    assert shares_device(str(tmp_path), {"same": str(tmp_path / "."), "absent": str(tmp_path / "x"), "none": None}) == [
        "same"
    ]
    found = audit(str(tmp_path), str(tmp_path))
    assert "results_dir" in found["cache_dir_shares_device_with"]
    assert found["kernel"] == os.uname().release and found["cpus_allowed"] == len(os.sched_getaffinity(0))
    assert found["ld_preload"] == (os.environ.get("LD_PRELOAD") or None)
    assert changes(found, audit(str(tmp_path), str(tmp_path))) == []


def test_changes_name_the_nested_settings():
    start = {"kernel": "6.1", "vm_dirty": {"dirty_ratio": 20, "dirty_bytes": 0}, "cpu_governors": ["performance"]}
    end = {"kernel": "6.1", "vm_dirty": {"dirty_ratio": 40, "dirty_bytes": 0}, "cpu_governors": ["powersave"]}
    assert changes(start, end) == ["cpu_governors", "vm_dirty.dirty_ratio"]


def test_the_block_across_hosts_and_its_warnings():
    same = {"kernel": "6.1", "transparent_hugepages": "madvise", "vm_dirty": {"dirty_ratio": 20}}
    other = dict(same, transparent_hugepages="always")
    payloads = [
        {"rank": 0, "host": "a", "audit": {"start": same, "end": same, "changed": []}},
        {"rank": 1, "host": "a"},
        {"rank": 2, "host": "b", "audit": {"start": other, "end": same, "changed": ["transparent_hugepages"]}},
    ]
    block = audit_block(payloads)
    assert [h["ranks"] for h in block["per_host"]] == [[0, 1], [2]]
    assert block["differs_between_hosts"] == ["transparent_hugepages"]
    assert audit_warnings(block) == [
        "on b these settings changed during the run: transparent_hugepages",
        "the hosts differ in transparent_hugepages: their figures may differ for it",
    ]
    assert audit_block([{"rank": 0, "host": "a"}]) is None
