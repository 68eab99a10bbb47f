"""exec_type=slurm: the srun prefix builder, and the kvcache_command module run in-process with it.

The module's external commands are replaced (`PYTHON -m kvcache describe` answers with the real contract);
srun is a stand-in executable on PATH, or missing. The module itself is never mocked.
"""

import json
import os
import shlex

import pytest
from ansible.module_utils import basic
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import DEFAULT_PYTHON, OptionError
from ansible_collections.storagebench.kvcache.plugins.module_utils.slurm_launch import (
    build_srun_prefix,
    check_time_limit,
)
from ansible_collections.storagebench.kvcache.plugins.modules import kvcache_command
from ansible_collections.storagebench.kvcache.tests.unit.plugins.modules import module_harness as harness

THREE_BY_TWO = ["srun", "--nodes=3", "--ntasks=6", "--ntasks-per-node=2", "--nodelist=h1,h2,h3", "--mpi=pmix",
                "--cpu-bind=none"]  # fmt: skip
ENGINE = [DEFAULT_PYTHON, "-m", "kvcache", "run", "--model", "tiny-1b"]


@pytest.fixture
def slurm(monkeypatch, tmp_path, description):
    """A PATH with a stand-in `srun` only, the engine's describe answered, every command the module runs recorded."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(kvcache_command, "HOSTFILE_DIR", str(tmp_path / "auto"))
    state = {"calls": [], "bin": bin_dir}

    def run_command(self, args, **kwargs):
        state["calls"].append(list(args))
        if list(args[1:]) == ["-m", "kvcache", "describe"]:
            return 0, json.dumps(description), ""
        raise AssertionError(f"unexpected command {args!r}")

    harness.patch_exits(monkeypatch)
    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    return state


def run_module(args, check_mode=False):
    return harness.run_module(
        kvcache_command.main, dict({"exec_type": "slurm", "model": "tiny-1b"}, **args), check_mode
    )


def fail_module(args):
    return harness.fail_module(kvcache_command.main, dict({"exec_type": "slurm", "model": "tiny-1b"}, **args))


def srun_line(script):
    """The last line of an sbatch script: the srun command."""
    return script.rstrip("\n").splitlines()[-1]


# --- the builder --------------------------------------------------------------------------------------


def test_three_hosts_two_tasks_each_one_value_per_element():
    launch = build_srun_prefix(["h1", "h2", "h3"], processes_per_host=2)
    assert launch["prefix"] == THREE_BY_TWO
    assert launch["num_processes"] == 6
    assert launch["slots"] == [("h1", 2), ("h2", 2), ("h3", 2)]
    assert launch["hostfile"] is None


def test_host_slots_give_the_tasks_and_uneven_slots_leave_placement_to_srun():
    even = build_srun_prefix(["h1:4", "h2:4"])["prefix"]
    assert even[1:4] == ["--nodes=2", "--ntasks=8", "--ntasks-per-node=4"]
    uneven = build_srun_prefix(["h1:2", "h2:1"])
    assert uneven["prefix"][1:3] == ["--nodes=2", "--ntasks=3"]
    assert not any(token.startswith("--ntasks-per-node") for token in uneven["prefix"])
    assert any("different slot counts" in warning for warning in uneven["warnings"])


def test_without_hosts_slurm_picks_the_nodes():
    assert build_srun_prefix([], num_processes=4) == {
        "prefix": ["srun", "--ntasks=4", "--mpi=pmix", "--cpu-bind=none"],
        "num_processes": 4,
        "slots": [],
        "hostfile": None,
        "sbatch": ["--ntasks=4"],
        "warnings": [],
    }


def test_partition_account_time_and_pmi_plugin():
    prefix = build_srun_prefix(["h1"], slurm_mpi="pmi2", partition="nvme", account="team-a", time_limit=90)["prefix"]
    assert prefix[-5:] == ["--mpi=pmi2", "--cpu-bind=none", "--partition=nvme", "--account=team-a", "--time=90"]


def test_ten_thousand_hosts_go_through_a_nodelist_file():
    hosts = [f"node{i:05d}" for i in range(10000)]
    launch = build_srun_prefix(hosts, hostfile_dir="/var/tmp/kv-hostfiles")
    path = launch["hostfile"]["path"]
    assert path.startswith("/var/tmp/kv-hostfiles/hostfile-")
    assert launch["hostfile"]["content"].splitlines() == hosts
    assert f"--nodelist={path}" in launch["prefix"]
    assert not any("node00001" in token for token in launch["prefix"])
    assert launch["prefix"][1:3] == ["--nodes=10000", "--ntasks=10000"]


def test_slurm_params_replace_the_generated_flags_of_the_same_name():
    prefix = build_srun_prefix(["h1", "h2"], slurm_params=["--cpu-bind=cores", "-p", "debug", "--exclusive"])["prefix"]
    assert prefix == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--nodelist=h1,h2", "--mpi=pmix",
                      "--cpu-bind=cores", "-p", "debug", "--exclusive"]  # fmt: skip
    string_form = build_srun_prefix(["h1"], partition="nvme", slurm_params="--partition 'big one' --mpi=none")
    assert string_form["prefix"] == ["srun", "--nodes=1", "--ntasks=1", "--ntasks-per-node=1", "--nodelist=h1",
                                     "--cpu-bind=none", "--partition", "big one", "--mpi=none"]  # fmt: skip


def test_a_task_count_in_slurm_params_replaces_the_planned_one():
    launch = build_srun_prefix(["h1:2", "h2:2"], slurm_params=["-n", "3"])
    assert launch["num_processes"] == 3
    assert launch["prefix"].count("-n") == 1 and not any(t.startswith("--ntasks=") for t in launch["prefix"])
    assert "--ntasks=3" in launch["sbatch"]


@pytest.mark.parametrize(
    "params, message",
    [
        (["echo", "INJECTED"], "slurm_params: 'echo' is neither a flag"),
        (["--", "/bin/sh"], "slurm_params: '--'"),
        ([":", "-n", "1"], "slurm_params: ':'"),
        (["--version"], "slurm_params: --version makes srun print"),
        (["-p"], "slurm_params: -p needs a value"),
        (["--ntasks=abc"], "slurm_params: --ntasks 'abc'"),
        (["--time", "25:61"], "slurm_params: --time"),
    ],
)
def test_bad_slurm_params_fail_naming_slurm_params(params, message):
    with pytest.raises(OptionError) as error:
        build_srun_prefix(["h1"], slurm_params=params)
    assert error.value.option == "slurm_params"
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("value", [30, "30", "30:15", "1:00:00", "2-12", "2-12:30", "2-12:30:00", "0"])
def test_slurm_time_formats_are_accepted(value):
    assert check_time_limit(value) == str(value)


@pytest.mark.parametrize("value", ["1h", "-5", "1:60", "1:00:60", "2-24", "2-1:60", "", "1.5", True, 2.5, "1-2-3"])
def test_bad_time_limits_fail_naming_slurm_time_limit(value):
    with pytest.raises(OptionError) as error:
        build_srun_prefix(["h1"], time_limit=value)
    assert error.value.option == "slurm_time_limit"
    assert str(error.value).startswith("slurm_time_limit: ")


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"partition": "a b"}, "slurm_partition"),
        ({"account": "-x"}, "slurm_account"),
        ({"slurm_mpi": "pmix; reboot"}, "slurm_mpi"),
        ({"srun_path": "--help"}, "srun_path"),
        ({"hostfile": "relative"}, "hostfile"),
        ({"num_processes": 0}, "num_processes"),
    ],
)
def test_other_bad_values_fail_naming_their_option(kwargs, option):
    with pytest.raises(OptionError) as error:
        build_srun_prefix(["h1"], **kwargs)
    assert error.value.option == option


def test_hostile_hosts_are_refused_like_under_mpi():
    for hosts in (["-w/etc/passwd"], ["h1;reboot"], ["fe80::1"]):
        with pytest.raises(OptionError) as error:
            build_srun_prefix(hosts)
        assert error.value.option == "hosts"


# --- the module -------------------------------------------------------------------------------------


def test_module_builds_the_srun_argv(slurm):
    result = run_module({"hosts": ["h1", "h2", "h3"], "processes_per_host": 2, "env": {"UCX_TLS": "tcp"}})
    assert result["slurm_prefix"] == THREE_BY_TWO
    assert result["argv"] == THREE_BY_TWO + ["env", "UCX_TLS=tcp"] + ENGINE
    assert result["engine_argv"] == ENGINE
    assert result["mpi_prefix"] == [] and result["mpi_flavor"] is None
    assert result["num_processes"] == 6
    assert result["slots"] == {"h1": 2, "h2": 2, "h3": 2}
    assert result["sbatch_script"] is None
    assert result["changed"] is False
    assert shlex.split(result["cmd"]) == result["argv"]
    assert slurm["calls"] == [[DEFAULT_PYTHON, "-m", "kvcache", "describe"]]  # srun itself never runs


def test_module_writes_the_nodelist_file_for_ten_thousand_hosts(slurm, tmp_path):
    hosts = [f"node{i:05d}" for i in range(10000)]
    result = run_module({"hosts": hosts})
    path = result["hostfile"]["path"]
    assert os.path.dirname(path) == str(tmp_path / "auto")
    with open(path) as handle:
        assert handle.read().splitlines() == hosts
    assert f"--nodelist={path}" in result["argv"]
    assert "node00042" not in result["cmd"]
    assert result["changed"] is True
    assert run_module({"hosts": hosts})["changed"] is False


def test_module_bad_time_limit_fails_naming_slurm_time_limit(slurm):
    failure = fail_module({"hosts": ["h1"], "slurm_time_limit": "tomorrow"})
    assert failure["option"] == "slurm_time_limit"
    assert failure["msg"].startswith("slurm_time_limit: 'tomorrow' is not a Slurm time")


def test_missing_srun_fails_naming_srun_path_before_anything_runs(slurm):
    os.unlink(slurm["bin"] / "srun")
    failure = fail_module({"hosts": ["h1"]})
    assert failure["option"] == "srun_path"
    assert failure["msg"].startswith("srun_path: exec_type=slurm needs srun")
    assert "'srun' is not on PATH" in failure["msg"]
    assert slurm["calls"] == []  # not even the engine's describe
    failure = fail_module({"hosts": ["h1"], "srun_path": "/opt/slurm/bin/srun"})
    assert failure["option"] == "srun_path"
    assert "'/opt/slurm/bin/srun' is not an executable file" in failure["msg"]


def test_srun_path_given_as_a_path_is_the_first_element(slurm):
    srun = str(slurm["bin"] / "srun")
    result = run_module({"hosts": ["h1"], "srun_path": srun})
    assert result["argv"][0] == srun


def test_sbatch_script_lines_and_its_srun_line_parse_back_to_argv(slurm, tmp_path):
    path = tmp_path / "job.sbatch"
    result = run_module({"hosts": ["h1", "h2", "h3"], "processes_per_host": 2, "slurm_batch": True,
                         "slurm_partition": "nvme", "slurm_account": "team-a", "slurm_time_limit": "0-01:30",
                         "cache_dir": "/mnt/kv dir", "sbatch_script_path": str(path)})  # fmt: skip
    script = result["sbatch_script"]
    lines = script.splitlines()
    assert lines[:8] == ["#!/bin/bash", "#SBATCH --nodes=3", "#SBATCH --ntasks=6", "#SBATCH --ntasks-per-node=2",
                         "#SBATCH --nodelist=h1,h2,h3", "#SBATCH --partition=nvme", "#SBATCH --account=team-a",
                         "#SBATCH --time=0-01:30"]  # fmt: skip
    assert shlex.split(srun_line(script)) == result["argv"]
    assert "/mnt/kv dir" in result["argv"]
    assert result["changed"] is True
    assert path.read_text() == script
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_an_existing_script_path_is_refused_and_left_alone(slurm, tmp_path):
    path = tmp_path / "job.sbatch"
    path.write_text("precious\n")
    failure = fail_module({"hosts": ["h1"], "slurm_batch": True, "sbatch_script_path": str(path)})
    assert failure["option"] == "sbatch_script_path"
    assert failure["msg"].startswith("sbatch_script_path: ")
    assert path.read_text() == "precious\n"


def test_check_mode_writes_no_file(slurm, tmp_path, tree_snapshot):
    path = tmp_path / "out" / "job.sbatch"
    path.parent.mkdir()
    before = tree_snapshot(tmp_path)
    hosts = [f"node{i:05d}" for i in range(100)]
    result = run_module({"hosts": hosts, "slurm_batch": True, "sbatch_script_path": str(path)}, check_mode=True)
    assert result["changed"] is True  # it would write both files
    assert result["hostfile"] is not None and result["sbatch_script"].startswith("#!/bin/bash\n")
    assert tree_snapshot(tmp_path) == before


def test_mpi_params_are_not_used_under_slurm(slurm):
    result = run_module({"hosts": ["h1"], "mpi_params": ["--mca", "btl", "tcp"]})
    assert "--mca" not in result["argv"]
    assert any(warning.startswith("mpi_params: not used with exec_type=slurm") for warning in result["warnings"])
