#!/usr/bin/python
# Copyright: storagebench developers
# MIT License (see LICENSE in the collection root)

DOCUMENTATION = r"""
---
module: kvcache_cluster_info
short_description: Describe a host as the kvcache benchmark sees it
version_added: "0.1.0"
description:
  - Collects what decides or explains a kvcache benchmark result on one host, as plain keys (not C(ansible_facts)).
  - CPU model, sockets, cores and threads; NUMA nodes; memory total and available; the cache directory's filesystem
    type, mount options, device, rotational flag, free and total bytes; GPUs through C(nvidia-smi); the MPI flavor and
    version; the versions of Python, mpi4py, numpy and the engine in the engine's interpreter; kernel and OS; whether
    C(LD_PRELOAD) is set; the kernel's dirty-page settings.
  - It only reads. It changes nothing and runs the same in check mode.
  - A missing C(nvidia-smi), C(mpirun) or engine interpreter is reported (zero GPUs, null versions), never a failure.
author:
  - storagebench developers (!UNKNOWN)
options:
  cache_dir:
    description:
      - The directory the benchmark will use on the storage under test.
      - When it does not exist yet, its closest existing parent is described (RV(cache_dir.probed_path)),
        which is where the directory will be created.
      - When omitted, RV(cache_dir) is not returned.
    type: path
  python:
    description:
      - The interpreter that runs the engine; RV(python) describes it (Python, mpi4py, numpy and engine versions).
      - The default is the virtual environment that the collection's deps role installs.
    type: str
    default: /opt/storagebench-kvcache/venv/bin/python
  mpi_bin:
    description:
      - The MPI launcher whose C(--version) tells the MPI flavor and version.
      - A name looked up in C(PATH), or a path.
    type: str
    default: mpirun
  nvidia_smi:
    description: The C(nvidia-smi) program (a name looked up in C(PATH), or a path).
    type: str
    default: nvidia-smi
  gather_subset:
    description:
      - What to collect; V(all) is everything. RV(hostname) is always returned.
      - V(system) is the kernel, OS, C(LD_PRELOAD), dirty-page settings, CPU governors and transparent huge pages.
      - V(cache_dir) is the filesystem under O(cache_dir) and its block device's scheduler, read-ahead and model.
    type: list
    elements: str
    choices: [all, cpu, numa, memory, cache_dir, gpus, mpi, python, system]
    default: [all]
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - It only reads, so check mode returns the same information.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Linux only (it reads C(/proc) and C(/sys)).
  - Free bytes are those available to an unprivileged user (C(statvfs) C(f_bavail)), the figure a run can count on.
seealso:
  - module: storagebench.kvcache.kvcache_command
"""

EXAMPLES = r"""
- name: Describe every host of the benchmark
  storagebench.kvcache.kvcache_cluster_info:
    cache_dir: /mnt/nvme/kvcache
  register: info

- name: Only what sizing needs
  storagebench.kvcache.kvcache_cluster_info:
    cache_dir: /mnt/nvme/kvcache
    gather_subset: [memory, cache_dir]
  register: sizing

- name: Warn when the cache directory sits on a spinning disk
  ansible.builtin.debug:
    msg: "{{ info.hostname }}: {{ info.cache_dir.device }} is rotational"
  when: info.cache_dir.rotational | default(false)
"""

