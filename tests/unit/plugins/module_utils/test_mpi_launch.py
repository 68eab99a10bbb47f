"""MPI prefix and hostfile builder: the seed's behaviours, MPICH, hostfiles, validation and quoting."""

import shlex

import pytest
from ansible_collections.storagebench.kvcache.plugins.module_utils.host_probe import parse_mpi_version
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import (
    OptionError,
    split_launcher_params,
)
from ansible_collections.storagebench.kvcache.plugins.module_utils.mpi_launch import (
    HOSTFILE_HOST_THRESHOLD,
    HOSTFILE_MARKER,
    MPICH,
    OPENMPI,
    build_mpi_prefix,
    normalize_hosts,
    parse_host,
    plan_slots,
)


def prefix(hosts, **kwargs):
    return build_mpi_prefix(hosts, **kwargs)["prefix"]


def flag_value(argv, flag):
    return argv[argv.index(flag) + 1]


# --- seed behaviours -------------------------------------------------------------------------------


def test_seed_openmpi_prefix_for_two_hosts():
    assert prefix(["h1", "h2"]) == [
        "mpirun", "-n", "2", "-host", "h1:1,h2:1", "--bind-to", "none", "--map-by", "node",
    ]  # fmt: skip


def test_num_processes_defaults_to_number_of_hosts():
    launch = build_mpi_prefix(["a", "b", "c"])
    assert launch["num_processes"] == 3
    assert flag_value(launch["prefix"], "-n") == "3"


@pytest.mark.parametrize(
    "num_processes, expected",
    [
        (3, [("a", 1), ("b", 1), ("c", 1)]),
        (5, [("a", 2), ("b", 2), ("c", 1)]),
        (7, [("a", 3), ("b", 2), ("c", 2)]),
        (9, [("a", 3), ("b", 3), ("c", 3)]),
    ],
)
def test_slots_are_np_div_hosts_plus_one_for_the_first_np_mod_hosts(num_processes, expected):
    launch = build_mpi_prefix(["a", "b", "c"], num_processes=num_processes)
    assert launch["slots"] == expected
    assert flag_value(launch["prefix"], "-host") == ",".join(f"{host}:{count}" for host, count in expected)
    assert sum(count for _host, count in launch["slots"]) == num_processes


def test_fewer_processes_than_hosts_leaves_out_hosts_without_a_slot():
    launch = build_mpi_prefix(["a", "b", "c"], num_processes=2)
    assert launch["slots"] == [("a", 1), ("b", 1)]
    assert flag_value(launch["prefix"], "-host") == "a:1,b:1"


def test_explicit_slots_on_every_host():
    launch = build_mpi_prefix(["a:4", "b:2"], num_processes=5)
    assert launch["slots"] == [("a", 4), ("b", 2)]
    assert flag_value(launch["prefix"], "-host") == "a:4,b:2"
    assert flag_value(launch["prefix"], "-n") == "5"


def test_explicit_slots_default_num_processes_to_their_sum():
    assert build_mpi_prefix(["a:4", "b:2"])["num_processes"] == 6


def test_explicit_slots_fewer_than_processes_is_an_error_naming_num_processes():
    with pytest.raises(OptionError) as err:
        build_mpi_prefix(["a:1", "b:1"], num_processes=3)
    assert err.value.option == "num_processes"
    assert "3 processes but only 2 slots" in str(err.value)


def test_oversubscribe_allows_more_processes_than_slots():
    argv = prefix(["a:1", "b:1"], num_processes=3, oversubscribe=True)
    assert flag_value(argv, "-n") == "3"
    assert "--oversubscribe" in argv


def test_map_by_socket_on_one_host():
    argv = prefix(["only"], num_processes=4)
    assert argv[:5] == ["mpirun", "-n", "4", "-host", "only:4"]
    assert flag_value(argv, "--map-by") == "socket"
    assert flag_value(argv, "--bind-to") == "none"


