"""Make `ansible_collections.storagebench.kvcache` importable for plain pytest.

`ansible-test units` runs from `.../ansible_collections/storagebench/kvcache` and sets up imports
itself. Plain pytest from a checkout anywhere else gets a temporary
`ansible_collections/storagebench/kvcache` symlink to the checkout, outside the checkout, on sys.path.
"""

import atexit
import os
import shutil
import sys
import tempfile

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
