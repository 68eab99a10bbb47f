"""mpi_params: every element a flag or the value of the flag before it; generated flags checked like the options."""

import pytest
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import OptionError
from ansible_collections.storagebench.kvcache.plugins.module_utils.mpi_launch import build_mpi_prefix
from ansible_collections.storagebench.kvcache.plugins.module_utils.mpi_params import (
    MPICH,
    MPICH_VALUE_COUNTS,
    OPENMPI,
    OPENMPI_VALUE_COUNTS,
    read_mpi_params,
)


def refused(hosts, **kwargs):
    with pytest.raises(OptionError) as err:
        build_mpi_prefix(hosts, **kwargs)
    return err.value


@pytest.mark.parametrize(
    "params",
    [
        ["echo", "INJECTED"],  # the case: echo became the program mpirun ran
        ["--tag-output", "echo"],  # a flag that takes no value
        ["--mca", "btl", "tcp,self", "touch", "/tmp/x"],  # after a flag's values
        ["-x", "A=1", "sh"],
        [""],
        ["-"],
    ],
)
def test_a_bare_word_is_refused_not_run_as_the_program(params):
    error = refused(["h1", "h2"], mpi_params=params)
    assert error.option == "mpi_params"
    assert str(error).startswith("mpi_params: ")
    assert "program" in str(error)


def test_a_bare_word_in_a_string_is_refused_too():
    assert refused(["h1"], mpi_params="--report-bindings echo INJECTED").option == "mpi_params"


@pytest.mark.parametrize(
    "params, reason",
    [
        (["--", "echo", "x"], "'--' ends"),
        (["--report-bindings", "--"], "'--' ends"),
        (["--tag-output", ":", "-n", "1", "echo"], "MPMD"),
        (["-x", ":"], "MPMD"),
        (["--app", "/etc/appfile"], "replaces the program"),
        (["--version"], "print and exit"),
        (["-h"], "print and exit"),
        (["--do-not-launch"], "without launching"),
        (["-N", "4"], "processes_per_host"),
        (["--npernode", "2"], "processes_per_host"),
    ],
)
def test_separators_and_flags_that_stop_the_engine_from_running_are_refused(params, reason):
    error = refused(["h1", "h2"], mpi_params=params)
    assert error.option == "mpi_params"
    assert reason in str(error)


@pytest.mark.parametrize("params", [["--map-by"], ["--mca", "btl"], ["-x"], ["-np"]])
def test_a_flag_missing_its_value_is_refused(params):
    error = refused(["h1"], mpi_params=params)
    assert error.option == "mpi_params"
    assert "needs" in str(error)


def test_values_that_look_like_flags_belong_to_the_flag_before_them():
    argv = build_mpi_prefix(["h1"], mpi_params=["--mca", "btl", "^openib", "--mca", "x", "-y"])["prefix"]
    assert argv[-6:] == ["--mca", "btl", "^openib", "--mca", "x", "-y"]


def test_flag_equals_value_is_one_element():
    user = read_mpi_params(["--map-by=ppr:1:node", "--tag-output"], OPENMPI)
    assert user.replaced == {"map-by"}


def test_mpich_flags_and_values():
    user = read_mpi_params(["-genv", "A", "1", "-iface", "eth0", "-prepend-rank"], MPICH)
    assert user.replaced == {("env", "A")}
    with pytest.raises(OptionError):
        read_mpi_params(["-prepend-rank", "eth0"], MPICH)
    with pytest.raises(OptionError) as err:
        read_mpi_params(["-configfile", "/etc/cfg"], MPICH)
    assert "replaces the program" in str(err.value)


def test_the_value_tables_cover_the_generated_flags_and_ssh_agent():
    for name in ("n", "np", "host", "H", "hostfile", "machinefile", "map-by", "bind-to", "x"):
        assert OPENMPI_VALUE_COUNTS[name] == 1
    assert OPENMPI_VALUE_COUNTS["mca"] == 2
    for name in ("n", "np", "f", "hosts", "ppn", "launcher", "launcher-exec"):
        assert MPICH_VALUE_COUNTS[name] == 1
    assert MPICH_VALUE_COUNTS["genv"] == 2


# --- generated flags given in mpi_params are checked like the options they stand for -------------------


