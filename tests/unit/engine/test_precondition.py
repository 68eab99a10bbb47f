"""Preconditioning (kvcache/precondition.py): the layout of the writes, and the writes themselves on a real
filesystem: every byte asked for, within the storage capacity on disk, files removed whatever happens."""

import collections
import os
import threading
from types import SimpleNamespace

import pytest

from kvcache import precondition
from kvcache.errors import UsageError
from kvcache.precondition import Layout, Preconditioner
from kvcache.storage_io import ALIGN, BufferPool, FileIO, Interrupted, direct_io_supported
from kvcache.units import GIB, MIB

CHUNK = 64 << 10


def options(size_gb=0.0, threads=0, **more):
    return SimpleNamespace(precondition_size_gb=size_gb, precondition_threads=threads, **more)


@pytest.fixture
def pool():
    buffers = BufferPool(4, CHUNK)
    yield buffers
    buffers.close()


def engine(directory):
    return FileIO("direct" if direct_io_supported(str(directory)) else "buffered")


def test_default_size_is_twice_the_capacity_and_threads_the_cpus():
    layout = Layout.plan(options(), 10 * MIB, cpus=3)
    assert layout.target_bytes == 20 * MIB
    assert layout.writers == 3


def test_a_given_size_in_gib_rounded_up_to_whole_blocks():
    layout = Layout.plan(options(size_gb=0.5, threads=2), 4 * GIB)
    assert layout.target_bytes == GIB // 2
    odd = Layout.plan(options(size_gb=1e-6, threads=1), MIB)
    assert odd.target_bytes % ALIGN == 0 and odd.target_bytes >= 1e-6 * GIB


@pytest.mark.parametrize(
    "capacity, threads",
    [(MIB, 4), (10 * MIB + 123, 3), (5 * GIB + ALIGN, 4), (3 * ALIGN, 16), (ALIGN, 8), (7 * GIB, 1)],
)
def test_the_files_fit_the_capacity_and_each_writer_owns_its_own(capacity, threads):
    layout = Layout.plan(options(size_gb=capacity * 3 / GIB, threads=threads), capacity)
    assert layout.footprint_bytes <= capacity
    assert layout.file_bytes % ALIGN == 0 and 0 < layout.file_bytes <= precondition.MAX_FILE_BYTES
    assert layout.files % layout.writers == 0
    assert 1 <= layout.writers <= threads
    owners = collections.defaultdict(set)
    total = 0
    for writer in range(layout.writers):
        for index, nbytes in layout.writes(writer):
            owners[index].add(writer)
            assert 0 < nbytes <= layout.file_bytes and nbytes % ALIGN == 0
            total += nbytes
    assert total == layout.target_bytes  # every byte asked for, split over the writers
    assert all(len(writers) == 1 for writers in owners.values())  # two writers never share a file


def test_past_the_capacity_a_writer_wraps_around_its_files():
    layout = Layout.plan(options(size_gb=8 * MIB / GIB, threads=2), 2 * MIB)
    assert layout.files == 2
    assert [index for index, _n in layout.writes(0)] == [0, 0, 0, 0]
    assert [index for index, _n in layout.writes(1)] == [1, 1, 1, 1]


def run(tmp_path, pool, layout, stop=None, fileio=None, should_stop=lambda: False):
    worker = Preconditioner(layout, str(tmp_path), fileio or engine(tmp_path), pool, stop or threading.Event())
    worker.run(should_stop)
    return worker


def test_writes_every_byte_then_removes_its_files(tmp_path, pool):
    layout = Layout.plan(options(size_gb=3 * MIB / GIB, threads=3), MIB)
    worker = run(tmp_path, pool, layout)
    assert worker.written == layout.target_bytes == 3 * MIB
    assert os.listdir(tmp_path) == []


