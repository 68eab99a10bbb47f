"""The result file (`--output`): checked before the run, written atomically after it.

The result replaces only a regular file. A device node, a FIFO, a socket, a directory or a symlink
(even one to a regular file) at that path is refused before the run, and checked again just before
the rename, so `--output /dev/null` can never replace the system's node. The file is created with
mode 0666 less the umask (0644 usually), like any tool's output.
"""

import errno
import json
import os
import secrets
import stat
from typing import Tuple

from kvcache.errors import UsageError, shown_path

TEMPORARY_PREFIX = ".kvcache-result-"
CREATE_ATTEMPTS = 100  # unique random names: a clash is already unlikely once


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _directory_of(path: str) -> str:
    """The directory the kernel resolves the name in (dirname, not abspath: `link/../x` goes through the link)."""
    return os.path.dirname(path) or "."


def _not_regular(path: str):
    """What is at `path` when it exists and is not a regular file (lstat: a symlink is itself), else None."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    return None if stat.S_ISREG(mode) else _kind(mode)


def _create_beside(path: str) -> Tuple[int, str]:
    """A new, empty, uniquely named file in the directory of `path`; O_EXCL, so nothing existing is opened."""
    directory = _directory_of(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _attempt in range(CREATE_ATTEMPTS):
        temporary = os.path.join(directory, f"{TEMPORARY_PREFIX}{secrets.token_hex(6)}.json")
        try:
            # 0o666 goes through the umask, as for any file a tool creates.
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", directory)


def check_output_path(path: str) -> None:
    """Before the run: --output names a regular file (or nothing yet) in a directory where we can create files."""
    if not path:
        raise UsageError("--output", "must not be empty: give the path of the result file")
    where = shown_path(path)
    if path.endswith("/"):
        raise UsageError("--output", f"{where} names a directory; give a file name")
    try:
        found = _not_regular(path)
    except OSError as exc:  # a parent that is a file, a name too long, a loop of symlinks, ...
        raise UsageError("--output", f"{where}: {exc.strerror}") from None
    if found:
        raise UsageError("--output", f"{where} is {found}; the result replaces only a regular file")
    directory = _directory_of(path)
    if not os.path.isdir(directory):
        raise UsageError("--output", f"directory {shown_path(directory)} does not exist")
    # os.access answers yes to root for read-only places such as /proc: create a file to be sure.
    try:
        fd, temporary = _create_beside(path)
    except OSError as exc:
        raise UsageError("--output", f"cannot create files in {shown_path(directory)}: {exc.strerror}") from None
    os.close(fd)
    os.unlink(temporary)


def write_json_atomically(path: str, data: dict) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a result.

    Raises OSError when the file cannot be written or `path` has become something other than a regular file.
    """
    fd, temporary = _create_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())  # a crash after the rename must not leave an empty result
        found = _not_regular(path)  # it may have changed during the run
        if found:
            raise OSError(f"{path} is now {found}; the result replaces only a regular file")
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise
