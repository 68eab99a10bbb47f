"""The run role's MLPerf entry points (issue 13): what kvcache mlperf run gets from the role's variables in CLOSED
(no workload variable) and in OPEN (the workload variables of run_mlperf_open_workload, run_extra_args), templated
as Ansible does, then parsed by the engine's own parser; and the deps role installs every module of the engine."""

import glob
import os

import pytest
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from test_role_variables import ROOT, _role_layers

from kvcache.cli import build_parser

OMIT = "__omit_place_holder__"
COMMAND_TASK = "Build the MLPerf command ({{ 'the plan' if __run_mlperf_what_if else 'the run' }})"
WORKLOAD = {"kvcache_model": "tiny-1b", "kvcache_num_users": 2, "kvcache_duration": 2, "kvcache_num_gpus": 2,
            "kvcache_extra_args": {"io_depth": 4}}  # fmt: skip


def _module_args(what_if=False, **overrides):
    """kvcache_command's arguments in tasks/mlperf_command.yml, the ones the module gets (omitted ones left out)."""
    loader, variables, tasks = _role_layers("run", "mlperf_command.yml")
    variables.update(WORKLOAD, run_id="20260101-000000", inventory_hostname="h1", hostvars={"h1": {}},
                     ansible_play_hosts=["h1"], omit=OMIT, __run_mlperf_what_if=what_if)  # fmt: skip
    variables.update(overrides)
    task = next(task for task in tasks if task["name"] == COMMAND_TASK)
    templar = Templar(loader=loader, variables=variables)
    args = templar.template(task["storagebench.kvcache.kvcache_command"])
    return {name: value for name, value in args.items() if value != OMIT}


def _flags(args):
    """The engine's options of the module's arguments, as kvcache_command puts them on the command line."""
    argv = ["mlperf", "run"]
    for name in ("model", "num_users", "duration", "seed", "gpu_mem_gb", "cpu_mem_gb", "cache_dir", "generation_mode",
                 "performance_profile", "results_dir"):  # fmt: skip
        if name in args:
            argv += ["--" + name.replace("_", "-"), str(args[name])]
    for name, value in args["extra_args"].items():
        if value is True:
            argv.append("--" + name.replace("_", "-"))
        elif value is not None and value is not False:
            argv += ["--" + name.replace("_", "-"), str(value)]
    return build_parser().parse_args(argv)


def test_closed_gives_the_engine_no_workload_variable():
    args = _module_args(run_mlperf_category="closed", run_mlperf_option=1)
    for name in ("model", "num_users", "duration", "seed", "gpu_mem_gb", "cpu_mem_gb", "config"):
        assert name not in args, name
    assert args["command"] == "mlperf run"
    assert args["extra_args"] == {"category": "closed", "option": "1", "trials": None, "delay": None,
                                  "organization": None, "system_name": None, "baseline": None,
                                  "quiet": True}  # fmt: skip
    parsed = _flags(args)
    assert (parsed.category, parsed.option, parsed.results_dir) == ("closed", "1", args["results_dir"])


def test_with_a_baseline_every_trial_gets_the_file_the_role_measured_first():
    args = _module_args(run_mlperf_category="closed", run_mlperf_option=1, run_baseline=True, run_work_dir="/w")
    assert args["extra_args"]["baseline"] == "/w/run-20260101-000000/baseline.json"
    assert _flags(args).baseline == "/w/run-20260101-000000/baseline.json"


def test_open_gives_the_workload_variables_and_the_extra_args():
    args = _module_args(run_mlperf_category="open", run_mlperf_option="2", run_mlperf_trials="2", run_mlperf_delay_s=0)
    assert (args["model"], args["num_users"], args["duration"]) == ("tiny-1b", 2, 2)
    extra = args["extra_args"]
    assert (extra["num_gpus"], extra["io_depth"], extra["trials"], extra["delay"]) == (2, 4, 2, 0.0)
    parsed = _flags(args)
    assert (parsed.model, parsed.num_users, parsed.num_gpus, parsed.io_depth) == ("tiny-1b", 2, 2, 4)


def test_open_workload_keeps_what_it_does_not_name():
    args = _module_args(run_mlperf_category="open", run_mlperf_open_workload=["duration"])
    assert args["duration"] == 2
    assert not {"model", "num_users", "seed", "gpu_mem_gb", "cpu_mem_gb"} & set(args)
    assert "num_gpus" not in args["extra_args"]


@pytest.mark.parametrize("what_if", [True, False])
def test_the_plan_runs_on_the_launcher_and_the_run_under_mpi(what_if):
    args = _module_args(what_if=what_if, run_mlperf_category="open", ansible_play_hosts=["h1", "h2"])
    assert ("what_if" in args["extra_args"]) is what_if and ("json" in args["extra_args"]) is what_if
    assert args["exec_type"] == ("local" if what_if else "mpi")
    assert args["hosts"] == ([] if what_if else ["h1", "h2"])


def test_the_timeout_counts_every_trial_of_every_option_and_the_delays():
    loader, variables, _tasks = _role_layers("run", "mlperf.yml")
    plan = {"trials": 3, "delay_s": 90.0, "options": [{"parameters": {"duration": 300.0}}] * 3}
    variables.update(run_mlperf_plan=plan, run_timeout_margin_s=300)
    timeout = Templar(loader=loader, variables=variables).template(trust_as_template("{{ __run_mlperf_timeout_s }}"))
    assert int(timeout) == 3 * 3 * (300 + 90) + 300


def test_the_deps_role_installs_every_module_of_the_engine():
    init_plugin_loader()  # the fileglob lookup
    loader, variables, _tasks = _role_layers("deps", "engine.yml")
    variables["role_path"] = os.path.join(ROOT, "roles", "deps")
    copied = Templar(loader=loader, variables=variables).template(trust_as_template("{{ __deps_engine_files }}"))
    engine = glob.glob(os.path.join(ROOT, "kvcache", "**", "*.py"), recursive=True)
    assert engine and sorted(os.path.realpath(p) for p in engine) == sorted(
        os.path.realpath(p) for p in copied if p.endswith(".py")
    )
