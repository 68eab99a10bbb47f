"""The three tiers (GPU, CPU memory, storage) and the waterfall LRU that places entries across them.

A new entry goes to the highest tier that can hold it; to make room, the least recently used
entries of a full tier are demoted one tier down (real copies and writes, counted and timed),
and the storage tier evicts (deletes) its least recently used entries. Data moves happen
outside the manager's lock; a reader that found an entry keeps its own handle (an mmap
reference or an open file descriptor), so a concurrent demotion never pulls data from under it.
"""

import abc
import itertools
import mmap
import os
import re
import threading
import time
from collections import OrderedDict
from typing import Callable, Dict, List, Optional

import numpy as np

from kvcache.datasize import gpu_tier_bytes
from kvcache.errors import UsageError
from kvcache.metrics import Metrics
from kvcache.storage_io import (
    BufferPool,
    DeviceSource,
    FileIO,
    FileSource,
    Interrupted,
    MemorySource,
    PatternSource,
    SimulatedDeviceSource,
)
from kvcache.units import GIB, align_up
from kvcache.workload import KEY_PATTERN

ENTRY_SUFFIX = ".kv"
# The storage tier's file names, <key>.<generation>.kv: `kvcache clean` removes only files named so.
ENTRY_FILE = re.compile(KEY_PATTERN + r"\.[0-9]+" + re.escape(ENTRY_SUFFIX))


class Mover:
    """Moves chunks from a source to a sink through the buffer pool, stopping when the window closes."""

    def __init__(self, pool: BufferPool, stop: threading.Event):
        self.pool = pool
        self.stop = stop

    def run(self, size: int, source, sink: Optional[Callable[[int, memoryview], None]]) -> None:
        chunk = self.pool.chunk
        for offset in range(0, size, chunk):
            if self.stop.is_set():
                raise Interrupted()
            nbytes = min(chunk, size - offset)
            with self.pool.take() as buf:
                data = source.chunk(offset, nbytes, buf)
                try:
                    if sink is not None:
                        sink(offset, data)
                finally:
                    data.release()


class Tier(abc.ABC):
    name = ""
    simulated = False
    # An LRU victim that no lower tier can take leaves this tier as an eviction (counted as such), not as a
    # dropped entry: the storage tier is where entries end, the others only pass them down.
    evicts = False
    # release() makes a handle useless at once (a path is unlinked), so a reader opens its source while the
    # manager's lock keeps the entry where it is; memory tiers' readers hold their own reference.
    release_invalidates_handle = False
    # Whether the manager records an operation's latency; a tracing tier (--io-trace-log) moves no data to time.
    timed = True

    def __init__(self, capacity_bytes: int, metrics: Metrics, mover: Mover):
        self.capacity = capacity_bytes
        self.metrics = metrics
        self.mover = mover
        self.used = 0
        self.lru: OrderedDict[str, Entry] = OrderedDict()

    def counted(self, op: str):
        return lambda nbytes: self.metrics.add_bytes(self.name, op, nbytes)

    @abc.abstractmethod
    def store(self, key: str, size: int, source):
        """Write an entry of `size` bytes from `source`; returns the handle that finds it again."""

    @abc.abstractmethod
    def open_source(self, handle):
        """A source that yields the entry's bytes chunk by chunk (for reads, demotions and promotions)."""

    def read(self, handle, size: int) -> None:
        source = self.open_source(handle)
        try:
            self.mover.run(size, source, None)
        finally:
            source.close()

    def release(self, handle) -> None:  # noqa: B027 - memory tiers are freed when the last reference goes
        """Free an entry's space (a reader that still holds the handle keeps its own reference)."""

    def remove_cut_short(self) -> None:  # noqa: B027 - only files outlive an interrupted write
        """Remove what writes interrupted by the window's end left behind."""

    def describe(self) -> dict:
        return {"capacity_bytes": self.capacity, "simulated": self.simulated}


