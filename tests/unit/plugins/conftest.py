"""Shared test data: the engine's real option contract, `kvcache.describe.describe()` of this collection's source.

Plain pytest has the engine installed (editable); `ansible-test units` runs in a venv of its own with the
collection at .../ansible_collections/storagebench/kvcache, where the engine's package `kvcache/` sits at the
collection root: that root goes on sys.path when nothing else provides the package. describe needs nothing
beyond PyYAML, which ansible-core itself requires.
"""

import copy
import importlib.util
import os
import sys

import pytest

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if importlib.util.find_spec("kvcache") is None:
    sys.path.append(COLLECTION_ROOT)

from kvcache.describe import describe  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture
def description():
    """A fresh copy of what `python -m kvcache describe` prints, for each test."""
    return copy.deepcopy(describe())
