"""Storage whose speed a test controls: an ext4 image on a loop device, throttled by a cgroup v1 blkio group.

`loop_storage()` makes the image, attaches and mounts it and, when given limits, makes a blkio group that caps
the bytes (and I/O operations) per second its processes may move to and from that loop device. Processes
started with `storage.popen()` / `storage.run()` run inside the group (their children inherit it). Teardown
undoes only what was made here, in order (the group's processes, the mount, the loop device, the group, the
image), each wait bounded, also when the test fails. The throttle holds for I/O that reaches the device
(O_DIRECT); buffered writes leave from the kernel's flusher, outside the group.
"""

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

BLKIO_ROOT = Path("/sys/fs/cgroup/blkio")
TOOLS = ("truncate", "mkfs.ext4", "losetup", "mount", "umount")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])  # root's tools, whatever PATH says
LIMIT_FILES = {  # limit name -> the blkio file that sets it for one device
    "read_bps": "blkio.throttle.read_bps_device",
    "write_bps": "blkio.throttle.write_bps_device",
    "read_iops": "blkio.throttle.read_iops_device",
    "write_iops": "blkio.throttle.write_iops_device",
}
COMMAND_TIMEOUT_S = 60  # mkfs, losetup, mount: seconds on a loaded 2-core VM, never minutes
TEARDOWN_WAIT_S = 15  # for the group's processes to die, the mount to go, the group to empty


class Unavailable(Exception):
    """This machine cannot make throttled loop storage; the message says why (a test skips with it)."""