class SimulatedGpuTier(Tier):
    """A device-memory budget with no device: placement and counts are real, data movement is not."""

    name = "gpu"
    simulated = True

    def store(self, key, size, source):
        if not isinstance(source, PatternSource):
            self.mover.run(size, source, None)  # a promotion still reads the lower tier for real
        self.metrics.add_bytes("gpu", "write", size)
        return None

    def read(self, handle, size):
        self.metrics.add_bytes("gpu", "read", size)

    def open_source(self, handle):
        return SimulatedDeviceSource(self.mover.pool, self.counted("read"))


class CudaTier(Tier):
    """Real GPU memory: entries are device arrays, copies go over PCIe/NVLink. A subclass per library."""

    name = "gpu"
    library = ""

    @staticmethod
    @abc.abstractmethod
    def device_available() -> bool:
        """Whether the library can reach a CUDA device here (it may raise when the library is missing)."""

    @abc.abstractmethod
    def _empty(self, size: int):
        """A device array of `size` bytes."""

    @abc.abstractmethod
    def _upload(self, array, offset: int, host: np.ndarray) -> None:
        """Copy host bytes into array[offset:]."""

    @abc.abstractmethod
    def _download(self, array, offset: int, host: np.ndarray) -> None:
        """Copy array[offset:offset + len(host)] into host."""

    @abc.abstractmethod
    def _sync(self) -> None:
        """Wait for the device: a copy is timed until its bytes have arrived."""

    def to_host(self, array, offset, nbytes, buf):
        self._download(array, offset, np.frombuffer(buf, dtype=np.uint8, count=nbytes))
        self._sync()

    def store(self, key, size, source):
        array = self._empty(size)

        def sink(offset, data):
            host = np.frombuffer(data, dtype=np.uint8)
            self._upload(array, offset, host)
            self._sync()
            self.metrics.add_bytes("gpu", "write", len(host))

        self.mover.run(size, source, sink)
        return array

    def open_source(self, handle):
        return DeviceSource(self.to_host, handle, self.counted("read"))

    def describe(self):
        return {"capacity_bytes": self.capacity, "simulated": False, "library": self.library}


class TorchTier(CudaTier):
    library = "torch"

    def __init__(self, capacity_bytes, metrics, mover):
        super().__init__(capacity_bytes, metrics, mover)
        import torch  # noqa: PLC0415 - optional dependency, only with a CUDA device

        self._torch = torch

    @staticmethod
    def device_available():
        import torch  # noqa: PLC0415 - optional

        return bool(torch.cuda.is_available())

    def _empty(self, size):
        return self._torch.empty(size, dtype=self._torch.uint8, device="cuda")

    def _upload(self, array, offset, host):
        array[offset : offset + len(host)].copy_(self._torch.from_numpy(host))

    def _download(self, array, offset, host):
        self._torch.from_numpy(host).copy_(array[offset : offset + len(host)])

    def _sync(self):
        self._torch.cuda.synchronize()


class CupyTier(CudaTier):
    library = "cupy"

    def __init__(self, capacity_bytes, metrics, mover):
        super().__init__(capacity_bytes, metrics, mover)
        import cupy  # noqa: PLC0415 - optional dependency, only with a CUDA device

        self._cupy = cupy

    @staticmethod
    def device_available():
        import cupy  # noqa: PLC0415 - optional

        return cupy.cuda.runtime.getDeviceCount() > 0

    def _empty(self, size):
        return self._cupy.empty(size, dtype=self._cupy.uint8)

    def _upload(self, array, offset, host):
        array[offset : offset + len(host)].set(host)

    def _download(self, array, offset, host):
        array[offset : offset + len(host)].get(out=host)

    def _sync(self):
        self._cupy.cuda.Device().synchronize()


GPU_TIERS = {tier.library: tier for tier in (TorchTier, CupyTier)}  # auto tries them in this order


