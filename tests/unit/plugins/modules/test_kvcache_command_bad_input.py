"""Bad input to kvcache_command, one table: the module fails, names the option, says it briefly, changes nothing.

Every case runs the whole module (external commands replaced, conftest.py) with the automatic
hostfile directory moved into a temporary directory, which is compared entry by entry before and
after the run; the cases about files prepare what they need there first.
"""

import os
import stat

import pytest
from ansible_collections.storagebench.kvcache.plugins.module_utils.mpi_launch import HOSTFILE_MARKER
from ansible_collections.storagebench.kvcache.plugins.modules import kvcache_command
from ansible_collections.storagebench.kvcache.tests.unit.plugins.modules import module_harness as harness

# A message longer than this is not short.
MAX_MESSAGE = 300
HUGE = 100_000
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="device nodes and other users' directories need root")
MPI = {"exec_type": "mpi", "mpi_flavor": "openmpi"}
TWO_HOSTS = dict(MPI, hosts=["h1", "h2"])
# More hosts than fit on the command line: the module writes an automatic hostfile.
MANY_HOSTS = dict(MPI, hosts=[f"n{i}" for i in range(65)])


def _file(root):
    with open(os.path.join(root, "files", "hosts"), "w") as handle:
        handle.write("precious user data\n")


def _file_marked_late(root):
    with open(os.path.join(root, "files", "hosts"), "w") as handle:
        handle.write("h1 slots=1\n" + HOSTFILE_MARKER + "\n")


def _directory(root):
    os.mkdir(os.path.join(root, "files", "hosts"))


def _symlink(root):
    _file(root)
    os.rename(os.path.join(root, "files", "hosts"), os.path.join(root, "files", "target"))
    os.symlink(os.path.join(root, "files", "target"), os.path.join(root, "files", "hosts"))


def _fifo(root):
    os.mkfifo(os.path.join(root, "files", "hosts"))


def _device(root):
    os.mknod(os.path.join(root, "files", "hosts"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))


def _auto_symlink(root):
    os.mkdir(os.path.join(root, "elsewhere"))
    os.symlink(os.path.join(root, "elsewhere"), os.path.join(root, "auto"))


def _auto_shared(root):
    os.mkdir(os.path.join(root, "auto"))
    os.chmod(os.path.join(root, "auto"), 0o1777)


def _auto_not_a_directory(root):
    with open(os.path.join(root, "auto"), "w") as handle:
        handle.write("x")


def _auto_other_owner(root):
    os.mkdir(os.path.join(root, "auto"))
    os.chown(os.path.join(root, "auto"), 65534, 65534)