def test_flag_order_oversubscribe_then_allow_run_as_root_then_mpi_params():
    argv = prefix(["h1", "h2"], oversubscribe=True, allow_run_as_root=True, mpi_params=["--report-bindings"])
    assert argv[5:] == ["--bind-to", "none", "--map-by", "node", "--oversubscribe", "--allow-run-as-root",
                        "--report-bindings"]  # fmt: skip


@pytest.mark.parametrize("mpi_bin", ["mpiexec", "/usr/lib64/openmpi/bin/mpiexec"])
def test_mpiexec_works(mpi_bin):
    argv = prefix(["h1", "h2"], mpi_bin=mpi_bin)
    assert argv == [mpi_bin, "-n", "2", "-host", "h1:1,h2:1", "--bind-to", "none", "--map-by", "node"]


def test_processes_per_host_sets_slots_and_default_count():
    launch = build_mpi_prefix(["a", "b"], processes_per_host=4)
    assert launch["num_processes"] == 8
    assert flag_value(launch["prefix"], "-host") == "a:4,b:4"


def test_env_becomes_open_mpi_x_flags():
    argv = prefix(["a", "b"], env={"OMP_NUM_THREADS": 1, "FLAG": True})
    assert "-x" in argv
    assert [argv[i + 1] for i, token in enumerate(argv) if token == "-x"] == ["OMP_NUM_THREADS=1", "FLAG=1"]


def test_ssh_command_open_mpi_4_and_5():
    argv4 = prefix(["a", "b"], ssh_command="ssh -F /etc/kv/ssh_config", flavor_version=(4, 1))
    assert argv4[argv4.index("--mca") :][:3] == ["--mca", "plm_rsh_agent", "ssh -F /etc/kv/ssh_config"]
    argv5 = prefix(["a", "b"], ssh_command="ssh -F /etc/kv/ssh_config", flavor_version=(5, 0))
    assert argv5[argv5.index("--mca") :][:3] == ["--mca", "plm_ssh_agent", "ssh -F /etc/kv/ssh_config"]


# --- MPICH / Hydra -----------------------------------------------------------------------------------


def test_mpich_dialect_has_none_of_open_mpis_flags():
    launch = build_mpi_prefix(["h1", "h2"], flavor=MPICH, num_processes=4, oversubscribe=True, allow_run_as_root=True,
                              env={"UCX_TLS": "tcp,self"})  # fmt: skip
    argv = launch["prefix"]
    assert argv == ["mpirun", "-n", "4", "-hosts", "h1:2,h2:2", "-genv", "UCX_TLS", "tcp,self"]
    for flag in ("--bind-to", "--map-by", "--oversubscribe", "--allow-run-as-root", "-host", "-x", "--hostfile"):
        assert flag not in argv
    assert any("oversubscribe" in warning for warning in launch["warnings"])


def test_mpich_processes_per_host_gives_ppn():
    argv = prefix(["h1", "h2"], flavor=MPICH, mpi_bin="mpiexec", processes_per_host=3)
    assert argv == ["mpiexec", "-n", "6", "-hosts", "h1:3,h2:3", "-ppn", "3"]


def test_mpich_hostfile_uses_host_colon_n_lines_and_f():
    hosts = [f"node{i:03d}" for i in range(HOSTFILE_HOST_THRESHOLD + 1)]
    launch = build_mpi_prefix(hosts, flavor=MPICH, processes_per_host=2)
    path = launch["hostfile"]["path"]
    assert flag_value(launch["prefix"], "-f") == path
    assert "-hosts" not in launch["prefix"]
    lines = launch["hostfile"]["content"].splitlines()
    assert lines[:2] == [HOSTFILE_MARKER, "node000:2"]
    assert len(lines) == 1 + len(hosts)
    assert "slots=" not in launch["hostfile"]["content"]


def test_mpich_ssh_command_uses_launcher_exec_and_needs_one_program():
    argv = prefix(["a", "b"], flavor=MPICH, ssh_command="/usr/local/bin/kv-ssh")
    assert argv[-4:] == ["-launcher", "ssh", "-launcher-exec", "/usr/local/bin/kv-ssh"]
    with pytest.raises(OptionError) as err:
        prefix(["a", "b"], flavor=MPICH, ssh_command="ssh -F /etc/kv/ssh_config")
    assert err.value.option == "ssh_command"


