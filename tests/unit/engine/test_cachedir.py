"""The run's own directory: refused system paths, what is created, and that only it is removed."""

import io
import json
import os
import socket
import subprocess
import time

import pytest

from kvcache import cachedir
from kvcache.cachedir import (
    LIVE,
    MARKER,
    MAX_RUN_SECONDS,
    OWNER_PREFIX,
    RUN_PREFIX,
    STALE,
    STARTUP_GRACE_S,
    UNCHECKED,
    UNKNOWN,
    RunDirectory,
    other_run_warnings,
    other_runs,
    process_start_ticks,
    this_process,
    validate_cache_dir,
)
from kvcache.cli import main
from kvcache.errors import UsageError
from kvcache.storage_io import DIRECT_IO_PROBE


@pytest.mark.parametrize(
    "path", ["/", "/etc", "/usr", "/proc/x", "/sys", "/dev", "/etc/", "/usr/local/lib", "/dev/shm"]
)
def test_system_directories_are_refused(path):
    with pytest.raises(UsageError) as info:
        validate_cache_dir(path)
    assert info.value.option == "--cache-dir"
    assert "system directory" in str(info.value)


def test_symlink_to_a_system_directory_is_refused(tmp_path):
    link = tmp_path / "looks-harmless"
    link.symlink_to("/etc")
    with pytest.raises(UsageError, match="system directory"):
        validate_cache_dir(str(link))


@pytest.mark.parametrize("path", [None, ""])
def test_cache_dir_is_required(path):
    with pytest.raises(UsageError) as info:
        validate_cache_dir(path)
    assert info.value.option == "--cache-dir" and "required" in str(info.value)


