"""Chunked storage I/O that measures the storage, not Python.

Entries are files written and read in --io-chunk-mib pieces with os.pwritev/os.preadv, which
release the GIL, from a fixed pool of page-aligned anonymous mmap buffers (O_DIRECT needs the
alignment; a fixed pool bounds memory whatever the entry size). Written data is random and
every 4 KiB block is stamped with a unique counter, so it neither compresses nor deduplicates.
"""

import errno
import mmap
import os
import queue
import threading
import time
from contextlib import contextmanager

import numpy as np

from kvcache.units import ALIGN

BLOCK_WORDS = ALIGN // 8  # uint64 words in a 4 KiB block
O_DIRECT = getattr(os, "O_DIRECT", 0)
DIRECT_IO_PROBE = ".odirect-probe"  # made and removed in a rank's directory (`kvcache clean` knows the name)


class Interrupted(Exception):
    """The measurement window closed in the middle of an operation."""


class BufferPool:
    """`depth` aligned buffers of `chunk` bytes. Taking one is also the I/O concurrency limit."""

    def __init__(self, depth: int, chunk: int, seed_bytes: bytes = b""):
        self.chunk = chunk
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        rng = np.random.default_rng(int.from_bytes(os.urandom(8) + seed_bytes, "little"))
        self._buffers = []
        for _index in range(depth):
            buf = mmap.mmap(-1, chunk)
            np.frombuffer(buf, dtype=np.uint8)[:] = rng.integers(0, 256, chunk, dtype=np.uint8)
            self._buffers.append(buf)
            self._free.put(buf)
        # Unique stamps across ranks and runs: a random 40-bit base, then a counter.
        self._next_stamp = int.from_bytes(os.urandom(5), "little") << 24
        self._stamp_lock = threading.Lock()

    @contextmanager
    def take(self):
        buf = self._free.get()
        try:
            yield buf
        finally:
            self._free.put(buf)

    def stamp(self, buf: mmap.mmap, nbytes: int) -> None:
        """Make each 4 KiB block of buf[:nbytes] unique before it is written again."""
        blocks = nbytes // ALIGN
        with self._stamp_lock:
            first = self._next_stamp
            self._next_stamp += blocks
        words = np.frombuffer(buf, dtype=np.uint64, count=blocks * BLOCK_WORDS)
        words[::BLOCK_WORDS] = np.arange(first, first + blocks, dtype=np.uint64)

    def close(self) -> None:
        for buf in self._buffers:
            try:
                buf.close()
            except BufferError:
                pass  # a view is still alive in a thread that was abandoned; the OS reclaims it at exit


class PatternSource:
    """New data: the pool buffer itself, freshly stamped (no copy)."""

    def __init__(self, pool: BufferPool):
        self.pool = pool

    def chunk(self, offset: int, nbytes: int, buf: mmap.mmap) -> memoryview:
        self.pool.stamp(buf, nbytes)
        return memoryview(buf)[:nbytes]

    def close(self) -> None:
        pass


class SimulatedDeviceSource(PatternSource):
    """Data leaving the simulated GPU: pattern data, counted as GPU reads as a real device copy is."""

    def __init__(self, pool: BufferPool, on_read):
        super().__init__(pool)
        self.on_read = on_read

    def chunk(self, offset: int, nbytes: int, buf: mmap.mmap) -> memoryview:
        view = super().chunk(offset, nbytes, buf)
        self.on_read(nbytes)
        return view


class DeviceSource:
    """Data in a device array: each chunk is copied to the pool buffer by `to_host(array, offset, nbytes, buf)`."""

    def __init__(self, to_host, array, on_read):
        self.to_host, self.array, self.on_read = to_host, array, on_read

    def chunk(self, offset: int, nbytes: int, buf: mmap.mmap) -> memoryview:
        self.to_host(self.array, offset, nbytes, buf)
        self.on_read(nbytes)
        return memoryview(buf)[:nbytes]

    def close(self) -> None:
        pass


class MemorySource:
    """Data held in host memory (a CPU-tier entry): slices of it, no copy."""

    def __init__(self, memory: mmap.mmap, on_read):
        self.view = memoryview(memory)
        self.on_read = on_read

    def chunk(self, offset: int, nbytes: int, buf: mmap.mmap) -> memoryview:
        self.on_read(nbytes)
        return self.view[offset : offset + nbytes]

    def close(self) -> None:
        self.view.release()


class FileSource:
    """Data in a storage file: each chunk is a real read into the pool buffer, timed.
    `on_chunk(nbytes, seconds)` is told each one."""

    def __init__(self, fd: int, on_chunk):
        self.fd = fd
        self.on_chunk = on_chunk

    def chunk(self, offset: int, nbytes: int, buf: mmap.mmap) -> memoryview:
        view = memoryview(buf)[:nbytes]
        started = time.perf_counter()
        got = os.preadv(self.fd, [view], offset)
        took = time.perf_counter() - started
        if got != nbytes:
            view.release()
            raise OSError(errno.EIO, f"short read: {got} of {nbytes} bytes at offset {offset}")
        self.on_chunk(nbytes, took)
        return view

    def close(self) -> None:
        os.close(self.fd)


class FileIO:
    """Opens, writes and reads entry files with the I/O engine in effect (direct or buffered)."""

    def __init__(self, engine: str):
        self.engine = engine

    @property
    def direct(self) -> bool:
        return self.engine == "direct"

    def open_for_write(self, path: str) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        if self.direct:
            flags |= O_DIRECT
        return os.open(path, flags, 0o600)

    def open_for_read(self, path: str) -> int:
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        if self.direct:
            flags |= O_DIRECT
        fd = os.open(path, flags)
        if not self.direct:
            # Buffered reads must come from the device too: drop what the page cache holds.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return fd

    def finish_write(self, fd: int) -> None:
        if not self.direct:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def direct_io_supported(directory: str) -> bool:
    """O_DIRECT is refused by some filesystems (tmpfs: EINVAL on open). Probe with a file we create and remove."""
    if not O_DIRECT:
        return False
    probe = os.path.join(directory, DIRECT_IO_PROBE)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_DIRECT, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    try:
        buf = mmap.mmap(-1, ALIGN)
        try:
            os.pwritev(fd, [buf], 0)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return False
            raise
        finally:
            buf.close()
    finally:
        os.close(fd)
        os.unlink(probe)
    return True
