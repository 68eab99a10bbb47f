"""What the result says about where it ran: versions, host, filesystem of the cache dir."""

import os
import platform
import sys
from typing import Dict, Optional

from kvcache import __version__


def _version(module_name: str) -> Optional[str]:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version(module_name)
    except Exception:  # noqa: BLE001 - a missing optional package is simply reported as None
        return None


def mount_info(path: str, mountinfo: str = "/proc/self/mountinfo") -> Dict[str, Optional[str]]:
    """Filesystem type, device and options of the mount holding `path` (longest matching mount point)."""
    best = {"mount_point": None, "fstype": None, "device": None, "options": None}
    try:
        with open(mountinfo, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return best
    real = os.path.realpath(path)
    best_len = -1
    for line in lines:
        left, _sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 2:
            continue
        point = fields[4].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) > best_len:
            best_len = len(point)
            best = {
                "mount_point": point,
                "fstype": tail[0],
                "device": tail[1],
                "options": fields[5] + ("," + tail[2] if len(tail) > 2 else ""),
            }
    return best


def rotational(device: Optional[str]) -> Optional[bool]:
    if not device or not device.startswith("/dev/"):
        return None
    name = os.path.basename(os.path.realpath(device))
    for candidate in (name, name.rstrip("0123456789"), name.split("p")[0] if "nvme" in name else name):
        flag = f"/sys/class/block/{candidate}/queue/rotational"
        if os.path.exists(flag):
            with open(flag, encoding="ascii") as handle:
                return handle.read().strip() == "1"
    return None


def describe_environment(cache_dir: str) -> dict:
    mount = mount_info(cache_dir)
    return {
        "engine_version": __version__,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "kernel": platform.release(),
        "numpy": _version("numpy"),
        "hdrhistogram": _version("hdrhistogram"),
        "mpi4py": _version("mpi4py"),
        "cache_dir": cache_dir,
        "cache_dir_mount": dict(mount, rotational=rotational(mount["device"])),
    }
