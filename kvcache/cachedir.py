"""The run's own directory under --cache-dir: created and marked by us, and the only thing we delete.

Layout: <cache-dir>/kvcache-run-<run id>/ holds a marker file, and for each rank N an owner record
(.storagebench-kvcache-rank-N: host, pid, process start, boot) written before its rank-N/ directory.
Under MPI every rank makes the run directory (shared or host-local alike) and its own rank-N.
The owner records let a later run, or `kvcache clean`, tell a live run from one that was killed.
"""

import errno
import json
import os
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from kvcache.errors import UsageError
from kvcache.options import BY_NAME

MARKER = ".storagebench-kvcache-run"
MARKER_TEXT = "storagebench.kvcache run {run_id}\n"  # the same text since the first version
OWNER_PREFIX = ".storagebench-kvcache-rank-"
OWNER_FILE = re.compile(re.escape(OWNER_PREFIX) + r"[0-9]+")
RANK_DIR = re.compile(r"rank-([0-9]+)")
RUN_PREFIX = "kvcache-run-"
OWNER_SCHEMA = "storagebench.kvcache/run-owner/v1"
# A rank whose owner cannot be read (an older engine wrote no record, or the rank was killed while writing
# it) counts as ended only when nothing in its run directory changed for longer than any run can last.
MAX_RUN_SECONDS = BY_NAME["duration"].maximum + 24 * 3600
# A run directory holding no rank yet is being set up, unless it has been so for longer than this.
STARTUP_GRACE_S = 60.0
# Every warning about another run that may have used the storage at the same time holds this phrase: the MLPerf
# checker finds such trials by it.
SHARED_STORAGE = "shared the storage with it"
# The directories themselves are refused; below the subtrees nothing is ever a storage under test.
FORBIDDEN = (
    "/",
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/boot",
    "/proc",
    "/sys",
    "/dev",
    "/lib",
    "/lib64",
    "/var",
    "/root",
    "/run",
    "/home",
)
FORBIDDEN_SUBTREES = ("/etc", "/usr", "/bin", "/sbin", "/boot", "/proc", "/sys", "/dev")


def is_system_directory(path: str) -> bool:
    """Whether an absolute, normalized path is a system directory or lies below a system subtree.

    Pure (no filesystem access): the playbooks ask it on the controller about paths on the hosts.
    """
    return path in FORBIDDEN or any(path.startswith(tree + "/") for tree in FORBIDDEN_SUBTREES)


