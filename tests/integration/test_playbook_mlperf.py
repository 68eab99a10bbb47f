"""kvcache_mlperf.yml on this machine (inventory/localhost.ini, local connection) with this checkout's engine.

An OPEN option runs for real (short: the rules' durations are for submissions) and the controller gets the whole
results tree, the summary, verdict.json and headline.txt; CLOSED is tested through the plan (--tags plan: the
engine's --what-if, nothing run), which shows the rules' fixed parameters whatever the kvcache_* variables say,
and through its refusals. Figures of the rules are read from kvcache.mlperf.rules, never written here.
"""

import json
import os

import pytest
from ansible_cli import failed_task_messages, run_with_this_engine

from kvcache.mlperf import layout, rules

pytestmark = pytest.mark.slow
# The kvcache_* workload: what OPEN gives the engine, and what CLOSED must leave out.
WORKLOAD = {"kvcache_model": "tiny-1b", "kvcache_num_users": 2, "kvcache_duration": 2, "kvcache_gpu_mem_gb": 0,
            "kvcache_cpu_mem_gb": 0}  # fmt: skip
QUICK_BASELINE = {"baseline_runtime": 1, "baseline_size_gb": 0.05}


def playbook(tmp_path, variables, *extra):
    return run_with_this_engine("kvcache_mlperf.yml", tmp_path, {**WORKLOAD, **variables}, *extra, timeout=300)


def the_run(tmp_path):
    (run,) = list((tmp_path / "results").iterdir())
    return run


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def test_an_open_option_runs_and_the_controller_gets_the_tree_and_the_verdict(tmp_path):
    proc = playbook(tmp_path, {"run_mlperf_category": "open", "run_mlperf_option": 1, "run_mlperf_trials": 2,
                               "run_mlperf_delay_s": 0, "run_mlperf_organization": "test-org",
                               "kvcache_baseline": True, "kvcache_baseline_args": QUICK_BASELINE})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    run = the_run(tmp_path)
    (tree,) = layout.find_run_dirs(str(run / "mlperf"))
    assert tree.startswith(str(run / "mlperf" / "open" / "test-org" / "results"))
    timestamp = os.path.basename(tree)
    summary = read_json(layout.summary_file(tree, timestamp))
    assert summary["category"] == "open" and summary["total_ranks"] == 1
    assert list(summary["options"]) == ["1"]
    metadata = read_json(layout.metadata_file(tree, timestamp))
    assert metadata["state"] == "complete" and metadata["model"] == "tiny-1b"
    for trial in (1, 2):
        trial_doc = read_json(os.path.join(layout.trial_dir(tree, "1", trial), layout.TRIAL_FILE))
        assert (trial_doc["state"], trial_doc["status"]) == (layout.COMPLETE, "ok")
        # every trial is stated against the fio baseline the role ran first
        trial_result = read_json(os.path.join(layout.trial_dir(tree, "1", trial), layout.TRIAL_RESULT_FILE))
        assert trial_result["baseline"]["per_host"][0]["read_percent"] is not None
    verdict = read_json(run / "verdict.json")
    assert verdict["verdict"] == rules.OPEN
    assert [r["verdict"] for r in verdict["runs"]] == [rules.OPEN]
    assert any("tiny-1b" in reason for reason in verdict["runs"][0]["reasons"])  # the change from CLOSED, named
    headline = (run / "headline.txt").read_text(encoding="utf-8")
    assert headline.startswith("option 1 (tiny-1b): storage read ")
    assert "verdict: OPEN\n" in headline and f"results: {run / 'mlperf'}\n" in headline
    assert "verdict: OPEN" in proc.stdout  # printed too
    assert read_json(run / "plan.json")["largest_option"] == "1"
    command = (run / "engine.log").read_text(encoding="utf-8").splitlines()[0]
    assert " -m kvcache mlperf run " in command and " --category open --option 1 --trials 2 " in command
    assert "/baseline.json" in command and "(fio baseline): read " in (run / "engine.log").read_text(encoding="utf-8")
    assert os.listdir(tmp_path / "work") == []  # the launcher's tree and its archive were removed once fetched
    assert os.listdir(tmp_path / "cache") == []  # every trial cleaned its cache files


def test_a_closed_plan_shows_the_rules_fixed_parameters_and_runs_nothing(tmp_path):
    proc = playbook(tmp_path, {"run_mlperf_category": "closed", "run_mlperf_option": "all"}, "--tags", "plan")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    plan = read_json(the_run(tmp_path) / "plan.json")
    assert (plan["category"], plan["trials"], plan["delay_s"]) == ("closed", rules.TRIALS, rules.DELAY_S)
    assert [entry["option"] for entry in plan["options"]] == list(rules.OPTION_ORDER)
    for entry in plan["options"]:
        fixed = {name: entry["parameters"][name] for name in rules.fixed_names(entry["option"])}
        expected = rules.closed_parameters(entry["option"])
        assert fixed == {name: expected[name] for name in fixed}  # not kvcache_model=tiny-1b, nor 2 users
        assert entry["changes"] == []
        assert rules.describe_option(entry["option"]) in proc.stdout
    assert not (tmp_path / "cache").exists() and not (tmp_path / "work").exists()  # nothing made on the host
    assert "Run kvcache mlperf run" not in proc.stdout


@pytest.mark.parametrize(
    "variables, words",
    [
        ({"run_mlperf_extra_args": {"io_depth": 4}}, ["--io-depth", "CLOSED", "--category open"]),
        ({"run_mlperf_trials": 2}, ["--trials", "CLOSED runs 3"]),
    ],
)
def test_closed_refuses_what_the_rules_fix_before_anything_is_created(tmp_path, variables, words):
    proc = playbook(tmp_path, dict(variables, run_mlperf_category="closed", run_mlperf_option="1"))
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-2000:]
    (message,) = failed_task_messages(proc.stdout)
    assert message.startswith("kvcache mlperf run refused the plan (exit 2): ")
    for word in words:
        assert word in message
    assert not (tmp_path / "cache").exists() and not (tmp_path / "work").exists()


def test_the_category_is_required(tmp_path):
    proc = playbook(tmp_path, {}, "--tags", "plan")
    assert proc.returncode == 2
    assert any("run_mlperf_category" in message for message in failed_task_messages(proc.stdout))
