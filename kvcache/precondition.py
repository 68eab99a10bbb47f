"""--precondition: sequential writes that bring the storage to a steady state before the window.

A fresh or trimmed SSD writes far faster than one whose cells have all been written, so kv-cache.py
fills the device first. Here each rank writes --precondition-size-gb (0: twice its storage capacity)
into files of its own run directory, with the run's I/O engine and buffer pool, each writer
sequentially through files it alone owns. The files together never take more than the storage tier's
capacity: past it, the writers wrap around and rewrite their files from the start.

The files are removed before the window, so the storage tier starts empty and has all its room, and
the window's counters never see these bytes: preconditioning is reported apart, in the result's
`modes.precondition`.
"""

import math
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from kvcache.errors import UsageError
from kvcache.storage_io import BufferPool, FileIO, Interrupted, PatternSource
from kvcache.tiers import Mover
from kvcache.units import ALIGN, GIB, align_up

FILE_PREFIX = "precondition-"
FILE_SUFFIX = ".dat"
# The names preconditioning writes: `kvcache clean` removes these too (left only by a rank killed while writing).
PRECONDITION_FILE = re.compile(re.escape(FILE_PREFIX) + r"[0-9]+" + re.escape(FILE_SUFFIX))
MAX_FILE_BYTES = GIB  # a large capacity is split into files of at most this, a few per writer
CAPACITY_FACTOR = 2  # what --precondition-size-gb 0 writes, as in kv-cache.py: twice the capacity
JOIN_TICK_S = 0.1  # how often the waiting rank looks for a stop or another rank's failure


def check(config) -> None:
    if config.precondition and config.io_trace_log:
        raise UsageError(
            "--precondition",
            "--io-trace-log does no storage I/O at all, so there is no storage to fill: give one of them",
        )


@dataclass(frozen=True)
class Layout:
    """What one rank writes: `target_bytes` in all, by `writers` threads, over `files` files of `file_bytes`."""

    target_bytes: int
    writers: int
    files: int
    file_bytes: int

    @classmethod
    def plan(cls, config, capacity: int, cpus: Optional[int] = None) -> "Layout":
        asked = config.precondition_size_gb
        target = align_up(int(asked * GIB) if asked > 0 else CAPACITY_FACTOR * capacity)
        threads = config.precondition_threads or cpus or os.cpu_count() or 1
        writers = max(1, min(threads, capacity // ALIGN))  # each writer owns at least one 4 KiB file
        files = writers * math.ceil(math.ceil(capacity / MAX_FILE_BYTES) / writers)
        return cls(target, writers, files, capacity // files // ALIGN * ALIGN)

    @property
    def footprint_bytes(self) -> int:
        """The most the files take on disk at once (at most the storage tier's capacity)."""
        return self.files * self.file_bytes

    def share(self, writer: int) -> int:
        """The bytes one writer writes: the target split in 4 KiB blocks (O_DIRECT writes whole blocks)."""
        blocks = self.target_bytes // ALIGN
        return (blocks // self.writers + (writer < blocks % self.writers)) * ALIGN

    def writes(self, writer: int):
        """(file index, bytes) in the order the writer writes them: its own files in turn, over and over."""
        own = range(writer, self.files, self.writers)
        remaining, turn = self.share(writer), 0
        while remaining > 0:
            nbytes = min(self.file_bytes, remaining)
            yield own[turn % len(own)], nbytes
            remaining -= nbytes
            turn += 1


def file_name(index: int) -> str:
    return f"{FILE_PREFIX}{index}{FILE_SUFFIX}"


class Preconditioner:
    """Writes a Layout into `directory`, then removes its files whatever happened."""

    def __init__(self, layout: Layout, directory: str, fileio: FileIO, pool: BufferPool, stop: threading.Event):
        self.layout = layout
        self.directory = directory
        self.fileio = fileio
        self.mover = Mover(pool, stop)
        self.pattern = PatternSource(pool)
        self.stop = stop
        self.written = 0
        self._lock = threading.Lock()
        self._errors: List[str] = []

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Write everything; raises Interrupted when `stop` is set first, OSError on a failed write.
        `should_stop` is asked between waits (whether another rank failed)."""
        threads = [
            threading.Thread(target=self._writer, args=(w,), name=f"kvcache-precondition-{w}", daemon=True)
            for w in range(self.layout.writers)
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(JOIN_TICK_S)
                    if not self.stop.is_set() and should_stop():
                        self.stop.set()
        finally:
            self.stop_writers_and_remove(threads)
        if self._errors:
            raise OSError(self._errors[0])
        if self.stop.is_set():
            raise Interrupted()

    def stop_writers_and_remove(self, threads) -> None:
        if any(t.is_alive() for t in threads):
            self.stop.set()  # an error in the waiting thread: the writers must end before their files go
            for thread in threads:
                thread.join()
        for index in range(self.layout.files):
            try:
                os.unlink(os.path.join(self.directory, file_name(index)))
            except FileNotFoundError:
                pass

    def _writer(self, writer: int) -> None:
        try:
            for index, nbytes in self.layout.writes(writer):
                self._write_file(os.path.join(self.directory, file_name(index)), nbytes)
        except Interrupted:
            pass
        except Exception as exc:  # noqa: BLE001 - the first error fails preconditioning, the others stop
            with self._lock:
                self._errors.append(f"{type(exc).__name__}: {exc}")
            self.stop.set()

    def _write_file(self, path: str, nbytes: int) -> None:
        fd = self.fileio.open_for_write(path)  # truncates: a rewrite takes no more room than the first write
        try:

            def sink(offset, data):
                written = os.pwritev(fd, [data], offset)
                if written != len(data):
                    raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
                with self._lock:
                    self.written += written

            self.mover.run(nbytes, self.pattern, sink)
            self.fileio.finish_write(fd)
        finally:
            os.close(fd)


def fill(config, directory, fileio, pool, capacity, stop, should_stop, report: dict, say) -> None:
    """Precondition one rank's storage; fills `report` (the result's modes.precondition for this rank),
    also when it stops early. Raises Interrupted or OSError as Preconditioner.run does."""
    layout = Layout.plan(config, capacity)
    report.update(
        target_bytes=layout.target_bytes,
        bytes_written=0,
        files=layout.files,
        footprint_bytes=layout.footprint_bytes,
        writers=layout.writers,
        elapsed_s=0.0,
        write_bandwidth_bytes_per_s=0,
    )
    say(
        f"preconditioning: writing {layout.target_bytes / GIB:.2f} GiB with {layout.writers} writer(s) over "
        f"{layout.files} file(s) of {layout.file_bytes / GIB:.3f} GiB ({fileio.engine} I/O)"
    )
    worker = Preconditioner(layout, directory, fileio, pool, stop)
    started = time.perf_counter()
    try:
        worker.run(should_stop)
    finally:
        elapsed = time.perf_counter() - started
        report.update(
            bytes_written=worker.written,
            elapsed_s=round(elapsed, 3),
            write_bandwidth_bytes_per_s=round(worker.written / elapsed) if elapsed > 0 else 0,
        )
    say(
        f"preconditioning: done, {worker.written / GIB:.2f} GiB in {elapsed:.1f} s "
        f"({report['write_bandwidth_bytes_per_s'] / GIB:.2f} GiB/s); its files are removed"
    )
