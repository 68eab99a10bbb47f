"""`kvcache mlperf check` on hand-made good, tampered and incomplete results trees."""

import io
import json
import os
import shutil

import mlperf_trees as trees
import pytest

from kvcache import cli
from kvcache.cachedir import LIVE, OtherRun, other_run_warnings
from kvcache.mlperf import check, layout, rules
from kvcache.mlperf.check import check_run_dir, check_tree, run_check
from kvcache.mlperf.summary import headline_lines, summarize

GIVEN = {"duration": 5.0, "num_users": 2}


def _rank_path(run, option, trial, rank):
    return layout.rank_file(layout.trial_dir(run, option, trial), rank, trees.TIMESTAMP)


def _trial_json(run, option, trial):
    return os.path.join(layout.trial_dir(run, option, trial), layout.TRIAL_FILE)


def _metadata(run):
    return layout.metadata_file(run, trees.TIMESTAMP)


def _invalid(run, *fragments):
    """The run is INVALID, and some reason holds every fragment."""
    report = check_run_dir(run)
    assert report["verdict"] == rules.INVALID, report["reasons"]
    assert any(all(f in reason for f in fragments) for reason in report["reasons"]), report["reasons"]
    return report["reasons"]


def test_a_good_open_tree_is_open_with_every_difference(tmp_path):
    run = trees.build(tmp_path, options=("1", "2"), trials=2, given=GIVEN, delay_s=0.0)
    report = check_run_dir(run)
    assert report["verdict"] == rules.OPEN
    assert (report["category"], report["model"], report["run_dir"]) == ("open", "llama3.1-8b", run)
    assert report["reasons"] == [
        "option 1: num_users 2 users (CLOSED: 200 users)",
        "option 1: duration 5 s (CLOSED: 300 s)",
        "option 2: num_users 2 users (CLOSED: 100 users)",
        "option 2: duration 5 s (CLOSED: 300 s)",
        "2 trials (CLOSED: 3)",
        "delay 0 s before option 2 (CLOSED: at least 90 s)",
    ]


def test_a_good_closed_tree_is_closed(tmp_path):
    run = trees.closed(tmp_path, options=("1", "2"))
    report = check_run_dir(run)
    assert report["verdict"] == rules.CLOSED, report["reasons"]
    assert report["reasons"] and all(isinstance(r, str) for r in report["reasons"])


def test_an_open_tree_with_the_closed_workload_is_still_open(tmp_path):
    run = trees.build(tmp_path, category="open", trials=rules.TRIALS)
    report = check_run_dir(run)
    assert report["verdict"] == rules.OPEN
    assert report["reasons"] == ["category open, though nothing differs from CLOSED"]


def test_a_closed_claim_that_is_not_closed_is_invalid(tmp_path):
    run = trees.build(tmp_path, category="closed", options=("1", "2"), trials=rules.TRIALS, delay_s=10.0)
    reasons = _invalid(run, "claims CLOSED", "delay 10 s before option 2")
    assert len(reasons) == 1


def test_closed_parameters_are_read_from_the_rank_files(tmp_path):
    """A rank that ran 5 s while the metadata says 300 s: both its mismatch and the CLOSED claim are named."""
    run = trees.closed(tmp_path)
    trees.edit_json(_rank_path(run, "1", 2, 1), lambda r: r["config"].update(duration=5.0))
    trees.refresh_digests(run, "1", 2)
    _invalid(run, "option 1 trial 2 rank 1", "duration 5 s", "the metadata says 300 s")
    _invalid(run, "claims CLOSED", "option 1: duration 5 s (CLOSED: 300 s)")


def test_a_closed_run_with_two_trials_is_invalid(tmp_path):
    run = trees.build(tmp_path, category="closed", trials=2)
    _invalid(run, "claims CLOSED", "2 trials (CLOSED: 3)")


def test_an_edited_rank_bandwidth_is_a_digest_mismatch(tmp_path):
    run = trees.build(tmp_path, given=GIVEN)
    path = _rank_path(run, "1", 1, 0)
    trees.edit_json(path, lambda r: r["rank_result"]["tiers"]["storage"].update(read_bandwidth_bytes_per_s=1e12))
    _invalid(run, "option 1 trial 1", "rank_0/", "changed after the run")
    # The summary no longer matches the tree either: the edited figure is summed in.
    _invalid(run, "summary file differs", "options.1.rules.read_bandwidth_bytes_per_s")


