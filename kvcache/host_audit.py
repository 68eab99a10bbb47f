"""The settings of a host that move storage figures, read at a run's start and again at its end.

Mount options of the cache dir, the block device's I/O scheduler, read-ahead, model and rotational flag, the CPU
frequency governors, the NUMA nodes the rank may run on, transparent huge pages, LD_PRELOAD, the kernel's
dirty-page settings, the kernel, and which other paths (the OS root, the results dir) share the cache dir's
device. None where this host does not say (no cpufreq in a VM, no model for a virtual disk). Standard library
only, plain data out: the readers take the roots they read under, so tests give them synthetic trees.
"""

import os
import platform
import re
from typing import Dict, List, Optional

from kvcache.host_probe import (
    MOUNTINFO,
    VM_DIRTY_SETTINGS,
    block_device_settings,
    cpu_governors,
    find_mount,
    parse_cpu_list,
    parse_sysctl_value,
    read_text,
    transparent_hugepages,
)


def numa_nodes_of(cpus: List[int], sys_root: str = "/sys") -> List[int]:
    """The NUMA nodes that hold any of `cpus` (empty where the kernel shows no nodes)."""
    base = f"{sys_root}/devices/system/node"
    try:
        nodes = sorted(int(name[4:]) for name in os.listdir(base) if re.fullmatch(r"node[0-9]+", name))
    except OSError:
        return []
    wanted = set(cpus)
    found = []
    for node in nodes:
        try:
            if wanted & set(parse_cpu_list(read_text(f"{base}/node{node}/cpulist"))):
                found.append(node)
        except ValueError:
            continue  # a list this reader does not know: that node is not claimed
    return found


def vm_dirty_settings(proc_root: str = "/proc") -> Dict[str, Optional[int]]:
    return {name: parse_sysctl_value(read_text(f"{proc_root}/sys/vm/{name}")) for name in VM_DIRTY_SETTINGS}


def shares_device(cache_dir: str, others: Dict[str, Optional[str]]) -> List[str]:
    """The names of `others` (name -> path) whose filesystem is the cache dir's (the same st_dev)."""
    try:
        device = os.stat(cache_dir).st_dev
    except OSError:
        return []
    shared = []
    for name, path in others.items():
        try:
            if path and os.stat(path).st_dev == device:
                shared.append(name)
        except OSError:
            continue
    return shared


def audit(
    cache_dir: str,
    results_dir: Optional[str] = None,
    sys_root: str = "/sys",
    proc_root: str = "/proc",
    mountinfo: str = MOUNTINFO,
) -> dict:
    """This host's settings now, as seen by this process (its CPU affinity gives the NUMA placement)."""
    real = os.path.realpath(cache_dir)
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = []
    return {
        "kernel": platform.release(),
        "cache_dir_mount_options": find_mount(read_text(mountinfo), real)["options"],
        "block_device": block_device_settings(real, sys_root),
        "cpu_governors": cpu_governors(sys_root),
        "cpus_allowed": len(cpus),
        "numa_nodes": numa_nodes_of(cpus, sys_root),
        "transparent_hugepages": transparent_hugepages(sys_root),
        "ld_preload": os.environ.get("LD_PRELOAD") or None,
        "vm_dirty": vm_dirty_settings(proc_root),
        "cache_dir_shares_device_with": shares_device(real, {"os_root": "/", "results_dir": results_dir}),
    }


def changes(start: dict, end: dict) -> List[str]:
    """The settings (dotted names) that differ between two audits of one host."""
    changed = []
    for key in sorted(set(start) | set(end)):
        before, after = start.get(key), end.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            changed += [f"{key}.{name}" for name in changes(before, after)]
        elif before != after:
            changed.append(key)
    return changed
