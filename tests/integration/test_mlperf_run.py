"""`kvcache mlperf run` for real on one rank: OPEN runs with short trials, CLOSED's refusals and its what-if plan."""

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from engine_helpers import ENGINE, kvcache, leftovers

from kvcache import cli
from kvcache.mlperf import driver, layout, rules

SMALL = ["--category", "open", "--model", "tiny-1b", "--num-users", "2", "--gpu-mem-gb", "0", "--cpu-mem-gb", "0"]
SMALL_OPEN = [*SMALL, "--duration", "2", "--delay", "0", "--quiet"]


def mlperf_run(tmp_path, *args, timeout=120):
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    return kvcache("mlperf", "run", "--results-dir", tmp_path / "results", "--cache-dir", cache, *args, timeout=timeout)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def only_run_dir(tmp_path):
    found = layout.find_run_dirs(str(tmp_path / "results"))
    assert len(found) == 1, found
    return found[0]


def test_open_run_writes_the_layout_a_summary_of_the_rank_files_and_a_metadata_with_its_changes(tmp_path):
    done = mlperf_run(tmp_path, *SMALL_OPEN, "--option", "1", "--trials", "2", "--organization", "acme",
                      "--system-name", "sut-1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path)
    timestamp = os.path.basename(run_dir)
    assert run_dir == layout.run_dir(str(tmp_path / "results"), "open", "acme", "sut-1", "tiny-1b", timestamp)
    expected = {
        os.path.relpath(p, run_dir)
        for p in (layout.metadata_file(run_dir, timestamp), layout.summary_file(run_dir, timestamp))
    }
    for trial in (1, 2):
        trial_dir = layout.trial_dir(run_dir, "1", trial)
        for path in (layout.TRIAL_FILE, layout.TRIAL_RESULT_FILE, layout.rank_file("", 0, timestamp)):
            expected.add(os.path.relpath(os.path.join(trial_dir, path), run_dir))
    files = {f for f in leftovers(run_dir) if os.path.isfile(os.path.join(run_dir, f))}
    assert files == expected
    assert leftovers(tmp_path / "cache") == []  # every trial cleaned its cache namespace

    rank_bandwidths = {"read": [], "write": []}
    for trial in (1, 2):
        trial_dir = layout.trial_dir(run_dir, "1", trial)
        record = read(os.path.join(trial_dir, layout.TRIAL_FILE))
        assert record["state"] == layout.COMPLETE and record["status"] == "ok" and record["world_size"] == 1
        assert record["ended_unix_s"] >= record["started_unix_s"]
        rank_path = layout.rank_file(trial_dir, 0, timestamp)
        assert record["files"] == layout.relative_digests(
            trial_dir, [os.path.join(trial_dir, layout.TRIAL_RESULT_FILE), rank_path]
        )
        rank = read(rank_path)
        assert (rank["schema"], rank["option"], rank["trial"], rank["rank"]) == (layout.RANK_SCHEMA, "1", trial, 0)
        result = read(os.path.join(trial_dir, layout.TRIAL_RESULT_FILE))
        assert rank["rank_result"] == result["per_rank"][0] and rank["config"] == result["config"]
        assert rank["config"]["duration"] == 2.0 and rank["config"]["seed"] == 42
        for direction in rank_bandwidths:
            rank_bandwidths[direction].append(
                rank["rank_result"]["tiers"]["storage"][f"{direction}_bandwidth_bytes_per_s"]
            )

    summary = read(layout.summary_file(run_dir, timestamp))
    assert summary["total_ranks"] == 1 and summary["category"] == "open"
    figures = summary["options"]["1"]
    assert figures["complete_trials"] == [1, 2]
    for direction, per_trial in rank_bandwidths.items():
        stats = figures["rules"][f"{direction}_bandwidth_bytes_per_s"]
        assert stats["per_trial"] == pytest.approx(per_trial) and stats["mean"] == pytest.approx(sum(per_trial) / 2)
    assert "option 1 (tiny-1b): storage read" in done.stdout
    # Each trial's headline, not its whole table (the trial's result keeps that: `kvcache report`).
    assert "option 1 trial 2/2:\n  storagebench.kvcache  status: OK" in done.stdout
    assert "latency ms" not in done.stdout
    # The last line is a hint, not a verdict: the checker gives that.
    assert done.stdout.splitlines()[-1] == f"for the rules verdict run: kvcache mlperf check {tmp_path / 'results'}"

    meta = read(layout.metadata_file(run_dir, timestamp))
    assert meta["state"] == "complete" and meta["error"] is None and meta["options"] == ["1"]
    assert meta["trials"] == 2 and meta["world_size"] == 1 and meta["delays"] == []
    changed = {c["parameter"]: (c["closed"], c["value"]) for c in meta["changes"]["1"]}
    assert changed == {"model": ("llama3.1-8b", "tiny-1b"), "num_users": (200, 2), "duration": (300.0, 2.0)}
    assert meta["parameters"]["1"]["num_users"] == 2 and meta["parameters"]["1"]["seed"] == 42
    assert meta["command"][:5] == [sys.executable, "-m", "kvcache", "mlperf", "run"] and "--trials" in meta["command"]
    assert [(s["option"], s["trial"]) for s in meta["schedule"]] == [("1", 1), ("1", 2)]
    assert meta["versions"]["kvcache"] and meta["versions"]["python"]
    for moment in ("start", "end"):
        (facts,) = meta["cluster"][moment]
        assert facts["rank"] == 0 and facts["cpus"] >= 1 and facts["memory"]["total_bytes"] > 0
        assert facts["cache_dir"]["path"] == str(tmp_path / "cache") and facts["kernel"]
    assert meta["cluster"]["end"][0]["time_unix_s"] > meta["cluster"]["start"][0]["time_unix_s"]

    checked = kvcache("mlperf", "check", tmp_path / "results", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["verdict"] == "OPEN"
    (run,) = report["runs"]
    for changed in ("option 1: num_users 2", "option 1: duration 2", "option 1: model tiny-1b", "2 trials"):
        assert any(r.startswith(changed) for r in run["reasons"]), run["reasons"]


@pytest.mark.parametrize(
    "args, flag, words",
    [
        (["--duration", "5"], "--duration", "the MLPerf rules fix it at 300"),
        (["--num-users", "3"], "--num-users", "fix it at 200 users for option 1 in CLOSED, got 3 users"),
        (["--trials", "2"], "--trials", "CLOSED runs 3"),
        (["--delay", "1"], "--delay", "CLOSED runs 90"),
        (["--config", "CONFIG"], "--config", "takes no config file"),
    ],
)
def test_closed_refuses_what_the_rules_fix_naming_the_parameter_and_the_rule(tmp_path, args, flag, words):
    config = tmp_path / "c.yaml"
    config.write_text("num_users: 3\n")
    args = [str(config) if a == "CONFIG" else a for a in args]
    done = mlperf_run(tmp_path, "--category", "closed", "--option", "1", *args)
    assert done.returncode == 2
    line = done.stderr.strip()
    assert line.count("\n") == 0 and f"error: {flag}:" in line and words in line and "MLPerf" in line
    assert not (tmp_path / "results").exists() and leftovers(tmp_path / "cache") == []


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--option", "1"], "--category: required: closed or open"),
        (["--category", "open", "--organization", "a/b"], "--organization:"),
        (["--category", "open", "--organization", ".."], "--organization:"),
        (["--category", "open", "--system-name", "my box"], "--system-name:"),
    ],
)
def test_bad_invocations_exit_2_creating_nothing(tmp_path, args, expected):
    done = mlperf_run(tmp_path, *args)
    assert done.returncode == 2
    assert expected in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "results").exists() and leftovers(tmp_path / "cache") == []