# (case id, module arguments, the option named, whether the message starts with "option:" (the
# module's own checks) or only names it (AnsibleModule's type, choices and required checks), setup).
# "{files}" in an argument is the temporary directory for the hostfile cases.
CASES = [
    # hosts
    ("host-like-a-flag", dict(MPI, hosts=["-oProxyCommand=x"]), "hosts", True, None),
    ("host-with-semicolon", dict(MPI, hosts=["h1;reboot"]), "hosts", True, None),
    ("host-command-substitution", dict(MPI, hosts=["$(reboot)"]), "hosts", True, None),
    ("host-zero-slots", dict(MPI, hosts=["h1:0"]), "hosts", True, None),
    ("host-slots-not-a-number", dict(MPI, hosts=["h1:x"]), "hosts", True, None),
    ("hosts-slots-on-some", dict(MPI, hosts=["h1:2", "h2"]), "hosts", True, None),
    ("host-twice-different-slots", dict(MPI, hosts=["h1:2", "h1:3"]), "hosts", True, None),
    ("host-huge-name", dict(MPI, hosts=["a" * HUGE]), "hosts", True, None),
    ("host-empty", dict(MPI, hosts=["h1", " "]), "hosts", True, None),
    ("host-ipv6-mpich", dict(MPI, mpi_flavor="mpich", hosts=["fe80::1", "h2"]), "hosts", True, None),
    # process counts
    ("num-processes-zero", dict(TWO_HOSTS, num_processes=0), "num_processes", True, None),
    ("num-processes-negative", dict(TWO_HOSTS, num_processes=-4), "num_processes", True, None),
    ("num-processes-beyond-slots", dict(MPI, hosts=["h1:1", "h2:1"], num_processes=3), "num_processes", True, None),
    ("num-processes-not-a-number", dict(TWO_HOSTS, num_processes="abc"), "num_processes", False, None),
    ("num-processes-beyond-c-int", dict(TWO_HOSTS, num_processes=2**31), "num_processes", True, None),
    ("num-processes-huge", dict(TWO_HOSTS, num_processes=10**4000), "num_processes", True, None),
    ("processes-per-host-beyond-c-int", dict(TWO_HOSTS, processes_per_host=2**40), "processes_per_host", True, None),
    ("host-slots-beyond-c-int", dict(MPI, hosts=["h1:" + "9" * 30]), "hosts", True, None),
    ("hosts-slots-sum-beyond-c-int", dict(MPI, hosts=["h1:2147483647", "h2:1"]), "num_processes", True, None),
    ("host-slots-superscript", dict(MPI, hosts=["h1:\u00b2"]), "hosts", True, None),
    ("mpi-params-n-superscript", dict(TWO_HOSTS, mpi_params=["-n", "\u00b2"]), "mpi_params", True, None),
    ("mpi-params-n-beyond-c-int", dict(TWO_HOSTS, mpi_params=["-n", "9" * 5000]), "mpi_params", True, None),
    ("processes-per-host-zero", dict(TWO_HOSTS, processes_per_host=0), "processes_per_host", True, None),
    ("processes-per-host-negative", dict(TWO_HOSTS, processes_per_host=-2), "processes_per_host", True, None),
    ("processes-per-host-with-slots", dict(MPI, hosts=["h1:2"], processes_per_host=2), "processes_per_host", True,
     None),
    # choices and unknown options
    ("exec-type-unknown", {"exec_type": "pbs"}, "exec_type", False, None),
    ("mpi-flavor-unknown", dict(TWO_HOSTS, mpi_flavor="lam"), "mpi_flavor", False, None),
    ("command-unknown", {"command": "destroy"}, "command", False, None),
    ("container-engine-unknown", {"exec_type": "container", "container_image": "kv", "container_engine": "lxc"},
     "container_engine", False, None),
    # engine options
    ("model-unknown", {"model": "llama-9000"}, "model", True, None),
    ("model-huge", {"model": "m" * HUGE}, "model", True, None),
    ("num-users-zero", {"num_users": 0}, "num_users", True, None),
    ("duration-negative", {"duration": -1}, "duration", True, None),
    ("duration-for-datasize", {"command": "datasize", "duration": 5}, "duration", True, None),
    ("duration-nan", {"duration": float("nan")}, "duration", True, None),
    ("duration-beyond-maximum", {"duration": 1e300}, "duration", True, None),
    ("num-users-huge", {"num_users": 10**4000}, "num_users", True, None),
    ("generation-mode-unknown", {"generation_mode": "slow"}, "generation_mode", True, None),
    ("performance-profile-empty", {"performance_profile": ""}, "performance_profile", True, None),
    ("gpu-mem-negative", {"gpu_mem_gb": -1}, "gpu_mem_gb", True, None),
    ("cache-dir-relative", {"cache_dir": "relative/dir"}, "cache_dir", True, None),
    ("cache-dir-empty", {"cache_dir": ""}, "cache_dir", True, None),
    ("python-like-a-flag", {"python": "-c"}, "python", True, None),
    ("extra-args-unknown-key", {"extra_args": {"warp_speed": True}}, "extra_args", True, None),
    ("extra-args-huge-key", {"extra_args": {"k" * HUGE: True}}, "extra_args", True, None),
    ("extra-args-flag-syntax", {"extra_args": {"--rm": True}}, "extra_args", True, None),
    ("extra-args-first-class", {"extra_args": {"model": "tiny-1b"}}, "extra_args", True, None),
    ("extra-args-list-value", {"extra_args": {"io_depth": [1, 2]}}, "extra_args", True, None),
    # extra_args values, checked against the engine's contract like a config-file value
    ("extra-args-bool-as-word", {"extra_args": {"keep_cache": "yes"}}, "extra_args", True, None),
    ("extra-args-bool-as-number", {"extra_args": {"quiet": 0}}, "extra_args", True, None),
    ("extra-args-int-as-word", {"extra_args": {"io_chunk_mib": "abc"}}, "extra_args", True, None),
    ("extra-args-int-as-bool", {"extra_args": {"io_depth": True}}, "extra_args", True, None),
    ("extra-args-not-finite", {"extra_args": {"stats_interval": float("nan")}}, "extra_args", True, None),
    ("extra-args-beyond-maximum", {"extra_args": {"io_depth": 10**6}}, "extra_args", True, None),
    ("extra-args-huge-int", {"extra_args": {"max_requests": 10**4000}}, "extra_args", True, None),
    ("extra-args-not-a-choice", {"extra_args": {"io_engine": "x" * HUGE}}, "extra_args", True, None),
    ("extra-args-other-command", {"command": "datasize", "extra_args": {"keep_cache": True}}, "extra_args", True,
     None),
    ("extra-args-duration-nan", {"extra_args": {"duration": float("nan")}}, "extra_args", True, None),
    # mpi_params: bare words, separators, and generated flags checked like the options
    ("mpi-params-bare-word", dict(TWO_HOSTS, mpi_params=["echo", "INJECTED"]), "mpi_params", True, None),
    ("mpi-params-bare-word-string", dict(TWO_HOSTS, mpi_params="--report-bindings echo INJECTED"), "mpi_params", True,
     None),
    ("mpi-params-after-no-value-flag", dict(TWO_HOSTS, mpi_params=["--tag-output", "sh"]), "mpi_params", True, None),
    ("mpi-params-double-dash", dict(TWO_HOSTS, mpi_params=["--", "echo"]), "mpi_params", True, None),
    ("mpi-params-mpmd", dict(TWO_HOSTS, mpi_params=[":", "-n", "1", "echo"]), "mpi_params", True, None),
    ("mpi-params-appfile", dict(TWO_HOSTS, mpi_params=["--app", "/etc/appfile"]), "mpi_params", True, None),
    ("mpi-params-version", dict(TWO_HOSTS, mpi_params=["--version"]), "mpi_params", True, None),
    ("mpi-params-n-zero", dict(TWO_HOSTS, mpi_params=["-n", "0"]), "mpi_params", True, None),
    ("mpi-params-n-word", dict(TWO_HOSTS, mpi_params=["-n", "abc"]), "mpi_params", True, None),
    ("mpi-params-n-beyond-slots", dict(MPI, hosts=["h1:1", "h2:1"], mpi_params=["-n", "99"]), "mpi_params", True,
     None),
    ("mpi-params-host-injection", dict(TWO_HOSTS, mpi_params=["-host", "a;reboot"]), "mpi_params", True, None),
    ("mpi-params-hostfile-relative", dict(TWO_HOSTS, mpi_params=["--hostfile", "h.txt"]), "mpi_params", True, None),
    ("mpi-params-env-name", dict(TWO_HOSTS, mpi_params=["-x", "A B=1"]), "mpi_params", True, None),
    ("mpi-params-missing-value", dict(TWO_HOSTS, mpi_params=["--map-by"]), "mpi_params", True, None),
    ("mpi-params-unterminated", dict(TWO_HOSTS, mpi_params="--tag 'open"), "mpi_params", True, None),
    ("mpi-params-mapping", dict(TWO_HOSTS, mpi_params={"n": 4}), "mpi_params", True, None),
    ("mpi-params-huge-word", dict(TWO_HOSTS, mpi_params=["y" * HUGE]), "mpi_params", True, None),
    ("mpich-ppn-zero", dict(TWO_HOSTS, mpi_flavor="mpich", mpi_params=["-ppn", "0"]), "mpi_params", True, None),
    ("mpich-configfile", dict(TWO_HOSTS, mpi_flavor="mpich", mpi_params=["-configfile", "/x"]), "mpi_params", True,
     None),
    # hostfile
    ("hostfile-relative", dict(TWO_HOSTS, hostfile="hosts.txt"), "hostfile", True, None),
    ("hostfile-empty", dict(TWO_HOSTS, hostfile=""), "hostfile", True, None),
    ("hostfile-unmarked-file", dict(TWO_HOSTS, hostfile="{files}/hosts"), "hostfile", True, _file),
    ("hostfile-mark-not-first", dict(TWO_HOSTS, hostfile="{files}/hosts"), "hostfile", True, _file_marked_late),
    ("hostfile-directory", dict(TWO_HOSTS, hostfile="{files}/hosts"), "hostfile", True, _directory),
    ("hostfile-symlink", dict(TWO_HOSTS, hostfile="{files}/hosts"), "hostfile", True, _symlink),
    ("hostfile-fifo", dict(TWO_HOSTS, hostfile="{files}/hosts"), "hostfile", True, _fifo),
    pytest.param("hostfile-device", dict(TWO_HOSTS, hostfile="{files}/hosts"), "hostfile", True, _device,
                 marks=AS_ROOT),
    ("hostfile-missing-directory", dict(TWO_HOSTS, hostfile="{files}/missing/hosts"), "hostfile", True, None),
    ("auto-hostfile-dir-symlink", MANY_HOSTS, "hostfile", True, _auto_symlink),
    ("auto-hostfile-dir-shared", MANY_HOSTS, "hostfile", True, _auto_shared),
    ("auto-hostfile-dir-is-a-file", MANY_HOSTS, "hostfile", True, _auto_not_a_directory),
    pytest.param("auto-hostfile-dir-other-owner", MANY_HOSTS, "hostfile", True, _auto_other_owner, marks=AS_ROOT),
    # a NUL byte, which no program argument can carry, anywhere in a value
    ("nul-in-hostfile", dict(TWO_HOSTS, hostfile="{files}/a\0b"), "hostfile", True, None),
    ("nul-in-mpi-params", dict(TWO_HOSTS, mpi_params=["--tag\0x"]), "mpi_params", True, None),
    ("nul-in-cache-dir", {"cache_dir": "/kv\0x"}, "cache_dir", True, None),
    ("nul-in-env-value", {"env": {"A": "x\0y"}}, "env", True, None),
    ("nul-in-extra-args-value", {"extra_args": {"io_engine": "x\0y"}}, "extra_args", True, None),
    # env, ssh_command, mpi_bin
    ("env-name-with-equals", {"env": {"A=B": "1"}}, "env", True, None),
    ("env-name-with-space", dict(TWO_HOSTS, env={"BAD NAME": 1}), "env", True, None),
    ("env-name-digit-first", {"exec_type": "container", "container_image": "kv", "cache_dir": "/kv",
                              "env": {"1X": 1}}, "env", True, None),
    ("ssh-command-unterminated", dict(TWO_HOSTS, ssh_command="ssh -F 'x"), "ssh_command", True, None),
    ("ssh-command-a-flag", dict(TWO_HOSTS, ssh_command="-oProxyCommand=x"), "ssh_command", True, None),
    ("ssh-command-mpich-options", dict(TWO_HOSTS, mpi_flavor="mpich", ssh_command="ssh -F /etc/kv/ssh_config"),
     "ssh_command", True, None),
    ("mpi-bin-a-flag", dict(TWO_HOSTS, mpi_flavor="auto", mpi_bin="--help"), "mpi_bin", True, None),
    ("mpi-bin-empty", dict(TWO_HOSTS, mpi_bin=""), "mpi_bin", True, None),
    # container
    ("container-without-image", {"exec_type": "container", "cache_dir": "/kv"}, "container_image", False, None),
    ("container-image-a-flag", {"exec_type": "container", "container_image": "-v", "cache_dir": "/kv"},
     "container_image", True, None),
    ("container-without-cache-dir", {"exec_type": "container", "container_image": "kv"}, "cache_dir", True, None),
    ("container-output-relative", {"exec_type": "container", "container_image": "kv", "cache_dir": "/kv",
                                   "output": "result.json"}, "output", True, None),
    ("container-cache-dir-with-colon", {"exec_type": "container", "container_image": "kv", "cache_dir": "/kv:ro"},
     "cache_dir", True, None),
]  # fmt: skip


def _case_id(case):
    return case.values[0] if hasattr(case, "values") else case[0]


def test_the_table_is_large_and_every_case_is_named_once():
    names = [_case_id(case) for case in CASES]
    assert len(names) >= 25
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name, args, option, prefixed, setup", CASES, ids=[_case_id(case) for case in CASES])
def test_bad_input_fails_naming_the_option_briefly_and_changes_nothing(
    commands, tmp_path, monkeypatch, tree_snapshot, name, args, option, prefixed, setup
):
    (tmp_path / "files").mkdir()
    monkeypatch.setattr(kvcache_command, "HOSTFILE_DIR", str(tmp_path / "auto"))
    if setup is not None:
        setup(str(tmp_path))
    args = dict((key, value.replace("{files}", str(tmp_path / "files")) if isinstance(value, str) else value)
                for key, value in args.items())  # fmt: skip
    before = tree_snapshot(tmp_path)

    failure = harness.fail_module(kvcache_command.main, args)

    message = failure["msg"]
    if prefixed:
        assert message.startswith(option + ":"), message
        assert failure.get("option") == option
    else:
        assert option in message, message
    assert len(message) <= MAX_MESSAGE, f"{len(message)} characters: {message[:400]}"
    assert tree_snapshot(tmp_path) == before
