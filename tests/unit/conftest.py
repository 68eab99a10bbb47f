"""Make `ansible_collections.storagebench.kvcache` importable for plain pytest.

`ansible-test units` runs from `.../ansible_collections/storagebench/kvcache` and sets up imports
itself. Plain pytest from a checkout anywhere else gets a temporary
`ansible_collections/storagebench/kvcache` symlink to the checkout, outside the checkout, on sys.path.
"""

import atexit
import hashlib
import os
import shutil
import stat
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _collections_root():
    parts = ROOT.rstrip(os.sep).split(os.sep)
    if parts[-3:-1] == ["ansible_collections", "storagebench"] and parts[-1] == "kvcache":
        return os.sep.join(parts[:-3]) or os.sep
    farm = tempfile.mkdtemp(prefix="kvcache-collections-")
    atexit.register(shutil.rmtree, farm, True)
    namespace = os.path.join(farm, "ansible_collections", "storagebench")
    os.makedirs(namespace)
    os.symlink(ROOT, os.path.join(namespace, "kvcache"))
    return farm


_root = _collections_root()
if _root not in sys.path:
    sys.path.insert(0, _root)


def _snapshot(root) -> dict:
    """Every entry under `root` and `root` itself, not following symlinks: mode, owner, and for regular
    files size and content hash. Two equal snapshots mean nothing was created, deleted, changed or chmod-ed."""
    root = str(root)
    seen = {}
    for directory, subdirs, names in os.walk(root):
        for path in [directory] + [os.path.join(directory, name) for name in subdirs + names]:
            info = os.lstat(path)
            digest = None
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            seen[os.path.relpath(path, root)] = (info.st_mode, info.st_uid, info.st_gid, info.st_size, digest)
    return seen


@pytest.fixture
def tree_snapshot():
    """The `_snapshot` function, for tests that assert a failure left a directory exactly as it was."""
    return _snapshot
