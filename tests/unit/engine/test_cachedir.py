"""The run's own directory: refused system paths, what is created, and that only it is removed."""

import json
import os
import socket

import pytest

from kvcache.cachedir import MARKER, OWNER_PREFIX, RUN_PREFIX, RunDirectory, process_start_ticks, validate_cache_dir
from kvcache.errors import UsageError


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
    assert owner["pid_start_ticks"] == process_start_ticks(os.getpid()) is not None


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
