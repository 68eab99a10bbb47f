"""kvcache_run.yml replays a BurstGPT trace that lives on the controller (issue 12).

Real ansible-playbook on this machine (inventory/localhost.ini, local connection), in a clean environment, with the
engine of this checkout (the venv's interpreter, so the setup step is skipped). The run role copies the trace into
the run's directory on the host, gives its path to the engine, and removes the copy after the run; a missing
controller file is refused before the run role creates anything.
"""

import json
import os

import pytest
from ansible_cli import failed_task_messages, run_with_this_engine, the_run

pytestmark = pytest.mark.slow
WORKLOAD = {"kvcache_model": "tiny-1b", "kvcache_num_users": 2, "kvcache_duration": 20, "kvcache_cpu_mem_gb": 0.125}
HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
ROWS = 12
SPEEDUP = 10.0


def burstgpt_csv(path):
    """A BurstGPT-format trace: a row every 0.1 s of the trace's clock, with known token counts."""
    lines = [HEADER]
    for row in range(ROWS):
        context, generated = 200 + 10 * row, 20 + row
        lines.append(f"{row / 10:.1f},ChatGPT,{context},{generated},{context + generated},Conversation log")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def playbook(tmp_path, variables):
    return run_with_this_engine("kvcache_run.yml", tmp_path, {**WORKLOAD, **variables})


def test_a_controller_trace_is_copied_to_the_host_and_replayed(tmp_path):
    trace = burstgpt_csv(tmp_path / "BurstGPT_small.csv")
    extra = {"replay_cycles": 1, "trace_speedup": SPEEDUP}
    proc = playbook(tmp_path, {"run_burst_trace_src": str(trace), "kvcache_extra_args": extra})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    run, result = the_run(tmp_path / "results")
    assert result["status"] == "ok"
    copy = str(tmp_path / "work" / f"run-{run.name}" / "burst-trace" / trace.name)
    assert (result["config"]["use_burst_trace"], result["config"]["burst_trace_path"]) == (True, copy)
    assert (result["config"]["replay_cycles"], result["config"]["trace_speedup"]) == (1, SPEEDUP)
    replayed = result["modes"]["burst_trace"]["total"]
    assert replayed["files"] == [copy]  # the host's copy, not the controller's file
    assert (replayed["rows_replayed"], replayed["rows_skipped"], replayed["completed_cycles"]) == (ROWS, 0, 1)
    assert replayed["last_arrival_s"] == pytest.approx((ROWS - 1) / 10 / SPEEDUP)
    assert result["requests"]["completed"] == ROWS  # the trace's rows, then the replay ended the run
    assert f" --use-burst-trace --burst-trace-path {copy}\n" in (run / "engine.log").read_text(encoding="utf-8")
    assert os.listdir(tmp_path / "work") == []  # the copy went with the run's directory
    assert trace.is_file()  # the controller's file is left as it was


def test_a_missing_controller_trace_is_refused_before_the_run_creates_anything(tmp_path):
    missing = tmp_path / "no-such-trace.csv"
    proc = playbook(tmp_path, {"run_burst_trace_src": str(missing)})
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-2000:]
    # The check loops over the replay files: its failure is a `failed: [host] (item=...)` line, not `fatal:`.
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("failed: [localhost] (item=")]
    message = json.loads(line.partition(" => ")[2])["msg"]
    assert message == f"run_burst_trace_src: no such file or directory on the controller: {missing}"
    assert failed_task_messages(proc.stdout) == []  # and nothing else failed
    assert not (tmp_path / "work").exists()
    assert not (tmp_path / "cache").exists()


@pytest.mark.mpi
def test_two_ranks_replay_the_trace_once_and_their_io_trace_logs_come_back(tmp_path):
    trace = burstgpt_csv(tmp_path / "BurstGPT_small.csv")
    variables = {"run_burst_trace_src": str(trace), "run_io_trace_log": "io-trace.csv", "kvcache_processes_per_host": 2}
    variables["kvcache_extra_args"] = {"replay_cycles": 1, "trace_speedup": 0}
    proc = playbook(tmp_path, variables)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    run, result = the_run(tmp_path / "results")
    assert result["status"] == "ok" and result["ranks"] == 2
    assert result["modes"]["burst_trace"]["total"]["rows_replayed"] == ROWS  # the fleet replays the trace once
    assert result["config"]["io_trace_log"] == str(tmp_path / "work" / f"run-{run.name}" / "io-trace" / "io-trace.csv")
    fetched = run / "io-trace" / "localhost"
    assert sorted(os.listdir(fetched)) == ["io-trace.rank0.csv", "io-trace.rank1.csv"]  # one log per rank
    keys = []
    for name in sorted(os.listdir(fetched)):
        lines = (fetched / name).read_text(encoding="utf-8").splitlines()
        assert lines[0] == "Timestamp,Operation,Object_Size_Bytes,Tier,Key,Phase"
        keys.append({line.split(",")[4] for line in lines[1:]})
    assert all(keys), keys  # each rank served rows of the trace
    assert len(keys[0] | keys[1]) == len(keys[0]) + len(keys[1]) == ROWS  # every row's entry, in one rank's log
    assert os.listdir(tmp_path / "work") == []  # the copy and the logs went with the run's directory
    assert os.listdir(tmp_path / "cache") == []  # no storage I/O


def sharegpt_json(path, conversations=3, turns=2):
    """A ShareGPT-format dataset: conversations of alternating human and gpt messages."""
    entries = []
    for number in range(conversations):
        messages = []
        for turn in range(turns):
            messages.append({"from": "human", "value": f"question {turn} of conversation {number} " * 20})
            messages.append({"from": "gpt", "value": f"answer {turn} " * 10})
        entries.append({"id": f"conversation-{number}", "conversations": messages})
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def test_a_controller_dataset_is_copied_to_the_host_and_replayed(tmp_path):
    dataset = sharegpt_json(tmp_path / "sharegpt_small.json")
    variables = {"run_dataset_src": str(dataset), "kvcache_extra_args": {"replay_cycles": 1}}
    proc = playbook(tmp_path, variables)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    run, result = the_run(tmp_path / "results")
    assert result["status"] == "ok"
    assert result["config"]["dataset_path"] == str(tmp_path / "work" / f"run-{run.name}" / "dataset" / dataset.name)
    assert result["config"]["use_burst_trace"] is False  # a dataset is not a trace
    replayed = result["modes"]["sharegpt"]["total"]
    assert (replayed["conversations"], replayed["turns"]) == (3, 6)
    assert os.listdir(tmp_path / "work") == []


def test_a_trace_the_engine_refuses_fails_the_run_and_its_copy_is_removed(tmp_path):
    trace = tmp_path / "not-burstgpt.csv"
    trace.write_text("time,tokens\n0,10\n", encoding="utf-8")
    proc = playbook(tmp_path, {"run_burst_trace_src": str(trace), "run_io_trace_log": "io-trace.csv"})
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-2000:]
    rescued, message = failed_task_messages(proc.stdout)  # the engine's exit, then the role's message
    assert rescued == "non-zero return code"
    assert message.startswith("the benchmark failed on localhost") and "--burst-trace-path: " in message, message
    assert "has no column 'Timestamp'" in message
    assert os.listdir(tmp_path / "work") == []  # removed after the failed run too
    (run,) = [path for path in (tmp_path / "results").iterdir() if not path.is_symlink() and path.name != "cluster"]
    assert not (run / "io-trace").exists()  # refused before any rank wrote a log: nothing to fetch
