"""The torch and cupy GPU tiers, each its own class, driven through stand-in libraries.

This machine has neither library nor a CUDA device: the stand-ins below keep device arrays in host
memory (numpy) with each library's calls the tiers use, so the tiers' data path (store, read, demote)
is checked byte for byte. A real device run is the `--gpu-backend torch|cupy` run on a GPU host.
"""

import sys
import types

import numpy as np
import pytest

from kvcache.errors import UsageError
from kvcache.options import BY_NAME
from kvcache.tiers import GPU_TIERS, CupyTier, TierManager, TorchTier, choose_gpu_backend

E = 32 << 10  # one entry: two I/O chunks of the conftest's stack


class FakeTensor:
    """torch.Tensor: slicing gives a view, copy_ copies into it."""

    def __init__(self, array):
        self.array = array

    def __getitem__(self, index):
        return FakeTensor(self.array[index])

    def copy_(self, other):
        self.array[...] = other.array
        return self


def fake_torch(available=True):
    torch = types.ModuleType("torch")
    torch.uint8 = np.uint8
    torch.syncs = 0

    def empty(size, dtype, device):
        assert dtype is np.uint8 and device == "cuda"
        return FakeTensor(np.zeros(size, dtype=np.uint8))

    def synchronize():
        torch.syncs += 1

    torch.empty = empty
    torch.from_numpy = FakeTensor
    torch.cuda = types.SimpleNamespace(synchronize=synchronize, is_available=lambda: available)
    return torch


class FakeCupyArray:
    """cupy.ndarray: slicing gives a view, set() uploads, get(out=) downloads."""

    def __init__(self, array):
        self.array = array

    def __getitem__(self, index):
        return FakeCupyArray(self.array[index])

    def set(self, host):
        self.array[...] = host

    def get(self, out):
        out[...] = self.array


def fake_cupy(devices=1):
    cupy = types.ModuleType("cupy")
    cupy.uint8 = np.uint8
    cupy.syncs = 0

    def synchronize():
        cupy.syncs += 1

    cupy.empty = lambda size, dtype: FakeCupyArray(np.zeros(size, dtype=np.uint8))
    cupy.cuda = types.SimpleNamespace(
        Device=lambda: types.SimpleNamespace(synchronize=synchronize),
        runtime=types.SimpleNamespace(getDeviceCount=lambda: devices),
    )
    return cupy


LIBRARIES = {"torch": (TorchTier, fake_torch), "cupy": (CupyTier, fake_cupy)}


def device_bytes(handle) -> bytes:
    return handle.array.tobytes()


@pytest.fixture(params=sorted(LIBRARIES))
def gpu_stack(request, make_stack, monkeypatch):
    """A stack whose GPU tier is the library's own class (room for one entry), over the stand-in library."""
    tier_class, make_library = LIBRARIES[request.param]
    library = make_library()
    monkeypatch.setitem(sys.modules, request.param, library)
    stack = make_stack(cpu_bytes=4 * E, storage_bytes=4 * E)
    stack.gpu = tier_class(E, stack.metrics, stack.mover)
    stack.manager = TierManager([stack.gpu, stack.cpu, stack.storage], stack.metrics, stack.stop)
    return stack, library


def test_gpu_tiers_are_one_class_per_library_and_cover_the_backend_choices():
    assert GPU_TIERS == {"torch": TorchTier, "cupy": CupyTier}
    assert set(BY_NAME["gpu_backend"].choices) == set(GPU_TIERS) | {"auto", "simulated"}
    assert not hasattr(TorchTier, "_cupy") and not hasattr(CupyTier, "_torch")


def test_an_entry_stored_on_the_device_is_demoted_with_its_bytes(gpu_stack):
    stack, library = gpu_stack
    manager = stack.manager
    assert manager.write_new("a", E, stack.pattern) == "gpu"
    on_device = device_bytes(manager.entries["a"].handle)
    assert len(on_device) == E and on_device != bytes(E)  # the pattern, stamped, reached the device
    assert library.syncs >= 2  # every chunk waited for
    assert manager.read("a") == "gpu"
    assert manager.write_new("b", E, stack.pattern) == "gpu"  # a -> cpu: copied out of the device
    assert stack.tier_of("a") == "cpu"
    assert bytes(manager.entries["a"].handle) == on_device
    counters = stack.metrics.export()["counters"]
    assert counters["demotions.gpu"] == 1 and counters["hits.gpu"] == 1
    assert stack.metrics.bytes["gpu.write"] == 2 * E and stack.metrics.bytes["gpu.read"] == 2 * E  # read + demote
    assert stack.gpu.describe() == {"capacity_bytes": E, "simulated": False, "library": stack.gpu.library}


def test_auto_picks_the_first_library_with_a_device(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", fake_torch(available=False))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(devices=1))
    assert choose_gpu_backend("auto") == "cupy"
    monkeypatch.setitem(sys.modules, "torch", fake_torch(available=True))
    assert choose_gpu_backend("auto") == "torch"
    monkeypatch.setitem(sys.modules, "torch", fake_torch(available=False))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(devices=0))
    assert choose_gpu_backend("auto") == "simulated"


def test_a_named_library_without_a_device_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", fake_torch(available=False))
    monkeypatch.setitem(sys.modules, "cupy", None)  # import fails: not installed
    with pytest.raises(UsageError, match="torch with a CUDA device is not available"):
        choose_gpu_backend("torch")
    with pytest.raises(UsageError, match="cupy with a CUDA device is not available"):
        choose_gpu_backend("cupy")
    assert choose_gpu_backend("auto") == "simulated"


def test_the_manager_asks_the_last_tier_whether_a_victim_is_evicted_or_dropped(make_stack):
    stack = make_stack(gpu_bytes=E, cpu_bytes=E, storage_bytes=E)
    assert [t.evicts for t in stack.manager.tiers] == [False, False, True]
    assert [t.release_invalidates_handle for t in stack.manager.tiers] == [False, False, True]
    for index in range(4):  # one entry per tier: the fourth pushes the first out of storage
        stack.manager.write_new(f"k{index}", E, stack.pattern)
    assert stack.metrics.counters["evictions.storage"] == 1 and stack.metrics.counters["dropped_entries"] == 0
    # Without room in storage, what the CPU tier (which does not evict) lets go is a dropped entry.
    no_storage = make_stack(gpu_bytes=E, cpu_bytes=E, storage_bytes=0)
    for index in range(3):  # the third pushes the first out of the CPU tier, with nowhere to go
        no_storage.manager.write_new(f"m{index}", E, no_storage.pattern)
    assert no_storage.metrics.counters["dropped_entries"] == 1 and no_storage.metrics.counters["evictions.storage"] == 0