def test_an_edited_summary_figure_is_named(tmp_path):
    run = trees.build(tmp_path, given=GIVEN)
    path = layout.summary_file(run, trees.TIMESTAMP)
    trees.edit_json(path, lambda s: s["options"]["1"]["rules"]["read_bandwidth_bytes_per_s"].update(mean=1e12))
    reasons = _invalid(run, "summary file differs", "options.1.rules.read_bandwidth_bytes_per_s.mean")
    assert len(reasons) == 1
    # The checker's headline is the one of the rank files, not of the edited summary.
    headline = check.check_run_dir(run)["headline"]
    assert headline == headline_lines(summarize(run)) and "931 GiB/s" not in " ".join(headline)
    assert headline[0].startswith("option 1 (")


def test_a_missing_summary_is_invalid(tmp_path):
    run = trees.build(tmp_path, given=GIVEN, summary=False)
    _invalid(run, "the summary file missing")


def test_num_users_changed_in_a_rank_config(tmp_path):
    run = trees.build(tmp_path, given=GIVEN)
    trees.edit_json(_rank_path(run, "1", 2, 1), lambda r: r["config"].update(num_users=3))
    trees.refresh_digests(run, "1", 2)
    reasons = _invalid(run, "option 1 trial 2 rank 1", "num_users 3 users", "the metadata says 2 users")
    assert len(reasons) == 1


def test_a_changed_seed(tmp_path):
    run = trees.build(tmp_path, given=GIVEN)
    trees.edit_json(_rank_path(run, "1", 1, 1), lambda r: r["config"].update(seeds_per_rank=[42, 42]))
    trees.refresh_digests(run, "1", 1)
    _invalid(run, "option 1 trial 1 rank 1", "seeds_per_rank [42, 42] is not seed 42 + rank")
    trees.edit_json(_rank_path(run, "1", 1, 1), lambda r: r["config"].update(seeds_per_rank=[42, 43]))
    trees.edit_json(_rank_path(run, "1", 1, 1), lambda r: r["rank_result"].update(seed=7))
    trees.refresh_digests(run, "1", 1)
    trees.write_summary(run)
    reasons = _invalid(run, "option 1 trial 1 rank 1", "ran seed 7, not seed 42 + rank 1")
    assert len(reasons) == 1


def test_a_short_window_is_invalid(tmp_path):
    run = trees.build(tmp_path, given=GIVEN)
    trees.edit_json(_rank_path(run, "1", 1, 0), lambda r: r["rank_result"]["window"].update(seconds=4.5))
    trees.refresh_digests(run, "1", 1)
    _invalid(run, "option 1 trial 1 rank 0", "window is 4.5 s", "99% of the 5 s asked")


def test_a_request_bounded_run_may_end_early(tmp_path):
    run = trees.build(tmp_path, given=dict(GIVEN, max_requests=10))
    for trial in (1, 2):
        for rank in (0, 1):
            trees.edit_json(_rank_path(run, "1", trial, rank), lambda r: r["rank_result"]["window"].update(seconds=1))
        trees.refresh_digests(run, "1", trial)
    trees.write_summary(run)
    assert check_run_dir(run)["verdict"] == rules.OPEN


@pytest.mark.parametrize(
    "damage, fragments",
    [
        ("rank_file", ("option 1 trial 2 rank 1 missing",)),
        ("started", ("option 1 trial 2", "interrupted")),
        ("failed_rank", ("option 1 trial 2 rank 0 failed: killed",)),
        ("failed_trial", ("option 1 trial 2", "failed", "[1]", "rank 1 exited")),
        ("trial_dir", ("option 1 trial 2: missing",)),
        ("trial_json", ("option 1 trial 2: trial.json missing",)),
    ],
)
def test_an_incomplete_trial_is_invalid_and_not_averaged(tmp_path, damage, fragments):
    run = trees.build(tmp_path, trials=3, given=GIVEN, summary=False)
    directory = layout.trial_dir(run, "1", 2)
    if damage == "rank_file":
        os.remove(_rank_path(run, "1", 2, 1))
    elif damage == "started":
        trees.edit_json(_trial_json(run, "1", 2), lambda t: t.update(state=layout.STARTED, status=None))
    elif damage == "failed_rank":
        trees.edit_json(_rank_path(run, "1", 2, 0), lambda r: r["rank_result"].update(status="failed", error="killed"))
        trees.refresh_digests(run, "1", 2)
    elif damage == "failed_trial":
        trees.edit_json(_trial_json(run, "1", 2),
                        lambda t: t.update(status="failed", error="rank 1 exited", failed_ranks=[1]))  # fmt: skip
    elif damage == "trial_json":
        os.remove(_trial_json(run, "1", 2))
    else:
        shutil.rmtree(directory)
    trees.write_summary(run)  # the summary as the driver would write it: the trial is left out, not averaged in
    assert summarize(run)["options"]["1"]["complete_trials"] == [1, 3]
    reasons = _invalid(run, *fragments)
    assert len(reasons) == 1


