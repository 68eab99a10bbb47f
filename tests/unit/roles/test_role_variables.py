"""The roles' variables: the shared kvcache_* defaults are defined once (roles/kvcache), every role that reads
them depends on that role, and no role keeps its own copy of the engine's options or their choices: what the
roles need of those comes from the engine's contract (`kvcache describe`)."""

import copy
import glob
import io
import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from ansible_collections.storagebench.kvcache.plugins.module_utils.engine_command import build_engine_argv

from kvcache.cli import main as kvcache_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLES = os.path.join(ROOT, "roles")
SHARED_ROLE = "storagebench.kvcache.kvcache"
# kvcache_run_id is set by the playbook once per run; each role has its own fallback for a run without one.
NOT_SHARED_DEFAULTS = ("kvcache_run_id",)


def _yaml(*parts):
    with open(os.path.join(ROLES, *parts), encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def _role_names():
    return sorted(os.path.basename(os.path.dirname(path)) for path in glob.glob(os.path.join(ROLES, "*", "meta")))


def _role_text(role):
    texts = []
    for path in sorted(glob.glob(os.path.join(ROLES, role, "**", "*.yml"), recursive=True)):
        with open(path, encoding="utf-8") as stream:
            texts.append(stream.read())
    return "\n".join(texts)


@pytest.fixture(scope="module")
def description():
    """The engine's contract, as the roles read it: `python -m kvcache describe`."""
    proc = subprocess.run(
        [sys.executable, "-m", "kvcache", "describe"], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(proc.stdout)


def test_the_kvcache_role_documents_the_defaults_it_defines():
    defaults = _yaml("kvcache", "defaults", "main.yml")
    options = _yaml("kvcache", "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(options) == sorted(defaults)
    for name, spec in options.items():
        value = defaults[name]
        if isinstance(value, str) and "{{" in value:
            assert repr(spec["default"]) in value, name  # results: made absolute where ansible-playbook runs
        else:
            assert spec["default"] == value, name


def test_only_the_kvcache_role_gives_the_shared_variables_a_value():
    shared = sorted(_yaml("kvcache", "defaults", "main.yml"))
    paths = [value for value in _yaml("kvcache", "defaults", "main.yml").values() if str(value).startswith("/")]
    fallback = re.compile(r"\b(kvcache_\w+) \| (?:ansible\.builtin\.)?default\(")
    for role in _role_names():
        if role == "kvcache":
            continue
        text = _role_text(role)
        for path in glob.glob(os.path.join(ROLES, role, "*.md")):
            with open(path, encoding="utf-8") as stream:
                text += stream.read()
        assert [name for name in fallback.findall(text) if name not in NOT_SHARED_DEFAULTS] == [], role
        for path in paths:  # /var/tmp/storagebench-kvcache, but not /var/tmp/storagebench-kvcache-results
            assert not re.search(re.escape(path) + r"(?![\w/-])", text), f"{role} repeats {path}"
        uses = [name for name in shared if re.search(rf"\b{name}\b", text)]
        dependencies = [
            dep["role"] if isinstance(dep, dict) else dep for dep in _yaml(role, "meta", "main.yml")["dependencies"]
        ]
        if uses:
            assert SHARED_ROLE in dependencies, f"{role} reads {uses} without depending on {SHARED_ROLE}"


def test_argument_specs_keep_no_copy_of_the_engines_choices(description):
    engine_choices = [sorted(map(str, option["choices"])) for option in description["options"] if option["choices"]]
    assert engine_choices, "the engine has options with choices"
    for role in _role_names():
        for name, spec in _yaml(role, "meta", "argument_specs.yml")["argument_specs"]["main"]["options"].items():
            assert sorted(map(str, spec.get("choices") or [])) not in engine_choices, f"{role}: {name}"


def _sized_options(describe_output):
    loader = DataLoader()
    variables = loader.load_from_file(os.path.join(ROLES, "datasize", "vars", "main.yml"), trusted_as_template=True)
    variables["datasize_describe"] = {"stdout": json.dumps(describe_output)}
    return Templar(loader=loader, variables=variables).template(variables["__datasize_sized_options"])


def test_datasize_sizes_what_the_engine_lists_for_datasize(description):
    sized = _sized_options(description)
    assert {"io_depth", "io_chunk_mib", "disable_multi_turn", "disable_prefix_caching"} <= set(sized)
    assert not {"duration", "seed", "io_engine", "output"} & set(sized)  # run options datasize does not take
    assert {"io-depth", "io-chunk-mib"} <= set(sized)  # extra_args may spell a key with dashes, as the engine does


def test_a_new_datasize_option_is_sized_with_no_change_to_the_role(description):
    changed = copy.deepcopy(description)
    template = next(option for option in changed["options"] if option["name"] == "io_depth")
    changed["options"].append(
        dict(template, name="temporary_sized", flag="--temporary-sized", commands=["run", "datasize"])
    )
    changed["options"].append(dict(template, name="temporary_run_only", flag="--temporary-run-only", commands=["run"]))
    sized = _sized_options(changed)
    assert "temporary_sized" in sized
    assert "temporary_run_only" not in sized


# --- what the run and datasize roles give kvcache_command: the engine options through extra_args ----------------


def _role_layers(role, *task_file):
    """The variables a role's task sees by default (the shared defaults, the role's defaults and vars), and its
    tasks, all loaded as Ansible loads them (trusted templates)."""
    loader = DataLoader()

    def load(*parts):
        path = os.path.join(ROLES, *parts)
        return loader.load_from_file(path, trusted_as_template=True) if os.path.exists(path) else {}

    variables = {**load("kvcache", "defaults", "main.yml"), **load(role, "defaults", "main.yml")}
    variables.update(load(role, "vars", "main.yml"))
    return loader, variables, load(role, "tasks", *task_file)


def _module_args(role, task_file, task_name, overrides, facts):
    """The kvcache_command arguments of a role's task, templated with the shared variables set to `overrides`."""
    loader, variables, tasks = _role_layers(role, task_file)
    task = next(task for task in tasks if task["name"] == task_name)
    variables.update(facts, **task.get("vars", {}))
    variables.update(overrides)
    templar = Templar(loader=loader, variables=variables)
    return templar.template(task["storagebench.kvcache.kvcache_command"]["extra_args"])


def _datasize_extra_args(description, **overrides):
    facts = {
        "datasize_describe": {"stdout": json.dumps(description)},
        "datasize_host": {"cache_dir": {"free_bytes": 10**15}, "memory": {"available_bytes": 10**12}},
        "ansible_play_hosts": ["h1"],
    }
    return _module_args("datasize", "main.yml", "Build the engine's datasize command for this host's ranks",
                        overrides, facts)  # fmt: skip


def _run_extra_args(**overrides):
    return _module_args("run", "launch.yml", "Build the benchmark command", overrides, {})


def _engine_argv(command, extra_args, description):
    """The engine flags kvcache_command builds from these extra_args (after python -m kvcache COMMAND)."""
    return build_engine_argv("python", command, {}, extra_args, description)[0][4:]


def test_datasize_passes_the_gpus_tensor_parallel_and_rag_to_the_engine(description):
    extra_args = _datasize_extra_args(
        description,
        kvcache_num_gpus=4,
        kvcache_tensor_parallel=2,
        kvcache_extra_args={"enable_rag": True, "rag_num_docs": 3, "user_loop": "open", "io_depth": 2},
    )
    argv = _engine_argv("datasize", extra_args, description)
    assert argv[:10] == ["--num-gpus", "4", "--tensor-parallel", "2", "--enable-rag", "--rag-num-docs", "3",
                         "--io-depth", "2", "--ranks"]  # fmt: skip
    assert "--user-loop" not in argv  # a run option that datasize does not take
    out, err = io.StringIO(), io.StringIO()
    assert kvcache_main(["datasize", *argv], out, err) == 0, err.getvalue()
    report = json.loads(out.getvalue())
    assert (report["num_gpus_per_rank"], report["tensor_parallel"]) == (4, 2)
    assert report["rag_bytes_per_rank"] > 0


def test_datasize_defaults_size_one_gpu_without_tensor_parallelism(description):
    extra_args = _datasize_extra_args(description)
    assert (extra_args["num_gpus"], extra_args["tensor_parallel"]) == (1, 1)
    assert extra_args["json"] is True and extra_args["ranks"] == 1


def test_an_inventory_string_becomes_the_integer_the_module_needs(description):
    # [group:vars] of an INI inventory gives strings; extra_args values are not converted by the module
    extra_args = _datasize_extra_args(description, kvcache_num_gpus="2", kvcache_tensor_parallel="2")
    assert (extra_args["num_gpus"], extra_args["tensor_parallel"]) == (2, 2)
    assert _engine_argv("datasize", extra_args, description)[:4] == ["--num-gpus", "2", "--tensor-parallel", "2"]
    assert _run_extra_args(kvcache_num_gpus="8")["num_gpus"] == 8


def test_run_passes_the_hardware_facts_and_every_extra_arg(description):
    reference = {"enable_rag": True, "user_loop": "open", "rag_retrieval_distribution": "uniform", "log_level": "DEBUG",
                 "max_concurrent_allocs": 4}  # fmt: skip
    extra_args = _run_extra_args(kvcache_num_gpus=2, kvcache_tensor_parallel=2, kvcache_extra_args=reference)
    assert extra_args == {"quiet": True, "num_gpus": 2, "tensor_parallel": 2, **reference}
    argv = _engine_argv("run", extra_args, description)
    assert argv[:5] == ["--quiet", "--num-gpus", "2", "--tensor-parallel", "2"]
    assert ["--user-loop", "open"] == argv[argv.index("--user-loop") : argv.index("--user-loop") + 2]


def test_extra_args_given_to_a_role_alone_win_over_the_hardware_variables(description):
    assert _run_extra_args(run_extra_args={"num_gpus": 8})["num_gpus"] == 8
    assert (
        _datasize_extra_args(description, datasize_extra_args={"tensor_parallel": 1}, kvcache_tensor_parallel=2)[
            "tensor_parallel"
        ]
        == 1
    )
