"""One option contract (issue 10): an option added to the engine's option table, and nowhere else, is accepted with
its type and bounds by every layer, and refused, naming it, when a value is wrong.

A copy of the checkout (laid out as .../ansible_collections/storagebench/kvcache) gets one more entry in
kvcache/options.py OPTIONS and no other change; then, in real processes: the CLI, a config file, `describe`,
kvcache_command's extra_args (through the `ansible` command line) and the playbooks (the first play's check, and a
whole run whose result records the value). The pristine checkout refuses the same option: the control.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from ansible_cli import ROOT, ansible_binary, clean_environment, failed_task_messages, playbook_binary

pytestmark = pytest.mark.slow
NAME, FLAG = "contract_probe", "--contract-probe"
# The one change: a bounded integer option of run and datasize, as the engine's own options are declared.
PROBE_SOURCE = (
    f'    Option("{NAME}", int, 3, "a temporary option of the contract test", minimum=1, maximum=9, unit="probes"),\n'
)
TABLE_START = "OPTIONS: Tuple[Option, ...] = ("
WORKLOAD = {"kvcache_model": "tiny-1b", "kvcache_num_users": 2, "kvcache_duration": 1, "kvcache_cpu_mem_gb": 0.125}


def _git_files():
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    return [name for name in listed.stdout.decode().split("\0") if name and os.path.lexists(os.path.join(ROOT, name))]


def _digest(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _changed_files(copy):
    return sorted(
        name
        for name in _git_files()
        if not os.path.islink(os.path.join(ROOT, name)) and _digest(os.path.join(ROOT, name)) != _digest(copy / name)
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    """The checkout's files, links kept as links, with the option added to the table and nothing else changed."""
    root = tmp_path_factory.mktemp("contract")
    tree = root / "ansible_collections" / "storagebench" / "kvcache"
    for name in _git_files():
        source, target = os.path.join(ROOT, name), tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    table = tree / "kvcache" / "options.py"
    text = table.read_text(encoding="utf-8")
    end = text.index("\n)\n", text.index(TABLE_START)) + 1  # the line that closes the table
    table.write_text(text[:end] + PROBE_SOURCE + text[end:], encoding="utf-8")
    assert _changed_files(tree) == ["kvcache/options.py"]
    return tree


def _env(tree, home):
    """A clean environment whose Python finds the engine of `tree` first (before the venv's editable install)."""
    return dict(clean_environment(home), PYTHONPATH=str(tree))


