"""Chunked storage I/O: unique data, the O_DIRECT probe, and file round trips with both engines."""

import errno
import mmap
import os
import re
import shutil
import tempfile

import numpy as np
import pytest

from kvcache.storage_io import (
    ALIGN,
    BufferPool,
    FileIO,
    FileSource,
    MemorySource,
    PatternSource,
    direct_io_supported,
)
from kvcache.units import align_up

CHUNK = 64 << 10


def blocks_of(data):
    data = bytes(data)
    return [data[i : i + ALIGN] for i in range(0, len(data), ALIGN)]


def fs_type(path):
    """Filesystem type of the mount holding path, from /proc/mounts (longest matching mount point)."""
    real = os.path.realpath(path)
    best, kind = "", None
    with open("/proc/mounts", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            point = fields[1].replace("\\040", " ")
            if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, kind = point, fields[2]
    return kind


@pytest.fixture
def pool():
    pool = BufferPool(2, CHUNK)
    yield pool
    pool.close()


def test_align_up():
    assert align_up(0) == 0
    assert align_up(1) == ALIGN
    assert align_up(ALIGN) == ALIGN
    assert align_up(ALIGN + 1) == 2 * ALIGN


def test_buffers_are_page_aligned_and_random(pool):
    with pool.take() as first, pool.take() as second:
        for buf in (first, second):
            address = np.frombuffer(buf, dtype=np.uint8).ctypes.data
            assert address % mmap.PAGESIZE == 0
            assert len(buf) == CHUNK
        assert bytes(first) != bytes(second)
        assert len(set(bytes(first))) > 200  # random bytes, not a constant fill


def test_stamp_makes_every_block_distinct_within_and_across_chunks(pool):
    seen = []
    with pool.take() as buf:
        for _chunk in range(3):  # consecutive chunks written from the same buffer
            pool.stamp(buf, CHUNK)
            seen.extend(blocks_of(buf))
    assert len(seen) == 3 * CHUNK // ALIGN
    assert len(set(seen)) == len(seen)


def test_stamp_counters_are_consecutive_and_change_only_the_first_word(pool):
    with pool.take() as buf:
        before = bytes(buf)
        pool.stamp(buf, CHUNK)
        words = np.frombuffer(buf, dtype=np.uint64).reshape(-1, ALIGN // 8)
        first = words[:, 0].astype(np.int64)
        assert list(np.diff(first)) == [1] * (len(first) - 1)
        old = np.frombuffer(before, dtype=np.uint64).reshape(-1, ALIGN // 8)
        assert np.array_equal(words[:, 1:], old[:, 1:])


def test_stamps_never_repeat_across_buffers_of_a_pool(pool):
    seen = set()
    with pool.take() as a, pool.take() as b:
        for _chunk in range(4):
            for buf in (a, b):
                pool.stamp(buf, CHUNK)
                stamps = np.frombuffer(buf, dtype=np.uint64)[:: ALIGN // 8]
                assert not seen.intersection(stamps.tolist())
                seen.update(stamps.tolist())


def test_pattern_source_stamps_the_buffer_without_copying(pool):
    source = PatternSource(pool)
    with pool.take() as buf:
        view = source.chunk(0, CHUNK // 2, buf)
        first = bytes(view)
        view.release()
        view = source.chunk(CHUNK // 2, CHUNK // 2, buf)
        second = bytes(view)
        view.release()
    assert len(first) == len(second) == CHUNK // 2
    assert not set(blocks_of(first)) & set(blocks_of(second))


def test_memory_source_slices_and_counts():
    memory = mmap.mmap(-1, 3 * ALIGN)
    memory[:] = bytes(range(256)) * (3 * ALIGN // 256)
    counted = []
    source = MemorySource(memory, counted.append)
    view = source.chunk(ALIGN, ALIGN, None)
    assert bytes(view) == memory[ALIGN : 2 * ALIGN]
    view.release()
    source.close()
    memory.close()
    assert counted == [ALIGN]


def raw_direct_probe(directory):
    """Independent check: can this kernel open and write a file in directory with O_DIRECT?"""
    path = os.path.join(directory, "raw-probe")
    buf = mmap.mmap(-1, ALIGN)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
        try:
            os.pwritev(fd, [buf], 0)
        finally:
            os.close(fd)
        return True
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    finally:
        buf.close()
        if os.path.exists(path):
            os.unlink(path)


def kernel_version():
    return tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2])


def test_direct_io_on_tmpfs_follows_the_kernel():
    """tmpfs refused O_DIRECT (EINVAL) before Linux 6.6 and accepts it since: the probe must tell which."""
    if not os.path.isdir("/dev/shm") or fs_type("/dev/shm") != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs here")
    directory = tempfile.mkdtemp(prefix="kvcache-test-", dir="/dev/shm")
    try:
        expected = raw_direct_probe(directory)
        if kernel_version() < (6, 6):
            assert expected is False
        assert direct_io_supported(directory) is expected
        assert os.listdir(directory) == []  # the probe cleans up
    finally:
        shutil.rmtree(directory)


@pytest.mark.parametrize("where", ["open", "write"])
def test_direct_io_probe_reports_einval_as_unsupported(tmp_path, monkeypatch, where):
    """What tmpfs before 6.6 and ramfs do: EINVAL on open (or on the first write)."""
    from kvcache import storage_io

    real_open, real_pwritev = os.open, os.pwritev

    def refuse(*args, **kwargs):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(storage_io.os, "open" if where == "open" else "pwritev", refuse)
    assert direct_io_supported(str(tmp_path)) is False
    monkeypatch.setattr(storage_io.os, "open", real_open)
    monkeypatch.setattr(storage_io.os, "pwritev", real_pwritev)
    assert os.listdir(tmp_path) == []


def test_direct_io_probe_raises_other_errors(tmp_path, monkeypatch):
    from kvcache import storage_io

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(storage_io.os, "open", denied)
    with pytest.raises(PermissionError):
        direct_io_supported(str(tmp_path))


def test_direct_io_supported_on_tmp(tmp_path):
    kind = fs_type(str(tmp_path))
    if kind in ("tmpfs", "ramfs", None):
        pytest.skip(f"{tmp_path} is on {kind}, which refuses O_DIRECT")
    assert direct_io_supported(str(tmp_path)) is True
    assert os.listdir(tmp_path) == []


def test_direct_io_probe_leaves_user_files_alone(tmp_path):
    user = tmp_path / "user.txt"
    user.write_text("mine")
    direct_io_supported(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["user.txt"] and user.read_text() == "mine"


def engines(directory):
    return ["direct", "buffered"] if direct_io_supported(directory) else ["buffered"]


@pytest.mark.parametrize("engine", ["direct", "buffered"])
def test_fileio_round_trip(tmp_path, pool, engine):
    if engine not in engines(str(tmp_path)):
        pytest.skip(f"{tmp_path} refuses O_DIRECT")
    fileio = FileIO(engine)
    assert fileio.direct == (engine == "direct")
    path = str(tmp_path / "entry.kv")
    size = 3 * CHUNK + 2 * ALIGN  # a short last chunk
    written = []
    fd = fileio.open_for_write(path)
    try:
        with pool.take() as buf:
            for offset in range(0, size, CHUNK):
                nbytes = min(CHUNK, size - offset)
                pool.stamp(buf, nbytes)
                view = memoryview(buf)[:nbytes]
                assert os.pwritev(fd, [view], offset) == nbytes
                written.append(bytes(view))
                view.release()
        fileio.finish_write(fd)
    finally:
        os.close(fd)
    assert os.path.getsize(path) == size
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)

    counted = []
    source = FileSource(fileio.open_for_read(path), lambda nbytes, took: counted.append((nbytes, took)))
    read_back = []
    try:
        with pool.take() as buf:
            for offset in range(0, size, CHUNK):
                view = source.chunk(offset, min(CHUNK, size - offset), buf)
                read_back.append(bytes(view))
                view.release()
    finally:
        source.close()
    assert read_back == written
    assert sum(nbytes for nbytes, _took in counted) == size
    assert len(counted) == 4 and all(took > 0 for _nbytes, took in counted)  # each call timed


def test_short_read_is_an_error(tmp_path, pool):
    path = tmp_path / "short.kv"
    path.write_bytes(b"x" * ALIGN)
    source = FileSource(FileIO("buffered").open_for_read(str(path)), lambda nbytes, took: None)
    try:
        with pool.take() as buf, pytest.raises(OSError) as info:
            source.chunk(0, 2 * ALIGN, buf)
        assert info.value.errno == errno.EIO
    finally:
        source.close()


def test_open_for_write_truncates(tmp_path):
    path = tmp_path / "old.kv"
    path.write_bytes(b"y" * 10000)
    fileio = FileIO("buffered")
    fd = fileio.open_for_write(str(path))
    os.close(fd)
    assert path.stat().st_size == 0