class WatchedIO(FileIO):
    """A FileIO that records the bytes on disk in the directory after each file it finishes."""

    def __init__(self, engine_name, directory):
        super().__init__(engine_name)
        self.directory = directory
        self.on_disk = []
        self.lock = threading.Lock()

    def finish_write(self, fd):
        super().finish_write(fd)
        with self.lock:
            names = os.listdir(self.directory)
            self.on_disk.append(sum(os.path.getsize(os.path.join(self.directory, n)) for n in names))


def test_on_disk_never_more_than_the_capacity(tmp_path, pool):
    capacity = 2 * MIB
    layout = Layout.plan(options(size_gb=5 * capacity / GIB, threads=2), capacity)
    fileio = WatchedIO(engine(tmp_path).engine, str(tmp_path))
    worker = run(tmp_path, pool, layout, fileio=fileio)
    assert worker.written == 5 * capacity
    assert len(fileio.on_disk) == 10 and max(fileio.on_disk) <= capacity
    assert os.listdir(tmp_path) == []


def test_a_stop_interrupts_and_removes_the_files(tmp_path, pool):
    stop = threading.Event()

    class StopAfterFirstFile(FileIO):
        def finish_write(self, fd):
            super().finish_write(fd)
            stop.set()

    layout = Layout.plan(options(size_gb=64 * MIB / GIB, threads=1), MIB)
    with pytest.raises(Interrupted):
        run(tmp_path, pool, layout, stop=stop, fileio=StopAfterFirstFile(engine(tmp_path).engine))
    assert os.listdir(tmp_path) == []


def test_another_ranks_failure_stops_it(tmp_path, pool):
    stop = threading.Event()
    layout = Layout.plan(options(size_gb=GIB / GIB, threads=2), MIB)
    worker = Preconditioner(layout, str(tmp_path), engine(tmp_path), pool, stop)
    with pytest.raises(Interrupted):
        worker.run(lambda: True)
    assert stop.is_set() and worker.written < layout.target_bytes
    assert os.listdir(tmp_path) == []


def test_a_failed_write_raises_its_error_and_removes_the_files(tmp_path, pool):
    class FullAfterOneFile(FileIO):
        opened = 0

        def open_for_write(self, path):
            FullAfterOneFile.opened += 1
            if FullAfterOneFile.opened > 1:
                raise OSError(28, "No space left on device")
            return super().open_for_write(path)

    layout = Layout.plan(options(size_gb=4 * MIB / GIB, threads=1), MIB)
    with pytest.raises(OSError, match="No space left"):
        run(tmp_path, pool, layout, fileio=FullAfterOneFile(engine(tmp_path).engine))
    assert os.listdir(tmp_path) == []


def test_fill_reports_bytes_seconds_and_bandwidth(tmp_path, pool):
    report, said = {}, []
    config = options(size_gb=2 * MIB / GIB, threads=2)
    precondition.fill(config, str(tmp_path), engine(tmp_path), pool, MIB, threading.Event(), lambda: False,
                      report, said.append)  # fmt: skip
    assert report["bytes_written"] == report["target_bytes"] == 2 * MIB
    assert report["writers"] == 2 and report["files"] == 2 and report["footprint_bytes"] == MIB
    assert report["elapsed_s"] >= 0 and report["write_bandwidth_bytes_per_s"] > 0
    assert len(said) == 2 and "preconditioning" in said[0] and "done" in said[1]
    assert os.listdir(tmp_path) == []


def test_fill_reports_what_it_wrote_when_stopped(tmp_path, pool):
    report = {}
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted):
        precondition.fill(options(threads=1), str(tmp_path), engine(tmp_path), pool, MIB, stop, lambda: False,
                          report, lambda line: None)  # fmt: skip
    assert report["bytes_written"] == 0 and report["target_bytes"] == 2 * MIB


def test_check_refuses_preconditioning_without_storage_io():
    with pytest.raises(UsageError, match="--precondition.*--io-trace-log"):
        precondition.check(SimpleNamespace(precondition=True, io_trace_log="/tmp/trace.csv"))
    precondition.check(SimpleNamespace(precondition=True, io_trace_log=None))
    precondition.check(SimpleNamespace(precondition=False, io_trace_log="/tmp/trace.csv"))