def test_metadata_state_running_is_invalid(tmp_path):
    run = trees.build(tmp_path, given=GIVEN)
    trees.edit_json(_metadata(run), lambda m: m.update(state="running"))
    trees.write_summary(run)
    reasons = _invalid(run, "the invocation never ended")
    assert len(reasons) == 1


def test_metadata_failed_unreadable_or_foreign(tmp_path):
    run = trees.build(tmp_path, given=GIVEN)
    trees.edit_json(_metadata(run), lambda m: m.update(state="failed", error="option 2 refused"))
    _invalid(run, "the invocation failed: option 2 refused")
    trees.edit_json(_metadata(run), lambda m: m.update(schema="something/v9"))
    _invalid(run, "metadata schema 'something/v9'")
    with open(_metadata(run), "w", encoding="utf-8") as handle:
        handle.write("[1, 2")
    _invalid(run, "the metadata file unreadable: not JSON")


def test_a_rank_file_in_the_wrong_place(tmp_path):
    run = trees.build(tmp_path, given=GIVEN)
    shutil.copy(_rank_path(run, "1", 1, 0), _rank_path(run, "1", 1, 1))
    trees.refresh_digests(run, "1", 1)
    trees.write_summary(run)
    _invalid(run, "option 1 trial 1 rank 1", "its rank is 0")


def test_a_digest_naming_a_file_outside_the_trial(tmp_path):
    run = trees.build(tmp_path, given=GIVEN)
    trees.edit_json(_trial_json(run, "1", 1), lambda t: t["files"].update({"../../x.json": "0" * 64}))
    _invalid(run, "outside the trial", "../../x.json")


def test_check_tree_takes_the_worst_verdict(tmp_path):
    trees.build(tmp_path / "a", given=GIVEN)
    trees.closed(tmp_path / "b")
    both = check_tree(str(tmp_path))
    assert [r["verdict"] for r in both["runs"]] == [rules.OPEN, rules.CLOSED]
    assert both["verdict"] == rules.OPEN
    os.remove(_rank_path(both["runs"][1]["run_dir"], "1", 3, 0))
    assert check_tree(str(tmp_path))["verdict"] == rules.INVALID


def test_run_check_text_and_exit_codes(tmp_path):
    run = trees.build(tmp_path, given=GIVEN)
    out = io.StringIO()
    assert run_check(str(tmp_path), False, out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == f"OPEN: {run} (llama3.1-8b, category open)"
    assert lines[1] == "  - option 1: num_users 2 users (CLOSED: 200 users)"
    assert lines[-1] == "overall: OPEN (1 run directory)"
    os.remove(_rank_path(run, "1", 1, 1))
    out = io.StringIO()
    assert run_check(str(tmp_path), False, out) == 1
    assert "  - option 1 trial 1 rank 1 missing" in out.getvalue().splitlines()
    assert out.getvalue().splitlines()[-1] == "overall: INVALID (1 run directory)"


def test_run_check_json(tmp_path):
    trees.closed(tmp_path)
    out = io.StringIO()
    assert run_check(str(tmp_path), True, out) == 0
    report = json.loads(out.getvalue())
    assert report["verdict"] == rules.CLOSED
    assert report["runs"][0]["verdict"] == rules.CLOSED and report["runs"][0]["category"] == "closed"


def test_through_the_cli(tmp_path):
    trees.build(tmp_path / "tree", given=GIVEN)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["mlperf", "check", str(tmp_path / "tree"), "--json"], stdout=out, stderr=err) == 0
    assert json.loads(out.getvalue())["verdict"] == rules.OPEN
    (tmp_path / "empty").mkdir()
    for path, message in ((tmp_path / "empty", "holds no MLPerf run directory"), (tmp_path / "nope", "is not a dir")):
        out, err = io.StringIO(), io.StringIO()
        assert cli.main(["mlperf", "check", str(path)], stdout=out, stderr=err) == 2
        assert err.getvalue().startswith("kvcache mlperf check: error: DIR: ")
        assert message in err.getvalue() and err.getvalue().count("\n") == 1
        assert out.getvalue() == ""


def _own_profile(config):
    config["workload"]["templates"]["chatbot"]["context_tokens"] = [256, 1024]