def test_a_results_dir_that_cannot_be_created_exits_2_before_any_trial(tmp_path):
    (tmp_path / "file").write_text("not a directory\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    done = kvcache("mlperf", "run", *SMALL_OPEN, "--option", "1", "--trials", "1", "--cache-dir", cache,
                   "--results-dir", tmp_path / "file" / "results")  # fmt: skip
    assert done.returncode == 2
    assert "--results-dir:" in done.stderr and "is not a directory" in done.stderr
    assert leftovers(cache) == [] and (tmp_path / "file").read_text() == "not a directory\n"


def test_a_host_check_of_a_later_option_refuses_the_run_before_its_first_trial(tmp_path):
    # 4 GiB per rank holds llama3.1-8b's largest entry (options 1 and 2), not llama3.1-70b-instruct's (option 3):
    # the run is refused before option 1 starts.
    done = mlperf_run(tmp_path, "--category", "open", "--option", "all", "--num-users", "2", "--duration", "2",
                      "--delay", "0", "--trials", "1", "--storage-capacity-gb", "4", "--quiet")  # fmt: skip
    assert done.returncode == 2
    assert "--storage-capacity-gb" in done.stderr and "llama3.1-70b-instruct" in done.stderr
    assert not (tmp_path / "results").exists() and leftovers(tmp_path / "cache") == []


