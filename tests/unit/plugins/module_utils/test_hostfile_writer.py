"""The hostfile writer: only a file the module wrote is replaced, nothing is left behind on a failure."""

import os
import stat

import pytest
from ansible_collections.storagebench.kvcache.plugins.module_utils import hostfile_writer
from ansible_collections.storagebench.kvcache.plugins.module_utils.hostfile_writer import write_hostfile
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import OptionError
from ansible_collections.storagebench.kvcache.plugins.module_utils.mpi_launch import HOSTFILE_MARKER

CONTENT = HOSTFILE_MARKER + "\nh1 slots=1\nh2 slots=1\n"
OTHER = HOSTFILE_MARKER + "\nh3 slots=2\n"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes and other users' files needs root")


def refused(path, content=CONTENT, **kwargs):
    with pytest.raises(OptionError) as err:
        write_hostfile(str(path), content, **kwargs)
    assert err.value.option == "hostfile"
    assert str(err.value).startswith("hostfile: ")
    assert len(str(err.value)) <= 300
    return str(err.value)


def read(path):
    with open(path) as handle:
        return handle.read()


def test_writes_a_marked_file_then_changes_it_only_when_the_content_differs(tmp_path):
    path = tmp_path / "hosts"
    assert write_hostfile(str(path), CONTENT) is True
    assert read(path) == CONTENT
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert write_hostfile(str(path), CONTENT) is False
    assert write_hostfile(str(path), OTHER) is True
    assert read(path) == OTHER
    assert os.listdir(tmp_path) == ["hosts"]


def test_check_mode_reports_a_change_and_writes_nothing(tmp_path):
    path = tmp_path / "hosts"
    assert write_hostfile(str(path), CONTENT, check_mode=True) is True
    assert os.listdir(tmp_path) == []


def test_an_existing_file_without_the_mark_is_never_replaced(tmp_path, tree_snapshot):
    path = tmp_path / "hosts"
    path.write_text("precious user data\n")
    before = tree_snapshot(tmp_path)
    message = refused(path)
    assert "not a hostfile this module wrote" in message
    refused(path, check_mode=True)
    assert tree_snapshot(tmp_path) == before


def test_the_mark_must_be_the_first_line(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("node1 slots=4\n" + HOSTFILE_MARKER + "\n")
    refused(path)
    assert read(path) == "node1 slots=4\n" + HOSTFILE_MARKER + "\n"


def test_a_directory_is_refused(tmp_path, tree_snapshot):
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "keep").write_text("x")
    before = tree_snapshot(tmp_path)
    assert "is a directory" in refused(tmp_path / "hosts")
    assert tree_snapshot(tmp_path) == before


def test_a_symlink_is_refused_and_its_target_untouched(tmp_path, tree_snapshot):
    target = tmp_path / "target"
    target.write_text(HOSTFILE_MARKER + "\nold\n")
    os.symlink(target, tmp_path / "hosts")
    before = tree_snapshot(tmp_path)
    assert "symlink" in refused(tmp_path / "hosts")
    assert tree_snapshot(tmp_path) == before


def test_a_fifo_is_refused_without_blocking(tmp_path, tree_snapshot):
    os.mkfifo(tmp_path / "hosts")
    before = tree_snapshot(tmp_path)
    assert "not a regular file" in refused(tmp_path / "hosts")
    assert tree_snapshot(tmp_path) == before


@needs_root
def test_a_device_node_is_refused(tmp_path, tree_snapshot):
    os.mknod(tmp_path / "hosts", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    before = tree_snapshot(tmp_path)
    assert "device node" in refused(tmp_path / "hosts")
    assert tree_snapshot(tmp_path) == before


def test_a_missing_directory_is_refused_and_not_created(tmp_path):
    assert "does not exist" in refused(tmp_path / "missing" / "hosts")
    assert os.listdir(tmp_path) == []


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def no_space(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hostfile_writer.os, "rename", no_space)
    assert "No space left on device" in refused(tmp_path / "hosts")
    assert os.listdir(tmp_path) == []


# --- the module's own directory for automatic hostfiles ---------------------------------------------


def test_the_private_directory_is_created_0755_whatever_the_umask(tmp_path):
    directory = tmp_path / "hostfiles"
    old = os.umask(0o077)
    try:
        assert write_hostfile(str(directory / "hostfile-1"), CONTENT, private_directory=True) is True
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755
    assert read(directory / "hostfile-1") == CONTENT


def test_check_mode_does_not_create_the_private_directory(tmp_path):
    directory = tmp_path / "hostfiles"
    assert write_hostfile(str(directory / "hostfile-1"), CONTENT, check_mode=True, private_directory=True) is True
    assert not directory.exists()


def test_an_existing_private_directory_keeps_its_mode(tmp_path):
    directory = tmp_path / "hostfiles"
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)
    write_hostfile(str(directory / "hostfile-1"), CONTENT, private_directory=True)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


def test_a_symlinked_private_directory_is_refused(tmp_path, tree_snapshot):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, tmp_path / "hostfiles")
    before = tree_snapshot(tmp_path)
    assert "symlink" in refused(tmp_path / "hostfiles" / "hostfile-1", private_directory=True)
    assert tree_snapshot(tmp_path) == before


def test_a_private_directory_writable_by_others_is_refused_and_keeps_its_mode(tmp_path, tree_snapshot):
    directory = tmp_path / "hostfiles"
    directory.mkdir()
    os.chmod(directory, 0o777)
    before = tree_snapshot(tmp_path)
    assert "writable by other users" in refused(directory / "hostfile-1", private_directory=True)
    assert tree_snapshot(tmp_path) == before


@needs_root
def test_a_private_directory_owned_by_another_user_is_refused_and_kept(tmp_path, tree_snapshot):
    directory = tmp_path / "hostfiles"
    directory.mkdir()
    os.chown(directory, 65534, 65534)
    before = tree_snapshot(tmp_path)
    assert "belongs to uid 65534" in refused(directory / "hostfile-1", private_directory=True)
    assert tree_snapshot(tmp_path) == before


def test_a_failed_write_removes_the_private_directory_it_created(tmp_path, monkeypatch):
    def no_space(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hostfile_writer.os, "rename", no_space)
    refused(tmp_path / "hostfiles" / "hostfile-1", private_directory=True)
    assert os.listdir(tmp_path) == []
