"""BurstGPT trace replay: parsing, arrival offsets, speedup, cycles, rank shares and bad traces."""

import collections
import itertools
import os
import re

import pytest

from kvcache import burst_trace, replay
from kvcache.errors import UsageError
from kvcache.run_config import make_config
from kvcache.workload import KEY_PATTERN, QOS_CLASSES, Settings

HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def trace(directory, name, rows, header=HEADER):
    """A BurstGPT CSV of (timestamp, request tokens, response tokens) rows; str rows are written as they are."""
    lines = [r if isinstance(r, str) else f"{r[0]},ChatGPT,{r[1]},{r[2]},{r[1] + r[2]},Conversation log" for r in rows]
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(header + "".join(line + "\n" for line in lines))
    return path


def config(path, **values):
    return make_config("run", use_burst_trace=True, burst_trace_path=str(path), **values)


def replayed(cfg, rank=0, ranks=1, settings=None, limit=None):
    """(offsets, requests, report) of one rank's replay, at most `limit` arrivals."""
    report = {}
    pairs = burst_trace.arrivals(cfg, rank, ranks, settings or Settings.from_config(cfg), report)
    pairs = list(itertools.islice(pairs, limit))
    return [at for at, _r in pairs], [r for _at, r in pairs], report


ROWS = [(5.0, 300, 100), (5.5, 2000, 0), (7.0, 500, 50), (12.0, 100, 10)]


def test_rows_are_requests_with_the_trace_tokens(tmp_path):
    path = trace(tmp_path, "t.csv", ROWS)
    offsets, requests, report = replayed(config(path, replay_cycles=1, disable_prefix_caching=True))
    assert [(r.context_tokens, r.generation_tokens) for r in requests] == [(300, 100), (2000, 0), (500, 50), (100, 10)]
    assert [r.key for r in requests] == ["u0c1t1", "u1c1t1", "u2c1t1", "u3c1t1"]
    assert all(re.fullmatch(KEY_PATTERN, r.key) for r in requests)  # `kvcache clean` knows the files
    assert [r.user for r in requests] == [0, 1, 2, 3]  # each row its own user: none waits for another
    assert all(r.earlier_keys == () and r.rag_keys == () and r.think_seconds == 0 for r in requests)
    assert all(r.template == burst_trace.TEMPLATE and r.prefix_key is None for r in requests)
    assert report == {
        "files": [path],
        "rows_replayed": 4,
        "rows_skipped": 0,
        "completed_cycles": 1,
        "last_arrival_s": 7.0,
        "max_arrival_lag_s": report["max_arrival_lag_s"],
    }
    assert offsets == [0.0, 0.5, 2.0, 7.0]  # seconds after the first row's timestamp


@pytest.mark.parametrize("speedup,expected", [(1, [0.0, 0.5, 2.0, 7.0]), (10, [0.0, 0.05, 0.2, 0.7]), (0, [None] * 4)])
def test_speedup_scales_the_offsets_and_zero_sends_at_once(tmp_path, speedup, expected):
    path = trace(tmp_path, "t.csv", ROWS)
    offsets, _requests, report = replayed(config(path, replay_cycles=1, trace_speedup=speedup))
    assert offsets == pytest.approx(expected) if speedup else offsets == expected
    assert ("max_arrival_lag_s" in report) == bool(speedup)  # no schedule, no lag


def test_a_timestamp_that_goes_back_arrives_with_the_previous_row(tmp_path):
    # Two files whose timestamps both start at 0: the second continues the first's clock.
    first = trace(tmp_path, "a.csv", [(0, 10, 1), (3, 10, 1)])
    trace(tmp_path, "b.csv", [(0, 10, 1), (2, 10, 1), (1, 10, 1), (4, 10, 1)])
    offsets, requests, report = replayed(config(tmp_path, replay_cycles=1))
    assert offsets == [0, 3, 3, 5, 5, 8]
    assert [r.user for r in requests] == list(range(6))  # rows counted over both files
    assert report["files"] == [first, str(tmp_path / "b.csv")]


def test_cycles_continue_after_the_last_row_and_have_their_own_keys(tmp_path):
    path = trace(tmp_path, "t.csv", ROWS)
    offsets, requests, report = replayed(config(path, replay_cycles=3))
    assert offsets == [0.0, 0.5, 2.0, 7.0, 7.0, 7.5, 9.0, 14.0, 14.0, 14.5, 16.0, 21.0]
    assert [r.key for r in requests[3:6]] == ["u3c1t1", "u0c2t1", "u1c2t1"]
    assert len({r.key for r in requests}) == 12
    assert report["completed_cycles"] == 3 and report["rows_replayed"] == 12