def test_closed_what_if_prints_the_three_options_fixed_parameters_and_runs_nothing(tmp_path):
    done = mlperf_run(tmp_path, "--category", "closed", "--option", "all", "--what-if")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for users, cpu, allocs, model in (("200", "0", "16", "llama3.1-8b"), ("100", "4", "16", "llama3.1-8b"),
                                      ("70", "0", "4", "llama3.1-70b-instruct")):  # fmt: skip
        assert f"{model}, {users} users per rank, GPU tier 0 GiB, CPU tier {cpu} GiB, at most {allocs} " in out
        assert f"--num-users {users} " in out and f"--max-concurrent-allocs {allocs}" in out
    assert out.count("300 s, generation none, seed 42") == 3
    assert "3 trial(s) per option, 90 s rest" in out
    assert out.count("  trial 3: ") == 3 and "largest option: " in out
    assert not (tmp_path / "results").exists() and leftovers(tmp_path / "cache") == []

    as_json = mlperf_run(tmp_path, "--category", "closed", "--option", "all", "--what-if", "--json")
    assert as_json.returncode == 0, as_json.stderr
    plan = json.loads(as_json.stdout)
    assert [o["option"] for o in plan["options"]] == ["1", "2", "3"]
    assert (plan["trials"], plan["delay_s"], plan["category"]) == (3, 90.0, "closed")
    needed = {o["option"]: o["datasize"]["storage_bytes_needed_per_rank"] for o in plan["options"]}
    assert plan["largest_option"] == max(needed, key=needed.get)
    for option in plan["options"]:
        assert option["parameters"] == dict(rules.closed_parameters(option["option"]), **_placement(option))
        assert option["changes"] == [] and option["run_argv"][:2] == ["kvcache", "run"]
        assert option["datasize"]["largest_entry_bytes"] > 0
        assert len(option["trials"]) == 3 and len(option["trials"][0]["rank_files"]) == 1
    assert not (tmp_path / "results").exists()


def _placement(option):
    """The plan's parameters beyond the workload: where it runs (cache dir, MPI, output settings)."""
    return {k: v for k, v in option["parameters"].items() if k not in rules.closed_parameters(option["option"])}


def test_open_what_if_lists_the_changes_and_the_changed_command(tmp_path):
    done = mlperf_run(tmp_path, *SMALL_OPEN, "--option", "2", "--what-if", "--json")
    assert done.returncode == 0, done.stderr
    (option,) = json.loads(done.stdout)["options"]
    assert {c["parameter"] for c in option["changes"]} == {"model", "num_users", "duration", "cpu_mem_gb"}
    argv = option["run_argv"]
    assert argv[argv.index("--num-users") + 1] == "2" and argv[argv.index("--cpu-mem-gb") + 1] == "0.0"
    assert not (tmp_path / "results").exists()


def test_open_option_all_runs_three_options_in_one_run_directory_with_the_measured_rest(tmp_path):
    done = mlperf_run(
        tmp_path, *SMALL, "--quiet", "--option", "all", "--trials", "1", "--delay", "1", "--duration", "1"
    )
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path)
    timestamp = os.path.basename(run_dir)
    meta = read(layout.metadata_file(run_dir, timestamp))
    assert meta["options"] == ["1", "2", "3"] and meta["state"] == "complete"
    assert [d["before_option"] for d in meta["delays"]] == ["2", "3"]
    assert all(d["asked_s"] == 1.0 and d["measured_s"] >= 1.0 for d in meta["delays"])
    assert [s["option"] for s in meta["schedule"]] == ["1", "2", "3"]
    for option in ("1", "2", "3"):
        assert read(os.path.join(layout.trial_dir(run_dir, option, 1), layout.TRIAL_FILE))["status"] == "ok"
    summary = read(layout.summary_file(run_dir, timestamp))
    assert sorted(summary["options"]) == ["1", "2", "3"]
    assert all(f["complete_trials"] == [1] for f in summary["options"].values())


def _wait_for(found, what, seconds=60.0):
    for _attempt in range(int(seconds * 10)):  # bounded poll
        value = found()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} never happened in {seconds:g} s")


def _trial_state(tmp_path, option):
    found = layout.find_run_dirs(str(tmp_path / "results"))
    path = os.path.join(layout.trial_dir(found[0], option, 1), layout.TRIAL_FILE) if found else None
    try:
        return read(path)["state"] if path else None
    except (OSError, ValueError):  # not written yet
        return None


