"""What the storage itself saw during the window: the cache dir's block device counters, or an NFS mount's.

The engine counts the bytes it asked for; the kernel's counters say what reached the device: a read the page cache
(or any cache in the path) served never gets there, and a filesystem's journal and metadata writes do. One sampler
per host reads them at the window's start, at every --stats-interval sample and at its end:
- a block device: /proc/diskstats (sectors of 512 bytes, ops, time busy, time in queue) of the device the
  filesystem is on, found from the cache dir's st_dev through /sys/dev/block (a partition, an LVM or md device
  alike), and of the disks below it (its `slaves`, recursively);
- an NFS mount: /proc/self/mountstats, the bytes the client sent to and got from the server and the READ and
  WRITE operations;
- anything else (tmpfs, overlay, FUSE): no counters, and the reason.
And the page cache's state (/proc/meminfo Dirty, Writeback, Cached) at the same moments.
The parsers take text, so tests feed them synthetic files.
"""

import operator
import os
from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Tuple

from kvcache.host_probe import MOUNTINFO, block_device_dir, find_mount, read_text

DISKSTATS = "/proc/diskstats"
MOUNTSTATS = "/proc/self/mountstats"
SECTOR_BYTES = 512  # diskstats counts in 512-byte sectors whatever the device's own sector size
NFS_TYPES = ("nfs", "nfs4")
PAGE_CACHE_FIELDS = {"Dirty": "dirty_bytes", "Writeback": "writeback_bytes", "Cached": "cached_bytes"}
# Below this share of the engine's reads reaching the device, a cache in the path served the rest.
READ_SERVED_WARNING = 0.8
# Reads too few to judge: a short run's handful of entries may all sit in a controller's cache.
READ_BYTES_TO_JUDGE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of one device (or mount); busy/queue are None where the source has none (NFS)."""

    read_bytes: int
    write_bytes: int
    read_ops: int
    write_ops: int
    busy_ms: Optional[int] = None  # diskstats io_ticks: time with at least one I/O in flight
    queue_ms: Optional[int] = None  # diskstats time_in_queue: the sum over I/Os of their time in flight

    def _combine(self, other: "Counters", operation) -> "Counters":
        values = {}
        for name in (f.name for f in fields(Counters)):
            mine, theirs = getattr(self, name), getattr(other, name)
            values[name] = None if mine is None or theirs is None else operation(mine, theirs)
        return Counters(**values)

    def minus(self, earlier: "Counters") -> "Counters":
        """What happened since `earlier` (never negative: a counter that went back, a device re-attached)."""
        return self._combine(earlier, lambda now, then: max(0, now - then))

    def plus(self, other: "Counters") -> "Counters":
        return self._combine(other, operator.add)


def parse_diskstats(text: Optional[str]) -> Dict[str, Counters]:
    """Device name -> its counters, from /proc/diskstats text (fields: major minor name, then reads completed,
    reads merged, sectors read, ms reading, writes completed, writes merged, sectors written, ms writing, I/Os in
    flight, ms busy, weighted ms, ...)."""
    devices = {}
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) < 14 or not all(f.isdigit() for f in fields[3:14]):
            continue
        values = [int(f) for f in fields[3:14]]
        devices[fields[2]] = Counters(
            read_bytes=values[2] * SECTOR_BYTES,
            write_bytes=values[6] * SECTOR_BYTES,
            read_ops=values[0],
            write_ops=values[4],
            busy_ms=values[9],
            queue_ms=values[10],
        )
    return devices


def parse_nfs_mountstats(text: Optional[str], mount_point: str) -> Optional[Counters]:
    """The counters of the NFS mount on `mount_point` in /proc/self/mountstats: the `bytes:` line's server read
    and write bytes (fields 5 and 6: what crossed the wire) and the READ and WRITE operations' counts."""
    section = None
    for line in (text or "").splitlines():
        if line.startswith("device "):
            words = line.split()
            # "device SERVER:/export mounted on /mnt/point with fstype nfs4 statvers=1.1"
            on = words.index("on") if "on" in words else -1
            section = {} if on > 0 and len(words) > on + 1 and words[on + 1] == mount_point else None
            continue
        if section is None:
            continue
        words = line.split()
        if words[:1] == ["bytes:"] and len(words) >= 7:
            section["bytes"] = (int(words[5]), int(words[6]))
        elif words[:1] in (["READ:"], ["WRITE:"]) and len(words) >= 2 and words[1].isdigit():
            section[words[0][:-1]] = int(words[1])
        if "bytes" in section and "READ" in section and "WRITE" in section:
            read_bytes, write_bytes = section["bytes"]
            return Counters(read_bytes, write_bytes, section["READ"], section["WRITE"])
    return None


