# Copyright: storagebench developers
# MIT License (see LICENSE in the collection root)
"""What a host offers a run: the filesystem under a path, memory, the block device's settings, CPU governors, the MPI.

The one place that reads /proc/self/mountinfo, /proc/meminfo, /sys/.../queue/ and cpufreq and `mpirun --version`
text. The engine imports it as kvcache.host_probe; the collection's modules load the very same file as
plugins/module_utils/host_probe.py (a link to this one), so it needs nothing but the standard library and runs
on every Python the modules support (3.8 and later): no imports from kvcache, no newer syntax.
The parsers take text and return plain data, so tests feed them synthetic files.
"""

import os
import re
from typing import Callable, Dict, List, Optional

MOUNTINFO = "/proc/self/mountinfo"
MEMINFO = "/proc/meminfo"
_NO_MOUNT = {"mount_point": None, "fstype": None, "device": None, "options": None}
# The kernel writes space, tab, newline and backslash in mountinfo fields as a backslash and three octal digits.
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
OPENMPI, MPICH = "openmpi", "mpich"


def read_text(path: str) -> Optional[str]:
    """A file's text, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def decode_mount_field(field: str) -> str:
    """A mountinfo field with every octal escape decoded (`/mnt/my\\040disk` -> `/mnt/my disk`)."""
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def find_mount(mountinfo_text: Optional[str], path: str) -> Dict[str, Optional[str]]:
    """The mount that `path` (absolute, resolved) is on: the longest matching mount point, and of several mounts
    on that same point the last line, which is the one mounted on top (the ones before it are hidden).
    Returns mount_point, fstype, device and options (mount options then superblock options), or Nones."""
    best = dict(_NO_MOUNT)
    best_len = -1
    for line in (mountinfo_text or "").splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        point = decode_mount_field(fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best_len:
            best_len = len(point)
            options = fields[5].split(",")
            for option in tail[2].split(",") if len(tail) > 2 else []:
                if option not in options:
                    options.append(option)
            best = {
                "mount_point": point,
                "fstype": decode_mount_field(tail[0]),
                "device": decode_mount_field(tail[1]),
                "options": ",".join(options),
            }
    return best


def mount_of(path: str, mountinfo: str = MOUNTINFO) -> Dict[str, Optional[str]]:
    """The visible mount holding `path` (symlinks resolved), from this process's mount table."""
    return find_mount(read_text(mountinfo), os.path.realpath(path))


def block_device_candidates(device_name: Optional[str]) -> List[str]:
    """Names under /sys/class/block whose queue/rotational may describe `device_name` (a partition has none
    of its own): the name, then its whole disk (sda1 -> sda, nvme0n1p2 -> nvme0n1, mmcblk0p1 -> mmcblk0)."""
    if not device_name:
        return []
    candidates = [device_name]
    match = re.match(r"^((?:nvme\d+n\d+)|(?:mmcblk\d+)|(?:loop\d+))p\d+$", device_name)
    if match:
        candidates.append(match.group(1))
    elif re.match(r"^[a-z]+\d+$", device_name) and not device_name.startswith(("nvme", "mmcblk", "loop", "dm-", "md")):
        candidates.append(device_name.rstrip("0123456789"))
    return candidates


def parse_rotational(text: Optional[str]) -> Optional[bool]:
    """queue/rotational: True for a spinning disk, False for flash, None when unreadable."""
    value = (text or "").strip()
    if value in ("0", "1"):
        return value == "1"
    return None


def block_device_dir(path: str, sys_root: str = "/sys") -> Optional[str]:
    """The /sys directory of the block device `path`'s filesystem is on (/sys/dev/block/MAJOR:MINOR, resolved),
    None where its st_dev names no block device (tmpfs, overlay, NFS, btrfs's anonymous devices)."""
    try:
        st_dev = os.stat(path).st_dev
    except OSError:
        return None
    sys_dir = os.path.realpath(f"{sys_root}/dev/block/{os.major(st_dev)}:{os.minor(st_dev)}")
    return sys_dir if os.path.isdir(sys_dir) else None


