"""kvcache baseline's fio jobs and refusals, and what `run --baseline` makes of the file: checks, shares, line."""

import json
from types import SimpleNamespace

import pytest

from kvcache.baseline import SCHEMA, fio_argv, parse_fio_json
from kvcache.baseline_result import baseline_block, baseline_line, baseline_mismatches, load_baseline
from kvcache.cli import main
from kvcache.errors import UsageError

GIB = 1 << 30


def config(**overrides):
    values = dict(io_chunk_mib=4, io_engine="direct", baseline_runtime=2.5, baseline_read_share=0.6)
    values.update(overrides)
    return SimpleNamespace(**values)


def test_the_three_fio_jobs_share_files_and_take_the_engines_shape():
    write = fio_argv(config(), "/usr/bin/fio", "/c/kvcache-baseline-x", "write", 6, 8 << 20)
    assert write[0] == "/usr/bin/fio" and "--rw=write" in write and "--bs=4194304" in write and "--numjobs=6" in write
    assert "--direct=1" in write and "--size=8388608" in write and "--runtime=2.5" in write
    assert "--filename_format=baseline.$jobnum" in write and not [w for w in write if w.startswith("--rwmixread")]
    mixed = fio_argv(config(io_engine="buffered"), "fio", "/c/d", "mixed", 1, 4 << 20)
    assert "--rw=rw" in mixed and "--rwmixread=60" in mixed and "--direct=0" in mixed and "--end_fsync=1" in mixed


def fio_output(read_bw=100, write_bw=50, error=0):
    job = {
        "error": error,
        "read": {"bw_bytes": read_bw, "iops": 1.5, "clat_ns": {"percentile": {"95.000000": 2_500_000}}},
        "write": {"bw_bytes": write_bw, "iops": 0.5, "clat_ns": {"percentile": {}}},
    }
    return "note: both iodepth >= 1 and synchronous I/O engine are selected\n" + json.dumps({"jobs": [job]})


def test_fio_json_after_its_notes():
    parsed = parse_fio_json(fio_output())
    assert parsed["read"] == {"bytes_per_s": 100, "iops": 1.5, "p95_ms": 2.5}
    assert parsed["write"] == {"bytes_per_s": 50, "iops": 0.5, "p95_ms": None}
    with pytest.raises(ValueError, match="job error 5"):
        parse_fio_json(fio_output(error=5))
    with pytest.raises(ValueError, match="no JSON"):
        parse_fio_json("fio: nothing")


@pytest.mark.parametrize(
    "args, says",
    [
        (["--fio", "no-such-fio-here"], "--fio: no-such-fio-here not found: install fio"),
        ([], "--output: required"),
        (["--baseline-size-gb", "0.001"], "--baseline-size-gb: must hold at least one --io-chunk-mib chunk"),
        (["--baseline-size-gb", "4000000"], "--baseline-size-gb: 8 fio jobs x"),
        (["--baseline-read-share", "1.5"], "--baseline-read-share"),
    ],
)
def test_bad_input_exits_2_and_creates_nothing(tmp_path, capsys, args, says):
    cache = tmp_path / "cache"
    cache.mkdir()
    output = [] if args == [] else ["--output", str(tmp_path / "b.json")]
    assert main(["baseline", "--cache-dir", str(cache), *output, *args]) == 2
    assert says in capsys.readouterr().err
    assert list(cache.iterdir()) == [] and not (tmp_path / "b.json").exists()


def baseline(**overrides):
    found = {
        "schema": SCHEMA, "host": "a", "cache_dir": "/c", "device": "nvme0n1", "io_engine": "direct",
        "chunk_bytes": 4 << 20, "read": {"bytes_per_s": 4 * GIB}, "write": {"bytes_per_s": 2 * GIB},
        "mixed": {"read": {"bytes_per_s": 2 * GIB}, "write": {"bytes_per_s": GIB}},
    }  # fmt: skip
    found.update(overrides)
    return found


@pytest.mark.parametrize(
    "content, says",
    [
        (None, "cannot read"),
        ("not json", "is not a baseline of `kvcache baseline`"),
        (json.dumps(baseline(schema="other")), "is not a baseline"),
        (json.dumps(baseline(read={"bytes_per_s": 0})), "read.bytes_per_s must be a positive number"),
        (json.dumps(baseline(mixed={"read": {}})), "mixed.read and mixed.write"),
    ],
)
def test_a_baseline_file_that_is_not_one_is_refused(tmp_path, content, says):
    path = tmp_path / "b.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=says) as refused:
        load_baseline(str(path))
    assert refused.value.option == "--baseline"


def test_mismatches_of_shape_and_place_are_said():
    assert baseline_mismatches(baseline(), config(), "/c", "a") == []
    lines = baseline_mismatches(baseline(), config(io_chunk_mib=16, io_engine="buffered"), "/d", "b")
    assert len(lines) == 3 and "16777216" in lines[0] and "buffered" in lines[1] and "on a in /c" in lines[2]


def payload(rank, host, read, written, found=None):
    return {
        "rank": rank,
        "host": host,
        "metrics": {"bytes": {"storage.read": read, "storage.write": written}},
        **({"baseline": found} if found else {}),
    }


def test_each_host_against_its_own_baseline_and_the_hosts_together():
    seconds = 10.0
    payloads = [
        payload(0, "a", 10 * GIB, 5 * GIB, baseline()),  # a's ranks: 2 GiB/s read, 1 GiB/s write
        payload(1, "a", 10 * GIB, 5 * GIB),
        payload(2, "b", 20 * GIB, 0, baseline(host="b", read={"bytes_per_s": 2 * GIB})),
    ]
    block = baseline_block(payloads, seconds)
    a, b = block["per_host"]
    assert (a["read_percent"], a["write_percent"], a["mixed_percent"]) == (50.0, 50.0, 100.0)
    assert (b["read_percent"], b["write_percent"], b["mixed_percent"]) == (100.0, 0.0, 66.7)
    assert (block["read_percent"], block["write_percent"], block["mixed_percent"]) == (66.7, 25.0, 83.3)
    assert baseline_line(block) == (
        "share of the devices of 2 hosts (fio baseline): read 67 %, write 25 % of fio's read and write alone; "
        "together 83 % of fio's mix"
    )
    one = baseline_block(payloads[:2], seconds)
    assert baseline_line(one).startswith("share of nvme0n1 (fio baseline): read 50 %, write 50 %")
    assert baseline_block([payload(0, "a", 1, 1)], seconds) is None and baseline_line(None) is None