RETURN = r"""
hostname:
  description: The host's name as the kernel knows it.
  returned: always
  type: str
  sample: node1
cpu:
  description: Processors from C(/proc/cpuinfo).
  returned: when gathered
  type: dict
  contains:
    model:
      description: The CPU model name.
      type: str
      sample: AMD EPYC 9454 48-Core Processor
    sockets:
      description: Physical packages (1 where the kernel does not say).
      type: int
      sample: 2
    cores:
      description: Physical cores over all sockets (the thread count where the kernel does not say).
      type: int
      sample: 96
    threads:
      description: Hardware threads (logical CPUs).
      type: int
      sample: 192
    affinity_threads:
      description: Logical CPUs this process may run on (fewer than RV(cpu.threads) under a cgroup or taskset).
      type: int
      sample: 192
numa:
  description: NUMA nodes online (one node, 0, on a kernel without NUMA support).
  returned: when gathered
  type: dict
  contains:
    nodes:
      description: How many nodes.
      type: int
      sample: 2
    node_ids:
      description: Their numbers.
      type: list
      elements: int
      sample: [0, 1]
memory:
  description: Host memory from C(/proc/meminfo).
  returned: when gathered
  type: dict
  contains:
    total_bytes:
      description: MemTotal.
      type: int
      sample: 25769803776
    available_bytes:
      description: MemAvailable (MemFree + Buffers + Cached on old kernels).
      type: int
      sample: 23622320128
cache_dir:
  description: The filesystem under O(cache_dir).
  returned: when O(cache_dir) is set and gathered
  type: dict
  contains:
    path:
      description: O(cache_dir) as given.
      type: str
      sample: /mnt/nvme/kvcache
    exists:
      description: Whether O(cache_dir) exists and is a directory.
      type: bool
      sample: true
    probed_path:
      description: The path described, O(cache_dir) resolved, or its closest existing parent.
      type: str
      sample: /mnt/nvme/kvcache
    mount_point:
      description: Where that filesystem is mounted.
      type: str
      sample: /mnt/nvme
    fstype:
      description: Filesystem type.
      type: str
      sample: xfs
    device:
      description: The mounted device or source.
      type: str
      sample: /dev/nvme0n1p1
    options:
      description: Mount options and superblock options, comma separated.
      type: str
      sample: rw,noatime,attr2,inode64
    rotational:
      description: Whether the block device spins; null where there is no block device (network, tmpfs, overlay).
      type: bool
      sample: false
    free_bytes:
      description: Bytes available to unprivileged users.
      type: int
      sample: 1919850381312
    total_bytes:
      description: Size of the filesystem.
      type: int
      sample: 3840755982336
    block_device:
      description:
        - The block device the filesystem is on (a partition's queue settings are its disk's); null where there
          is none (tmpfs, overlay, NFS).
        - C(name), the I/O C(scheduler) in effect, C(read_ahead_kb), the C(model) (null for many virtual disks)
          and C(rotational).
      type: dict
      sample: {"name": "nvme0n1p1", "scheduler": "none", "read_ahead_kb": 128, "model": "Samsung SSD 990 PRO 2TB",
               "rotational": false}
gpus:
  description: NVIDIA GPUs from C(nvidia-smi); zero when it is missing or fails.
  returned: when gathered
  type: dict
  contains:
    count:
      description: How many GPUs.
      type: int
      sample: 0
    devices:
      description: One entry per GPU with C(index), C(name), C(memory_total_bytes), C(driver_version) and C(uuid).
      type: list
      elements: dict
      sample: []
    nvidia_smi:
      description: The program that was run, null when it was not found.
      type: str
      sample: /usr/bin/nvidia-smi
    error:
      description: Why nvidia-smi gave no answer, when it was found but failed.
      type: str
      returned: when nvidia-smi failed
      sample: "nvidia-smi exited 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"
mpi:
  description: The MPI launcher.
  returned: when gathered
  type: dict
  contains:
    mpirun:
      description: The launcher's path, null when it was not found.
      type: str
      sample: /usr/bin/mpirun
    flavor:
      description:
        - The launcher family, as O(storagebench.kvcache.kvcache_command#module:mpi_flavor) takes it, or null when
          unknown.
        - V(openmpi), or V(mpich) for every Hydra launcher (MPICH, Intel MPI, MVAPICH).
      type: str
      sample: openmpi
    implementation:
      description: The MPI itself, C(Open MPI), C(MPICH), C(Intel MPI) or C(MVAPICH); null when unknown.
      type: str
      sample: Open MPI
    version:
      description: The version it reports.
      type: str
      sample: 4.1.4
python:
  description: The engine's interpreter (O(python)) and what is installed in it.
  returned: when gathered
  type: dict
  contains:
    executable:
      description: O(python) as given.
      type: str
      sample: /opt/storagebench-kvcache/venv/bin/python
    exists:
      description: Whether it could be run.
      type: bool
      sample: true
    version:
      description: Python version.
      type: str
      sample: 3.11.2
    mpi4py:
      description: mpi4py version, null when not installed.
      type: str
      sample: 4.1.1
    numpy:
      description: numpy version, null when not installed.
      type: str
      sample: 2.3.5
    hdrhistogram:
      description: hdrhistogram version, null when not installed.
      type: str
      sample: 0.10.3
    engine:
      description: The storagebench-kvcache engine version, null when not installed.
      type: str
      sample: 0.1.0
    error:
      description: Why the interpreter gave no answer.
      type: str
      returned: when it could not be run
      sample: "/opt/storagebench-kvcache/venv/bin/python: not found"
kernel:
  description: Kernel release.
  returned: when gathered (system)
  type: str
  sample: 6.1.0-27-amd64
architecture:
  description: Machine architecture.
  returned: when gathered (system)
  type: str
  sample: x86_64
os:
  description: From C(/etc/os-release) (C(id), C(id_like), C(version_id), C(pretty_name)).
  returned: when gathered (system)
  type: dict
  sample: {"id": "debian", "id_like": null, "version_id": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)"}
ld_preload:
  description: Libraries preloaded into every process, which can change I/O behaviour.
  returned: when gathered (system)
  type: dict
  contains:
    set:
      description: Whether C(LD_PRELOAD) is set in the environment or C(/etc/ld.so.preload) lists a library.
      type: bool
      sample: false
    env:
      description: The C(LD_PRELOAD) value, null when unset.
      type: str
      sample: null
    ld_so_preload:
      description: Libraries in C(/etc/ld.so.preload).
      type: list
      elements: str
      sample: []
cpu_governors:
  description: The distinct CPU frequency scaling governors of the CPUs; empty where there is no cpufreq (many VMs).
  returned: when gathered (system)
  type: list
  elements: str
  sample: [performance]
transparent_hugepages:
  description: The transparent huge page mode in effect (C(always), C(madvise), C(never)); null where unreadable.
  returned: when gathered (system)
  type: str
  sample: madvise
vm_dirty:
  description: The kernel's dirty-page settings (C(/proc/sys/vm/dirty_*)), null where unreadable.
  returned: when gathered (system)
  type: dict
  sample: {"dirty_ratio": 20, "dirty_background_ratio": 10, "dirty_bytes": 0, "dirty_background_bytes": 0,
           "dirty_expire_centisecs": 3000, "dirty_writeback_centisecs": 500}
"""