def test_missing_directory_and_file_are_refused_without_creating_anything(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        validate_cache_dir(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        validate_cache_dir(str(tmp_path / "file"))
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_valid_directory_is_returned_resolved(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert validate_cache_dir(str(tmp_path / "link")) == os.path.realpath(real)
    monkeypatch.chdir(tmp_path)
    assert validate_cache_dir("real") == os.path.realpath(real)
    assert os.listdir(real) == []


def test_create_makes_run_dir_marker_and_rank_dir(tmp_path):
    run = RunDirectory(str(tmp_path), "20250101-000000-abcdef", 3)
    run.create()
    assert run.run_dir == str(tmp_path / (RUN_PREFIX + "20250101-000000-abcdef"))
    assert run.rank_dir == os.path.join(run.run_dir, "rank-3")
    assert os.path.isdir(run.rank_dir)
    assert "20250101-000000-abcdef" in (tmp_path / (RUN_PREFIX + "20250101-000000-abcdef") / MARKER).read_text()
    assert sorted(os.listdir(run.run_dir)) == sorted([MARKER, OWNER_PREFIX + "3", "rank-3"])
    assert os.stat(run.rank_dir).st_mode & 0o777 == 0o700
    owner = json.loads((tmp_path / (RUN_PREFIX + "20250101-000000-abcdef") / (OWNER_PREFIX + "3")).read_text())
    assert owner["run_id"] == "20250101-000000-abcdef" and owner["rank"] == 3
    assert owner["host"] == socket.gethostname() and owner["pid"] == os.getpid()
    assert owner["pid_start_ticks"] is not None
    assert owner["pid_start_ticks"] == process_start_ticks(os.getpid())


def test_remove_deletes_only_its_own(tmp_path):
    user_file = tmp_path / "precious.npy"
    user_file.write_bytes(b"user data")
    user_dir = tmp_path / "kvcache-run-not-ours"
    user_dir.mkdir()
    (user_dir / "x.kv").write_bytes(b"1")
    run = RunDirectory(str(tmp_path), "r1", 0)
    run.create()
    with open(os.path.join(run.rank_dir, "entry.kv"), "wb") as handle:
        handle.write(b"\0" * 8192)
    os.mkdir(os.path.join(run.rank_dir, "sub"))
    run.remove()
    assert sorted(os.listdir(tmp_path)) == ["kvcache-run-not-ours", "precious.npy"]
    assert user_file.read_bytes() == b"user data"
    assert (user_dir / "x.kv").read_bytes() == b"1"


def test_remove_twice_is_harmless(tmp_path):
    run = RunDirectory(str(tmp_path), "r2", 0)
    run.create()
    run.remove()
    run.remove()
    assert os.listdir(tmp_path) == []


def test_remove_keeps_a_run_dir_holding_foreign_files(tmp_path):
    run = RunDirectory(str(tmp_path), "r3", 0)
    run.create()
    stray = os.path.join(run.run_dir, "someone-elses.txt")
    with open(stray, "w") as handle:
        handle.write("keep me")
    run.remove()
    assert not os.path.exists(run.rank_dir)
    assert sorted(os.listdir(run.run_dir)) == sorted([MARKER, "someone-elses.txt"])


def test_remove_never_deletes_an_unmarked_run_dir(tmp_path):
    run = RunDirectory(str(tmp_path), "r4", 0)
    run.create()
    os.unlink(os.path.join(run.run_dir, MARKER))
    run.remove()
    assert os.path.isdir(run.run_dir) and os.listdir(run.run_dir) == []


def test_two_ranks_share_a_run_dir_and_the_last_removes_it(tmp_path):
    first = RunDirectory(str(tmp_path), "shared", 0)
    second = RunDirectory(str(tmp_path), "shared", 1)
    first.create()
    second.create()
    assert first.run_dir == second.run_dir
    assert sorted(os.listdir(first.run_dir)) == sorted(
        [MARKER, OWNER_PREFIX + "0", OWNER_PREFIX + "1", "rank-0", "rank-1"]
    )
    first.remove()
    assert sorted(os.listdir(second.run_dir)) == sorted([MARKER, OWNER_PREFIX + "1", "rank-1"])
    second.remove()
    assert os.listdir(tmp_path) == []


def test_either_rank_may_finish_last(tmp_path):
    first = RunDirectory(str(tmp_path), "shared", 0)
    second = RunDirectory(str(tmp_path), "shared", 1)
    first.create()
    second.create()
    second.remove()
    assert os.path.isdir(first.rank_dir)
    first.remove()
    assert os.listdir(tmp_path) == []


def test_two_objects_of_the_same_rank_never_share_a_namespace(tmp_path):
    RunDirectory(str(tmp_path), "same", 0).create()
    with pytest.raises(FileExistsError):
        RunDirectory(str(tmp_path), "same", 0).create()


def test_remove_without_create_leaves_other_ranks_alone(tmp_path):
    other = RunDirectory(str(tmp_path), "x", 1)
    other.create()
    RunDirectory(str(tmp_path), "x", 0).remove()  # a rank whose setup failed before create
    assert os.path.isdir(other.rank_dir)


# -- other runs' directories: who owns them, and what `kvcache clean` may remove -------------------
def fake_run(cache_dir, run_id, owners=(), rank_dirs=(), marker=True):
    """A run directory as the engine lays it out, with owner records given as dicts (or raw text)."""
    path = os.path.join(cache_dir, RUN_PREFIX + run_id)
    os.mkdir(path)
    if marker:
        with open(os.path.join(path, MARKER), "w") as handle:
            handle.write(f"storagebench.kvcache run {run_id}\n")  # the marker's text since the first version
    for rank, owner in owners:
        with open(os.path.join(path, OWNER_PREFIX + str(rank)), "w") as handle:
            handle.write(owner if isinstance(owner, str) else json.dumps(owner))
    for rank in rank_dirs:
        os.mkdir(os.path.join(path, f"rank-{rank}"))
        with open(os.path.join(path, f"rank-{rank}", "u0c1t1.1.kv"), "wb") as handle:
            handle.write(b"\0" * 4096)
    return path


def me(**changes):
    owner = this_process("x", 0)
    owner.update(changes)
    return owner


def dead_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def age(path, seconds):
    """Make a run directory and the directories in it look `seconds` old."""
    when = time.time() - seconds
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            os.utime(os.path.join(root, name), (when, when))
    os.utime(path, (when, when))


def states(cache_dir, own=None):
    return {run.name[len(RUN_PREFIX) :]: run.state for run in other_runs(str(cache_dir), own)}


def test_owner_records_tell_live_from_dead_runs(tmp_path):
    fake_run(str(tmp_path), "live", [(0, me())], [0])
    fake_run(str(tmp_path), "dead", [(0, me(pid=dead_pid()))], [0])
    fake_run(str(tmp_path), "reused", [(0, me(pid_start_ticks=me()["pid_start_ticks"] - 1))], [0])
    fake_run(str(tmp_path), "rebooted", [(0, me(boot_id="another-boot"))], [0])
    fake_run(str(tmp_path), "remote", [(0, me(host="elsewhere.example"))], [0])
    fake_run(str(tmp_path), "container", [(0, me(pid_namespace="pid:[1]"))], [0])
    fake_run(str(tmp_path), "mixed", [(0, me(pid=dead_pid())), (1, me())], [0, 1])  # one rank still runs
    assert states(tmp_path) == {
        "live": LIVE,
        "dead": STALE,
        "reused": STALE,  # the pid runs, but it is another process
        "rebooted": STALE,
        "remote": UNCHECKED,
        "container": UNCHECKED,
        "mixed": LIVE,
    }
    assert "live" not in states(tmp_path, own="live")  # a run never reports itself


def test_a_process_that_proc_hides_is_never_taken_for_dead(tmp_path, monkeypatch):
    # /proc mounted with hidepid shows no stat of other users' processes, yet they run.
    fake_run(str(tmp_path), "hidden", [(0, me())], [0])
    fake_run(str(tmp_path), "gone", [(0, me(pid=dead_pid()))], [0])
    monkeypatch.setattr(cachedir, "process_start_ticks", lambda pid: None)
    assert states(tmp_path) == {"hidden": UNCHECKED, "gone": STALE}


def test_runs_without_a_readable_owner_are_left_alone_until_no_run_can_be_that_old(tmp_path):
    old_format = fake_run(str(tmp_path), "old-format", [], [0])  # an engine before owner records
    damaged = fake_run(str(tmp_path), "damaged", [(0, "{not json")], [0])
    deep = fake_run(str(tmp_path), "deep", [(0, "[" * 3000)], [0])
    starting = fake_run(str(tmp_path), "starting")  # marker only: a rank is about to write its record
    fake_run(str(tmp_path), "not-ours", [(0, me(pid=dead_pid()))], [0], marker=False)
    os.symlink(starting, str(tmp_path / (RUN_PREFIX + "link")))
    assert states(tmp_path) == {"old-format": UNKNOWN, "damaged": UNKNOWN, "deep": UNKNOWN, "starting": UNKNOWN}
    for path in (old_format, damaged, deep):
        age(path, MAX_RUN_SECONDS + 60)
    age(starting, STARTUP_GRACE_S + 5)
    assert set(states(tmp_path).values()) == {STALE}


def test_warnings_name_the_sharing_run_and_the_clean_command(tmp_path):
    fake_run(str(tmp_path), "live", [(0, me())], [0])
    fake_run(str(tmp_path), "remote", [(0, me(host="elsewhere.example", pid=4242))], [0])
    fake_run(str(tmp_path), "dead1", [(0, me(pid=dead_pid()))], [0])
    fake_run(str(tmp_path), "dead2", [(0, me(pid=dead_pid()))], [0])
    lines = other_run_warnings(str(tmp_path), other_runs(str(tmp_path)))
    assert len(lines) == 3
    live, remote, stale = lines
    assert "kvcache-run-live" in live and f"pid {os.getpid()}" in live and "shared the storage" in live
    assert "elsewhere.example" in remote and "cannot check" in remote and "pid 4242" in remote
    assert "2 run directories" in stale and "kvcache-run-dead1" in stale and "kvcache-run-dead2" in stale
    assert f"kvcache clean --cache-dir {tmp_path}" in stale
    assert other_run_warnings(str(tmp_path), []) == []


def clean(cache_dir, *extra):
    out, err = io.StringIO(), io.StringIO()
    code = main(["clean", "--cache-dir", str(cache_dir), *extra], out, err)
    return code, out.getvalue(), err.getvalue()


def test_clean_removes_only_dead_runs_and_only_what_the_engine_made(tmp_path):
    (tmp_path / "precious.npy").write_bytes(b"user data")
    dead = fake_run(str(tmp_path), "dead", [(0, me(pid=dead_pid())), (1, me(pid=dead_pid()))], [0, 1])
    with open(os.path.join(dead, "rank-1", DIRECT_IO_PROBE), "wb"):
        pass
    with open(os.path.join(dead, "rank-1", "precondition-3.dat"), "wb"):  # a rank killed while preconditioning
        pass
    live = fake_run(str(tmp_path), "live", [(0, me())], [0])
    remote = fake_run(str(tmp_path), "remote", [(0, me(host="elsewhere.example"))], [0])
    user = fake_run(str(tmp_path), "user-files", [(0, me(pid=dead_pid()))], [0])
    (tmp_path / (RUN_PREFIX + "user-files") / "rank-0" / "notes.txt").write_text("mine")
    os.symlink(str(tmp_path / "precious.npy"), os.path.join(user, "rank-0", "u9c9t9.1.kv"))  # looks like ours
    before = sorted(os.listdir(tmp_path))

    code, out, err = clean(tmp_path, "--dry-run")
    assert (code, err) == (0, "")
    assert "would remove kvcache-run-dead" in out and "would be removed" in out
    assert sorted(os.listdir(tmp_path)) == before and os.listdir(os.path.join(dead, "rank-0")) == ["u0c1t1.1.kv"]

    code, out, err = clean(tmp_path)
    assert (code, err) == (0, "")
    assert not os.path.exists(dead)
    assert "removed kvcache-run-dead" in out
    assert "kept kvcache-run-live" in out and "running on this host" in out
    assert "kept kvcache-run-remote" in out and "elsewhere.example" in out
    assert "notes.txt" in out and "u9c9t9.1.kv" in out
    assert f"{tmp_path}: 1 run directory removed, 3 kept" in out
    assert os.listdir(os.path.join(live, "rank-0")) == ["u0c1t1.1.kv"]
    assert os.listdir(os.path.join(remote, "rank-0")) == ["u0c1t1.1.kv"]
    # The user's files stay, and so do the directories holding them, still marked as ours.
    assert sorted(os.listdir(os.path.join(user, "rank-0"))) == ["notes.txt", "u9c9t9.1.kv"]
    assert sorted(os.listdir(user)) == sorted([MARKER, OWNER_PREFIX + "0", "rank-0"])
    assert (tmp_path / "precious.npy").read_bytes() == b"user data"
    assert sorted(os.listdir(tmp_path)) == sorted(n for n in before if n != RUN_PREFIX + "dead")


@pytest.mark.parametrize(("argv", "message"), [([], "required"), (["--cache-dir", "/etc"], "system directory")])
def test_clean_refuses_bad_cache_dirs(argv, message):
    out, err = io.StringIO(), io.StringIO()
    assert main(["clean", *argv], out, err) == 2
    assert err.getvalue().startswith("kvcache clean: error: --cache-dir") and message in err.getvalue()
    assert out.getvalue() == ""


def test_clean_of_a_missing_directory_creates_nothing(tmp_path):
    code, _out, err = clean(tmp_path / "missing")
    assert code == 2 and "does not exist" in err
    assert os.listdir(tmp_path) == []