def test_mpich_rejects_ipv6_hosts():
    with pytest.raises(OptionError) as err:
        prefix(["fe80::1", "10.0.0.2"], flavor=MPICH)
    assert err.value.option == "hosts"


# --- hostfile ----------------------------------------------------------------------------------------


def test_up_to_threshold_hosts_stay_on_the_command_line():
    hosts = [f"n{i}" for i in range(HOSTFILE_HOST_THRESHOLD)]
    launch = build_mpi_prefix(hosts)
    assert launch["hostfile"] is None
    assert "-host" in launch["prefix"]


def test_more_hosts_than_threshold_use_an_open_mpi_hostfile():
    hosts = [f"n{i}" for i in range(HOSTFILE_HOST_THRESHOLD + 1)]
    launch = build_mpi_prefix(hosts, num_processes=131, hostfile_dir="/var/tmp/kv")
    path = launch["hostfile"]["path"]
    assert path.startswith("/var/tmp/kv/hostfile-")
    assert launch["prefix"][:5] == ["mpirun", "-n", "131", "--hostfile", path]
    assert "-host" not in launch["prefix"]
    lines = launch["hostfile"]["content"].splitlines()
    assert lines[:3] == [HOSTFILE_MARKER, "n0 slots=3", "n1 slots=2"]
    assert len(lines) == 1 + 65


def test_default_hostfile_directory_is_not_the_roles_cache_directory():
    hosts = [f"n{i}" for i in range(HOSTFILE_HOST_THRESHOLD + 1)]
    path = build_mpi_prefix(hosts)["hostfile"]["path"]
    assert path.startswith("/var/tmp/storagebench-kvcache-hostfiles/hostfile-")
    assert not path.startswith("/var/tmp/storagebench-kvcache/")


def test_long_command_uses_a_hostfile_even_with_few_hosts():
    hosts = [f"h{i}.example.com" for i in range(4)]
    assert build_mpi_prefix(hosts, command_chars=100)["hostfile"] is None
    assert build_mpi_prefix(hosts, command_chars=40000)["hostfile"] is not None


def test_hostfile_option_always_uses_that_path():
    launch = build_mpi_prefix(["a", "b"], hostfile="/tmp/kv-hosts")
    assert launch["hostfile"] == {"path": "/tmp/kv-hosts", "content": HOSTFILE_MARKER + "\na slots=1\nb slots=1\n"}
    assert flag_value(launch["prefix"], "--hostfile") == "/tmp/kv-hosts"


def test_hostfile_must_be_absolute():
    with pytest.raises(OptionError) as err:
        build_mpi_prefix(["a"], hostfile="hosts.txt")
    assert err.value.option == "hostfile"


def test_default_hostfile_path_follows_content():
    hosts = [f"n{i}" for i in range(100)]
    first = build_mpi_prefix(hosts)["hostfile"]["path"]
    assert build_mpi_prefix(list(hosts))["hostfile"]["path"] == first
    assert build_mpi_prefix(hosts, num_processes=200)["hostfile"]["path"] != first


def test_ten_thousand_hosts():
    hosts = [f"node{i:05d}.cluster.example.com" for i in range(10000)]
    launch = build_mpi_prefix(hosts, num_processes=40000)
    assert launch["hostfile"]["content"].count("\n") == 1 + 10000
    assert launch["hostfile"]["content"].startswith(HOSTFILE_MARKER + "\nnode00000.cluster.example.com slots=4\n")
    assert len(shlex.join(launch["prefix"])) < 200


def test_ipv6_hosts_go_to_an_open_mpi_hostfile():
    launch = build_mpi_prefix(["[fe80::1]:2", "10.0.0.2:2"])
    assert launch["hostfile"]["content"] == HOSTFILE_MARKER + "\nfe80::1 slots=2\n10.0.0.2 slots=2\n"