class CpuTier(Tier):
    """Host memory: each entry is an anonymous mmap (page-aligned, so it can be written with O_DIRECT)."""

    name = "cpu"

    def store(self, key, size, source):
        memory = mmap.mmap(-1, size)
        view = memoryview(memory)

        def sink(offset, data):
            view[offset : offset + len(data)] = data
            self.metrics.add_bytes("cpu", "write", len(data))

        try:
            self.mover.run(size, source, sink)
        finally:
            view.release()
        return memory

    def open_source(self, handle):
        return MemorySource(handle, self.counted("read"))

    def read(self, handle, size):
        # A hit copies the entry out of host memory, as loading it into the GPU would.
        view = memoryview(handle)
        chunk = self.mover.pool.chunk
        try:
            for offset in range(0, size, chunk):
                if self.mover.stop.is_set():
                    raise Interrupted()
                nbytes = min(chunk, size - offset)
                with self.mover.pool.take() as buf:
                    memoryview(buf)[:nbytes] = view[offset : offset + nbytes]
                self.metrics.add_bytes("cpu", "read", nbytes)
        finally:
            view.release()


class StorageTier(Tier):
    """Files under the rank's directory on the storage under test."""

    name = "storage"
    evicts = True
    release_invalidates_handle = True

    def __init__(self, capacity_bytes, metrics, mover, directory: str, fileio: FileIO):
        super().__init__(capacity_bytes, metrics, mover)
        self.directory = directory
        self.fileio = fileio
        self._generation = itertools.count(1)
        # Files whose write the window's end cut short: removed after the window (remove_cut_short), as
        # unlinking hundreds of MiB each is filesystem work that would otherwise stretch the window.
        self._cut_short: List[str] = []
        self._cut_short_lock = threading.Lock()

    def path(self, key):
        # A new file name each time a key is stored: an evicted or promoted copy of the same key may
        # still be open by a reader or not yet unlinked, and must be neither truncated nor deleted
        # under the new copy.
        return os.path.join(self.directory, f"{key}.{next(self._generation)}{ENTRY_SUFFIX}")

    def store(self, key, size, source):
        path = self.path(key)
        fd = self.fileio.open_for_write(path)
        try:

            def sink(offset, data):
                started = time.perf_counter()
                written = os.pwritev(fd, [data], offset)
                took = time.perf_counter() - started
                if written != len(data):
                    raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
                self.metrics.add_storage_chunk("write", written, took)

            self.mover.run(size, source, sink)
            self.fileio.finish_write(fd)
        except Interrupted:
            os.close(fd)
            with self._cut_short_lock:
                self._cut_short.append(path)
            raise
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        return path

    def remove_cut_short(self) -> None:
        """Unlink the files of the writes that the window's end interrupted."""
        with self._cut_short_lock:
            paths, self._cut_short = self._cut_short, []
        for path in paths:
            _unlink(path)

    def open_source(self, handle):
        return FileSource(
            self.fileio.open_for_read(handle), lambda nbytes, took: self.metrics.add_storage_chunk("read", nbytes, took)
        )

    def release(self, handle):
        _unlink(handle)

    def describe(self):
        return {"capacity_bytes": self.capacity, "simulated": False, "io_engine": self.fileio.engine}


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Entry:
    __slots__ = ("key", "size", "tier", "handle", "ready")

    def __init__(self, key, size):
        self.key = key
        self.size = size
        self.tier: Optional[int] = None  # index into TierManager.tiers; None while first written
        self.handle = None
        self.ready = threading.Event()