def validate_cache_dir(path: Optional[str]) -> str:
    """Check --cache-dir without creating anything. Returns the absolute, resolved path."""
    if not path:
        raise UsageError("--cache-dir", "required: a directory on the storage under test")
    real = os.path.realpath(os.path.abspath(path))
    if is_system_directory(real):
        raise UsageError(
            "--cache-dir",
            f"{path} is a system directory; choose a directory on the storage "
            "under test (for example /mnt/nvme/kvcache)",
        )
    if not os.path.isdir(real):
        raise UsageError("--cache-dir", f"{path} does not exist or is not a directory")
    if not os.access(real, os.W_OK | os.X_OK):
        raise UsageError("--cache-dir", f"{path} is not writable by this user")
    return real


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def process_start_ticks(pid) -> Optional[int]:
    """When the process started, in clock ticks since boot (/proc/PID/stat field 22): a pid that was
    reused by another process has another start time."""
    text = _read_text(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _boot_id() -> Optional[str]:
    text = _read_text("/proc/sys/kernel/random/boot_id")
    return text.strip() if text else None


def _pid_namespace() -> Optional[str]:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def this_process(run_id: str, rank: int) -> dict:
    """The owner record of a rank: enough for another process to tell whether it still runs."""
    return {
        "schema": OWNER_SCHEMA,
        "run_id": run_id,
        "rank": rank,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start_ticks": process_start_ticks("self"),
        "boot_id": _boot_id(),
        "pid_namespace": _pid_namespace(),
        "started_unix_s": round(time.time(), 3),
    }


class RunDirectory:
    """Creates <cache-dir>/kvcache-run-<id>/rank-<N> (and its owner record) and removes exactly that."""

    def __init__(self, cache_dir: str, run_id: str, rank: int):
        self.run_dir = os.path.join(cache_dir, RUN_PREFIX + run_id)
        self.rank_dir = os.path.join(self.run_dir, f"rank-{rank}")
        self.owner_file = os.path.join(self.run_dir, f"{OWNER_PREFIX}{rank}")
        self.run_id = run_id
        self.rank = rank
        self._created_owner = False
        self._created_rank_dir = False
        self._lock = threading.Lock()  # remove() may come from the signal watch thread and the main thread at once

    def create(self) -> None:
        try:
            os.mkdir(self.run_dir, 0o700)
        except FileExistsError:
            pass  # another rank on this host or filesystem made it
        marker = os.path.join(self.run_dir, MARKER)
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another rank marked it
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(MARKER_TEXT.format(run_id=self.run_id))
        # The owner record comes before the rank directory, so that no rank-N exists without one;
        # O_EXCL: two ranks never share a namespace.
        fd = os.open(self.owner_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._created_owner = True
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(this_process(self.run_id, self.rank)) + "\n")
        os.mkdir(self.rank_dir, 0o700)
        self._created_rank_dir = True

    def remove(self) -> None:
        """Delete this rank's namespace and owner record, then the run directory once no rank is left in it.
        Safe to call again, and from two threads at once."""
        with self._lock:
            self._remove()

    def _remove(self) -> None:
        if self._created_rank_dir:
            shutil.rmtree(self.rank_dir, ignore_errors=True)
            self._created_rank_dir = False
        if self._created_owner:
            _unlink_if_present(self.owner_file)
            self._created_owner = False
        if not os.path.isfile(os.path.join(self.run_dir, MARKER)):
            return
        try:
            leftovers = [n for n in os.listdir(self.run_dir) if n != MARKER]
        except FileNotFoundError:
            return
        if leftovers:
            return  # other ranks still working in a shared run directory; the last one removes it
        try:
            os.unlink(os.path.join(self.run_dir, MARKER))
            os.rmdir(self.run_dir)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                raise


def _unlink_if_present(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- other runs' directories ------------------------------------------------------------------
LIVE = "live"  # a rank runs on this host now
UNCHECKED = "unchecked"  # a rank of another host or PID namespace: this host cannot tell
UNKNOWN = "unknown"  # no readable owner record, and too recent to call it ended
STALE = "stale"  # every rank has ended (killed, or kept with --keep-cache): nothing will remove it


@dataclass
class OtherRun:
    """What one kvcache-run-* directory under a cache dir is, seen from this process."""

    name: str
    path: str
    state: str
    ranks: Dict[int, Optional[dict]] = field(default_factory=dict)  # rank -> owner record (None: unreadable)
    why: str = ""

    def owners_text(self) -> str:
        """ "pid 123 on host a, pid 456 on host b": who worked in it."""
        owners = [o for o in self.ranks.values() if o]
        parts = sorted({f"pid {o.get('pid')} on {o.get('host')}" for o in owners})
        return ", ".join(parts[:4]) + (f" and {len(parts) - 4} more" if len(parts) > 4 else "") or "no owner record"


def _read_owner(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.loads(handle.read(4096))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("schema") != OWNER_SCHEMA:
        return None
    return record


def rank_state(owner: Optional[dict], here: Optional[dict] = None) -> str:
    """LIVE, UNCHECKED, UNKNOWN (no readable record) or STALE for one rank's owner record."""
    if owner is None:
        return UNKNOWN
    here = here or this_process("", 0)
    if owner.get("host") != here["host"]:
        return UNCHECKED
    if owner.get("boot_id") and here["boot_id"] and owner["boot_id"] != here["boot_id"]:
        return STALE  # this host rebooted since: no process of that boot runs
    if owner.get("pid_namespace") != here["pid_namespace"]:
        return UNCHECKED  # another PID namespace (a container): its pids mean nothing here
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return UNKNOWN
    started = process_start_ticks(pid)
    if started is None:
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return STALE
        except OSError:
            pass
        return UNCHECKED  # it exists, but /proc hides it (hidepid): whose it is cannot be told
    return LIVE if started == owner.get("pid_start_ticks") else STALE  # else the pid was reused


def _newest_change(path: str) -> float:
    """The latest mtime of the run directory and of the directories right inside it (one level)."""
    newest = os.lstat(path).st_mtime
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def inspect_run_dir(path: str, here: Optional[dict] = None, now: Optional[float] = None) -> Optional[OtherRun]:
    """Classify one kvcache-run-* directory; None when it is not one of ours (not a directory, no marker)."""
    name = os.path.basename(path)
    marker = os.path.join(path, MARKER)
    try:
        if not os.path.isdir(path) or os.path.islink(path) or not os.path.isfile(marker) or os.path.islink(marker):
            return None
        names = os.listdir(path)
    except OSError:
        return None
    ranks: Dict[int, Optional[dict]] = {}
    for entry in names:
        if OWNER_FILE.fullmatch(entry):
            ranks[int(entry[len(OWNER_PREFIX) :])] = _read_owner(os.path.join(path, entry))
        else:
            match = RANK_DIR.fullmatch(entry)
            if match and int(match.group(1)) not in ranks:
                ranks[int(match.group(1))] = None  # a rank directory without an owner record
    here = here or this_process("", 0)
    now = time.time() if now is None else now
    states = {rank_state(owner, here) for owner in ranks.values()}
    try:
        age = now - _newest_change(path)
    except OSError:
        return None  # removed while we looked: it was a run that just finished
    if LIVE in states:
        state, why = LIVE, "running on this host"
    elif UNCHECKED in states:
        hosts = sorted({o.get("host") for o in ranks.values() if o and o.get("host") != here["host"]})
        state = UNCHECKED
        why = (
            f"a run of {', '.join(map(str, hosts))}, which this host cannot check"
            if hosts
            else "a run this host cannot check (another PID namespace, or a process /proc does not show)"
        )
    elif not ranks:
        state = STALE if age > STARTUP_GRACE_S else UNKNOWN
        why = "no rank left in it" if state == STALE else "being set up"
    elif UNKNOWN in states:
        state = STALE if age > MAX_RUN_SECONDS else UNKNOWN
        why = (
            f"no owner record (an older engine) and unchanged for {age / 86400:.0f} days"
            if state == STALE
            else "no owner record (an older engine, or killed while starting): it may still be running"
        )
    else:
        state, why = STALE, "ended: killed, or kept with --keep-cache"
    return OtherRun(name, path, state, ranks, why)


def other_runs(cache_dir: str, own_run_id: Optional[str] = None) -> List[OtherRun]:
    """Our run directories under `cache_dir` other than `own_run_id`'s, classified. Never raises for a
    directory that changes while it is read."""
    try:
        names = sorted(n for n in os.listdir(cache_dir) if n.startswith(RUN_PREFIX))
    except OSError:
        return []
    here = this_process("", 0)
    found = []
    for name in names:
        if own_run_id is not None and name == RUN_PREFIX + own_run_id:
            continue
        run = inspect_run_dir(os.path.join(cache_dir, name), here)
        if run is not None:
            found.append(run)
    return found


def other_run_warnings(cache_dir: str, runs: List[OtherRun]) -> List[str]:
    """What a run says about the other runs' directories it found: one line per run that may have shared
    the storage with it, one line for all the leftovers."""
    lines = []
    for run in runs:
        if run.state == LIVE:
            lines.append(
                f"another run was working in {cache_dir} at the same time ({run.name}: {run.owners_text()}): "
                f"this run {SHARED_STORAGE}, so its numbers are not the storage's alone"
            )
        elif run.state == UNCHECKED:
            lines.append(
                f"{cache_dir} holds {run.name} ({run.owners_text()}): {run.why}; if it was running, "
                f"this run {SHARED_STORAGE}"
            )
    unknown = [run.name for run in runs if run.state == UNKNOWN]
    if unknown:
        lines.append(
            f"{cache_dir} holds {_names(unknown)} with no owner record (an older engine version, or a run "
            f"starting): cannot tell whether it runs; if it does, this run {SHARED_STORAGE}"
        )
    stale = [run.name for run in runs if run.state == STALE]
    if stale:
        lines.append(
            f"{cache_dir} holds {len(stale)} run director{'y' if len(stale) == 1 else 'ies'} of runs that are no "
            f"longer running ({_names(stale)}; killed, or kept with --keep-cache), which take space: "
            f"remove them with: kvcache clean --cache-dir {cache_dir}"
        )
    return lines


def _names(names: List[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
