"""--io-trace-log: the trace rows, the tracing tiers (accounted, not stored; Evict rows for demotions), the .zst
stream, the path checks, and the fio job `kvcache trace fio` writes from a known trace."""

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest

from kvcache import io_trace, trace_fio
from kvcache.cli import main
from kvcache.errors import UsageError
from kvcache.metrics import Metrics
from kvcache.storage_io import BufferPool, PatternSource
from kvcache.tiers import Mover, TierManager

zstandard = pytest.importorskip("zstandard")  # the test venv has the trace extra

E = 64 << 10  # one entry's bytes (4 KiB aligned, as the manager stores them)


def read_rows(path):
    with open(path, "rb") as raw:
        data = raw.read()
    if path.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return list(csv.reader(io.StringIO(data.decode("ascii"))))


class TraceStack:
    """A TierManager over tracing tiers, with a trace file in tmp_path."""

    def __init__(self, path, gpu_bytes, cpu_bytes, storage_bytes, promote=False):
        self.metrics = Metrics()
        self.stop = threading.Event()
        self.pool = BufferPool(2, 16 << 10)
        self.pattern = PatternSource(self.pool)
        self.trace = io_trace.TraceWriter(str(path))
        mover = Mover(self.pool, self.stop)
        self.tiers = io_trace.tracing_tiers((gpu_bytes, cpu_bytes, storage_bytes), self.metrics, mover, self.trace)
        self.manager = TierManager(self.tiers, self.metrics, self.stop, promote=promote)

    def phase(self, name):
        self.trace.phase.name = name


@pytest.fixture
def stack(tmp_path):
    made = []

    def make(name="t.csv", **kwargs):
        made.append(TraceStack(tmp_path / name, **kwargs))
        return made[-1]

    yield make
    for s in made:
        s.trace.close()
        s.pool.close()


def test_rows_have_the_reference_columns_and_the_threads_phase(stack, tmp_path):
    s = stack(gpu_bytes=4 * E, cpu_bytes=4 * E, storage_bytes=4 * E)
    s.phase("Prefill")
    assert s.manager.write_new("u0c0t1", E - 100, s.pattern) == "gpu"
    s.phase("Decode")
    assert s.manager.read("u0c0t1") == "gpu"
    report = s.trace.close()
    rows = read_rows(str(tmp_path / "t.csv"))
    assert rows[0] == ["Timestamp", "Operation", "Object_Size_Bytes", "Tier", "Key", "Phase"]
    assert [r[1:] for r in rows[1:]] == [
        ["Write", str(E), "Tier-0", "u0c0t1", "Prefill"],
        ["Read", str(E), "Tier-0", "u0c0t1", "Decode"],
    ]
    for row in rows[1:]:
        seconds, fraction = row[0].split(".")
        assert len(fraction) == 6 and abs(int(seconds) - time.time()) < 60
    assert report == {
        "path": str(tmp_path / "t.csv"),
        "compressed": False,
        "rows": 2,
        "read_rows": 1,
        "write_rows": 1,
        "read_bytes": E,
        "write_bytes": E,
    }


