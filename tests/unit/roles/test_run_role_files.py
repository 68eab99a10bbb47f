"""The run role's replay files and I/O trace (issue 12): controller files copied into the run's directory on the
hosts and given to the engine, the I/O trace written there (then fetched), and the engine's replay and phase options
reaching kvcache_command's extra_args, then the engine's argv, from kvcache_extra_args.

The role's own variables and tasks are loaded and templated as Ansible does (test_role_variables' helpers)."""

import json
import os

import pytest
from ansible.template import Templar, trust_as_template
from test_role_variables import _engine_argv, _role_layers

from kvcache.describe import describe

RUN_ID = "20260101-000000"
WORK_DIR = "/var/tmp/storagebench-kvcache-results"
STAGE = f"{WORK_DIR}/run-{RUN_ID}"
# The engine options of issue 12, each with a value of its type that differs from its default.
ISSUE_12_OPTIONS = {
    "use_burst_trace": True,
    "burst_trace_path": "/data/BurstGPT_1.csv",
    "trace_speedup": 10.0,
    "replay_cycles": 2,
    "dataset_path": "/data/sharegpt.json",
    "max_conversations": 20,
    "precondition": True,
    "precondition_size_gb": 1.5,
    "precondition_threads": 4,
    "prefill_only": True,
    "decode_only": False,
    "io_trace_log": "/data/trace.csv.zst",
}


@pytest.fixture(scope="module")
def description():
    """The engine's contract as kvcache_command reads it: describe's JSON."""
    return json.loads(json.dumps(describe()))


def _templar(**overrides):
    """A templar over the run role's variables (shared defaults, role defaults and vars) with `overrides`."""
    loader, variables, tasks = _role_layers("run", "launch.yml")
    variables.update(run_id=RUN_ID, inventory_hostname="h1", hostvars={"h1": {}}, ansible_play_hosts=["h1"])
    variables.update(next(task for task in tasks if task["name"] == "Build the benchmark command")["vars"])
    variables.update(overrides)
    return Templar(loader=loader, variables=variables), tasks


def _extra_args(**overrides):
    templar, tasks = _templar(**overrides)
    task = next(task for task in tasks if task["name"] == "Build the benchmark command")
    return templar.template(task["storagebench.kvcache.kvcache_command"]["extra_args"])


def _main_task(name):
    return next(task for task in _role_layers("run", "main.yml")[2] if task["name"] == name)


def _value(templar, expression):
    """A Jinja expression (a variable's name, an assert's condition) evaluated as a task's template would be."""
    return templar.template(trust_as_template("{{ " + expression + " }}"))


def _holds(expression, **overrides):
    """An assert's condition, templated with the role's variables."""
    return _value(_templar(**overrides)[0], expression)


def _flag_value(argv, flag):
    return argv[argv.index(flag) + 1]


def test_every_replay_and_phase_option_reaches_the_engine_from_kvcache_extra_args(description):
    names = {option["name"]: option for option in description["options"]}
    assert set(ISSUE_12_OPTIONS) <= set(names)  # the engine declares them all
    extra_args = _extra_args(kvcache_extra_args=ISSUE_12_OPTIONS)
    assert {key: extra_args[key] for key in ISSUE_12_OPTIONS} == ISSUE_12_OPTIONS
    argv = _engine_argv("run", extra_args, description)
    for name, value in ISSUE_12_OPTIONS.items():
        flag = names[name]["flag"]
        if isinstance(value, bool):
            assert (flag in argv) is value, name  # a flag: present when true, absent when false
        else:
            assert _flag_value(argv, flag) == str(value), name


def test_without_the_role_variables_nothing_is_added_or_staged():
    templar, _tasks = _templar()
    assert _value(templar, "__run_file_args") == {}
    assert _value(templar, "__run_inputs") == []
    assert _value(templar, "__run_staged") is False
    assert set(_extra_args()) == {"quiet", "num_gpus", "tensor_parallel"}


def test_a_controller_trace_is_copied_into_the_runs_directory_and_replayed(description, tmp_path):
    trace = tmp_path / "BurstGPT_small.csv"
    extra_args = _extra_args(run_burst_trace_src=str(trace))
    assert extra_args["use_burst_trace"] is True  # giving a trace asks for its replay
    assert extra_args["burst_trace_path"] == f"{STAGE}/burst-trace/BurstGPT_small.csv"
    argv = _engine_argv("run", extra_args, description)
    assert "--use-burst-trace" in argv
    assert _flag_value(argv, "--burst-trace-path") == f"{STAGE}/burst-trace/BurstGPT_small.csv"
    templar, _tasks = _templar(run_burst_trace_src=str(trace))
    (copied,) = _value(templar, "__run_inputs")
    # The copy task puts src into dest: a file or a directory lands as dest/<its name>, the path the engine gets.
    assert (copied["src"], copied["dest"]) == (str(trace), f"{STAGE}/burst-trace/")
    assert copied["path"] == copied["dest"] + os.path.basename(copied["src"])