def test_an_open_workload_profile_is_named_and_a_rank_that_ran_another_is_invalid(tmp_path):
    run = trees.build(tmp_path, trials=1, given=GIVEN)
    for rank in (0, 1):
        trees.edit_json(_rank_path(run, "1", 1, rank), lambda r: _own_profile(r["config"]))
    trees.refresh_digests(run, "1", 1)

    def metadata_too(metadata):
        _own_profile(metadata["parameters"]["1"])
        change = {"parameter": "workload", "closed": {}, "value": metadata["parameters"]["1"]["workload"]}
        metadata["changes"]["1"].append(change)  # plan.py records a --config profile as a change

    trees.edit_json(_metadata(run), metadata_too)
    report = check_run_dir(run)
    assert report["verdict"] == rules.OPEN, report["reasons"]
    assert "option 1: a workload profile of its own" in report["reasons"][2]
    trees.edit_json(_rank_path(run, "1", 1, 1), lambda r: r["config"].update(workload={}))
    trees.refresh_digests(run, "1", 1)
    _invalid(run, "option 1 trial 1 rank 1", "another workload profile")


def test_one_trial_is_named_in_the_singular(tmp_path):
    run = trees.build(tmp_path, trials=1, given=GIVEN)
    assert "1 trial (CLOSED: 3)" in check_run_dir(run)["reasons"]


def test_a_figure_that_is_not_a_number_is_invalid_not_a_crash(tmp_path):
    run = trees.build(tmp_path, given=GIVEN)
    trees.edit_json(_rank_path(run, "1", 1, 0), lambda r: r["rank_result"]["tiers"]["storage"].update(
        write_bandwidth_bytes_per_s="fast"))  # fmt: skip
    trees.refresh_digests(run, "1", 1)
    reasons = _invalid(run, "the tree's figures cannot be summarized")
    assert len(reasons) == 1


def _result_path(run, option, trial):
    return os.path.join(layout.trial_dir(run, option, trial), layout.TRIAL_RESULT_FILE)


def test_a_trial_that_shared_the_storage_is_invalid(tmp_path):
    """A kept cache dir of the same process counts as a live run: the trial's result says so, and it is not CLOSED."""
    run = trees.closed(tmp_path)
    other = OtherRun(name="kvcache-run-x", path="/tmp/kvcache-cache/kvcache-run-x", state=LIVE)
    [line] = other_run_warnings("/tmp/kvcache-cache", [other])
    trees.edit_json(_result_path(run, "1", 2), lambda r: r["warnings"].append(line))
    trees.refresh_digests(run, "1", 2)
    reasons = _invalid(run, "option 1 trial 2: another run shared the storage", "kvcache-run-x")
    assert len(reasons) == 1


def test_a_trial_folder_the_metadata_does_not_name_is_invalid(tmp_path):
    run = trees.build(tmp_path, trials=2, given=GIVEN)
    shutil.copytree(layout.trial_dir(run, "1", 2), layout.trial_dir(run, "1", 3))
    _invalid(run, "option_1/trial_3", "is not a trial the metadata names (option 1, 2 trials each)")
    shutil.rmtree(layout.trial_dir(run, "1", 3))
    shutil.copytree(layout.option_dir(run, "1"), layout.option_dir(run, "2"))
    _invalid(run, "option_2", "is not an option the metadata names (option 1, 2 trials each)")


def test_trials_hidden_by_editing_the_metadata_are_invalid(tmp_path):
    run = trees.build(tmp_path, trials=3, given=GIVEN)
    trees.edit_json(_metadata(run), lambda m: m.update(trials=2, schedule=m["schedule"][:2]))
    trees.write_summary(run)
    reasons = _invalid(run, "option_1/trial_3", "is not a trial the metadata names (option 1, 2 trials each)")
    assert len(reasons) == 1


def test_a_schedule_that_is_not_the_trials_is_invalid(tmp_path):
    run = trees.build(tmp_path, options=("1", "2"), trials=2, given=GIVEN)
    trees.edit_json(_metadata(run), lambda m: m.update(schedule=m["schedule"][:3]))
    reasons = _invalid(run, "the metadata's schedule", "1/1, 1/2, 2/1", "the trials are 1/1, 1/2, 2/1, 2/2")
    assert len(reasons) == 1


def _set(path, *keys_and_value):
    """A function that sets value[k1][k2]... = the last argument."""
    *keys, value = keys_and_value

    def change(record):
        for key in keys[:-1]:
            record = record[key]
        record[keys[-1]] = value

    return change