def parse_page_cache(text: Optional[str]) -> Dict[str, Optional[int]]:
    """Dirty, Writeback and Cached from /proc/meminfo text, in bytes (None where missing)."""
    found: Dict[str, Optional[int]] = {field: None for field in PAGE_CACHE_FIELDS.values()}
    for line in (text or "").splitlines():
        key, sep, rest = line.partition(":")
        words = rest.split()
        if sep and key in PAGE_CACHE_FIELDS and words and words[0].isdigit():
            found[PAGE_CACHE_FIELDS[key]] = int(words[0]) * 1024
    return found


def _block_name(sys_dir: str) -> str:
    return os.path.basename(sys_dir)


def disks_below(sys_dir: str, depth: int = 0) -> List[str]:
    """The disks a block device sits on: its `slaves` (LVM, md, dm-crypt), recursively, down to devices without
    any; a partition's disk is its parent directory. A plain disk is its own."""
    slaves_dir = os.path.join(sys_dir, "slaves")
    try:
        slaves = sorted(os.listdir(slaves_dir))
    except OSError:
        slaves = []
    if slaves and depth < 8:  # stacks are a few levels deep; the bound keeps a strange /sys from looping
        found: List[str] = []
        for name in slaves:
            for disk in disks_below(os.path.realpath(os.path.join(slaves_dir, name)), depth + 1):
                if disk not in found:
                    found.append(disk)
        return found
    if os.path.isfile(os.path.join(sys_dir, "partition")):
        return [_block_name(os.path.dirname(sys_dir))]
    return [_block_name(sys_dir)]


@dataclass(frozen=True)
class Source:
    """Where a cache dir's counters come from: kind diskstats (device, disks), nfs (mount point), or none (why)."""

    kind: str
    device: Optional[str] = None
    disks: Tuple[str, ...] = ()
    mount_point: Optional[str] = None
    fstype: Optional[str] = None
    why_none: Optional[str] = None


def find_source(path: str, sys_root: str = "/sys", mountinfo: str = MOUNTINFO) -> Source:
    """The counters that describe I/O to `path`'s filesystem."""
    real = os.path.realpath(path)
    mount = find_mount(read_text(mountinfo), real)
    fstype = mount["fstype"]
    if fstype in NFS_TYPES:
        return Source("nfs", mount_point=mount["mount_point"], fstype=fstype)
    sys_dir = block_device_dir(real, sys_root)
    device = mount["device"] or ""
    if sys_dir is None and device.startswith("/dev/"):
        # btrfs and others report an anonymous st_dev: the mounted device names the block device instead.
        candidate = os.path.realpath(f"{sys_root}/class/block/{os.path.basename(os.path.realpath(device))}")
        sys_dir = candidate if os.path.isdir(candidate) else None
    if sys_dir is None:
        why = f"{fstype or 'this filesystem'} has no block device or NFS mount whose counters the kernel keeps"
        return Source("none", mount_point=mount["mount_point"], fstype=fstype, why_none=why)
    return Source(
        "diskstats",
        device=_block_name(sys_dir),
        disks=tuple(disks_below(sys_dir)),
        mount_point=mount["mount_point"],
        fstype=fstype,
    )