def test_a_directory_of_traces_keeps_its_name_and_a_trailing_slash_changes_nothing(tmp_path):
    traces = tmp_path / "burstgpt"
    traces.mkdir()
    for given in (str(traces), str(traces) + "/"):
        assert _extra_args(run_burst_trace_src=given)["burst_trace_path"] == f"{STAGE}/burst-trace/burstgpt"


def test_a_relative_controller_path_is_relative_to_where_ansible_playbook_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    templar, _tasks = _templar(run_dataset_src="data/sharegpt.json")
    (copied,) = _value(templar, "__run_inputs")
    assert copied["src"] == str(tmp_path / "data" / "sharegpt.json")
    extra_args = _extra_args(run_dataset_src="data/sharegpt.json")
    assert extra_args["dataset_path"] == f"{STAGE}/dataset/sharegpt.json"
    assert "use_burst_trace" not in extra_args


def test_the_io_trace_is_written_in_the_runs_directory(description):
    extra_args = _extra_args(run_io_trace_log="io-trace.csv.zst")
    assert extra_args["io_trace_log"] == f"{STAGE}/io-trace/io-trace.csv.zst"
    assert _flag_value(_engine_argv("run", extra_args, description), "--io-trace-log") == extra_args["io_trace_log"]
    templar, _tasks = _templar(run_io_trace_log="io-trace.csv.zst")
    assert _value(templar, "__run_staged") is True
    assert _value(templar, "__run_io_trace_dir") == f"{STAGE}/io-trace"


def test_a_work_dir_of_the_users_moves_the_runs_directory():
    extra_args = _extra_args(run_work_dir="/scratch/kv", run_dataset_src="/d/s.json", run_io_trace_log="t.csv")
    assert extra_args["dataset_path"] == f"/scratch/kv/run-{RUN_ID}/dataset/s.json"
    assert extra_args["io_trace_log"] == f"/scratch/kv/run-{RUN_ID}/io-trace/t.csv"


def test_a_host_path_in_extra_args_is_used_as_is():
    extra_args = _extra_args(kvcache_extra_args={"use_burst_trace": True, "burst_trace_path": "/data/traces"})
    assert (extra_args["use_burst_trace"], extra_args["burst_trace_path"]) == (True, "/data/traces")
    assert _holds("__run_staged", kvcache_extra_args={"burst_trace_path": "/data/traces"}) is False


CONFLICT = _main_task("Check that run_extra_args and the role's file variables do not name the same file")


@pytest.mark.parametrize(
    ("variable", "key"),
    [
        ("run_burst_trace_src", "burst_trace_path"),
        ("run_burst_trace_src", "burst-trace-path"),  # the engine's spelling with dashes
        ("run_dataset_src", "dataset_path"),
        ("run_io_trace_log", "io_trace_log"),
    ],
)
def test_a_file_named_by_the_role_variable_and_by_extra_args_is_refused(variable, key):
    overrides = {variable: "given.csv", "run_extra_args": {key: "/on/the/hosts"}}
    templar, _tasks = _templar(**overrides)
    items = templar.template(CONFLICT["loop"])
    failing = [item for item in items if not _holds(CONFLICT["ansible.builtin.assert"]["that"], item=item, **overrides)]
    assert [item["variable"] for item in failing] == [variable]
    message = templar.copy_with_new_env(available_variables=dict(templar.available_variables, item=failing[0]))
    text = message.template(CONFLICT["ansible.builtin.assert"]["fail_msg"])
    assert text.startswith(f"{variable} and run_extra_args' {key.replace('-', '_')} both name the file"), text


def test_null_in_extra_args_names_no_file_and_other_options_do_not_conflict():
    overrides = {"run_burst_trace_src": "t.csv", "run_extra_args": {"burst_trace_path": None, "trace_speedup": 5}}
    items = _templar(**overrides)[0].template(CONFLICT["loop"])
    assert all(_holds(CONFLICT["ansible.builtin.assert"]["that"], item=item, **overrides) for item in items)
    assert _extra_args(**overrides)["trace_speedup"] == 5


NAME_CHECK = _main_task("Check that run_io_trace_log is a file name")


@pytest.mark.parametrize(
    ("name", "accepted"),
    [("io-trace.csv", True), ("io.csv.zst", True), ("/tmp/io.csv", False), ("sub/io.csv", False), ("..", False)],
)
def test_run_io_trace_log_is_a_plain_file_name(name, accepted):
    assert _holds(NAME_CHECK["ansible.builtin.assert"]["that"], run_io_trace_log=name) is accepted