def test_a_demotion_is_a_read_and_a_write_of_phase_evict_and_bytes_match_the_rows(stack, tmp_path):
    s = stack(gpu_bytes=E, cpu_bytes=E, storage_bytes=2 * E)
    s.phase("Prefill")
    for i in range(5):
        s.manager.write_new(f"k{i}", E, s.pattern)
    s.trace.close()
    rows = [r[1:] for r in read_rows(str(tmp_path / "t.csv"))[1:]]
    # k0 to GPU; k1 pushes k0 GPU -> CPU; k2 pushes k1 GPU -> CPU, which first pushes k0 CPU -> storage; ...
    assert rows[:4] == [
        ["Write", str(E), "Tier-0", "k0", "Prefill"],
        ["Read", str(E), "Tier-0", "k0", "Evict"],
        ["Write", str(E), "Tier-1", "k0", "Evict"],
        ["Write", str(E), "Tier-0", "k1", "Prefill"],
    ]
    assert ["Read", str(E), "Tier-1", "k0", "Evict"] in rows and ["Write", str(E), "Tier-2", "k0", "Evict"] in rows
    # The storage holds two entries: k4 evicts k0 from it (an eviction deletes: no row of its own).
    assert s.metrics.counters["evictions.storage"] == 1
    assert [list(t.lru) for t in s.tiers] == [["k4"], ["k3"], ["k1", "k2"]]
    assert sum(1 for r in rows if r[3] == "k0") == 5  # written, then read and written by each of two demotions
    sums = Counter()
    for op, size, tier, _key, _phase in rows:
        sums[(tier, op)] += int(size)
    for index, tier in enumerate(("gpu", "cpu", "storage")):
        label = f"Tier-{index}"
        assert s.metrics.bytes[f"{tier}.read"] == sums[(label, "Read")]
        assert s.metrics.bytes[f"{tier}.write"] == sums[(label, "Write")]
        # Operations are counted, never timed: no latency is claimed for a trace run.
        assert s.metrics.latency[f"{tier}.write"].get_total_count() == 0
        assert s.metrics.latency[f"{tier}.read"].get_total_count() == 0
    assert [s.metrics.counters[f"ops.{t}.write"] for t in ("gpu", "cpu", "storage")] == [5, 4, 3]
    assert [s.metrics.counters[f"ops.{t}.read"] for t in ("gpu", "cpu", "storage")] == [4, 3, 0]


def test_a_promotion_takes_the_readers_phase_and_no_file_is_written(stack, tmp_path):
    s = stack(gpu_bytes=E, cpu_bytes=E, storage_bytes=E, promote=True)
    s.phase("Prefill")
    s.manager.write_new("a", E, s.pattern)
    s.manager.write_new("b", E, s.pattern)  # a: GPU -> CPU
    s.phase("Decode")
    assert s.manager.read("a") == "cpu"  # then promoted back, b demoted
    s.trace.close()
    rows = [r[1:] for r in read_rows(str(tmp_path / "t.csv"))[1:]]
    assert ["Read", str(E), "Tier-1", "a", "Decode"] in rows  # the hit
    assert rows[-1] == ["Write", str(E), "Tier-0", "a", "Decode"]  # the promotion's copy
    assert os.listdir(tmp_path) == ["t.csv"]


def test_zst_round_trip_and_a_buffer_bounded_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(io_trace, "BUFFER_BYTES", 4096)
    path = tmp_path / "t.csv.zst"
    trace = io_trace.TraceWriter(str(path))
    for i in range(2000):
        trace.row(io_trace.WRITE, 4096 * (i + 1), "storage", f"u{i}c0t1", "Prefill")
        assert trace._buffered < 4096 + 100  # flushed as it goes
    trace.close()
    assert trace.close()["rows"] == 2000  # closing twice is harmless
    with open(path, "rb") as handle:
        assert handle.read(4) == b"\x28\xb5\x2f\xfd"  # a zstandard frame
    rows = read_rows(str(path))
    assert len(rows) == 2001 and rows[-1][1:] == ["Write", str(4096 * 2000), "Tier-2", "u1999c0t1", "Prefill"]