def missing() -> Optional[str]:
    """Why loop storage with a blkio throttle cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (losetup, mount and cgroup writes)"
    if not (BLKIO_ROOT / LIMIT_FILES["read_bps"]).is_file():
        return f"needs the cgroup v1 blkio controller with throttling at {BLKIO_ROOT}"
    absent = [tool for tool in TOOLS if _tool(tool) is None]
    if absent:
        return f"needs {', '.join(absent)}"
    if not Path("/dev/loop-control").exists():
        return "needs loop devices (/dev/loop-control)"
    return None


def _tool(name: str) -> Optional[str]:
    return shutil.which(name, path=SBIN_PATH)


def _run(argv: List[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)


def _checked(argv: List[str]) -> str:
    done = _run(argv)
    if done.returncode != 0:
        raise Unavailable(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()[:300]}")
    return done.stdout.strip()


class LoopStorage:
    """A mounted loop device (and its blkio group when throttled); made and removed by loop_storage()."""

    def __init__(self, work: Path, size_mib: int, limits: Dict[str, int]):
        self.name = f"kvcache-test-{os.getpid()}-{secrets.token_hex(4)}"  # parallel runs never collide
        self.image = work / f"{self.name}.img"
        self.mount = work / "mnt"
        self.size_mib = size_mib
        self.limits = dict(limits)
        self.device: Optional[str] = None
        self.major_minor: Optional[str] = None
        self.cgroup: Optional[Path] = None
        self._mounted = False
        self._processes: List[subprocess.Popen] = []

    def _make(self) -> None:
        _checked([_tool("truncate"), "-s", f"{self.size_mib}M", str(self.image)])
        # Inode tables and journal written now, not by a lazy-init thread during the measurement.
        _checked([_tool("mkfs.ext4"), "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(self.image)])
        self.device = _checked([_tool("losetup"), "-f", "--show", str(self.image)])
        rdev = os.stat(self.device).st_rdev
        self.major_minor = f"{os.major(rdev)}:{os.minor(rdev)}"
        self.mount.mkdir()
        _checked([_tool("mount"), "-t", "ext4", self.device, str(self.mount)])
        self._mounted = True
        if self.limits:
            cgroup = BLKIO_ROOT / self.name
            cgroup.mkdir()
            self.cgroup = cgroup
            for limit, per_second in self.limits.items():
                (cgroup / LIMIT_FILES[limit]).write_text(f"{self.major_minor} {int(per_second)}\n")

    @property
    def throttled(self) -> bool:
        return self.cgroup is not None

    def _enter(self) -> None:
        # Runs in the child between fork and exec: from here on its I/O (and its children's) is throttled.
        if self.cgroup is not None:
            (self.cgroup / "cgroup.procs").write_text(str(os.getpid()))

    def popen(self, argv: List[str], **kwargs) -> subprocess.Popen:
        """Start argv inside the blkio group (a plain start when unthrottled); teardown kills it if still running."""
        process = subprocess.Popen(argv, preexec_fn=self._enter, **kwargs)
        self._processes.append(process)
        return process

    def run(self, argv: List[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run(argv, capture_output=True, text=True) inside the group, killed after timeout seconds."""
        process = self.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)

    def members(self) -> List[int]:
        """Pids in the blkio group now (empty when unthrottled)."""
        if self.cgroup is None:
            return []
        return [int(pid) for pid in (self.cgroup / "cgroup.procs").read_text().split()]

    def bytes_moved(self) -> Dict[str, int]:
        """{"read": bytes, "write": bytes} the group's processes moved to and from the loop device so far."""
        moved = {"read": 0, "write": 0}
        if self.cgroup is None:
            return moved
        for line in (self.cgroup / "blkio.throttle.io_service_bytes").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == self.major_minor and parts[1].lower() in moved:
                moved[parts[1].lower()] = int(parts[2])
        return moved

    def _remove(self) -> None:
        problems = []
        for process in self._processes:
            if process.poll() is None:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=TEARDOWN_WAIT_S)
        # Descendants (mpirun's ranks) are in the group too, and only ours are: no one else knows its name.
        deadline = time.monotonic() + TEARDOWN_WAIT_S
        while self.members() and time.monotonic() < deadline:
            for pid in self.members():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        if self._mounted:
            deadline = time.monotonic() + TEARDOWN_WAIT_S
            while _run([_tool("umount"), str(self.mount)]).returncode != 0:
                if time.monotonic() >= deadline:
                    # Still busy: detach it now; the kernel frees it when the last user goes.
                    done = _run([_tool("umount"), "-l", str(self.mount)])
                    if done.returncode != 0:
                        problems.append(f"umount {self.mount}: {done.stderr.strip()}")
                    break
                time.sleep(0.2)
        if self.device is not None:
            done = _run([_tool("losetup"), "-d", self.device])
            if done.returncode != 0:
                problems.append(f"losetup -d {self.device}: {done.stderr.strip()}")
        if self.cgroup is not None:
            deadline = time.monotonic() + TEARDOWN_WAIT_S
            while True:
                try:
                    self.cgroup.rmdir()
                    break
                except OSError as error:  # EBUSY until the last killed member is gone
                    if time.monotonic() >= deadline:
                        problems.append(f"rmdir {self.cgroup}: {error}")
                        break
                    time.sleep(0.1)
        if problems:
            raise RuntimeError("throttled storage teardown: " + "; ".join(problems))


@contextlib.contextmanager
def loop_storage(
    size_mib: int = 512,
    read_bps: Optional[int] = None,
    write_bps: Optional[int] = None,
    read_iops: Optional[int] = None,
    write_iops: Optional[int] = None,
) -> Iterator[LoopStorage]:
    """A fresh ext4 file system of size_mib MiB on a loop device, mounted; throttled when any limit is given.

    Raises Unavailable (before yielding, nothing left behind) when the machine cannot make it.
    """
    reason = missing()
    if reason:
        raise Unavailable(reason)
    given = {"read_bps": read_bps, "write_bps": write_bps, "read_iops": read_iops, "write_iops": write_iops}
    limits = {name: value for name, value in given.items() if value is not None}
    with tempfile.TemporaryDirectory(prefix="kvcache-loop-") as work:
        storage = LoopStorage(Path(work), size_mib, limits)
        try:
            storage._make()
            yield storage
        finally:
            storage._remove()
