"""The kvcache_command module: external commands (describe, mpirun --version) mocked (conftest), the module never."""

import importlib
import io
import json
import os
import shlex
import sys
import types

import pytest
import yaml
from ansible_collections.storagebench.kvcache.plugins.module_utils.engine_command import ENGINE_OPTIONS
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import DEFAULT_PYTHON
from ansible_collections.storagebench.kvcache.plugins.module_utils.mpi_launch import HOSTFILE_MARKER
from ansible_collections.storagebench.kvcache.plugins.modules import kvcache_command
from ansible_collections.storagebench.kvcache.tests.unit.plugins.modules import module_harness as harness
from ansible_collections.storagebench.kvcache.tests.unit.plugins.modules.module_harness import MPICH_VERSION

DEFAULT_PY = DEFAULT_PYTHON


def run_module(args, check_mode=False):
    return harness.run_module(kvcache_command.main, args, check_mode)


def fail_module(args):
    return harness.fail_module(kvcache_command.main, args)


def test_issue_example_two_hosts_open_mpi(commands):
    result = run_module({"command": "run", "exec_type": "mpi", "hosts": "h1,h2", "model": "llama3.1-8b"},
                        check_mode=True)  # fmt: skip
    prefix = ["mpirun", "-n", "2", "-host", "h1:1,h2:1", "--bind-to", "none", "--map-by", "node"]
    assert result["argv"] == prefix + [DEFAULT_PY, "-m", "kvcache", "run", "--model", "llama3.1-8b"]
    assert result["mpi_prefix"] == prefix
    assert result["cmd"].startswith("mpirun -n 2 -host h1:1,h2:1 --bind-to none --map-by node ")
    assert shlex.split(result["cmd"]) == result["argv"]
    assert result["engine_argv"] == result["argv"][len(prefix) :]
    assert result["mpi_flavor"] == "openmpi"
    assert result["num_processes"] == 2
    assert result["slots"] == {"h1": 1, "h2": 1}
    assert result["hostfile"] is None
    assert result["changed"] is False
    assert result["engine_version"] == "0.1.0"
    assert commands["calls"] == [[DEFAULT_PY, "-m", "kvcache", "describe"], ["mpirun", "--version"]]


@pytest.mark.parametrize("exec_type", ["local", "container"])
def test_local_and_container_get_no_prefix_even_with_hosts(commands, exec_type):
    result = run_module({"exec_type": exec_type, "hosts": ["h1", "h2"], "model": "tiny-1b", "cache_dir": "/mnt/kv",
                         "container_image": "kv:0.1"})  # fmt: skip
    assert result["mpi_prefix"] == []
    assert result["mpi_flavor"] is None
    assert result["num_processes"] == 1
    assert "mpirun" not in result["argv"]
    assert result["argv"][0] == (DEFAULT_PY if exec_type == "local" else "docker")
    assert ["mpirun", "--version"] not in commands["calls"]
    assert any("only used with exec_type=mpi" in w for w in result["warnings"])


def test_mpi_without_hosts_gets_no_prefix(commands):
    result = run_module({"exec_type": "mpi", "model": "tiny-1b"})
    assert result["mpi_prefix"] == []
    assert result["argv"] == [DEFAULT_PY, "-m", "kvcache", "run", "--model", "tiny-1b"]
    assert any("no MPI prefix" in w for w in result["warnings"])


def test_container_exec_type(commands):
    result = run_module({"exec_type": "container", "container_engine": "podman", "container_image": "kv:0.1",
                         "python": "python3", "model": "tiny-1b", "cache_dir": "/mnt/kv"})  # fmt: skip
    container = ["podman", "run", "--rm", "--network", "host", "-v", "/mnt/kv:/mnt/kv", "kv:0.1"]
    assert result["argv"] == container + [
        "python3",
        "-m",
        "kvcache",
        "run",
        "--model",
        "tiny-1b",
        "--cache-dir",
        "/mnt/kv",
    ]


def test_container_needs_an_image(commands):
    failure = fail_module({"exec_type": "container", "cache_dir": "/mnt/kv"})
    assert "container_image" in failure["msg"]


