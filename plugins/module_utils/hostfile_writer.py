# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""Writing the hostfile where the module runs, replacing no file but one the module wrote itself.

Every hostfile the module writes starts with HOSTFILE_MARKER. An existing path is replaced only when
it is a regular file that starts with that line; a directory, a symlink, a FIFO or device node, or a
file without the mark is refused. The content goes to a temporary file in the same directory, which
is then renamed into place; on any failure the temporary file, and a directory created for it, are
removed. The module's own directory for automatic hostfiles (under a shared /var/tmp) is used only
when it is a real directory owned by this user and writable by no one else.
Every error is an OptionError naming `hostfile`.
"""

import os
import stat
import tempfile

from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import OptionError, quote
from ansible_collections.storagebench.kvcache.plugins.module_utils.mpi_launch import HOSTFILE_MARKER

# Paths are quoted longer than other values: a cut path would not say which file is meant.
_PATH_CHARS = 160
_MODE = 0o644
_DIRECTORY_MODE = 0o755


def _path(path):
    return quote(path, _PATH_CHARS)


def _error(message):
    return OptionError("hostfile", message)


def _check_existing_directory(directory):
    """A directory that `hostfile:` names must exist already: the module creates none there."""
    if not os.path.isdir(directory):
        raise _error(f"the directory {_path(directory)} does not exist (or is not a directory)")


def _check_private_directory(directory, create):
    """The automatic hostfiles' directory: ours alone, or created now (returns whether it was)."""
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        if not create:
            return False
        try:
            os.mkdir(directory, _DIRECTORY_MODE)
        except FileExistsError:  # made meanwhile by another run: check it as any existing one
            return _check_private_directory(directory, create=False)
        except OSError as exc:
            raise _error(f"cannot create the directory {_path(directory)}: {exc.strerror}") from None
        os.chmod(directory, _DIRECTORY_MODE)  # ours, just made: the umask must not decide who can read it
        return True
    if stat.S_ISLNK(info.st_mode):
        raise _error(f"the directory {_path(directory)} is a symlink; refusing to write through it")
    if not stat.S_ISDIR(info.st_mode):
        raise _error(f"{_path(directory)} should be the module's directory for hostfiles but is not a directory")
    if info.st_uid != os.geteuid():
        raise _error(
            f"the directory {_path(directory)} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})"
        )
    if info.st_mode & 0o022:
        raise _error(f"the directory {_path(directory)} is writable by other users (mode {oct(info.st_mode & 0o7777)})")
    return False


def _read_at_most(fd, limit):
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _holds(path, content):
    """Whether `path` already holds `content`; None when it does not exist. Refuses what is not ours."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _error(f"cannot look at {_path(path)}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise _error(f"{_path(path)} is a symlink; refusing to replace it")
    if stat.S_ISDIR(info.st_mode):
        raise _error(f"{_path(path)} is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise _error(f"{_path(path)} is not a regular file (a FIFO, socket or device node); refusing to replace it")
    wanted = content.encode("utf-8")
    try:
        # A path swapped for a symlink or a FIFO since lstat neither leads elsewhere nor hangs.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise _error(f"cannot read {_path(path)}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _error(f"{_path(path)} is not a regular file; refusing to replace it")
        present = _read_at_most(fd, len(wanted) + 1)
    finally:
        os.close(fd)
    if present == wanted:
        return True
    if not present.startswith((HOSTFILE_MARKER + "\n").encode("utf-8")):
        raise _error(
            f"{_path(path)} exists and is not a hostfile this module wrote (no marker first line); "
            "remove it or choose another path"
        )
    return False


def write_hostfile(path, content, check_mode=False, private_directory=False):
    """Write `content` at `path` unless it is there already; returns whether the file changed (or would).

    `private_directory`: the parent is the module's own directory for automatic hostfiles, created
    when missing; otherwise the parent must exist.
    """
    directory = os.path.dirname(path) or "/"
    if private_directory:
        created = _check_private_directory(directory, create=not check_mode)
    else:
        _check_existing_directory(directory)
        created = False
    if _holds(path, content):
        return False
    if check_mode:
        return True
    temp = None
    done = False
    try:
        fd, temp = tempfile.mkstemp(prefix=".hostfile-", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), _MODE)
            handle.write(content)
        _holds(path, content)  # once more just before the rename: nothing of someone else's appeared meanwhile
        os.rename(temp, path)
        done = True
    except OSError as exc:
        raise _error(f"cannot write {_path(path)}: {exc.strerror or exc}") from None
    finally:
        if not done:
            _discard(temp, directory if created else None)
    return True


def _discard(temp, directory):
    """Remove what a failed write left: its temporary file, and the directory made for it."""
    for remove, target in ((os.unlink, temp), (os.rmdir, directory)):
        if target is None:
            continue
        try:
            remove(target)
        except OSError:
            pass
