"""--io-trace-log: a run that does no storage I/O and logs every whole-entry operation instead.

The tiers are replaced by tracing tiers: placement, LRU, demotion and eviction run on the tiers' capacities as
in a normal run (entries are accounted, not stored; no file, no GPU or CPU copy), and each operation is one
CSV row with kv-cache.py's columns, so the stream can be replayed by another tool (`kvcache trace fio`):

    Timestamp          Unix seconds, 6 decimals
    Operation          Read or Write
    Object_Size_Bytes  the entry's bytes as our tiers move them (4 KiB aligned: what a normal run moves)
    Tier               Tier-0 (GPU), Tier-1 (CPU), Tier-2 (the storage under test)
    Key                the entry's key
    Phase              Prefill, Decode, or Evict (a demotion: a Read from its tier, then a Write to the next)

A path ending in .zst is one zstandard stream (level 3). Under MPI each rank writes its own file: the path
with `.rank<N>` before its .csv/.zst suffixes (trace.csv.zst -> trace.rank1.csv.zst); one rank uses the path.
"""

import os
import threading
import time
from typing import Optional

from kvcache.errors import UsageError, shown_path
from kvcache.tiers import Tier

OPTION = "--io-trace-log"
COLUMNS = ("Timestamp", "Operation", "Object_Size_Bytes", "Tier", "Key", "Phase")
TIER_LABELS = {"gpu": "Tier-0", "cpu": "Tier-1", "storage": "Tier-2"}
READ, WRITE = "Read", "Write"
EVICT = "Evict"
ZSTD_SUFFIX = ".zst"
CSV_SUFFIX = ".csv"
ZSTD_LEVEL = 3
ZSTD_EXTRA = "pip install 'storagebench-kvcache[trace]' (zstandard)"
BUFFER_BYTES = 1 << 20  # rows kept in memory before they are written: bounded, whatever the run's length


def compressed(path: str) -> bool:
    return path.endswith(ZSTD_SUFFIX)


def import_zstandard():
    """zstandard, imported only for a .zst trace; missing -> a UsageError naming the option and the extra."""
    try:
        import zstandard  # noqa: PLC0415 - an optional extra, needed for .zst only
    except ImportError:
        raise UsageError(OPTION, f"a .zst trace needs the zstandard package: {ZSTD_EXTRA}") from None
    return zstandard


def rank_path(path: str, rank: int, ranks: int) -> str:
    """The trace file of `rank`: the path itself for one rank, else `.rank<N>` before its .csv/.zst suffixes."""
    if ranks == 1:
        return path
    directory, name = os.path.split(path)
    suffix = ""
    for ending in (ZSTD_SUFFIX, CSV_SUFFIX):
        if name.endswith(ending) and len(name) > len(ending):
            name, suffix = name[: -len(ending)], ending + suffix
    return os.path.join(directory, f"{name}.rank{rank}{suffix}")