def test_local_env_goes_through_env(commands):
    result = run_module({"model": "tiny-1b", "env": {"KV_DEBUG": "1"}})
    assert result["argv"][:2] == ["env", "KV_DEBUG=1"]


def test_mpich_detected_from_version_output(commands):
    commands["version"] = (0, MPICH_VERSION, "")
    result = run_module({"exec_type": "mpi", "mpi_bin": "mpiexec", "hosts": ["h1", "h2"], "processes_per_host": 2,
                         "env": {"UCX_TLS": "tcp,self"}})  # fmt: skip
    assert result["mpi_flavor"] == "mpich"
    assert result["mpi_prefix"] == ["mpiexec", "-n", "4", "-hosts", "h1:2,h2:2", "-ppn", "2", "-genv", "UCX_TLS",
                                    "tcp,self"]  # fmt: skip
    assert commands["calls"][-1] == ["mpiexec", "--version"]


def test_explicit_flavor_does_not_run_the_launcher(commands):
    result = run_module({"exec_type": "mpi", "hosts": ["h1"], "mpi_flavor": "mpich"})
    assert result["mpi_prefix"] == ["mpirun", "-n", "1", "-hosts", "h1:1"]
    assert commands["calls"] == [[DEFAULT_PY, "-m", "kvcache", "describe"]]


def test_auto_flavor_without_a_launcher_fails_naming_mpi_flavor(commands):
    commands["version"] = OSError(2, "No such file or directory")
    failure = fail_module({"exec_type": "mpi", "hosts": ["h1"]})
    assert failure["msg"].startswith("mpi_flavor:")
    assert failure["option"] == "mpi_flavor"


def test_auto_flavor_with_unknown_output_fails(commands):
    commands["version"] = (0, "some other launcher 1.0", "")
    failure = fail_module({"exec_type": "mpi", "hosts": ["h1"]})
    assert failure["option"] == "mpi_flavor"


def test_describe_falls_back_to_importing_the_engine(commands, monkeypatch, description):
    commands["describe"] = OSError(2, "No such file or directory")
    package = types.ModuleType("kvcache")
    package.__path__ = []
    module = types.ModuleType("kvcache.describe")
    module.describe = lambda: description
    monkeypatch.setitem(sys.modules, "kvcache", package)
    monkeypatch.setitem(sys.modules, "kvcache.describe", module)
    result = run_module({"model": "tiny-1b"})
    assert result["argv"] == [DEFAULT_PY, "-m", "kvcache", "run", "--model", "tiny-1b"]
    assert result["engine_source"] == "import"
    # Not silent: the warning says why PYTHON could not describe the engine and where the contract came from.
    (warning,) = result["warnings"]
    assert warning.startswith(f"python: '{DEFAULT_PY}' -m kvcache describe: [Errno 2] No such file or directory")
    assert "imported by the module's own Python" in warning


def test_describe_fallback_after_a_failing_describe_warns_with_its_output(commands, monkeypatch, description):
    commands["describe"] = (1, "", "Traceback ...\nModuleNotFoundError: No module named 'yaml'\n")
    package = types.ModuleType("kvcache")
    package.__path__ = []
    module = types.ModuleType("kvcache.describe")
    module.describe = lambda: description
    monkeypatch.setitem(sys.modules, "kvcache", package)
    monkeypatch.setitem(sys.modules, "kvcache.describe", module)
    result = run_module({"python": "/usr/bin/python3", "model": "tiny-1b"})
    assert result["engine_source"] == "import"
    (warning,) = result["warnings"]
    assert "'/usr/bin/python3' -m kvcache describe exited 1: " in warning
    assert "No module named 'yaml'" in warning and len(warning) < 400


def test_the_engines_own_describe_gives_no_warning(commands):
    result = run_module({"model": "tiny-1b"})
    assert result["engine_source"] == "python"
    assert "warnings" not in result


def test_no_engine_anywhere_fails_naming_python(commands, monkeypatch):
    commands["describe"] = (1, "", "/usr/bin/python3: No module named kvcache")
    monkeypatch.setitem(sys.modules, "kvcache.describe", None)
    failure = fail_module({"python": "/usr/bin/python3", "model": "tiny-1b"})
    assert failure["msg"].startswith("python:")
    assert failure["option"] == "python"
    assert "No module named kvcache" in failure["msg"]