def test_an_existing_file_is_never_replaced(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("mine\n")
    config = SimpleNamespace(io_trace_log=str(path))
    with pytest.raises(UsageError, match="--io-trace-log: .*exists"):
        io_trace.check_rank(config, 0, 1)
    with pytest.raises(FileExistsError):
        io_trace.TraceWriter(str(path))  # one that appeared after the check: O_EXCL
    assert path.read_text() == "mine\n"


@pytest.mark.parametrize(
    ("path", "rank", "ranks", "expected"),
    [
        ("d/t.csv", 0, 1, "d/t.csv"),
        ("d/t.csv", 1, 2, "d/t.rank1.csv"),
        ("d/t.csv.zst", 0, 4, "d/t.rank0.csv.zst"),
        ("d/t.zst", 3, 4, "d/t.rank3.zst"),
        ("d/trace", 2, 3, "d/trace.rank2"),
        ("d/.csv", 1, 2, "d/.csv.rank1"),
    ],
)
def test_one_file_per_rank_named_by_rank(path, rank, ranks, expected):
    assert io_trace.rank_path(path, rank, ranks) == expected


def test_checks_before_anything_is_created(tmp_path, monkeypatch):
    def config(path):
        return SimpleNamespace(io_trace_log=str(path))

    io_trace.check(SimpleNamespace(io_trace_log=None))
    io_trace.check(config(tmp_path / "t.csv"))
    with pytest.raises(UsageError, match="--io-trace-log: the directory .*missing.* does not exist"):
        io_trace.check(config(tmp_path / "missing" / "t.csv"))
    with pytest.raises(UsageError, match="--io-trace-log: give a file path"):
        io_trace.check(config(str(tmp_path) + os.sep))
    monkeypatch.setattr(os, "access", lambda *_a: False)
    with pytest.raises(UsageError, match="--io-trace-log: the directory .* is not writable"):
        io_trace.check(config(tmp_path / "t.csv"))
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "zstandard", None)  # not installed
    with pytest.raises(UsageError, match=r"--io-trace-log: a \.zst trace needs the zstandard package: .*\[trace\]"):
        io_trace.check(config(tmp_path / "t.csv.zst"))
    io_trace.check(config(tmp_path / "t.csv"))  # a plain CSV needs nothing more
    assert os.listdir(tmp_path) == []


# -- kvcache trace fio ---------------------------------------------------------------------------------
KNOWN = (
    # 6 storage reads of 1 MiB and 2 of 4 MiB; 2 storage writes of 1 MiB; GPU rows that a storage job leaves out.
    *[("Read", 1 << 20, "Tier-2")] * 6,
    *[("Read", 4 << 20, "Tier-2")] * 2,
    *[("Write", 1 << 20, "Tier-2")] * 2,
    *[("Write", 8192, "Tier-0")] * 5,
)


def write_trace(path, rows=KNOWN):
    trace = io_trace.TraceWriter(str(path))
    for index, (op, size, tier) in enumerate(rows):
        trace.row(op, size, {"Tier-0": "gpu", "Tier-1": "cpu", "Tier-2": "storage"}[tier], f"u{index}c0t1", "Decode")
    trace.close()
    return str(path)


@pytest.mark.parametrize("name", ["t.csv", "t.csv.zst"])
def test_fio_job_of_a_known_trace(tmp_path, name):
    trace = write_trace(tmp_path / name)
    out = io.StringIO()
    assert trace_fio.run_trace_fio(trace, None, None, None, out) == 0
    job = out.getvalue().splitlines()
    settings = dict(line.split("=", 1) for line in job if "=" in line and not line.startswith(";"))
    assert settings["rw"] == "randrw"
    assert settings["rwmixread"] == "80"  # 8 of the 10 storage operations are reads
    assert settings["bssplit"] == f"{1 << 20}/75:{4 << 20}/25,{1 << 20}/100"
    assert settings["io_size"] == str(6 * (1 << 20) + 2 * (4 << 20) + 2 * (1 << 20))
    assert settings["size"] == str(4 << 20)  # the bytes written (2 MiB), at least the largest block
    assert settings["direct"] == "1" and settings["filename"] == trace_fio.DEFAULT_FILENAME
    assert "[kvcache-trace]" in job


