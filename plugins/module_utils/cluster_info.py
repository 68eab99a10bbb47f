# Copyright: storagebench developers
# MIT License (see LICENSE in the collection root)
"""Pure parsers behind the kvcache_cluster_info module: each takes the text of a /proc or /sys file or of a
command's output and returns plain data. No I/O here, so unit tests call them directly.

What the engine needs to know about a host too (mounts, memory, rotational, the MPI, CPU lists, sysctl values) is in
host_probe.py, the engine's own kvcache/host_probe.py: one parser of each file for the engine and the modules."""

import json

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