def check(config) -> None:
    """Before anything is created: the directory exists and is writable, zstandard is there for .zst."""
    path = config.io_trace_log
    if path is None:
        return
    if not path or path.endswith(os.sep):
        raise UsageError(OPTION, "give a file path (PATH.csv, or PATH.csv.zst for a compressed trace)")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(OPTION, f"the directory {shown_path(directory)} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(OPTION, f"the directory {shown_path(directory)} is not writable")
    if compressed(path):
        import_zstandard()


def check_rank(config, rank: int, ranks: int) -> None:
    """This rank's file must not exist yet: a trace never replaces a file the run did not create."""
    if config.io_trace_log is None:
        return
    path = rank_path(config.io_trace_log, rank, ranks)
    if os.path.lexists(path):
        raise UsageError(OPTION, f"{shown_path(path)} exists; give a new path (a trace never replaces a file)")


class TraceWriter:
    """Thread-safe, buffered writer of trace rows. `phase` is the serving thread's pipeline step (its `name`,
    set by RankRun.serve), which a row takes unless it is a demotion's."""

    def __init__(self, path: str):
        self.path = path
        self.phase = threading.local()
        self.rows = {READ: 0, WRITE: 0}
        self.bytes = {READ: 0, WRITE: 0}
        self._lock = threading.Lock()
        self._buffer = []
        self._buffered = 0
        self._closed = False
        zstandard = import_zstandard() if compressed(path) else None
        # O_EXCL: an existing file (one that appeared after the checks) is never replaced.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._file = os.fdopen(fd, "wb")
        self._stream = self._file
        if zstandard is not None:
            self._stream = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(self._file, closefd=False)
        self._append(",".join(COLUMNS) + "\n")

    def current_phase(self) -> str:
        return getattr(self.phase, "name", "")

    def row(self, operation: str, size: int, tier: str, key: str, phase: Optional[str] = None) -> None:
        line = f"{time.time():.6f},{operation},{size},{TIER_LABELS[tier]},{key},{phase or self.current_phase()}\n"
        with self._lock:
            if self._closed:
                return  # a worker abandoned at the window's end may still log; the file is already complete
            self.rows[operation] += 1
            self.bytes[operation] += size
            self._append(line)

    def _append(self, line: str) -> None:
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered >= BUFFER_BYTES:
            self._flush()

    def _flush(self) -> None:
        self._stream.write("".join(self._buffer).encode("ascii"))
        self._buffer.clear()
        self._buffered = 0

    def close(self) -> dict:
        """Write what is buffered, end the zstandard frame, close the file; returns the rank's report."""
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    self._flush()
                    if self._stream is not self._file:
                        self._stream.close()
                finally:
                    self._file.close()
        return self.report()

    def report(self) -> dict:
        """The rank's `modes.io_trace` block."""
        return {
            "path": os.path.abspath(self.path),
            "compressed": compressed(self.path),
            "rows": self.rows[READ] + self.rows[WRITE],
            "read_rows": self.rows[READ],
            "write_rows": self.rows[WRITE],
            "read_bytes": self.bytes[READ],
            "write_bytes": self.bytes[WRITE],
        }


class _TracedCopy:
    """What a tracing tier's open_source gives a move: which tier the entry leaves (nothing to read)."""

    def __init__(self, tier: "TracingTier"):
        self.tier = tier

    def close(self) -> None:
        pass


class TracingTier(Tier):
    """A tier that holds entries by account only: each store and read is a trace row and a byte count
    (the counts a normal run's chunks add up to), no data moves, and no latency is recorded (timed = False)."""

    simulated = True
    timed = False
    release_invalidates_handle = False  # nothing to unlink: reads go through read(), not a source

    def __init__(self, name: str, level: int, capacity_bytes, metrics, mover, trace: TraceWriter, evicts=False):
        super().__init__(capacity_bytes, metrics, mover)
        self.name = name
        self.level = level  # 0 GPU, 1 CPU, 2 storage: a move to a higher level is a demotion
        self.evicts = evicts
        self.trace = trace

    def store(self, key, size, source):
        phase = None
        if isinstance(source, _TracedCopy):  # a move: the entry is read from the tier it leaves
            phase = EVICT if source.tier.level < self.level else None
            self.trace.row(READ, size, source.tier.name, key, phase)
            self.metrics.add_bytes(source.tier.name, "read", size)
        self.trace.row(WRITE, size, self.name, key, phase)
        self.metrics.add_bytes(self.name, "write", size)
        return key

    def open_source(self, handle):
        return _TracedCopy(self)

    def read(self, handle, size):
        self.trace.row(READ, size, self.name, handle)
        self.metrics.add_bytes(self.name, "read", size)

    def describe(self):
        info = {"capacity_bytes": self.capacity, "simulated": True, "traced": True}
        if self.evicts:
            info["io_engine"] = "none"
        return info


def tracing_tiers(capacities, metrics, mover, trace: TraceWriter):
    """GPU, CPU and storage tracing tiers with the given (gpu, cpu, storage) capacities in bytes."""
    names = ("gpu", "cpu", "storage")
    return [
        TracingTier(name, level, capacity, metrics, mover, trace, evicts=name == "storage")
        for level, (name, capacity) in enumerate(zip(names, capacities))
    ]


UNMEASURED = (
    "--io-trace-log: no storage I/O was done: the tiers' bytes are what the workload would move, their latencies "
    "were not measured and their bandwidths (bytes / window) are not a storage's; no SLA verdict"
)
