"""The result's environment block: the cache dir's mount as the engine sees it (the tmpfs warning depends on it)."""

import os

from kvcache import __version__
from kvcache.environment import describe_environment, mount_info


def test_a_hidden_lower_mount_does_not_win(tmp_path):
    # tmpfs mounted over an xfs on the same point: the run lands on tmpfs, so the engine must say tmpfs
    # (and warn that it measures memory), not the xfs underneath that the kernel no longer shows.
    cache = tmp_path / "cache"
    cache.mkdir()
    point = str(tmp_path)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 252:0 / / rw - ext4 /dev/vda rw\n"
        f"31 22 259:2 / {point} rw - xfs /dev/nvme0n1 rw\n"
        f"45 31 0:60 / {point} rw - tmpfs tmpfs rw,size=8g\n"
    )
    assert mount_info(str(cache), str(mountinfo)) == {
        "mount_point": point, "fstype": "tmpfs", "device": "tmpfs", "options": "rw,size=8g",
    }  # fmt: skip


def test_a_mount_point_with_escaped_characters(tmp_path):
    odd = tmp_path / "tab\there back\\slash"
    odd.mkdir()
    escaped = str(odd).replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"22 1 252:0 / / rw - ext4 /dev/vda rw\n50 22 0:70 / {escaped} rw - xfs /dev/sdc rw\n")
    found = mount_info(str(odd / "x"), str(mountinfo))
    assert found["mount_point"] == str(odd) and found["fstype"] == "xfs"


def test_describe_environment_describes_the_cache_dir_as_kvcache_cluster_info_does(tmp_path):
    environment = describe_environment(str(tmp_path))
    assert environment["engine_version"] == __version__ and environment["cache_dir"] == str(tmp_path)
    mount = environment["cache_dir_mount"]
    assert mount["exists"] is True and mount["probed_path"] == os.path.realpath(str(tmp_path))
    assert mount["fstype"] and mount["mount_point"] and mount["free_bytes"] > 0
    assert mount["rotational"] in (True, False, None)