def test_zero_cycles_replay_until_stopped(tmp_path):
    path = trace(tmp_path, "t.csv", ROWS)
    offsets, _requests, report = replayed(config(path), limit=41)
    assert len(offsets) == 41 and offsets[-1] == 70.0  # ten whole passes of 7 s, and the next first row
    assert report["completed_cycles"] == 10 and report["rows_replayed"] == 40  # the 41st not yet taken


def test_malformed_rows_are_skipped_and_counted(tmp_path):
    rows = [
        (0, 100, 10),
        "x,ChatGPT,100,10,110,Conversation log",  # timestamp not a number
        "1,ChatGPT,12.5,10,22,Conversation log",  # tokens not whole
        "1,ChatGPT,0,10,10,Conversation log",  # no context
        "1,ChatGPT,100,-1,99,Conversation log",  # negative response
        "nan,ChatGPT,100,1,101,Conversation log",
        "1,ChatGPT",  # too short
        "",  # a blank line is no row at all
        " 2 ,ChatGPT, 200 , 20 ,220,API log",  # spaces around numbers are fine
    ]
    path = trace(tmp_path, "t.csv", rows)
    offsets, requests, report = replayed(config(path, replay_cycles=2))
    assert [(r.context_tokens, r.generation_tokens) for r in requests] == [(100, 10), (200, 20)] * 2
    assert offsets == [0, 2, 2, 4]
    assert report["rows_skipped"] == 12 and report["rows_replayed"] == 4  # six rows, in each of two cycles
    assert [r.user for r in requests[:2]] == [0, 7]  # skipped rows keep their place in the count


def test_columns_are_found_by_name_in_any_order(tmp_path):
    header = "Log Type,Response tokens,Model,Timestamp,Request tokens\n"
    path = trace(tmp_path, "t.csv", ["API log,7,GPT-4,0,70", "API log,8,GPT-4,1,80"], header="\ufeff" + header)
    _offsets, requests, _report = replayed(config(path, replay_cycles=1))
    assert [(r.context_tokens, r.generation_tokens) for r in requests] == [(70, 7), (80, 8)]


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_share_the_rows_and_keep_the_trace_clock(tmp_path, ranks):
    rows = [(t * 0.5, 100 + t, t) for t in range(10)]
    path = trace(tmp_path, "t.csv", rows)
    cfg = config(path, replay_cycles=2)
    seen = collections.Counter()
    single = {r.key: (at, r) for at, r in zip(*replayed(cfg)[:2])}
    for rank in range(ranks):
        offsets, requests, report = replayed(cfg, rank, ranks)
        assert [r.user % ranks for r in requests] == [rank] * len(requests)
        assert report["rows_replayed"] == len(requests)
        for at, request in zip(offsets, requests):
            assert single[request.key] == (at, request)  # the same arrival time, QoS and prompt as on one rank
            seen[request.key] += 1
    assert seen == {key: 1 for key in single}  # the fleet replays every row once per cycle


def test_a_rank_without_rows_ends_at_once(tmp_path):
    path = trace(tmp_path, "t.csv", [(0, 10, 1)])
    _offsets, requests, report = replayed(config(path), rank=1, ranks=2)  # replay_cycles 0: no end but this
    assert requests == [] and report["completed_cycles"] == 1


def test_qos_follows_the_profile_shares_and_prompts_the_settings(tmp_path):
    path = trace(tmp_path, "t.csv", [(i, 3000, 10) for i in range(4000)])
    cfg = config(path, replay_cycles=1, prefix_hit_probability=0.5, system_prompt_tokens=1000)
    _offsets, requests, _report = replayed(cfg)
    counts = collections.Counter(r.qos for r in requests)
    for qos in QOS_CLASSES:
        assert counts[qos.name] / len(requests) == pytest.approx(qos.share, abs=0.03)
    assert all(r.priority == next(q.priority for q in QOS_CLASSES if q.name == r.qos) for r in requests)
    prompted = [r for r in requests if r.prefix_key]
    assert len(prompted) / len(requests) == pytest.approx(0.5, abs=0.03)
    assert all(r.prefix_tokens == 1000 and r.context_tokens == 2000 for r in prompted)  # part of the context
    assert {r.prefix_key for r in prompted} == {f"prefix-{i}" for i in range(cfg.system_prompts)}
    again = replayed(cfg)[1]
    assert again == requests  # seeded
    assert replayed(config(path, replay_cycles=1, seed=7))[1] != requests