def _interrupted_run(tmp_path, args, ready, signum):
    """Start a run, wait until `ready()`, send it `signum`; returns (exit code, stderr, elapsed seconds)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    argv = ENGINE + ["mlperf", "run", *args, "--results-dir", str(tmp_path / "results"), "--cache-dir", str(cache)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(ready, "the run reaching the moment to interrupt")
        sent = time.monotonic()
        process.send_signal(signum)
        stderr = process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stderr, time.monotonic() - sent


def test_sigint_during_the_rest_stops_the_invocation_and_the_metadata_says_failed(tmp_path):
    args = [*SMALL, "--option", "all", "--trials", "1", "--duration", "1", "--delay", "60"]
    code, stderr, elapsed = _interrupted_run(
        tmp_path, args, lambda: _trial_state(tmp_path, "1") == layout.COMPLETE, signal.SIGINT
    )
    assert code == 1, stderr
    assert elapsed < 20, "the rest must end at once, not after its 60 s"
    assert "rest before option 2: 60 s" in stderr  # the countdown (not --quiet)
    run_dir = only_run_dir(tmp_path)
    timestamp = os.path.basename(run_dir)
    meta = read(layout.metadata_file(run_dir, timestamp))
    assert meta["state"] == "failed" and meta["error"] == "interrupted by SIGINT during the rest before option 2"
    assert not os.path.exists(layout.option_dir(run_dir, "2"))
    assert read(layout.summary_file(run_dir, timestamp))["options"]["1"]["complete_trials"] == [1]


def test_sigterm_during_a_trial_ends_it_as_failed_and_stops_the_invocation(tmp_path):
    args = [*SMALL_OPEN, "--option", "1", "--trials", "2", "--duration", "60"]
    code, stderr, elapsed = _interrupted_run(
        tmp_path,
        args,
        lambda: _trial_state(tmp_path, "1") == layout.STARTED and _rank_writing(tmp_path),
        signal.SIGTERM,
    )
    assert code == 1, stderr
    assert elapsed < 30
    run_dir = only_run_dir(tmp_path)
    timestamp = os.path.basename(run_dir)
    record = read(os.path.join(layout.trial_dir(run_dir, "1", 1), layout.TRIAL_FILE))
    assert record["state"] == layout.COMPLETE and record["status"] == "failed" and "SIGTERM" in record["error"]
    assert not os.path.exists(layout.trial_dir(run_dir, "1", 2))
    meta = read(layout.metadata_file(run_dir, timestamp))
    assert meta["state"] == "failed" and meta["error"].startswith("option 1 trial 1: ")
    assert leftovers(tmp_path / "cache") == []


def _rank_writing(tmp_path):
    cache = tmp_path / "cache"
    return any(name.endswith(".kv") for _root, _dirs, files in os.walk(cache) for name in files)


def test_open_config_values_and_its_workload_profile_are_changes_of_every_option(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("num_users: 3\ngeneration_timing:\n  fast: 0.5\n")
    done = mlperf_run(tmp_path, "--category", "open", "--config", config, "--what-if", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    for option in plan["options"]:
        changed = {c["parameter"]: c for c in option["changes"]}
        assert sorted(changed) == ["num_users", "workload"] and changed["num_users"]["value"] == 3
        assert changed["workload"]["value"]["generation_seconds_per_token"]["fast"] == 0.5
        assert option["parameters"]["num_users"] == 3


def test_json_prints_one_object_naming_the_run_directory_and_its_summary(tmp_path):
    results = tmp_path / "my results"
    cache = tmp_path / "cache"
    cache.mkdir()
    done = kvcache("mlperf", "run", *SMALL_OPEN, "--option", "1", "--trials", "1", "--duration", "1", "--json",
                   "--results-dir", results, "--cache-dir", cache)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)  # the trials' own tables are not printed
    assert out["state"] == "complete" and out["error"] is None
    assert out["run_directories"] == layout.find_run_dirs(str(results)) and len(out["run_directories"]) == 1
    (summary,) = out["summaries"]
    assert summary["options"]["1"]["complete_trials"] == [1]
    assert out["check"] == f"kvcache mlperf check '{results}'"  # a command line to paste: shell-quoted
    assert shlex.split(out["check"])[-1] == str(results)


def test_keep_cache_keeps_only_the_last_trial_whose_predecessors_did_not_share_the_storage(tmp_path):
    done = mlperf_run(tmp_path, *SMALL_OPEN, "--option", "1", "--trials", "2", "--duration", "1", "--keep-cache")
    assert done.returncode == 0, done.stderr
    kept = [n for n in os.listdir(tmp_path / "cache") if n.startswith("kvcache-run-")]
    assert len(kept) == 1, kept  # the last trial's; trial 1's was removed before trial 2 started
    run_dir = only_run_dir(tmp_path)
    last = read(layout.trial_result_file(layout.trial_dir(run_dir, "1", 2)))
    assert last["status"] == "ok"
    assert not [w for w in last["warnings"] if "another run" in w or "shared the storage" in w], last["warnings"]


def in_process(tmp_path, monkeypatch, *args, when=None):
    """`kvcache mlperf run` in this process; `when` names a function of the driver that sends SIGINT to this
    process right after it ran (a signal at that exact moment). Returns (exit code, stdout, stderr, seconds)."""
    if when is not None:
        owner, name = when
        original = getattr(owner, name)

        def then_sigint(*a, **k):
            value = original(*a, **k)
            signal.raise_signal(signal.SIGINT)
            return value

        monkeypatch.setattr(owner, name, then_sigint)
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["mlperf", "run", *args, "--results-dir", str(tmp_path / "results"), "--cache-dir", str(cache)]
    started = time.monotonic()
    code = cli.main(argv, stdout, stderr)
    return code, stdout.getvalue(), stderr.getvalue(), time.monotonic() - started


def test_a_signal_just_before_a_trial_runs_ends_that_trial_at_once_as_interrupted(tmp_path, monkeypatch):
    # SIGINT after trial.json STARTED is written, before the run's own handlers are installed.
    code, _out, err, elapsed = in_process(tmp_path, monkeypatch, *SMALL_OPEN, "--option", "1", "--trials", "1",
                                          "--duration", "30", when=(driver.Invocation, "_start_trial"))  # fmt: skip
    assert code == 1, err
    assert elapsed < 15, "the trial must not run its 30 s"
    run_dir = only_run_dir(tmp_path)
    record = read(os.path.join(layout.trial_dir(run_dir, "1", 1), layout.TRIAL_FILE))
    assert record["state"] == layout.COMPLETE and record["status"] == "failed"
    assert record["error"] == "interrupted by SIGINT"
    meta = read(layout.metadata_file(run_dir, os.path.basename(run_dir)))
    assert meta["state"] == "failed" and meta["error"] == "option 1 trial 1: interrupted by SIGINT"
    assert leftovers(tmp_path / "cache") == []


def test_a_signal_before_the_first_trial_prints_no_checker_hint_for_a_tree_never_made(tmp_path, monkeypatch):
    code, out, err, _elapsed = in_process(tmp_path, monkeypatch, *SMALL_OPEN, "--option", "1", "--trials", "1",
                                          when=(driver.metadata, "gather_cluster"))  # fmt: skip
    assert code == 1
    assert "mlperf run failed: interrupted by SIGINT" in err
    assert "mlperf check" not in out and "run directories" not in out
    assert not (tmp_path / "results").exists()


def test_what_if_refuses_a_host_name_that_cannot_be_the_system_directory(tmp_path, monkeypatch):
    monkeypatch.setattr("kvcache.mpi.socket.gethostname", lambda: "my box")
    code, out, err, _elapsed = in_process(tmp_path, monkeypatch, *SMALL_OPEN, "--option", "1", "--what-if")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "error: --system-name: rank 0's host name 'my box' cannot be a directory" in err
    code, out, err, _elapsed = in_process(tmp_path, monkeypatch, *SMALL_OPEN, "--option", "1", "--what-if",
                                          "--system-name", "sut-1")  # fmt: skip
    assert code == 0 and "system sut-1" in out, err


def test_kv_cache_py_flags_not_here_yet_are_refused_by_mlperf_run_only(tmp_path):
    done = mlperf_run(tmp_path, *SMALL_OPEN, "--validation-trace", tmp_path / "t.json")
    assert done.returncode == 2
    assert done.stderr.startswith("kvcache mlperf run: error: --validation-trace: ") and "not available" in done.stderr
    checked = kvcache("mlperf", "check", tmp_path, "--validation-trace", tmp_path / "t.json")
    assert checked.returncode == 2
    assert "unrecognized arguments: --validation-trace" in checked.stderr and "not available" not in checked.stderr
