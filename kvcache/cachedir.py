"""The run's own directory under --cache-dir: created and marked by us, and the only thing we delete.

Layout: <cache-dir>/kvcache-run-<run id>/rank-<N>/ with a marker file in the run directory.
Under MPI every rank makes the run directory (shared or host-local alike) and its own rank-N.
"""

import errno
import os
import shutil
from typing import Optional

from kvcache.errors import UsageError

MARKER = ".storagebench-kvcache-run"
RUN_PREFIX = "kvcache-run-"
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


def validate_cache_dir(path: Optional[str]) -> str:
    """Check --cache-dir without creating anything. Returns the absolute, resolved path."""
    if not path:
        raise UsageError("--cache-dir", "required: a directory on the storage under test")
    real = os.path.realpath(os.path.abspath(path))
    if real in FORBIDDEN or any(real.startswith(tree + "/") for tree in FORBIDDEN_SUBTREES):
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


class RunDirectory:
    """Creates <cache-dir>/kvcache-run-<id>/rank-<N> and removes exactly that."""

    def __init__(self, cache_dir: str, run_id: str, rank: int):
        self.run_dir = os.path.join(cache_dir, RUN_PREFIX + run_id)
        self.rank_dir = os.path.join(self.run_dir, f"rank-{rank}")
        self.run_id = run_id
        self._created_run_dir = False
        self._created_rank_dir = False

    def create(self) -> None:
        try:
            os.mkdir(self.run_dir, 0o700)
            self._created_run_dir = True
        except FileExistsError:
            pass  # another rank on this host or filesystem made it
        marker = os.path.join(self.run_dir, MARKER)
        if not os.path.exists(marker):
            with open(marker, "a", encoding="utf-8") as handle:
                handle.write(f"storagebench.kvcache run {self.run_id}\n")
        os.mkdir(self.rank_dir, 0o700)  # must be new: two ranks never share a namespace
        self._created_rank_dir = True

    def remove(self) -> None:
        """Delete this rank's namespace, then the run directory once no rank is left in it."""
        if self._created_rank_dir:
            shutil.rmtree(self.rank_dir, ignore_errors=True)
            self._created_rank_dir = False
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