import os  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.common.text.converters import to_native  # noqa: E402
from ansible_collections.storagebench.kvcache.plugins.module_utils.cluster_info import (  # noqa: E402
    NVIDIA_SMI_QUERY,
    PYTHON_PROBE,
    parse_cpuinfo,
    parse_nvidia_smi,
    parse_os_release,
    parse_python_probe,
)
from ansible_collections.storagebench.kvcache.plugins.module_utils.host_probe import (  # noqa: E402
    VM_DIRTY_SETTINGS,
    block_device_settings,
    cpu_governors,
    filesystem_of,
    memory,
    parse_cpu_list,
    parse_mpi_version,
    parse_sysctl_value,
    read_text,
    transparent_hugepages,
)
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import DEFAULT_PYTHON  # noqa: E402

SUBSETS = ("cpu", "numa", "memory", "cache_dir", "gpus", "mpi", "python", "system")


def run(module, argv):
    """(rc, stdout, stderr); an OSError becomes rc None with the message as stderr."""
    try:
        return module.run_command(argv, handle_exceptions=False, expand_user_and_vars=False)
    except OSError as exc:
        return None, "", to_native(exc)


def find_program(module, name):
    """The program's path (a path is taken as is when it is executable), or None."""
    if "/" in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return module.get_bin_path(name)


