"""kvcache_run.yml with kvcache_autoscale (issue 16): the run role gives the engine autoscaling, the result and the
report role's headline carry the answer; a bad mode, or run_extra_args giving what the variables give, is refused
before anything is created.

Real ansible-playbook on this machine (inventory/localhost.ini, local connection), in a clean environment, with the
engine of this checkout (the venv's interpreter, so the setup step is skipped).
"""

import json

import pytest
from ansible_cli import failed_task_messages, run_with_this_engine, the_run

pytestmark = pytest.mark.slow
STEP_S = 1.0
WORKLOAD = {"kvcache_model": "tiny-1b", "kvcache_num_users": 2, "kvcache_duration": 4, "kvcache_cpu_mem_gb": 0.125}


def playbook(tmp_path, variables, *extra):
    return run_with_this_engine("kvcache_run.yml", tmp_path, {**WORKLOAD, **variables}, *extra)


@pytest.mark.parametrize("mode", ["capacity", "qos"])
def test_the_run_autoscales_and_the_headline_gives_the_answer(tmp_path, mode):
    variables = {"kvcache_autoscale": mode, "kvcache_autoscale_step_s": STEP_S, "kvcache_autoscale_max_users": 8}
    proc = playbook(tmp_path, variables)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    run, result = the_run(tmp_path / "results")
    assert result["status"] == "ok"
    block = result["autoscaling"]
    assert (block["mode"], block["step_s"], block["ranks"]) == (mode, STEP_S, 1)
    assert (block["start_users_per_rank"], block["max_users_per_rank"]) == (2, 8)
    assert block["steps"] and all(step["users_per_rank"] <= 8 for step in block["steps"])
    command = (run / "engine.log").read_text(encoding="utf-8").splitlines()[0]
    assert f" --enable-autoscaling --autoscaler-mode {mode} --autoscaler-step-s {STEP_S} " in command
    line = f"autoscaling ({mode}): {block['summary']}"
    assert line in (run / "headline.txt").read_text(encoding="utf-8").splitlines()
    assert json.dumps(line) in proc.stdout  # the report role's printed headline


def test_without_autoscale_the_engine_gets_no_autoscaling(tmp_path):
    proc = playbook(tmp_path, {"kvcache_autoscale_step_s": STEP_S}, "--tags", "run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    run, result = the_run(tmp_path / "results")
    assert "autoscaling" not in result
    command = (run / "engine.log").read_text(encoding="utf-8").splitlines()[0]
    assert " --enable-autoscaling" not in command and " --autoscaler-" not in command


# (variables, the one failure message): refused by the first play (kvcache_*) or the run role's checks (run_*).
REFUSED = [
    ({"kvcache_autoscale": "fast"}, "kvcache_autoscale: must be one of qos, capacity (or empty for none), got 'fast'"),
    ({"kvcache_autoscale": "qos", "kvcache_autoscale_step_s": 0.1},
     "kvcache_autoscale_step_s: must be >= 0.5, got 0.1"),
    ({"kvcache_extra_args": {"enable_autoscaling": True}},
     "kvcache_extra_args: 'enable_autoscaling': set kvcache_autoscale instead"),
    ({"run_autoscale": "fast"}, "run_autoscale: must be one of qos, capacity (or empty for none), got 'fast'"),
    (
        {"run_autoscale": "qos", "run_extra_args": {"autoscaler_max_users": 4}},
        "run_extra_args: autoscaler_max_users: set run_autoscale (and run_autoscale_step_s, run_autoscale_min_users,"
        " run_autoscale_max_users) instead",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("variables", "message"), REFUSED, ids=[case[1].split(":")[0] for case in REFUSED])
def test_a_bad_autoscale_value_is_refused_before_anything_is_created(tmp_path, variables, message):
    proc = playbook(tmp_path, variables)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert failed_task_messages(proc.stdout) == [message]
    assert "Build the benchmark command" not in proc.stdout and "Run the benchmark, with a timeout" not in proc.stdout
    assert not (tmp_path / "cache").exists() and not (tmp_path / "work").exists()