# --- hosts validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry, expected",
    [
        ("node1", ("node1", None)),
        ("node1.example.com:4", ("node1.example.com", 4)),
        ("10.1.2.3", ("10.1.2.3", None)),
        ("10.1.2.3:2", ("10.1.2.3", 2)),
        ("fe80::1", ("fe80::1", None)),
        ("[fe80::1]:8", ("fe80::1", 8)),
        ("rack_1-node", ("rack_1-node", None)),
    ],
)
def test_parse_host(entry, expected):
    assert parse_host(entry) == expected


@pytest.mark.parametrize(
    "entry",
    ["h1;reboot", "h 1", "$(reboot)", "`id`", "-oProxyCommand=x", "", "a..b", "300.1.2.3", "h1:x", "h1:-1", "[h1]:2",
     "h1|cat", "a" * 64],
)  # fmt: skip
def test_invalid_hosts_are_refused_naming_hosts(entry):
    with pytest.raises(OptionError) as err:
        build_mpi_prefix([entry])
    assert err.value.option == "hosts"


def test_host_colon_zero_is_an_error():
    with pytest.raises(OptionError) as err:
        build_mpi_prefix(["a:0", "b:1"])
    assert err.value.option == "hosts"
    assert "host:0" in str(err.value)


def test_mixed_explicit_and_bare_hosts_is_an_error():
    with pytest.raises(OptionError) as err:
        build_mpi_prefix(["a:2", "b"])
    assert err.value.option == "hosts"
    assert "every host or on none" in str(err.value)


def test_duplicates_are_merged():
    entries, warnings = normalize_hosts(["a", "b", "A", "a"])
    assert entries == [("a", None), ("b", None)]
    assert len(warnings) == 2
    launch = build_mpi_prefix(["a", "b", "a"])
    assert launch["num_processes"] == 2
    assert flag_value(launch["prefix"], "-host") == "a:1,b:1"


def test_duplicates_with_different_counts_are_an_error():
    with pytest.raises(OptionError) as err:
        normalize_hosts(["a:2", "a:3"])
    assert err.value.option == "hosts"


@pytest.mark.parametrize("value", [0, -1])
def test_num_processes_below_one_is_an_error(value):
    with pytest.raises(OptionError) as err:
        build_mpi_prefix(["a"], num_processes=value)
    assert err.value.option == "num_processes"


def test_processes_per_host_with_explicit_slots_is_an_error():
    with pytest.raises(OptionError) as err:
        plan_slots([("a", 2)], processes_per_host=2)
    assert err.value.option == "processes_per_host"


def test_mpi_bin_must_not_look_like_a_flag():
    with pytest.raises(OptionError) as err:
        build_mpi_prefix(["a"], mpi_bin="--help")
    assert err.value.option == "mpi_bin"


# --- mpi_params: splitting, replacement, quoting -----------------------------------------------------


def test_mpi_params_string_is_split_like_a_shell():
    assert split_launcher_params("mpi_params", "--mca btl tcp,self --tag 'a b'") == [
        "--mca",
        "btl",
        "tcp,self",
        "--tag",
        "a b",
    ]
    assert split_launcher_params("mpi_params", ["--mca", "btl", "tcp,self"]) == ["--mca", "btl", "tcp,self"]
    with pytest.raises(OptionError) as err:
        split_launcher_params("mpi_params", "--tag 'unterminated")
    assert err.value.option == "mpi_params"


def test_a_generated_flag_in_mpi_params_replaces_the_generated_one():
    argv = prefix(["h1", "h2"], mpi_params="--map-by ppr:2:node --bind-to core --mca btl ^openib")
    assert argv == ["mpirun", "-n", "2", "-host", "h1:1,h2:1",
                    "--map-by", "ppr:2:node", "--bind-to", "core", "--mca", "btl", "^openib"]  # fmt: skip