class TierManager:
    """Places, finds, demotes, promotes and evicts entries across the tiers."""

    def __init__(self, tiers: List[Tier], metrics: Metrics, stop: threading.Event, promote: bool = False):
        self.tiers = tiers
        self.metrics = metrics
        self.stop = stop
        self.promote = promote
        self.lock = threading.Lock()
        self.entries: Dict[str, Entry] = {}

    # -- writing -------------------------------------------------------------------------
    def write_new(self, key: str, nbytes: int, pattern: PatternSource) -> Optional[str]:
        """Write a new entry from the pattern into the highest tier with room. Returns the tier name,
        None if the entry already exists (written once, read by many) or fits nowhere."""
        size = align_up(nbytes)
        with self.lock:
            if key in self.entries:
                return None
            entry = Entry(key, size)
            self.entries[key] = entry
        self.metrics.count("entry_writes")  # an attempt: the share of dropped entries is taken of these
        try:
            index = self._reserve(size, 0)
            if index is None:
                self.metrics.count("dropped_entries")
                self._forget(entry)
                return None
            tier = self.tiers[index]
            started = time.perf_counter()
            try:
                handle = tier.store(key, size, pattern)
            except BaseException:
                with self.lock:
                    tier.used -= size
                raise
            self._record_op(tier, "write", started)
            with self.lock:
                entry.tier, entry.handle = index, handle
                tier.lru[key] = entry
            self.metrics.entry_moved(None, tier.name)
            return tier.name
        except BaseException:
            self._forget(entry)
            raise
        finally:
            entry.ready.set()

    def _record_op(self, tier: Tier, op: str, started: float) -> None:
        if tier.timed:
            self.metrics.record_op(tier.name, op, time.perf_counter() - started)
        else:
            self.metrics.count(f"ops.{tier.name}.{op}")  # counted, not timed: no latency is claimed

    def _forget(self, entry: Entry) -> None:
        with self.lock:
            if self.entries.get(entry.key) is entry and entry.tier is None:
                del self.entries[entry.key]

    def _reserve(self, size: int, start: int) -> Optional[int]:
        """Reserve `size` bytes in the first tier from `start` down that can hold it, demoting to make room."""
        for index in range(start, len(self.tiers)):
            tier = self.tiers[index]
            if size > tier.capacity:
                continue
            for _attempt in range(1 + len(self.entries)):  # bounded: each pass removes one victim
                with self.lock:
                    if tier.used + size <= tier.capacity:
                        tier.used += size
                        return index
                    if not tier.lru:
                        break  # everything here is being written or moved: try the next tier
                    victim = tier.lru.popitem(last=False)[1]
                self._move_down(victim, index)
        return None

    def _move_down(self, victim: Entry, index: int) -> None:
        """Demote an LRU victim (already out of its tier's LRU) to the next tier, or evict it from the last."""
        tier = self.tiers[index]
        target = self._reserve(victim.size, index + 1) if index + 1 < len(self.tiers) else None
        if target is None:
            with self.lock:
                if self.entries.get(victim.key) is victim:
                    del self.entries[victim.key]
                tier.used -= victim.size
                handle = victim.handle
            tier.release(handle)
            self.metrics.entry_moved(tier.name, None)
            self.metrics.count(f"evictions.{tier.name}" if tier.evicts else "dropped_entries")
            return
        self._move(victim, index, target, f"demotions.{tier.name}")

    # -- reading -------------------------------------------------------------------------
    def read(self, key: str, count_lookup: bool = True) -> Optional[str]:
        """Read an entry from whichever tier holds it. Returns the tier name, or None on a miss."""
        with self.lock:
            entry = self.entries.get(key)
        if entry is None:
            if count_lookup:
                self.metrics.count("lookups")
                self.metrics.count("misses")
            return None
        # An entry still being written (a shared prefix) is waited for, as a real server would.
        while not entry.ready.wait(0.1):
            if self.stop.is_set():
                raise Interrupted()
        with self.lock:
            if entry.tier is None or self.entries.get(key) is not entry:
                found = None
            else:
                tier = self.tiers[entry.tier]
                found = (entry.tier, entry.handle)
                if key in tier.lru:
                    tier.lru.move_to_end(key)
                # A file is opened under the lock, so that an eviction cannot unlink it first.
                source = tier.open_source(entry.handle) if tier.release_invalidates_handle else None
        if found is None:
            if count_lookup:
                self.metrics.count("lookups")
                self.metrics.count("misses")
            return None
        index, handle = found
        tier = self.tiers[index]
        started = time.perf_counter()
        if source is not None:
            try:
                tier.mover.run(entry.size, source, None)
            finally:
                source.close()
        else:
            tier.read(handle, entry.size)
        self._record_op(tier, "read", started)
        if count_lookup:
            self.metrics.count("lookups")
            self.metrics.count(f"hits.{tier.name}")
        if self.promote and index > 0:
            self._promote(entry, index)
        return tier.name

    def _promote(self, entry: Entry, index: int) -> None:
        with self.lock:
            tier = self.tiers[index]
            if entry.tier != index or tier.lru.get(entry.key) is not entry:
                # Moved, being moved, or evicted (and the key perhaps written again as a new entry).
                return
            del tier.lru[entry.key]
        target = self._reserve(entry.size, 0)
        if target is None or target >= index:
            with self.lock:
                if target is not None:
                    self.tiers[target].used -= entry.size
                tier.lru[entry.key] = entry
            return
        self._move(entry, index, target, "promotions")

    def _move(self, entry: Entry, index: int, target: int, event: str) -> None:
        """Copy an entry (out of every LRU, space reserved in `target`) from tier `index` to `target`,
        then free the old copy. On failure the entry stays where it was."""
        tier, destination = self.tiers[index], self.tiers[target]
        with self.lock:
            source = tier.open_source(entry.handle)
        started = time.perf_counter()
        try:
            new_handle = destination.store(entry.key, entry.size, source)
        except BaseException:
            with self.lock:
                destination.used -= entry.size
                tier.lru[entry.key] = entry
            raise
        finally:
            source.close()
        self._record_op(destination, "write", started)
        self.metrics.count(f"ops.{tier.name}.read")  # the move read the whole entry (timed in the write)
        self.metrics.entry_moved(tier.name, destination.name)
        self.metrics.count(event)
        with self.lock:
            old = entry.handle
            entry.tier, entry.handle = target, new_handle
            destination.lru[entry.key] = entry
            tier.used -= entry.size
        tier.release(old)


