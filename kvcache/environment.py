"""What the result says about where it ran: versions, host, filesystem of the cache dir."""

import platform
import sys
from typing import Dict, Optional

from kvcache import __version__
from kvcache.host_probe import MOUNTINFO, filesystem_of, mount_of


def _version(module_name: str) -> Optional[str]:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version(module_name)
    except Exception:  # noqa: BLE001 - a missing optional package is simply reported as None
        return None


def mount_info(path: str, mountinfo: str = MOUNTINFO) -> Dict[str, Optional[str]]:
    """Filesystem type, device and options of the visible mount holding `path` (see host_probe.find_mount)."""
    return mount_of(path, mountinfo)


def describe_environment(cache_dir: str) -> dict:
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
        # The same description kvcache_cluster_info gives of a cache dir: mount, device, rotational, free bytes.
        "cache_dir_mount": filesystem_of(cache_dir),
    }