@pytest.mark.parametrize(
    "args, option",
    [
        ({"exec_type": "mpi", "hosts": ["h1"], "num_processes": 0}, "num_processes"),
        ({"exec_type": "mpi", "hosts": ["h1:0"]}, "hosts"),
        ({"exec_type": "mpi", "hosts": ["h1:2", "h2"]}, "hosts"),
        ({"exec_type": "mpi", "hosts": ["h1;reboot"]}, "hosts"),
        ({"exec_type": "mpi", "hosts": ["$(reboot)"]}, "hosts"),
        ({"exec_type": "mpi", "hosts": ["h1:1", "h2:1"], "num_processes": 3}, "num_processes"),
        ({"model": "llama-9000"}, "model"),
        ({"cache_dir": "relative/dir"}, "cache_dir"),
        ({"extra_args": {"warp_speed": True}}, "extra_args"),
        ({"command": "datasize", "duration": 5}, "duration"),
    ],
)
def test_invalid_input_fails_naming_the_option(commands, args, option):
    failure = fail_module(args)
    assert failure["option"] == option
    assert failure["msg"].startswith(option + ":")


def test_hostile_mpi_params_are_quoted_in_cmd(commands):
    result = run_module({"exec_type": "mpi", "hosts": ["h1", "h2"], "mpi_params": "--mca x 'a b;$(reboot)'",
                         "cache_dir": "/mnt/kv dir"})  # fmt: skip
    assert "a b;$(reboot)" in result["argv"]
    assert "'a b;$(reboot)'" in result["cmd"]
    assert "'/mnt/kv dir'" in result["cmd"]
    assert shlex.split(result["cmd"]) == result["argv"]


def test_hostfile_written_once_and_changed_only_when_it_differs(commands, tmp_path):
    path = str(tmp_path / "hosts")
    args = {"exec_type": "mpi", "hosts": ["h1", "h2"], "hostfile": path, "allow_run_as_root": True}
    first = run_module(args)
    assert first["changed"] is True
    assert first["hostfile"] == {"path": path, "content": HOSTFILE_MARKER + "\nh1 slots=1\nh2 slots=1\n"}
    assert first["mpi_prefix"][3:5] == ["--hostfile", path]
    with open(path) as handle:
        assert handle.read() == HOSTFILE_MARKER + "\nh1 slots=1\nh2 slots=1\n"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert run_module(args)["changed"] is False
    # A hostfile the module wrote (marked) is rewritten when the hosts change.
    assert run_module(dict(args, hosts=["h1", "h3"]))["changed"] is True
    with open(path) as handle:
        assert handle.read() == HOSTFILE_MARKER + "\nh1 slots=1\nh3 slots=1\n"
    assert sorted(os.listdir(tmp_path)) == ["hosts"]


def test_check_mode_reports_but_does_not_write_the_hostfile(commands, tmp_path):
    path = tmp_path / "hosts"
    result = run_module({"exec_type": "mpi", "hosts": ["h1", "h2"], "hostfile": str(path)}, check_mode=True)
    assert result["changed"] is True
    assert result["hostfile"]["content"] == HOSTFILE_MARKER + "\nh1 slots=1\nh2 slots=1\n"
    assert not path.exists()


def test_default_hostfile_directory_is_apart_from_the_cache_directory():
    # The roles' cache directory (kvcache_cache_dir) is /var/tmp/storagebench-kvcache: the storage under test.
    assert kvcache_command.HOSTFILE_DIR == "/var/tmp/storagebench-kvcache-hostfiles"
    assert "C(/var/tmp/storagebench-kvcache-hostfiles/hostfile-HASH)" in kvcache_command.DOCUMENTATION
    assert "/var/tmp/storagebench-kvcache-hostfiles/hostfile-" in kvcache_command.RETURN


def test_the_documented_marker_is_the_one_written():
    assert f"C({HOSTFILE_MARKER})" in kvcache_command.DOCUMENTATION
    assert HOSTFILE_MARKER in kvcache_command.RETURN


