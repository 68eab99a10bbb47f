"""summarize() and headline_lines() on hand-made results trees: the rules' sums, means and maxima, ours beside."""

import os
import shutil
import statistics

import mlperf_trees as trees
import pytest

from kvcache.mlperf import layout
from kvcache.mlperf.summary import headline_lines, spread, summarize

GIVEN = {"duration": 5.0, "num_users": 2}


def _sum(option, trial, name, world_size=2):
    return sum(trees.figures(option, trial, r)[name] for r in range(world_size))


def _trial_dir(run, option, trial):
    return layout.trial_dir(run, option, trial)


def test_rules_figures_sum_over_ranks_and_average_over_trials(tmp_path):
    run = trees.build(tmp_path, trials=3, world_size=3, given=GIVEN)
    summary = summarize(run)
    assert summary["schema"] == layout.SUMMARY_SCHEMA
    assert (summary["category"], summary["model"], summary["timestamp"]) == ("open", "llama3.1-8b", trees.TIMESTAMP)
    assert summary["total_ranks"] == 3
    figures = summary["options"]["1"]
    assert figures["trials"] == 3
    assert figures["complete_trials"] == [1, 2, 3]
    assert figures["incomplete_trials"] == []
    rules = figures["rules"]
    read = [_sum("1", t, "read_bw", 3) for t in (1, 2, 3)]
    assert rules["read_bandwidth_bytes_per_s"]["per_trial"] == read
    assert rules["read_bandwidth_bytes_per_s"]["mean"] == pytest.approx(sum(read) / 3)
    assert rules["read_bandwidth_bytes_per_s"]["median"] == read[1]
    assert rules["read_bandwidth_bytes_per_s"]["min"] == read[0]
    assert rules["read_bandwidth_bytes_per_s"]["max"] == read[2]
    assert rules["read_bandwidth_bytes_per_s"]["stdev"] == pytest.approx(statistics.pstdev(read))
    write = [_sum("1", t, "write_bw", 3) for t in (1, 2, 3)]
    assert rules["write_bandwidth_bytes_per_s"]["per_trial"] == write
    tokens = [_sum("1", t, "tokens", 3) for t in (1, 2, 3)]
    assert rules["storage_throughput_tokens_per_sec"]["per_trial"] == tokens
    assert rules["storage_throughput_tokens_per_sec"]["mean"] == pytest.approx(sum(tokens) / 3)
    # The max over ranks and trials of each rank's own p95: trial 3, rank 2.
    assert rules["device_read_p95_ms"] == trees.figures("1", 3, 2)["read_p95"]
    assert rules["device_write_p95_ms"] == trees.figures("1", 3, 2)["write_p95"]
    assert rules["ranks_without_storage_io"] == []
    assert rules["ranks_without_storage_entries"] == []
    assert "SUM over ranks" in rules["definition"] and "population" in rules["definition"]


def test_ours_is_the_trial_results_common_window_bandwidth_and_pooled_percentiles(tmp_path):
    run = trees.build(tmp_path, trials=2, given=GIVEN)
    ours = summarize(run)["options"]["1"]["ours"]
    expected = [_sum("1", t, "read_bw") * 0.9 for t in (1, 2)]
    assert ours["read_bandwidth_bytes_per_s"]["per_trial"] == pytest.approx(expected)
    assert ours["write_bandwidth_bytes_per_s"]["per_trial"] == pytest.approx([_sum("1", t, "write_bw") * 0.8
                                                                              for t in (1, 2)])  # fmt: skip
    p95 = [max(trees.figures("1", t, r)["read_p95"] for r in range(2)) * 0.9 for t in (1, 2)]
    assert ours["read_latency_ms"]["p95"]["per_trial"] == pytest.approx(p95)
    assert ours["read_latency_ms"]["p95"]["max"] == pytest.approx(p95[1])
    assert ours["read_latency_ms"]["p99"]["mean"] == pytest.approx(sum(p95) / 2 * 1.5)
    assert "own view" in ours["definition"]


def test_one_trial_has_zero_stdev():
    assert spread([3.0]) == {"mean": 3.0, "median": 3.0, "stdev": 0.0, "min": 3.0, "max": 3.0, "per_trial": [3.0]}
    assert spread([])["mean"] is None


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("rank_file", "rank 1 missing"),
        ("started", "interrupted"),
        ("failed_rank", "rank 0 failed: killed"),
        ("trial_dir", "missing"),
        ("failed_trial", "failed (ranks 1): rank 1 exited"),
    ],
)
def test_an_incomplete_trial_is_never_averaged_in(tmp_path, damage, reason):
    run = trees.build(tmp_path, trials=3, given=GIVEN)
    directory = _trial_dir(run, "1", 2)
    if damage == "rank_file":
        os.remove(layout.rank_file(directory, 1, trees.TIMESTAMP))
    elif damage == "started":
        trees.edit_json(os.path.join(directory, layout.TRIAL_FILE), lambda t: t.update(state=layout.STARTED))
    elif damage == "failed_rank":
        trees.edit_json(layout.rank_file(directory, 0, trees.TIMESTAMP),
                        lambda r: r["rank_result"].update(status="failed", error="killed"))  # fmt: skip
    elif damage == "failed_trial":
        trees.edit_json(os.path.join(directory, layout.TRIAL_FILE),
                        lambda t: t.update(status="failed", error="rank 1 exited", failed_ranks=[1]))  # fmt: skip
    else:
        shutil.rmtree(directory)
    figures = summarize(run)["options"]["1"]
    assert figures["complete_trials"] == [1, 3]
    assert len(figures["incomplete_trials"]) == 1
    assert figures["incomplete_trials"][0]["trial"] == 2
    assert figures["incomplete_trials"][0]["reason"].startswith(reason)
    read = [_sum("1", t, "read_bw") for t in (1, 3)]
    assert figures["rules"]["read_bandwidth_bytes_per_s"]["per_trial"] == read
    assert figures["rules"]["read_bandwidth_bytes_per_s"]["mean"] == pytest.approx(sum(read) / 2)
    assert figures["rules"]["device_read_p95_ms"] == trees.figures("1", 3, 1)["read_p95"]