def engine(tree, home, *args):
    done = subprocess.run(
        [sys.executable, "-m", "kvcache", *args],
        cwd=str(tree),
        env=_env(tree, home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def test_the_pristine_engine_has_no_such_option(tmp_path):
    rc, _out, err = engine(ROOT, tmp_path, "datasize", "--model", "tiny-1b", FLAG, "5")
    assert rc == 2 and f"unrecognized arguments: {FLAG} 5" in err, err
    rc, out, _err = engine(ROOT, tmp_path, "describe")
    assert rc == 0 and NAME not in [entry["name"] for entry in json.loads(out)["options"]]


def test_describe_exports_the_new_option_with_its_type_and_bounds(copy, tmp_path):
    rc, out, err = engine(copy, tmp_path, "describe", "--json")
    assert rc == 0, err
    (entry,) = [entry for entry in json.loads(out)["options"] if entry["name"] == NAME]
    assert entry == {
        "name": NAME,
        "flag": FLAG,
        "config_key": NAME,
        "type": "int",
        "default": 3,
        "choices": None,
        "minimum": 1,
        "maximum": 9,
        "exclusive_minimum": False,
        "nonzero_minimum": None,
        "multiple_of": None,
        "unit": "probes",
        "help": "a temporary option of the contract test",
        "commands": ["run", "datasize", "mlperf run"],
        "reference_key": None,  # no kv-cache.py config.yaml key sets it
    }


@pytest.mark.parametrize(
    ("value", "rc", "says"),
    [("5", 0, None), ("abc", 2, "expected int, got 'abc'"), ("10", 2, f"{FLAG}: must be <= 9, got 10")],
)
def test_the_cli_takes_the_flag_with_its_type_and_bounds(copy, tmp_path, value, rc, says):
    found, out, err = engine(copy, tmp_path, "datasize", "--model", "tiny-1b", "--json", FLAG, value)
    assert found == rc, out + err
    if says:
        assert FLAG in err and says in err, err
    else:
        assert json.loads(out)["fits"] in (True, False)


@pytest.mark.parametrize(
    ("line", "rc", "says"),
    [
        (f"{NAME}: 5", 0, None),
        (f"{NAME.replace('_', '-')}: 9", 0, None),
        (f'{NAME}: "5"', 2, f"{NAME}: must be an integer, got '5'"),
        (f"{NAME}: 0", 2, f"{NAME}: must be >= 1, got 0"),
        (f"{NAME}: true", 2, f"{NAME}: must be an integer, got True"),
    ],
)
def test_a_config_file_takes_the_key_with_its_type_and_bounds(copy, tmp_path, line, rc, says):
    config = tmp_path / "engine.yaml"
    config.write_text(line + "\n", encoding="utf-8")
    found, out, err = engine(copy, tmp_path, "datasize", "--model", "tiny-1b", "--json", "--config", str(config))
    assert found == rc, out + err
    if says:
        assert says in err, err


def ansible_module(tree, home, args):
    """(succeeded, result) of kvcache_command from `tree`, run on localhost by the `ansible` command line."""
    env = dict(_env(tree, home), ANSIBLE_COLLECTIONS_PATH=str(tree.parents[2]), ANSIBLE_LOCALHOST_WARNING="false")
    env.update(ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="true")
    args = dict({"python": sys.executable, "command": "datasize", "model": "tiny-1b"}, **args)
    command = [ansible_binary(), "localhost", "-m", "storagebench.kvcache.kvcache_command", "-a", json.dumps(args)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(tree), timeout=120, check=False)
    found = re.search(r"^localhost \| (SUCCESS|CHANGED|FAILED!) => (\{.*)", done.stdout, re.MULTILINE | re.DOTALL)
    assert found, done.stdout + done.stderr
    return found.group(1) != "FAILED!", json.loads(found.group(2))


def test_kvcache_command_takes_it_in_extra_args_with_its_type_and_bounds(copy, tmp_path):
    ok, result = ansible_module(copy, tmp_path, {"extra_args": {NAME: 5, "json": True}})
    assert ok, result
    assert result["engine_argv"][-3:] == [FLAG, "5", "--json"]
    rc, _out, err = engine(copy, tmp_path, *result["engine_argv"][3:])  # the command it built runs
    assert rc == 0, err
    for value, says in (
        ("5", "must be an integer, got '5'"),
        (10, "must be <= 9, got 10"),
        (True, "must be an integer, got True"),
    ):
        ok, result = ansible_module(copy, tmp_path, {"extra_args": {NAME: value}})
        assert not ok
        assert result["msg"].startswith(f"extra_args: {NAME}: ") and says in result["msg"], result["msg"]


def playbook(tree, home, name, variables, *extra):
    inventory = tree / "inventory" / "localhost.ini"
    return subprocess.run(
        [playbook_binary(), "-i", str(inventory), os.path.join("playbooks", name), "-e", json.dumps(variables), *extra],
        cwd=str(tree),
        env=_env(tree, home),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize(("value", "says"), [("5", "must be an integer, got '5'"), (0, "must be >= 1, got 0")])
def test_the_first_play_refuses_a_wrong_value_naming_it(copy, tmp_path, value, says):
    variables = dict(WORKLOAD, kvcache_extra_args={NAME: value}, kvcache_cache_dir=str(tmp_path / "cache"))
    proc = playbook(copy, tmp_path / "home", "kvcache_check.yml", variables)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert failed_task_messages(proc.stdout) == [f"kvcache_extra_args: {NAME}: {says}"]


def test_a_whole_run_takes_the_option_and_records_it(copy, tmp_path):
    results = tmp_path / "results"
    variables = dict(WORKLOAD, kvcache_extra_args={NAME: 7}, kvcache_cache_dir=str(tmp_path / "cache"))
    # The engine is this interpreter's (the copy's source through PYTHONPATH): nothing to install.
    variables.update(kvcache_results_dir=str(results), kvcache_venv=os.path.dirname(os.path.dirname(sys.executable)))
    proc = playbook(copy, tmp_path / "home", "kvcache_run.yml", variables, "--skip-tags", "setup")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (run,) = [path for path in results.iterdir() if not path.is_symlink()]
    result = json.loads((run / "result.json").read_text(encoding="utf-8"))
    assert result["status"] == "ok"
    assert result["config"][NAME] == 7
    assert f"{FLAG} 7" in (run / "engine.log").read_text(encoding="utf-8")
