# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""The playbooks' first-play checks, called directly: the engine's rules reach the shared variables."""

# pylint: disable=wrong-import-position

import importlib

import pytest
from ansible.module_utils import _internal as module_utils_internal

_WAS_CONTROLLER = module_utils_internal.is_controller
from ansible import context  # noqa: E402
from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.storagebench.kvcache.plugins.filter import shared_variables  # noqa: E402
from ansible_collections.storagebench.kvcache.plugins.filter.shared_variables import (  # noqa: E402
    hosts_pattern,
    variable_problems,
)

# Importing controller code (as the filter does) marks the whole process as the controller, which sends module
# warnings to the controller's display instead of the module's result; the module tests that run later in this
# process expect them in the result, as on a host. Nothing here needs the mark.
module_utils_internal.is_controller = _WAS_CONTROLLER

GOOD = {
    "kvcache_model": "tiny-1b",
    "kvcache_num_users": "4",  # an inventory gives strings; kvcache_command converts them
    "kvcache_duration": 10,
    "kvcache_gpu_mem_gb": "0",
    "kvcache_cpu_mem_gb": 0.25,
    "kvcache_processes_per_host": 2,
    "kvcache_cache_dir": "/var/tmp/kvcache-make-run",
    "kvcache_extra_args": {"io_depth": 4, "keep_cache": True, "io_engine": "buffered", "promote": None},
    "kvcache_config": "",
    "kvcache_ssh_mesh": "yes",
    "kvcache_results_dir": "results",
    "kvcache_run_id": "20261201-120000",
}


def test_a_sound_inventory_has_no_problems():
    assert variable_problems(GOOD) == []
    assert variable_problems({"kvcache_hosts": ["rack1", "rack2"]}) == []
    assert variable_problems({"kvcache_hosts": []}) == ["kvcache_hosts: must be a non-empty string, got '[]'"]


def test_every_built_in_model_passes_and_others_need_a_config(description):
    for model in description["models"]:
        assert variable_problems({"kvcache_model": model["name"]}) == []
    assert variable_problems({"kvcache_model": "mine"})[0].startswith("kvcache_model: unknown model 'mine'")
    assert variable_problems({"kvcache_model": "mine", "kvcache_config": "/etc/kvcache/models.yaml"}) == []


def test_bounds_come_from_the_engine_option_contract(description):
    entries = {entry["name"]: entry for entry in description["options"]}
    top = int(entries["num_users"]["maximum"])
    assert variable_problems({"kvcache_num_users": top}) == []
    assert variable_problems({"kvcache_num_users": str(top + 1)}) == [
        f"kvcache_num_users: must be <= {top}, got {top + 1}"
    ]
    ranks_top = int(entries["ranks"]["maximum"])
    assert variable_problems({"kvcache_processes_per_host": ranks_top}) == []
    assert variable_problems({"kvcache_processes_per_host": ranks_top + 1}) == [
        f"kvcache_processes_per_host: must be <= {ranks_top}, got {ranks_top + 1}"
    ]


@pytest.mark.parametrize(
    ("extra_args", "problem"),
    [
        ({"keep_cache": "yes"}, "kvcache_extra_args: keep_cache: must be true or false, got 'yes'"),
        ({"quiet": 0}, "kvcache_extra_args: quiet: must be true or false, got 0"),
        ({"io_chunk_mib": "abc"}, "kvcache_extra_args: io_chunk_mib: must be a number, got 'abc'"),
        ({"stats_interval": float("nan")}, "kvcache_extra_args: stats_interval: must be a finite number, got nan"),
        ({"io_dept": 4}, "kvcache_extra_args: 'io_dept': 'kvcache run' has no '--io-dept' flag; did you mean io_depth"),
        ({"num-users": 4}, "kvcache_extra_args: 'num-users': set kvcache_num_users instead"),
        (
            {"json": True},
            "kvcache_extra_args: 'json': 'kvcache run' has no --json flag (an option of datasize, mlperf run)",
        ),
        ({"user_loop": "sideways"}, "kvcache_extra_args: user_loop: must be one of closed, open, got 'sideways'"),
        ({"rag_top_k": 0}, "kvcache_extra_args: rag_top_k: must be >= 1, got 0"),
        ({"num_gpus": 2}, "kvcache_extra_args: 'num_gpus': set kvcache_num_gpus instead"),
        ({"tensor-parallel": 2}, "kvcache_extra_args: 'tensor-parallel': set kvcache_tensor_parallel instead"),
    ],
)
def test_extra_args_keys_and_values_are_checked_as_the_module_checks_them(extra_args, problem):
    (found,) = variable_problems({"kvcache_extra_args": extra_args})
    assert found.startswith(problem), found


def test_system_directories_come_from_the_engine():
    cachedir = shared_variables.engine_module("cachedir")
    for directory in cachedir.FORBIDDEN:
        (problem,) = variable_problems({"kvcache_cache_dir": directory})
        assert "system directory" in problem
    (problem,) = variable_problems({"kvcache_cache_dir": "/usr/../etc/./kv"})
    assert "system directory" in problem
    assert variable_problems({"kvcache_cache_dir": "/mnt/nvme/kvcache"}) == []


def test_every_problem_is_reported_once_and_short():
    bad = {"kvcache_num_users": "x" * 100_000, "kvcache_duration": 0, "kvcache_extra_args": {"io_depth": "deep"}}
    problems = variable_problems(bad)
    assert [p.split(":")[0] for p in problems] == ["kvcache_duration", "kvcache_extra_args", "kvcache_num_users"]
    assert all(len(problem) < 200 for problem in problems), problems