def rotational_of(path: str, device: Optional[str], sys_root: str = "/sys") -> Optional[bool]:
    """Whether the block device under `path` spins: through /sys/dev/block/MAJOR:MINOR of the path's device,
    else by the mounted device's name; None where there is no block device (tmpfs, overlay, network)."""
    sys_dir = block_device_dir(path, sys_root)
    if sys_dir:
        for directory in (sys_dir, os.path.dirname(sys_dir)):  # a partition's queue is its disk's
            value = parse_rotational(read_text(os.path.join(directory, "queue", "rotational")))
            if value is not None:
                return value
    if device and device.startswith("/dev/"):
        for candidate in block_device_candidates(os.path.basename(os.path.realpath(device))):
            value = parse_rotational(read_text(f"{sys_root}/class/block/{candidate}/queue/rotational"))
            if value is not None:
                return value
    return None


_SELECTED = re.compile(r"\[([^\]]+)\]")  # "none [mq-deadline] kyber": the kernel marks the choice in brackets


def selected_choice(text: Optional[str]) -> Optional[str]:
    """The bracketed choice of a /sys choice file (scheduler, transparent_hugepage/enabled), or its one word."""
    if text is None:
        return None
    match = _SELECTED.search(text)
    if match:
        return match.group(1)
    words = text.split()
    return words[0] if len(words) == 1 else None


def _int(text: Optional[str]) -> Optional[int]:
    value = (text or "").strip()
    return int(value) if value.isdigit() else None


def block_device_settings(path: str, sys_root: str = "/sys") -> Optional[dict]:
    """The block device under `path` (a partition's queue is its disk's): name, scheduler, read_ahead_kb,
    model, rotational. None where `path` is on no block device."""
    sys_dir = block_device_dir(path, sys_root)
    if sys_dir is None:
        return None
    queue_dir = sys_dir if os.path.isdir(os.path.join(sys_dir, "queue")) else os.path.dirname(sys_dir)
    model = read_text(os.path.join(queue_dir, "device", "model"))
    rotational = (read_text(os.path.join(queue_dir, "queue", "rotational")) or "").strip()
    return {
        "name": os.path.basename(sys_dir),
        "scheduler": selected_choice(read_text(os.path.join(queue_dir, "queue", "scheduler"))),
        "read_ahead_kb": _int(read_text(os.path.join(queue_dir, "queue", "read_ahead_kb"))),
        "model": model.strip() if model else None,
        "rotational": {"0": False, "1": True}.get(rotational),
    }


def cpu_governors(sys_root: str = "/sys") -> List[str]:
    """The distinct scaling governors of the CPUs (empty where there is no cpufreq: many VMs)."""
    base = f"{sys_root}/devices/system/cpu"
    try:
        cpus = [name for name in os.listdir(base) if re.fullmatch(r"cpu[0-9]+", name)]
    except OSError:
        return []
    found = {read_text(f"{base}/{cpu}/cpufreq/scaling_governor") for cpu in cpus}
    return sorted(text.strip() for text in found if text)


def transparent_hugepages(sys_root: str = "/sys") -> Optional[str]:
    """The transparent huge page mode in effect (always, madvise, never); None where unreadable."""
    return selected_choice(read_text(f"{sys_root}/kernel/mm/transparent_hugepage/enabled"))


def nearest_existing(path: str, exists: Callable[[str], bool]) -> str:
    """The path itself or its closest ancestor for which `exists(path)` is true ('/' at worst)."""
    current = path.rstrip("/") or "/"
    while current != "/" and not exists(current):
        current = current.rsplit("/", 1)[0] or "/"
    return current


def filesystem_of(path: str, mountinfo: str = MOUNTINFO) -> dict:
    """The filesystem a directory is (or, while it does not exist yet, will be) on: its mount, device,
    rotational flag, and the bytes free to unprivileged users (statvfs f_bavail) and in all."""
    absolute = os.path.abspath(path)
    exists = os.path.isdir(absolute)
    probed = os.path.realpath(absolute if exists else nearest_existing(absolute, os.path.isdir))
    info = {"path": path, "exists": exists, "probed_path": probed}
    info.update(find_mount(read_text(mountinfo), probed))
    info["rotational"] = rotational_of(probed, info["device"])
    try:
        stats = os.statvfs(probed)
        info["free_bytes"] = stats.f_bavail * stats.f_frsize
        info["total_bytes"] = stats.f_blocks * stats.f_frsize
    except OSError:
        info["free_bytes"] = info["total_bytes"] = None
    return info


