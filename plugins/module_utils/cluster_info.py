# Copyright: storagebench developers
# MIT License (see LICENSE in the collection root)
"""Pure parsers behind the kvcache_cluster_info module: each takes the text of a /proc or /sys file or of a
command's output and returns plain data. No I/O here, so unit tests call them directly."""

import json
import re

# Run by the engine's Python with `-c`: versions of what the engine needs, as one JSON line.
PYTHON_PROBE = """
import json, platform, sys
try:
    from importlib import metadata
except ImportError:
    metadata = None
def version(name):
    try:
        return metadata.version(name) if metadata else None
    except Exception:
        return None
print(json.dumps({
    "version": platform.python_version(),
    "executable": sys.executable,
    "prefix": sys.prefix,
    "mpi4py": version("mpi4py"),
    "numpy": version("numpy"),
    "hdrhistogram": version("hdrhistogram"),
    "engine": version("storagebench-kvcache"),
}))
"""

NVIDIA_SMI_QUERY = "index,name,memory.total,driver_version,uuid"
VM_DIRTY_SETTINGS = (
    "dirty_ratio",
    "dirty_background_ratio",
    "dirty_bytes",
    "dirty_background_bytes",
    "dirty_expire_centisecs",
    "dirty_writeback_centisecs",
)


def parse_cpuinfo(text):
    """Model, sockets, physical cores and hardware threads from /proc/cpuinfo.

    Sockets are distinct `physical id`s and cores distinct (physical id, core id) pairs; where the kernel
    gives neither (some VMs, some ARM hosts) every processor counts as a core of one socket."""
    processors = []
    current = {}
    for line in (text or "").splitlines():
        if not line.strip():
            if current:
                processors.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip()] = value.strip()
    if current:
        processors.append(current)
    processors = [p for p in processors if "processor" in p]
    model = None
    for proc in processors:
        model = proc.get("model name") or proc.get("Processor") or proc.get("cpu model") or proc.get("CPU part")
        if model:
            break
    threads = len(processors)
    sockets = {p["physical id"] for p in processors if "physical id" in p}
    cores = {(p.get("physical id"), p["core id"]) for p in processors if "core id" in p}
    return {
        "model": model,
        "sockets": len(sockets) if sockets else (1 if threads else 0),
        "cores": len(cores) if cores else threads,
        "threads": threads,
    }


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


def parse_meminfo(text):
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


def _unescape_mount(field):
    """/proc/self/mountinfo escapes space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def find_mount(mountinfo_text, path):
    """The mount holding the absolute, resolved `path`: the longest matching mount point (the last one
    mounted wins a tie, as the kernel's would). Returns mount_point, fstype, device, options or Nones."""
    best = {"mount_point": None, "fstype": None, "device": None, "options": None}
    best_len = -1
    for line in (mountinfo_text or "").splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        point = _unescape_mount(fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best_len:
            best_len = len(point)
            options = fields[5].split(",")
            for option in tail[2].split(",") if len(tail) > 2 else []:
                if option not in options:
                    options.append(option)
            best = {
                "mount_point": point,
                "fstype": tail[0],
                "device": _unescape_mount(tail[1]),
                "options": ",".join(options),
            }
    return best


def block_device_candidates(device_name):
    """Names under /sys/class/block whose queue/rotational may describe `device_name` (a partition has
    none of its own): the name itself, then the whole disk (sda1 -> sda, nvme0n1p2 -> nvme0n1, mmcblk0p1 -> mmcblk0)."""
    if not device_name:
        return []
    candidates = [device_name]
    match = re.match(r"^((?:nvme\d+n\d+)|(?:mmcblk\d+)|(?:loop\d+))p\d+$", device_name)
    if match:
        candidates.append(match.group(1))
    elif re.match(r"^[a-z]+\d+$", device_name) and not device_name.startswith(("nvme", "mmcblk", "loop", "dm-", "md")):
        candidates.append(device_name.rstrip("0123456789"))
    return candidates


def parse_rotational(text):
    """queue/rotational: True for a spinning disk, False for flash, None when unreadable."""
    value = (text or "").strip()
    if value in ("0", "1"):
        return value == "1"
    return None


def parse_nvidia_smi(text):
    """Rows of `nvidia-smi --query-gpu=index,name,memory.total,driver_version,uuid --format=csv,noheader,nounits`."""
    gpus = []
    for line in (text or "").splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 5 or not fields[0].isdigit():
            continue
        memory_mib = fields[2]
        gpus.append(
            {
                "index": int(fields[0]),
                "name": fields[1],
                "memory_total_bytes": int(float(memory_mib) * 1024 * 1024) if _is_number(memory_mib) else None,
                "driver_version": fields[3],
                "uuid": fields[4],
            }
        )
    return gpus


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_mpi_version(text):
    """Flavor and version from `mpirun --version`: ('openmpi', '4.1.4'), ('mpich', '4.1.2'), or (None, None)."""
    text = text or ""
    match = re.search(r"\((?:Open ?MPI|OpenRTE|PRRTE)\)\s*v?(\d+(?:\.\d+)*\S*)", text, re.IGNORECASE)
    if match:
        return "openmpi", match.group(1)
    if re.search(r"Open ?MPI|OpenRTE|prterun|PRRTE", text, re.IGNORECASE):
        match = re.search(r"(\d+\.\d+(?:\.\d+)*)", text)
        return "openmpi", match.group(1) if match else None
    if re.search(r"Intel\(R\) MPI", text):
        match = re.search(r"Version\s+(\d+(?:\.\d+)*)", text) or re.search(r"(\d+\.\d+(?:\.\d+)*)", text)
        return "intelmpi", match.group(1) if match else None
    if re.search(r"HYDRA|MPICH|MVAPICH", text, re.IGNORECASE):
        match = re.search(r"Version:\s*(\S+)", text) or re.search(r"(\d+\.\d+(?:\.\d+)*)", text)
        return "mpich", match.group(1) if match else None
    return None, None


def parse_os_release(text):
    """ID, VERSION_ID, PRETTY_NAME and ID_LIKE from /etc/os-release (quotes removed)."""
    values = {}
    for line in (text or "").splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return {
        "id": values.get("ID"),
        "id_like": values.get("ID_LIKE"),
        "version_id": values.get("VERSION_ID"),
        "pretty_name": values.get("PRETTY_NAME") or values.get("NAME"),
    }


def parse_python_probe(text):
    """The JSON line PYTHON_PROBE prints (the last line that parses as a JSON object)."""
    for line in reversed((text or "").strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    raise ValueError("no JSON object in the probe's output")


def parse_sysctl_value(text):
    """A /proc/sys value: an int when it is one, else the stripped text, None when empty."""
    value = (text or "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def nearest_existing(path, exists):
    """The path itself or its closest ancestor for which `exists(path)` is true ('/' at worst)."""
    current = path.rstrip("/") or "/"
    while current != "/" and not exists(current):
        current = current.rsplit("/", 1)[0] or "/"
    return current