def test_many_hosts_use_a_hostfile_in_the_default_directory(commands, tmp_path, monkeypatch):
    monkeypatch.setattr(kvcache_command, "HOSTFILE_DIR", str(tmp_path))
    hosts = [f"node{i:04d}" for i in range(10000)]
    result = run_module({"exec_type": "mpi", "hosts": hosts, "processes_per_host": 4, "model": "tiny-1b"})
    path = result["hostfile"]["path"]
    assert os.path.dirname(path) == str(tmp_path)
    assert result["mpi_prefix"] == ["mpirun", "-n", "40000", "--hostfile", path, "--bind-to", "none", "--map-by",
                                    "node"]  # fmt: skip
    with open(path) as handle:
        lines = handle.read().splitlines()
    assert lines[0] == HOSTFILE_MARKER
    assert len(lines) == 1 + 10000 and lines[-1] == "node9999 slots=4"
    assert result["changed"] is True
    assert len(result["slots"]) == 10000


def test_ssh_command_and_mpi_params_replacing_generated_flags(commands):
    result = run_module({"exec_type": "mpi", "hosts": ["h1", "h2"], "ssh_command": "ssh -F /etc/kv/ssh_config",
                         "mpi_params": ["--map-by", "ppr:1:node"]})  # fmt: skip
    prefix = result["mpi_prefix"]
    assert prefix.count("--map-by") == 1 and prefix[-2:] == ["--map-by", "ppr:1:node"]
    assert ["--mca", "plm_rsh_agent", "ssh -F /etc/kv/ssh_config"] == prefix[7:10]


def test_hosts_left_without_a_process_are_named_in_a_warning(commands):
    result = run_module({"exec_type": "mpi", "hosts": ["h1", "h2", "h3"], "num_processes": 2})
    assert result["slots"] == {"h1": 1, "h2": 1}
    assert "hosts: only 2 of 3 hosts get a process (2 in all); left out: h3" in result["warnings"]