def test_fio_job_of_one_direction_and_of_every_tier(tmp_path):
    trace = write_trace(tmp_path / "t.csv", [("Write", 12288, "Tier-2")] * 3 + [("Read", 8192, "Tier-0")])
    out = io.StringIO()
    trace_fio.run_trace_fio(trace, None, "Tier-2", "/dev/null", out)
    assert "rw=randwrite\nbssplit=12288/100\n" in out.getvalue() and "filename=/dev/null" in out.getvalue()
    out = io.StringIO()
    trace_fio.run_trace_fio(trace, None, "all", None, out)
    assert "rwmixread=25" in out.getvalue() and "bssplit=8192/100,12288/100" in out.getvalue()


def test_many_sizes_become_at_most_max_bins_with_whole_percentages():
    sizes = Counter({4096 * (i + 1): 1 + i % 7 for i in range(500)})
    split = trace_fio.bssplit(sizes)
    pairs = [part.split("/") for part in split.split(":")]
    assert len(pairs) <= trace_fio.MAX_BINS
    assert sum(int(p) for _b, p in pairs) == 100 and all(int(p) > 0 for _b, p in pairs)
    blocks = [int(b) for b, _p in pairs]
    assert blocks == sorted(blocks) and all(b % 4096 == 0 for b in blocks)
    # The bins keep the bytes per operation: their mean block is the histogram's mean size, within rounding.
    mean = sum(s * n for s, n in sizes.items()) / sum(sizes.values())
    assert abs(sum(int(b) * int(p) for b, p in pairs) / 100 - mean) / mean < 0.05


def test_a_rare_size_joins_its_neighbour_instead_of_getting_zero_percent():
    split = trace_fio.bssplit(Counter({4096: 1, 1 << 20: 999}))
    assert split == f"{1 << 20}/100"


@pytest.mark.skipif(shutil.which("fio") is None, reason="needs fio")
def test_fio_parses_the_job(tmp_path):
    trace = write_trace(tmp_path / "t.csv")
    job = tmp_path / "job.fio"
    assert main(["trace", "fio", trace, "--output", str(job)], io.StringIO(), io.StringIO()) == 0
    checked = subprocess.run(["fio", "--parse-only", str(job)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


def test_bad_input_exits_2_naming_the_argument(tmp_path):
    good = write_trace(tmp_path / "t.csv")
    header_only = tmp_path / "empty.csv"
    header_only.write_text(",".join(io_trace.COLUMNS) + "\n")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    bad_row = tmp_path / "row.csv"
    bad_row.write_text(",".join(io_trace.COLUMNS) + "\n1.0,Delete,10,Tier-2,k,Prefill\n")
    not_zst = tmp_path / "plain.csv.zst"
    not_zst.write_text("plain text\n")
    existing = tmp_path / "job.fio"
    existing.write_text("mine\n")
    cases = [
        (["trace", "fio", str(tmp_path / "nope.csv")], "TRACE: .*nope.csv is not a file"),
        (["trace", "fio", str(header_only)], "TRACE: .* holds no operation of Tier-2"),
        (["trace", "fio", str(wrong)], "TRACE: .* is not an --io-trace-log trace"),
        (["trace", "fio", str(bad_row)], "TRACE: .* line 2: not a trace row"),
        (["trace", "fio", str(not_zst)], "TRACE: .* not a zstandard stream"),
        (["trace", "fio", good, "--tier", "Tier-9"], "--tier: choose one of Tier-0, Tier-1, Tier-2, all"),
        (["trace", "fio", good, "--output", str(existing)], "--output: .* exists"),
        (["trace", "fio", good, "--output", str(tmp_path / "no" / "j.fio")], "--output: the directory"),
    ]
    for argv, message in cases:
        err = io.StringIO()
        assert main(argv, io.StringIO(), err) == 2, argv
        assert re.search("^kvcache trace: error: " + message, err.getvalue()), err.getvalue()
        assert len(err.getvalue().splitlines()) == 1
    assert existing.read_text() == "mine\n"
    assert not (tmp_path / "no").exists()