def test_prefix_caching_off_means_no_prompt(tmp_path):
    path = trace(tmp_path, "t.csv", [(i, 3000, 10) for i in range(50)])
    requests = replayed(config(path, replay_cycles=1, disable_prefix_caching=True))[1]
    assert all(r.prefix_key is None and r.context_tokens == 3000 for r in requests)


def test_trace_files_of_a_file_a_directory_and_a_glob(tmp_path):
    for name in ("b.csv", "a.csv", "c.txt"):
        trace(tmp_path, name, [(0, 1, 1)])
    (tmp_path / "d.csv").mkdir()
    a, b = str(tmp_path / "a.csv"), str(tmp_path / "b.csv")
    assert burst_trace.trace_files(b) == [b]
    assert burst_trace.trace_files(str(tmp_path)) == [a, b, str(tmp_path / "d.csv")]
    assert burst_trace.trace_files(str(tmp_path / "*.csv")) == [a, b]  # regular files only
    assert burst_trace.trace_files(str(tmp_path / "[ab].*")) == [a, b]


def test_the_trace_is_read_as_it_is_replayed(tmp_path):
    path = trace(tmp_path, "t.csv", [(i, 10, 1) for i in range(1000)])
    report = {}
    pairs = burst_trace.arrivals(config(path), 0, 1, Settings(), report)
    next(pairs)
    # A new file in its place changes the next cycle: nothing of the trace was kept in memory.
    os.replace(trace(tmp_path, "new.csv", [(0, 77, 7)]), path)
    rest = list(itertools.islice(pairs, 1001))
    assert rest[998][1].context_tokens == 10 and rest[999][1].context_tokens == 77


def check(path=None, **values):
    cfg = make_config("run", use_burst_trace=True, burst_trace_path=path and str(path), **values)
    with pytest.raises(UsageError) as raised:
        replay.check(cfg)
    message = str(raised.value)
    assert message.startswith("--burst-trace-path: ") and "\n" not in message
    return message


def test_bad_traces_are_refused_naming_the_option(tmp_path):
    assert "give its file" in check(None)
    assert "no such file" in check(tmp_path / "missing.csv")
    assert "no *.csv" in check(tmp_path)
    assert "glob matches no file" in check(tmp_path / "*.csv")
    os.mkfifo(tmp_path / "pipe")
    assert "not a regular file" in check(tmp_path / "pipe")
    assert "is empty" in check(trace(tmp_path, "empty.csv", [], header=""))
    message = check(trace(tmp_path, "cols.csv", [(0, 1, 1)], header="Timestamp,Model,Request tokens\n"))
    assert "'Response tokens'" in message and "Timestamp, Request tokens, Response tokens" in message
    assert "no row" in check(trace(tmp_path, "bad.csv", ["x,m,1,1,2,l", "1,m,1.5,1,2,l"]))
    assert "no row" in check(trace(tmp_path, "header-only.csv", []))


def test_every_file_of_a_directory_is_checked(tmp_path):
    trace(tmp_path, "a.csv", [(0, 1, 1)])
    trace(tmp_path, "b.csv", [(0, 1, 1)], header="time,tokens\n")
    assert "b.csv has no column" in check(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_trace_is_refused(tmp_path):
    path = trace(tmp_path, "t.csv", [(0, 1, 1)])
    os.chmod(path, 0)
    assert "cannot read" in check(path)


def test_a_path_without_use_burst_trace_is_refused(tmp_path):
    path = trace(tmp_path, "t.csv", [(0, 1, 1)])
    with pytest.raises(UsageError, match="--burst-trace-path: .*only with --use-burst-trace"):
        replay.check(make_config("run", burst_trace_path=path))


def test_a_good_trace_passes_and_picks_the_trace_replay(tmp_path):
    cfg = config(trace(tmp_path, "t.csv", ["junk", (0, 1, 1)]))
    replay.check(cfg)
    assert replay.kind(cfg) == "burst_trace"