def test_a_typo_is_named_with_the_variable_it_resembles():
    assert variable_problems({"kvcache_cachedir": "/mnt"}) == [
        "kvcache_cachedir: not a variable of the kvcache playbooks (did you mean kvcache_cache_dir?)"
    ]


@pytest.mark.parametrize("pattern", ["kvcache", "node1", "localhost", "kvcache:!node2", "rack*", ["node1", "kvcache"]])
def test_hosts_pattern_passes_what_can_match(pattern):
    groups = {"all": ["node1", "node2"], "kvcache": ["node1", "node2"], "ungrouped": []}
    assert hosts_pattern(pattern, groups) == pattern


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("kvcache", "has no hosts"),
        ("racks", "no group or host 'racks'"),
        ("", "must name"),
        (["node1", "racks"], "'racks'"),
    ],
)
def test_hosts_pattern_refuses_what_matches_nothing(pattern, says):
    groups = {"all": ["node1"], "ungrouped": ["node1"], "kvcache": []}
    with pytest.raises(AnsibleFilterError) as caught:
        hosts_pattern(pattern, groups)
    assert says in str(caught.value) and "-e kvcache_hosts=GROUP" in str(caught.value)


def test_hosts_pattern_lets_a_syntax_check_through(monkeypatch):
    monkeypatch.setattr(context, "CLIARGS", {"syntax": True})
    assert hosts_pattern("kvcache", {"all": [], "ungrouped": []}) == "kvcache"


def test_an_option_added_to_the_engine_table_reaches_kvcache_extra_args(monkeypatch):
    options = importlib.import_module("kvcache.options")
    probe = options.Option("contract_probe", int, 3, "a temporary option", minimum=1, maximum=9)
    monkeypatch.setattr(options, "OPTIONS", options.OPTIONS + (probe,))
    assert variable_problems({"kvcache_extra_args": {"contract_probe": 9}}) == []
    assert variable_problems({"kvcache_extra_args": {"contract_probe": 10}}) == [
        "kvcache_extra_args: contract_probe: must be <= 9, got 10"
    ]
    assert variable_problems({"kvcache_extra_args": {"contract_probe": "x"}}) == [
        "kvcache_extra_args: contract_probe: must be an integer, got 'x'"
    ]


def test_the_shared_variables_are_the_kvcache_role_ones_and_its_defaults_pass():
    specs = shared_variables.shared_specs()
    assert "kvcache_model" in specs and "kvcache_extra_args" in specs
    defaults = {name: spec["default"] for name, spec in specs.items() if "default" in spec}
    assert defaults and variable_problems(defaults) == []
    for name, spec in specs.items():
        if spec.get("type") == "bool":
            assert variable_problems({name: "maybe"}) == [f"{name}: must be true or false, got 'maybe'"]


def test_kv_cache_py_options_pass_in_kvcache_extra_args_and_the_hardware_facts_are_variables(description):
    reference = {"enable_rag": True, "user_loop": "open", "rag_retrieval_distribution": "uniform",
                 "log_level": "DEBUG", "max_concurrent_allocs": 4}  # fmt: skip
    assert variable_problems({"kvcache_extra_args": reference}) == []
    assert variable_problems({"kvcache_num_gpus": "8", "kvcache_tensor_parallel": 4}) == []  # INI gives strings
    top = int(next(entry for entry in description["options"] if entry["name"] == "num_gpus")["maximum"])
    assert variable_problems({"kvcache_num_gpus": 0, "kvcache_tensor_parallel": "two"}) == [
        "kvcache_num_gpus: must be >= 1, got 0",
        "kvcache_tensor_parallel: must be an integer, got 'two'",
    ]
    assert variable_problems({"kvcache_num_gpus": top + 1}) == [f"kvcache_num_gpus: must be <= {top}, got {top + 1}"]


@pytest.mark.parametrize("launcher", ["mpirun", "slurm"])
def test_the_launcher_is_one_of_the_specs_choices(launcher):
    assert variable_problems(dict(GOOD, kvcache_launcher=launcher, kvcache_slurm_mpi="pmix")) == []
    assert variable_problems(dict(GOOD, kvcache_launcher="srun")) == [
        "kvcache_launcher: must be one of mpirun, slurm, got 'srun'"
    ]


def test_slurms_configuration_is_empty_or_an_absolute_path():
    assert variable_problems(dict(GOOD, kvcache_slurm_conf="")) == []
    assert variable_problems(dict(GOOD, kvcache_slurm_conf="/etc/slurm/slurm.conf")) == []
    (problem,) = variable_problems(dict(GOOD, kvcache_slurm_conf="slurm.conf"))
    assert problem.startswith("kvcache_slurm_conf: must be an absolute path")


def test_the_baseline_switch_and_its_options_are_checked_against_kvcache_baseline():
    good = dict(GOOD, kvcache_baseline=True, kvcache_baseline_args={"baseline_runtime": 3})
    assert variable_problems(dict(good, kvcache_extra_args={"baseline": "/var/tmp/b.json"})) == []
    (problem,) = variable_problems(dict(good, kvcache_baseline="maybe"))
    assert problem.startswith("kvcache_baseline: must be true or false")
    (problem,) = variable_problems(dict(good, kvcache_baseline_args={"enable_rag": True}))
    assert problem.startswith("kvcache_baseline_args: ") and "'kvcache baseline' has no --enable-rag flag" in problem
    (problem,) = variable_problems(dict(good, kvcache_baseline_args={"baseline_read_share": 2}))
    assert problem.startswith("kvcache_baseline_args: baseline_read_share")