@pytest.mark.parametrize(
    "hosts, params, expected",
    [
        (["h1", "h2"], ["-n", "0"], "mpi_params: -n 0: must be at least 1"),
        (["h1", "h2"], ["-np", "-3"], "mpi_params: -np '-3': the process count must be a whole number"),
        (["h1", "h2"], ["-n", "abc"], "mpi_params: -n 'abc': the process count must be a whole number"),
        (["h1:1", "h2:1"], ["-n", "99"], "mpi_params: -n 99: 99 processes but only 2 slots on 2 hosts"),
        (["h1:1", "h2:1"], ["--np=3"], "mpi_params: --np 3: 3 processes but only 2 slots"),
        (["h1", "h2"], ["-host", "a:1,b:1", "-n", "3"], "mpi_params: -host 'a:1,b:1': 3 processes but only 2 slots"),
        (["h1", "h2"], ["-host", "a;reboot"], "mpi_params: -host 'a;reboot': 'a;reboot' is not a hostname"),
        (["h1", "h2"], ["--host", "-oProxyCommand=x"], "mpi_params: --host needs a value"),
        (["h1", "h2"], ["--hostfile", "hosts.txt"], "mpi_params: --hostfile 'hosts.txt': the hostfile must be"),
        (["h1", "h2"], ["-x", "BAD NAME=1"], "mpi_params: 'BAD NAME' is not a valid environment variable name"),
        (["h1", "h2"], ["--mca", "plm_rsh_agent", ""], "mpi_params: --mca plm_rsh_agent needs the ssh command"),
    ],
)
def test_generated_flags_in_mpi_params_fail_like_the_options(hosts, params, expected):
    error = refused(hosts, mpi_params=params)
    assert error.option == "mpi_params"
    assert str(error).startswith(expected)


def test_the_same_count_as_num_processes_fails_with_the_same_message():
    by_option = refused(["h1:1", "h2:1"], num_processes=99)
    by_params = refused(["h1:1", "h2:1"], mpi_params=["-n", "99"])
    assert str(by_params) == "mpi_params: -n 99: " + str(by_option)[len("num_processes: ") :]


def test_processes_per_host_slots_bound_a_count_given_in_mpi_params():
    assert refused(["h1", "h2"], processes_per_host=1, mpi_params=["-np", "5"]).option == "mpi_params"
    launch = build_mpi_prefix(["h1", "h2"], processes_per_host=1, mpi_params=["-np", "5", "--oversubscribe"])
    assert launch["num_processes"] == 5
    assert launch["prefix"].count("--oversubscribe") == 1


def test_map_by_oversubscribe_modifier_counts_as_oversubscribe():
    launch = build_mpi_prefix(["h1:1", "h2:1"], mpi_params=["-n", "4", "--map-by", "node:OVERSUBSCRIBE"])
    assert launch["num_processes"] == 4


def test_a_count_on_bare_hosts_sizes_their_slots_like_num_processes():
    by_params = build_mpi_prefix(["h1", "h2"], mpi_params=["-n", "5"])
    by_option = build_mpi_prefix(["h1", "h2"], num_processes=5)
    assert by_params["slots"] == by_option["slots"] == [("h1", 3), ("h2", 2)]
    assert by_params["num_processes"] == 5
    assert by_params["prefix"][1:3] == ["-host", "h1:3,h2:2"]
    assert by_params["prefix"][-2:] == ["-n", "5"] and by_params["prefix"].count("-n") == 1


def test_a_host_list_in_mpi_params_gives_the_slots():
    launch = build_mpi_prefix(["h1", "h2"], mpi_params=["-host", "a:2,b", "-n", "3"])
    assert launch["slots"] == [("a", 2), ("b", 1)]
    assert "-host" in launch["prefix"] and launch["prefix"].count("-host") == 1


def test_mpich_ppn_in_mpi_params_is_checked_like_processes_per_host():
    error = refused(["h1", "h2"], flavor=MPICH, mpi_params=["-ppn", "0"])
    assert str(error) == "mpi_params: -ppn 0: must be at least 1"
    error = refused(["h1:1", "h2:1"], flavor=MPICH, mpi_params=["-ppn", "2"])
    assert str(error).startswith("mpi_params: -ppn 2: cannot be combined with host:N")
    launch = build_mpi_prefix(["h1", "h2"], flavor=MPICH, processes_per_host=1, mpi_params=["-ppn", "3"])
    assert launch["num_processes"] == 6
    assert launch["prefix"].count("-ppn") == 1 and launch["prefix"][-2:] == ["-ppn", "3"]


# --- hosts left without a process ------------------------------------------------------------------


def test_bare_hosts_left_with_no_slot_are_named_in_a_warning():
    launch = build_mpi_prefix(["a", "b", "c", "d"], num_processes=2)
    assert launch["slots"] == [("a", 1), ("b", 1)]
    assert [w for w in launch["warnings"] if w.startswith("hosts:")] == [
        "hosts: only 2 of 4 hosts get a process (2 in all); left out: c, d"
    ]


def test_many_hosts_left_out_are_named_briefly():
    hosts = [f"n{i}" for i in range(1000)]
    warnings = build_mpi_prefix(hosts, num_processes=1)["warnings"]
    assert warnings == [
        "hosts: only 1 of 1000 hosts get a process (1 in all); left out: n1, n2, n3, n4, n5 and 994 more"
    ]


def test_no_warning_when_every_host_gets_a_process():
    assert build_mpi_prefix(["a", "b"], num_processes=2)["warnings"] == []


def test_no_left_out_warning_when_mpi_params_gives_the_hosts():
    launch = build_mpi_prefix(["a", "b", "c"], num_processes=1, mpi_params=["-host", "x:1"])
    assert not [w for w in launch["warnings"] if "left out" in w]