def parse_meminfo(text: Optional[str]) -> Dict[str, Optional[int]]:
    """MemTotal and MemAvailable in bytes (MemFree + Buffers + Cached where MemAvailable is missing)."""
    values = {}
    for line in (text or "").splitlines():
        key, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or not fields or not fields[0].isdigit():
            continue
        unit = fields[1].lower() if len(fields) > 1 else ""
        values[key.strip()] = int(fields[0]) * (1024 if unit == "kb" else 1)
    available = values.get("MemAvailable")
    if available is None and "MemFree" in values:
        available = values["MemFree"] + values.get("Buffers", 0) + values.get("Cached", 0)
    return {"total_bytes": values.get("MemTotal"), "available_bytes": available}


def memory(meminfo: str = MEMINFO) -> Dict[str, Optional[int]]:
    """This host's memory in bytes: total_bytes and available_bytes (None where unreadable)."""
    return parse_meminfo(read_text(meminfo))


def available_memory_bytes(meminfo: str = MEMINFO) -> Optional[int]:
    """The memory a run can count on (MemAvailable), None where the kernel does not say."""
    return memory(meminfo)["available_bytes"]


def _version_tuple(version: Optional[str]):
    match = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_mpi_version(text: Optional[str]) -> dict:
    """What `mpirun --version` (or MPI_Get_library_version) says: the launcher `flavor` (openmpi; mpich for
    every Hydra launcher: MPICH, Intel MPI, MVAPICH), the `implementation`, its `version` and
    `version_tuple` (major, minor). Nones where the text names no MPI."""
    text = text or ""
    flavor = implementation = version = None
    match = re.search(r"\((?:Open[ -]?(?:MPI|RTE)|PRRTE)\)\s*v?(\d+(?:\.\d+)*\S*)", text, re.IGNORECASE)
    if match:
        flavor, implementation, version = OPENMPI, "Open MPI", match.group(1)
    elif re.search(r"Open ?MPI|OpenRTE|prterun|PRRTE", text, re.IGNORECASE):
        match = re.search(r"v?(\d+\.\d+(?:\.\d+)*)", text)
        flavor, implementation, version = OPENMPI, "Open MPI", match.group(1) if match else None
    elif re.search(r"Intel\(R\) MPI", text):
        match = re.search(r"Version\s+(\d+(?:\.\d+)*)", text) or re.search(r"(\d+\.\d+(?:\.\d+)*)", text)
        flavor, implementation, version = MPICH, "Intel MPI", match.group(1) if match else None
    elif re.search(r"HYDRA|MPICH|MVAPICH", text, re.IGNORECASE):
        match = re.search(r"Version:\s*(\d+(?:\.\d+)*\S*)", text) or re.search(r"(\d+\.\d+(?:\.\d+)*)", text)
        implementation = "MVAPICH" if re.search(r"MVAPICH", text, re.IGNORECASE) else "MPICH"
        flavor, version = MPICH, match.group(1) if match else None
    return {
        "flavor": flavor,
        "implementation": implementation,
        "version": version,
        "version_tuple": _version_tuple(version),
    }


# The kernel's dirty-page settings (/proc/sys/vm/<name>).
VM_DIRTY_SETTINGS = (
    "dirty_ratio",
    "dirty_background_ratio",
    "dirty_bytes",
    "dirty_background_bytes",
    "dirty_expire_centisecs",
    "dirty_writeback_centisecs",
)


def parse_cpu_list(text):
    """A kernel CPU/node list such as `0-3,8,10-11` as a sorted list of ints (empty text: [])."""
    ids = set()
    for part in (text or "").strip().split(","):
        part = part.strip()
        if not part:
            continue
        first, sep, last = part.partition("-")
        if not first.isdigit() or (sep and not last.isdigit()):
            raise ValueError(f"not a CPU list: {text!r}")
        ids.update(range(int(first), int(last) + 1) if sep else [int(first)])
    return sorted(ids)


def parse_sysctl_value(text):
    """A /proc/sys value: an int when it is one, else the stripped text, None when empty."""
    value = (text or "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return value