def cpu_info():
    info = parse_cpuinfo(read_text("/proc/cpuinfo"))
    try:
        info["affinity_threads"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["affinity_threads"] = info["threads"]
    return info


def numa_info():
    text = read_text("/sys/devices/system/node/online")
    try:
        ids = parse_cpu_list(text) if text is not None else [0]
    except ValueError:
        ids = [0]
    return {"nodes": len(ids) or 1, "node_ids": ids or [0]}


def gpu_info(module, nvidia_smi):
    program = find_program(module, nvidia_smi)
    info = {"count": 0, "devices": [], "nvidia_smi": program}
    if program is None:
        return info
    rc, out, err = run(module, [program, f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader,nounits"])
    if rc != 0:
        info["error"] = f"nvidia-smi exited {rc}: {(err or out).strip()[-300:]}"
        return info
    info["devices"] = parse_nvidia_smi(out)
    info["count"] = len(info["devices"])
    return info


def mpi_info(module, mpi_bin):
    program = find_program(module, mpi_bin)
    info = {"mpirun": program, "flavor": None, "implementation": None, "version": None}
    if program is None:
        return info
    _rc, out, err = run(module, [program, "--version"])
    found = parse_mpi_version(f"{out}\n{err}")
    for key in ("flavor", "implementation", "version"):
        info[key] = found[key]
    return info


def python_info(module, python):
    info = {"executable": python, "exists": False, "version": None, "mpi4py": None, "numpy": None,
            "hdrhistogram": None, "engine": None}  # fmt: skip
    rc, out, err = run(module, [python, "-c", PYTHON_PROBE])
    if rc != 0:
        info["error"] = "{}: {}".format(python, (err or out or f"exited {rc}").strip()[-300:])
        return info
    try:
        probe = parse_python_probe(out)
    except ValueError as exc:
        info["error"] = f"{python}: {to_native(exc)}"
        return info
    info["exists"] = True
    for key in ("version", "mpi4py", "numpy", "hdrhistogram", "engine"):
        info[key] = probe.get(key)
    return info


def system_info():
    preload_file = read_text("/etc/ld.so.preload") or ""
    preloaded = [word for line in preload_file.splitlines() for word in line.split("#", 1)[0].split()]
    env_preload = os.environ.get("LD_PRELOAD") or None
    return {
        "kernel": platform.release(),
        "architecture": platform.machine(),
        "os": parse_os_release(read_text("/etc/os-release") or read_text("/usr/lib/os-release")),
        "ld_preload": {"set": bool(env_preload or preloaded), "env": env_preload, "ld_so_preload": preloaded},
        "vm_dirty": {name: parse_sysctl_value(read_text(f"/proc/sys/vm/{name}")) for name in VM_DIRTY_SETTINGS},
        "cpu_governors": cpu_governors(),
        "transparent_hugepages": transparent_hugepages(),
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cache_dir=dict(type="path"),
            python=dict(type="str", default=DEFAULT_PYTHON),
            mpi_bin=dict(type="str", default="mpirun"),
            nvidia_smi=dict(type="str", default="nvidia-smi"),
            gather_subset=dict(type="list", elements="str", choices=["all"] + list(SUBSETS), default=["all"]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    wanted = set(SUBSETS) if "all" in params["gather_subset"] else set(params["gather_subset"])
    result = dict(changed=False, hostname=socket.gethostname())
    if "cpu" in wanted:
        result["cpu"] = cpu_info()
    if "numa" in wanted:
        result["numa"] = numa_info()
    if "memory" in wanted:
        result["memory"] = memory()
    if "cache_dir" in wanted and params["cache_dir"]:
        result["cache_dir"] = filesystem_of(params["cache_dir"])
        result["cache_dir"]["block_device"] = block_device_settings(result["cache_dir"]["probed_path"])
    if "gpus" in wanted:
        result["gpus"] = gpu_info(module, params["nvidia_smi"])
    if "mpi" in wanted:
        result["mpi"] = mpi_info(module, params["mpi_bin"])
    if "python" in wanted:
        result["python"] = python_info(module, params["python"])
    if "system" in wanted:
        result.update(system_info())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