def choose_gpu_backend(requested: str) -> str:
    """simulated, torch or cupy. auto picks real CUDA memory when a library can reach a device."""
    if requested == "simulated":
        return "simulated"
    for library in GPU_TIERS if requested == "auto" else (requested,):
        if _device_available(GPU_TIERS[library]):
            return library
        if requested != "auto":
            raise UsageError(
                "--gpu-backend", f"{library} with a CUDA device is not available here; choose auto or simulated"
            )
    return "simulated"


def _device_available(tier) -> bool:
    try:
        return tier.device_available()
    except Exception:  # noqa: BLE001 - any import or driver failure means no usable device
        return False


def build_tiers(
    config,
    metrics: Metrics,
    mover: Mover,
    storage_dir: str,
    fileio: FileIO,
    storage_capacity: int,
    gpu_backend: str,
    trace=None,
) -> List[Tier]:
    """The GPU, CPU and storage tiers; with `trace` (an io_trace.TraceWriter), tracing tiers that move no data."""
    gpu_bytes = gpu_tier_bytes(config)
    cpu_bytes = int(config.cpu_mem_gb * GIB)
    if trace is not None:
        from kvcache.io_trace import tracing_tiers  # noqa: PLC0415 - io_trace builds on Tier

        return tracing_tiers((gpu_bytes, cpu_bytes, storage_capacity), metrics, mover, trace)
    gpu_tier = SimulatedGpuTier if gpu_backend == "simulated" else GPU_TIERS[gpu_backend]
    gpu = gpu_tier(gpu_bytes, metrics, mover)
    return [gpu, CpuTier(cpu_bytes, metrics, mover), StorageTier(storage_capacity, metrics, mover, storage_dir, fileio)]