def test_no_complete_trial_gives_null_figures(tmp_path):
    run = trees.build(tmp_path, trials=1, given=GIVEN)
    os.remove(layout.rank_file(_trial_dir(run, "1", 1), 0, trees.TIMESTAMP))
    summary = summarize(run)
    rules = summary["options"]["1"]["rules"]
    assert rules["read_bandwidth_bytes_per_s"]["mean"] is None
    assert rules["device_read_p95_ms"] is None
    lines = headline_lines(summary)
    assert lines == ["option 1 (llama3.1-8b): no complete trial of 1: nothing to report",
                     "option 1 trial 1: not counted: rank 0 missing"]  # fmt: skip


def test_ranks_without_storage_io_count_zero_and_are_named(tmp_path):
    run = trees.build(tmp_path, trials=1, given=GIVEN)
    path = layout.rank_file(_trial_dir(run, "1", 1), 1, trees.TIMESTAMP)

    def no_storage(record):
        record["rank_result"]["reference_metrics"]["storage_throughput_tokens_per_sec"] = None
        record["rank_result"]["tiers"]["storage"]["entries"] = 0
        record["rank_result"]["tiers"]["storage"]["read_latency_ms"]["p95"] = None

    trees.edit_json(path, no_storage)
    rules = summarize(run)["options"]["1"]["rules"]
    assert rules["storage_throughput_tokens_per_sec"]["per_trial"] == [trees.figures("1", 1, 0)["tokens"]]
    assert rules["ranks_without_storage_io"] == [{"trial": 1, "rank": 1}]
    assert rules["ranks_without_storage_entries"] == [{"trial": 1, "rank": 1}]
    assert rules["device_read_p95_ms"] == trees.figures("1", 1, 0)["read_p95"]


def test_headline_lines(tmp_path):
    run = trees.build(tmp_path, trials=2, given=GIVEN)
    os.remove(layout.rank_file(_trial_dir(run, "1", 2), 1, trees.TIMESTAMP))
    # Trial 1 alone: read 100+1 + 110+1 MiB/s = 212 MiB/s = 0.207 GiB/s; write 51 + 56 = 107 MiB/s = 0.104 GiB/s.
    assert headline_lines(summarize(run)) == [
        "option 1 (llama3.1-8b): storage read 0.207 GiB/s (median 0.207, 0.207-0.207), "
        "write 0.104 GiB/s (median 0.104, 0.104-0.104), 2,100 tokens/s, device p95 read 1.75 ms / write 2.5 ms, "
        "1 of 2 trials x 2 ranks",
        "option 1 trial 2: not counted: rank 1 missing",
    ]


def test_two_options_in_run_order(tmp_path):
    run = trees.build(tmp_path, options=("1", "2"), trials=1, given=GIVEN)
    summary = summarize(run)
    assert list(summary["options"]) == ["1", "2"]
    assert summary["options"]["2"]["rules"]["read_bandwidth_bytes_per_s"]["per_trial"] == [_sum("2", 1, "read_bw")]
    assert len(headline_lines(summary)) == 2


def test_the_summary_file_round_trips_exactly(tmp_path):
    run = trees.build(tmp_path, trials=3, world_size=3, given=GIVEN)
    assert trees.read_json(layout.summary_file(run, trees.TIMESTAMP)) == summarize(run)


def test_unreadable_metadata_raises(tmp_path):
    run = trees.build(tmp_path, given=GIVEN)
    with open(layout.metadata_file(run, trees.TIMESTAMP), "w", encoding="utf-8") as handle:
        handle.write("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        summarize(run)


def test_one_rank_is_named_in_the_singular(tmp_path):
    run = trees.build(tmp_path, trials=1, world_size=1, given=GIVEN)
    [line] = headline_lines(summarize(run))
    assert line.endswith("1 of 1 trials x 1 rank"), line


def test_a_level_of_the_wrong_type_counts_nothing_and_does_not_crash(tmp_path):
    """A damaged rank or trial result is the checker's to name; summarize() must still give figures."""
    run = trees.build(tmp_path, trials=1, given=GIVEN)
    trees.edit_json(layout.rank_file(_trial_dir(run, "1", 1), 1, trees.TIMESTAMP),
                    lambda r: r["rank_result"]["tiers"].update(storage=[1, 2]))  # fmt: skip
    trees.edit_json(os.path.join(_trial_dir(run, "1", 1), layout.TRIAL_RESULT_FILE),
                    lambda r: r["tiers"].update(storage=[1]))  # fmt: skip
    figures = summarize(run)["options"]["1"]
    assert figures["rules"]["read_bandwidth_bytes_per_s"]["per_trial"] == [trees.figures("1", 1, 0)["read_bw"]]
    assert figures["ours"]["read_bandwidth_bytes_per_s"]["per_trial"] == [0.0]
