"""--output: refused before the run unless it names a regular file (or nothing) in a directory we can write."""

import json
import os
import stat

import pytest

from kvcache.errors import UsageError
from kvcache.output import check_output_path, write_json_atomically

RESULT = {"schema": "storagebench.kvcache/result/v1", "status": "ok"}


def entries(directory):
    return sorted(os.listdir(directory))


def refused(path):
    with pytest.raises(UsageError) as info:
        check_output_path(str(path))
    assert info.value.option == "--output"
    return str(info.value)


def test_a_new_file_in_a_writable_directory_is_accepted_and_nothing_is_left(tmp_path):
    check_output_path(str(tmp_path / "result.json"))
    check_output_path(str(tmp_path / "result.json"))
    assert entries(tmp_path) == []  # the writability probe removes its file


def test_an_existing_regular_file_is_accepted(tmp_path):
    (tmp_path / "old.json").write_text("old")
    check_output_path(str(tmp_path / "old.json"))
    assert (tmp_path / "old.json").read_text() == "old"


def test_a_fifo_is_refused_and_kept(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert "is a FIFO" in refused(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and entries(tmp_path) == ["pipe"]


def test_a_character_device_is_refused_and_kept(tmp_path):
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    assert "is a character device" in refused(node)
    assert stat.S_ISCHR(os.lstat(node).st_mode) and entries(tmp_path) == ["null"]


def test_dev_null_itself_is_refused():
    assert "character device" in refused("/dev/null")


def test_a_symlink_is_refused_even_to_a_regular_file(tmp_path):
    target = tmp_path / "target.json"
    target.write_text("precious")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert "is a symlink" in refused(link)
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nowhere")
    assert "is a symlink" in refused(dangling)
    assert target.read_text() == "precious" and link.is_symlink()


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    assert "is a directory" in refused(tmp_path / "d")
    assert "names a directory" in refused(str(tmp_path / "absent") + "/")


def test_empty_output_is_refused():
    assert "must not be empty" in refused("")


def test_missing_directory_is_refused(tmp_path):
    assert "does not exist" in refused(tmp_path / "absent" / "r.json")


def test_proc_is_refused_before_the_run_even_for_root():
    # os.access says yes to root here; only creating a file tells the truth.
    text = refused("/proc/x.json")
    assert "cannot create files in /proc" in text


def test_read_only_directory_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into a mode 0555 directory; /proc covers root")
    directory = tmp_path / "ro"
    directory.mkdir(mode=0o555)
    assert "cannot create files" in refused(directory / "r.json")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)], ids=["umask-022", "umask-077"])
def test_result_is_created_0666_less_the_umask(tmp_path, umask, mode):
    path = tmp_path / "result.json"
    old = os.umask(umask)
    try:
        write_json_atomically(str(path), RESULT)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert json.loads(path.read_text()) == RESULT


def test_write_replaces_a_regular_file_atomically_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("old")
    write_json_atomically(str(path), RESULT)
    assert json.loads(path.read_text()) == RESULT
    assert entries(tmp_path) == ["result.json"]


def test_write_refuses_a_path_that_became_a_fifo_during_the_run(tmp_path):
    path = tmp_path / "result.json"
    check_output_path(str(path))
    os.mkfifo(path)  # appeared while the benchmark ran
    with pytest.raises(OSError, match="is now a FIFO"):
        write_json_atomically(str(path), RESULT)
    assert stat.S_ISFIFO(os.lstat(path).st_mode) and entries(tmp_path) == ["result.json"]


def test_write_into_a_vanished_directory_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        write_json_atomically(str(tmp_path / "gone" / "r.json"), RESULT)


def test_relative_output_resolves_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_output_path("r.json")
    write_json_atomically("r.json", RESULT)
    assert entries(tmp_path) == ["r.json"]
