"""Fixtures shared by the engine's unit tests: small tier stacks on a real filesystem."""

import os
import threading

import pytest

from kvcache.metrics import Metrics
from kvcache.storage_io import BufferPool, FileIO, PatternSource, direct_io_supported
from kvcache.tiers import CpuTier, Mover, SimulatedGpuTier, StorageTier, TierManager

CHUNK = 16 << 10  # small chunks so that an entry spans several of them


class Stack:
    """A TierManager over a simulated GPU, a CPU tier and a storage tier in a temporary directory."""

    def __init__(self, directory, gpu_bytes, cpu_bytes, storage_bytes, promote=False, engine=None):
        self.directory = directory
        self.metrics = Metrics()
        self.stop = threading.Event()
        self.pool = BufferPool(4, CHUNK)
        self.pattern = PatternSource(self.pool)
        self.mover = Mover(self.pool, self.stop)
        if engine is None:
            engine = "direct" if direct_io_supported(directory) else "buffered"
        self.fileio = FileIO(engine)
        self.gpu = SimulatedGpuTier(gpu_bytes, self.metrics, self.mover)
        self.cpu = CpuTier(cpu_bytes, self.metrics, self.mover)
        self.storage = StorageTier(storage_bytes, self.metrics, self.mover, directory, self.fileio)
        self.manager = TierManager([self.gpu, self.cpu, self.storage], self.metrics, self.stop, promote=promote)

    def tier_of(self, key):
        """Name of the tier holding key, or None when the manager does not know it."""
        entry = self.manager.entries.get(key)
        if entry is None or entry.tier is None:
            return None
        return self.manager.tiers[entry.tier].name

    def lru_keys(self, tier):
        return list(tier.lru)

    def files(self):
        return sorted(os.listdir(self.directory))

    def close(self):
        self.pool.close()


@pytest.fixture
def make_stack(tmp_path):
    stacks = []

    def make(gpu_bytes=0, cpu_bytes=0, storage_bytes=0, promote=False, engine=None):
        directory = tmp_path / f"storage-{len(stacks)}"
        directory.mkdir()
        stack = Stack(str(directory), gpu_bytes, cpu_bytes, storage_bytes, promote=promote, engine=engine)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()