def test_fleet_style_mca_params_pass_and_a_bare_word_fails(commands):
    params = ["--mca", "pml", "ob1", "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "10.77.0.0/24"]
    result = run_module({"exec_type": "mpi", "hosts": ["h1", "h2"], "mpi_params": params})
    assert result["mpi_prefix"][-len(params) :] == params
    failure = fail_module({"exec_type": "mpi", "hosts": ["h1", "h2"], "mpi_params": ["echo", "INJECTED"]})
    assert failure["msg"].startswith("mpi_params: 'echo'")


def test_a_marked_hostfile_is_rewritten_and_an_unmarked_one_refused(commands, tmp_path):
    path = tmp_path / "hosts"
    path.write_text(HOSTFILE_MARKER + "\nold slots=1\n")
    args = {"exec_type": "mpi", "hosts": ["h1", "h2"], "hostfile": str(path)}
    assert run_module(args)["changed"] is True
    assert path.read_text() == HOSTFILE_MARKER + "\nh1 slots=1\nh2 slots=1\n"
    path.write_text("precious user data\n")
    failure = fail_module(args)
    assert failure["msg"].startswith("hostfile: ")
    assert path.read_text() == "precious user data\n"
    assert os.listdir(tmp_path) == ["hosts"]


def test_the_documented_engine_options_agree_with_the_contract(description):
    """The module's own engine options: the type the contract gives, and the choices, when it has any, in the docs
    (validate-modules checks the docs against argument_spec; this checks both against the engine)."""
    documented = yaml.safe_load(kvcache_command.DOCUMENTATION)["options"]
    contract = {entry["name"]: entry for entry in description["options"]}
    for name in ENGINE_OPTIONS:
        if name not in contract:
            assert name == "config"  # a file, not an option of the table: every command takes one
            continue
        text = documented[name]["description"]
        text = text if isinstance(text, str) else " ".join(text)
        assert documented[name]["type"] == contract[name]["type"], name
        assert f"C({contract[name]['flag']})" in text, name
        choices = contract[name]["choices"]
        if choices:
            listed = "One of " + ", ".join(f"V({choice})" for choice in choices) + "."
            assert listed in text, (name, listed)
            assert "choices" not in documented[name]  # validated from the contract, not by a copy in argument_spec


@pytest.mark.parametrize(
    "args, message",
    [
        ({"extra_args": {"keep_cache": "yes"}}, "extra_args: keep_cache: must be true or false, got 'yes'"),
        ({"extra_args": {"quiet": 0}}, "extra_args: quiet: must be true or false, got 0"),
        ({"extra_args": {"io_chunk_mib": "abc"}}, "extra_args: io_chunk_mib: must be a number, got 'abc'"),
        ({"extra_args": {"duration": float("nan")}}, "extra_args: duration: use the module's duration option instead"),
        ({"duration": float("nan")}, "duration: must be a finite number, got nan"),
        ({"generation_mode": "slow"}, "generation_mode: must be one of none, fast, realistic, got 'slow'"),
    ],
)
def test_the_issue_examples_fail_naming_the_key(commands, args, message):
    failure = fail_module(args)
    assert failure["msg"] == message
    assert failure["option"] == message.split(":")[0]


def test_good_extra_args_reach_the_engine_argv_as_typed(commands):
    result = run_module({"extra_args": {"keep_cache": True, "quiet": False, "io_chunk_mib": 8, "request_rate": 2}})
    assert result["engine_argv"][4:] == ["--keep-cache", "--io-chunk-mib", "8.0", "--request-rate", "2.0"]


def test_an_option_added_to_the_engine_table_is_checked_with_its_bounds(commands, monkeypatch):
    """The module keeps no list of engine options: a temporary one reaches extra_args through describe alone."""
    options = importlib.import_module("kvcache.options")
    probe = options.Option("contract_probe", float, 0.5, "a temporary option", minimum=0, maximum=2, commands=("run",))
    monkeypatch.setattr(options, "OPTIONS", options.OPTIONS + (probe,))
    commands["describe"] = (0, json.dumps(importlib.import_module("kvcache.describe").describe()), "")
    result = run_module({"extra_args": {"contract_probe": 2}})
    assert result["engine_argv"][4:] == ["--contract-probe", "2.0"]
    assert fail_module({"extra_args": {"contract_probe": 2.5}})["msg"] == (
        "extra_args: contract_probe: must be <= 2, got 2.5"
    )
    assert fail_module({"extra_args": {"contract_probe": "1"}})["msg"] == (
        "extra_args: contract_probe: must be a number, got '1'"
    )
    assert fail_module({"command": "datasize", "extra_args": {"contract_probe": 1}})["msg"].startswith(
        "extra_args: 'contract_probe': 'kvcache datasize' has no --contract-probe flag"
    )


# kv-cache.py's options (issue 11): the module keeps no list of them, they pass through extra_args by the contract.
REFERENCE_EXTRA_ARGS = {
    "enable_rag": True,
    "user_loop": "open",
    "rag_retrieval_distribution": "uniform",
    "log_level": "DEBUG",
    "max_concurrent_allocs": 4,
    "tensor_parallel": 2,
    "num_gpus": 2,
}


def _engine_config(engine_argv):
    """What the engine makes of an argv the module built: its own parser and option resolution."""
    cli = importlib.import_module("kvcache.cli")
    run_config = importlib.import_module("kvcache.run_config")
    args = cli.build_parser().parse_args(engine_argv[3:])
    return run_config.resolve(args.command, args)[0]


def test_reference_options_in_extra_args_reach_the_engine(commands):
    result = run_module({"model": "tiny-1b", "extra_args": REFERENCE_EXTRA_ARGS})
    assert result["engine_argv"][4:] == [
        "--model", "tiny-1b", "--enable-rag", "--user-loop", "open", "--rag-retrieval-distribution", "uniform",
        "--log-level", "DEBUG", "--max-concurrent-allocs", "4", "--tensor-parallel", "2", "--num-gpus", "2",
    ]  # fmt: skip
    config = _engine_config(result["engine_argv"])
    assert {name: getattr(config, name) for name in REFERENCE_EXTRA_ARGS} == REFERENCE_EXTRA_ARGS
    assert commands["calls"] == [[DEFAULT_PY, "-m", "kvcache", "describe"]]


def test_datasize_gets_the_sizing_options_and_sizes_with_them(commands):
    sizing = {"tensor_parallel": 2, "num_gpus": 2, "enable_rag": True, "rag_num_docs": 3, "json": True}
    result = run_module({"command": "datasize", "model": "llama3.1-8b", "extra_args": sizing})
    assert result["engine_argv"][3:] == [
        "datasize", "--model", "llama3.1-8b", "--tensor-parallel", "2", "--num-gpus", "2", "--enable-rag",
        "--rag-num-docs", "3", "--json",
    ]  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    assert importlib.import_module("kvcache.cli").main(result["engine_argv"][3:], out, err) == 0, err.getvalue()
    report = json.loads(out.getvalue())
    assert report["tensor_parallel"] == 2 and report["num_gpus_per_rank"] == 2
    assert report["rag_bytes_per_rank"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (
            {"extra_args": {"user_loop": "sideways"}},
            "extra_args: user_loop: must be one of closed, open, got 'sideways'",
        ),
        ({"extra_args": {"rag_top_k": 0}}, "extra_args: rag_top_k: must be >= 1, got 0"),
        ({"extra_args": {"tensor_parallel": 1.5}}, "extra_args: tensor_parallel: must be an integer, got 1.5"),
        (
            {"extra_args": {"log_level": "debug"}},
            "extra_args: log_level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'debug'",
        ),
        ({"extra_args": {"enable_rag": "yes"}}, "extra_args: enable_rag: must be true or false, got 'yes'"),
    ],
)
def test_bad_reference_option_values_fail_before_anything_runs(commands, args, message):
    failure = fail_module(dict(args, exec_type="mpi", hosts=["h1", "h2"]))
    assert failure["msg"] == message
    assert failure["option"] == "extra_args"
    assert commands["calls"] == [[DEFAULT_PY, "-m", "kvcache", "describe"]]  # not even mpirun --version