def test_mpi_params_np_replaces_n_and_sets_num_processes():
    launch = build_mpi_prefix(["h1", "h2"], mpi_params=["-np", "4"], oversubscribe=True)
    assert "-n" not in launch["prefix"]
    assert launch["prefix"].count("-np") == 1
    assert launch["num_processes"] == 4


def test_mpi_params_host_replaces_hosts_and_hostfile():
    hosts = [f"n{i}" for i in range(100)]
    launch = build_mpi_prefix(hosts, mpi_params=["--hostfile", "/etc/mine"])
    assert launch["hostfile"] is None
    assert launch["prefix"].count("--hostfile") == 1
    assert flag_value(launch["prefix"], "--hostfile") == "/etc/mine"


def test_mpi_params_replace_env_and_ssh_agent_by_name():
    argv = prefix(["h1", "h2"], env={"A": "1", "B": "2"}, ssh_command="ssh -F x",
                  mpi_params=["-x", "A=9", "--mca", "plm_rsh_agent", "rsh"])  # fmt: skip
    assert "A=1" not in argv and "A=9" in argv and "B=2" in argv
    assert argv.count("plm_rsh_agent") == 1 and "ssh -F x" not in argv


def test_mpich_mpi_params_replace_ppn_and_genv():
    argv = prefix(["h1", "h2"], flavor=MPICH, processes_per_host=2, env={"A": "1"},
                  mpi_params="-ppn 1 -genv A 2")  # fmt: skip
    assert argv.count("-ppn") == 1 and flag_value(argv, "-ppn") == "1"
    assert argv.count("-genv") == 1 and argv[-2:] == ["A", "2"]


def test_hostile_params_stay_single_quoted_arguments():
    hostile = ["--tag-output", "--mca", "orte_tmpdir_base", "/tmp/a b;touch /tmp/pwned", "-x", "X=$(reboot)"]
    argv = prefix(["h1", "h2"], mpi_params=hostile)
    assert argv[-len(hostile) :] == hostile
    line = shlex.join(argv)
    assert shlex.split(line) == argv
    assert "'/tmp/a b;touch /tmp/pwned'" in line
    assert "'X=$(reboot)'" in line


def test_hostile_string_params_are_split_not_executed():
    argv = prefix(["h1"], mpi_params="--mca x '$(rm -rf /)' --tag-output")
    assert argv[-4:] == ["--mca", "x", "$(rm -rf /)", "--tag-output"]
    assert shlex.split(shlex.join(argv)) == argv
    # A bare word after them would be the program mpirun starts: refused, not passed on.
    with pytest.raises(OptionError) as err:
        prefix(["h1"], mpi_params="--mca x '$(rm -rf /)' ';' reboot")
    assert err.value.option == "mpi_params"
    assert "';'" in str(err.value)


def test_env_names_are_checked():
    with pytest.raises(OptionError) as err:
        prefix(["a"], env={"BAD NAME": "1"})
    assert err.value.option == "env"


# --- flavor detection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mpirun (Open MPI) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/\n", (OPENMPI, (4, 1))),
        ("mpirun (Open MPI) 5.0.3\n\nReport bugs to https://www.open-mpi.org/community/help/\n", (OPENMPI, (5, 0))),
        (
            "HYDRA build details:\n    Version:                                 4.0.2\n    Release Date: ...",
            (MPICH, (4, 0)),
        ),
        ("Intel(R) MPI Library for Linux* OS, Version 2021.10 Build 20230619", (MPICH, (2021, 10))),
        ("bash: mpirun: command not found", (None, None)),
        ("", (None, None)),
    ],
)
def test_the_launcher_dialect_and_version_the_module_reads(text, expected):
    """kvcache_command reads `MPI_BIN --version` with the host probe; the prefix builder gets these two."""
    probe = parse_mpi_version(text)
    assert (probe["flavor"], probe["version_tuple"]) == expected


def test_unknown_flavor_is_an_error():
    with pytest.raises(OptionError) as err:
        build_mpi_prefix(["a"], flavor="lam")
    assert err.value.option == "mpi_flavor"
