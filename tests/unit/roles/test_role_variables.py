"""The roles' variables: the shared kvcache_* defaults are defined once (roles/kvcache), every role that reads
them depends on that role, and no role keeps its own copy of the engine's options or their choices: what the
roles need of those comes from the engine's contract (`kvcache describe`)."""

import copy
import glob
import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

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