def test_a_run_only_reference_option_is_refused_for_datasize(commands):
    failure = fail_module({"command": "datasize", "extra_args": {"user_loop": "open"}})
    assert failure["msg"].startswith("extra_args: 'user_loop': 'kvcache datasize' has no --user-loop flag")


def test_mlperf_run_under_mpi_builds_the_prefix_and_the_engines_argv(commands):
    args = {"command": "mlperf run", "exec_type": "mpi", "hosts": ["h1", "h2"], "cache_dir": "/mnt/kv",
            "results_dir": "/var/tmp/mlperf", "extra_args": {"category": "closed", "option": "all"}}  # fmt: skip
    for check_mode in (False, True):
        result = run_module(args, check_mode=check_mode)
        assert result["engine_argv"] == [DEFAULT_PY, "-m", "kvcache", "mlperf", "run", "--cache-dir", "/mnt/kv",
                                         "--results-dir", "/var/tmp/mlperf", "--category", "closed",
                                         "--option", "all"]  # fmt: skip
        assert result["argv"] == result["mpi_prefix"] + result["engine_argv"]
        assert result["num_processes"] == 2 and result["changed"] is False


@pytest.mark.parametrize(
    "args, message",
    [
        ({"output": "/tmp/r.json"}, "output: 'kvcache mlperf run' has no --output flag (an option of run, baseline)"),
        ({"extra_args": {"option": 2}}, "extra_args: option: must be a string, got 2"),
        ({"exec_type": "container", "container_image": "kv", "cache_dir": "/c"},
         "results_dir: exec_type=container needs results_dir, the directory of the results tree to mount"),
    ],
)  # fmt: skip
def test_mlperf_run_bad_input_fails_naming_the_option(commands, args, message):
    failure = fail_module(dict(args, command="mlperf run"))
    assert failure["msg"] == message
    assert failure["option"] == message.split(":")[0]


def test_mlperf_run_in_a_container_mounts_the_results_tree(commands):
    result = run_module({"command": "mlperf run", "exec_type": "container", "container_image": "kv", "python": "py",
                         "cache_dir": "/mnt/kv", "results_dir": "/srv/mlperf"})  # fmt: skip
    assert result["argv"][:10] == ["docker", "run", "--rm", "--network", "host", "-v", "/mnt/kv:/mnt/kv",
                                   "-v", "/srv/mlperf:/srv/mlperf", "kv"]  # fmt: skip
    assert result["argv"][10:] == result["engine_argv"]