@pytest.mark.parametrize(
    "which, keys",
    [
        ("rank", ("rank_result", "tiers", "storage", [1, 2])),
        ("rank", ("rank_result", "tiers", [])),
        ("rank", ("rank_result", "window", [5.0])),
        ("rank", ("rank_result", "reference_metrics", "x")),
        ("rank", ("config", "seeds_per_rank", {"a": 1})),
        ("result", ("tiers", "storage", [1])),
        ("result", ("environment", [])),
        ("result", ("warnings", {"a": "b"})),
        ("metadata", ("delays", [1])),
        ("metadata", ("delays", {"a": 1})),
        ("metadata", ("schedule", [7, 8])),
        ("metadata", ("schedule", "x")),
        ("trial", ("failed_ranks", 5)),
        ("trial", ("files", [1])),
    ],
)
def test_a_file_of_the_wrong_shape_is_invalid_not_a_crash(tmp_path, which, keys):
    run = trees.build(tmp_path, options=("1", "2"), given=GIVEN)
    path = {"rank": _rank_path(run, "1", 1, 0), "result": _result_path(run, "1", 1), "metadata": _metadata(run),
            "trial": _trial_json(run, "1", 1)}[which]  # fmt: skip
    trees.edit_json(path, _set(path, *keys))
    if which == "trial" and keys[0] == "failed_ranks":
        trees.edit_json(path, lambda t: t.update(status="failed"))
    if which in ("rank", "result"):  # the shape, not a digest mismatch, is what must be named
        trees.refresh_digests(run, "1", 1)
    trees.write_summary(run)
    report = check_run_dir(run)
    assert report["verdict"] == rules.INVALID, report["reasons"]
    assert not any("wrong shape" in r for r in report["reasons"]), report["reasons"]


def test_anything_left_is_an_invalid_verdict_not_a_traceback(tmp_path, monkeypatch):
    run = trees.build(tmp_path, given=GIVEN)

    def broken(*_args):
        raise AttributeError("'list' object has no attribute 'get'")

    monkeypatch.setattr(check, "_check_summary", broken)
    report = check_run_dir(run)
    assert report["verdict"] == rules.INVALID
    assert report["reasons"] == [
        "a file of the tree has the wrong shape: AttributeError(\"'list' object has no attribute 'get'\")"
    ]


def test_check_of_a_run_dir_with_a_trailing_slash_and_of_a_folder_inside_it(tmp_path):
    run = trees.build(tmp_path, given=GIVEN)
    for path in (run + os.sep, layout.option_dir(run, "1"), layout.trial_dir(run, "1", 1),
                 os.path.dirname(_rank_path(run, "1", 1, 0)) + os.sep):  # fmt: skip
        report = check_tree(path)
        assert [r["run_dir"] for r in report["runs"]] == [run], path
        assert report["verdict"] == rules.OPEN
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["mlperf", "check", layout.option_dir(run, "1")], stdout=out, stderr=err) == 0, err.getvalue()


def test_buffered_io_is_not_closed(tmp_path):
    """The cache dir refused O_DIRECT: the config says direct, the result's environment says buffered."""
    run = trees.closed(tmp_path)
    trees.edit_json(_result_path(run, "1", 3), lambda r: r["environment"].update(io_engine="buffered"))
    trees.refresh_digests(run, "1", 3)
    reasons = _invalid(run, "claims CLOSED and is not: option 1 trial 3: buffered I/O",
                       "the cache dir refused O_DIRECT; CLOSED: direct")  # fmt: skip
    assert len(reasons) == 1
    open_run = trees.build(tmp_path / "open", trials=1, given=GIVEN)
    trees.edit_json(
        _result_path(open_run, "1", 1), lambda r: r["environment"].update(io_engine="mixed: buffered, direct")
    )
    trees.refresh_digests(open_run, "1", 1)
    report = check_run_dir(open_run)
    assert report["verdict"] == rules.OPEN
    assert (
        "option 1 trial 1: buffered I/O on some ranks (mixed: buffered, direct; a cache dir refused O_DIRECT; "
        "CLOSED: direct)" in report["reasons"]
    )


def test_a_result_without_its_io_engine_is_invalid(tmp_path):
    run = trees.closed(tmp_path)
    trees.edit_json(_result_path(run, "1", 1), lambda r: r["environment"].pop("io_engine"))
    trees.refresh_digests(run, "1", 1)
    _invalid(run, "option 1 trial 1", "kvcache_result.json does not say which I/O engine ran")


def test_closed_reasons_name_one_option_in_the_singular(tmp_path):
    reasons = check_run_dir(trees.closed(tmp_path, options=("3",)))["reasons"]
    assert reasons[0].startswith("option 3: every workload parameter"), reasons
    assert "direct I/O" in reasons[0]
