"""The one host probe (kvcache/host_probe.py, also the modules' module_utils/host_probe.py) on synthetic texts
as the kernel and the MPI launchers print them, and on this machine."""

import os

import pytest

from kvcache import host_probe

MOUNTINFO = (
    "22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard\n"
    "30 22 0:25 / /var/tmp rw,nosuid shared:5 - tmpfs tmpfs rw,size=1024k\n"
    "31 22 259:2 / /mnt/nvme rw,noatime shared:6 - xfs /dev/nvme0n1p1 rw,attr2,inode64\n"
    "32 22 0:40 / /mnt/with\\040space rw - nfs4 srv:/export rw,vers=4.2\n"
)
NONE = {"mount_point": None, "fstype": None, "device": None, "options": None}


@pytest.mark.parametrize(
    "path, point, fstype, device, options",
    [
        ("/var/tmp/kv", "/var/tmp", "tmpfs", "tmpfs", "rw,nosuid,size=1024k"),
        ("/var/tmpfoo", "/", "ext4", "/dev/vda", "rw,relatime,discard"),
        ("/mnt/nvme", "/mnt/nvme", "xfs", "/dev/nvme0n1p1", "rw,noatime,attr2,inode64"),
        ("/mnt/with space/x", "/mnt/with space", "nfs4", "srv:/export", "rw,vers=4.2"),
    ],
)
def test_find_mount_picks_the_longest_mount_point(path, point, fstype, device, options):
    assert host_probe.find_mount(MOUNTINFO, path) == {
        "mount_point": point, "fstype": fstype, "device": device, "options": options,
    }  # fmt: skip


def test_of_two_mounts_on_one_point_the_last_one_is_visible():
    # An xfs mounted over /var/tmp's tmpfs hides it (and the other way round): the later line is the one on top.
    over_tmpfs = MOUNTINFO + "40 30 259:3 / /var/tmp rw - xfs /dev/nvme1n1 rw\n"
    assert host_probe.find_mount(over_tmpfs, "/var/tmp/x")["fstype"] == "xfs"
    tmpfs_on_top = (
        "22 1 252:0 / / rw - ext4 /dev/vda rw\n"
        "31 22 259:2 / /scratch rw - xfs /dev/nvme0n1 rw\n"
        "45 31 0:60 / /scratch rw - tmpfs tmpfs rw,size=8g\n"
    )
    found = host_probe.find_mount(tmpfs_on_top, "/scratch/kvcache")
    assert found == {"mount_point": "/scratch", "fstype": "tmpfs", "device": "tmpfs", "options": "rw,size=8g"}


@pytest.mark.parametrize(
    "escaped, decoded",
    [
        ("/mnt/a\\040b", "/mnt/a b"),  # space
        ("/mnt/a\\011b", "/mnt/a\tb"),  # tab
        ("/mnt/a\\012b", "/mnt/a\nb"),  # newline
        ("/mnt/a\\134b", "/mnt/a\\b"),  # backslash
        ("/mnt/\\040\\040x\\134040", "/mnt/  x\\040"),  # a decoded backslash starts no new escape
        ("/mnt/plain", "/mnt/plain"),
    ],
)
def test_every_octal_escape_is_decoded(escaped, decoded):
    assert host_probe.decode_mount_field(escaped) == decoded
    line = f"50 22 0:70 / {escaped} rw - ext4 /dev/sdc rw\n"
    found = host_probe.find_mount("22 1 252:0 / / rw - ext4 /dev/vda rw\n" + line, decoded + "/cache")
    assert found["mount_point"] == decoded and found["device"] == "/dev/sdc"


def test_find_mount_skips_damaged_lines():
    assert host_probe.find_mount("garbage\n", "/x") == NONE
    assert host_probe.find_mount("", "/x") == NONE
    assert host_probe.find_mount(None, "/x") == NONE
    short = "22 1 252:0 / / rw - ext4\n"  # no device after the separator
    assert host_probe.find_mount(short + MOUNTINFO, "/srv")["device"] == "/dev/vda"


def test_mount_of_reads_the_file_and_resolves_links(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    target = tmp_path / "real"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    mountinfo.write_text(MOUNTINFO + f"60 22 0:80 / {target} rw - tmpfs tmpfs rw\n")
    assert host_probe.mount_of(str(tmp_path / "link"), str(mountinfo))["fstype"] == "tmpfs"
    assert host_probe.mount_of("/anything", str(tmp_path / "absent")) == NONE


def test_meminfo_in_bytes_with_and_without_memavailable(tmp_path):
    assert host_probe.parse_meminfo("MemTotal:  1000 kB\nMemFree: 100 kB\nMemAvailable:  600 kB\n") == {
        "total_bytes": 1024000, "available_bytes": 614400,
    }  # fmt: skip
    old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 200 kB\nHugePages_Total: 0\n"
    assert host_probe.parse_meminfo(old) == {"total_bytes": 1024000, "available_bytes": 350 * 1024}
    assert host_probe.parse_meminfo("") == {"total_bytes": None, "available_bytes": None}
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 2048 kB\nMemAvailable: 1024 kB\n")
    assert host_probe.available_memory_bytes(str(meminfo)) == 1024 * 1024
    assert host_probe.available_memory_bytes(str(tmp_path / "absent")) is None


def test_this_hosts_memory():
    found = host_probe.memory()
    assert found["total_bytes"] > 0 and 0 < found["available_bytes"] <= found["total_bytes"]


@pytest.mark.parametrize(
    "name, candidates",
    [
        ("sda1", ["sda1", "sda"]),
        ("sda", ["sda"]),
        ("nvme0n1p2", ["nvme0n1p2", "nvme0n1"]),
        ("nvme0n1", ["nvme0n1"]),
        ("mmcblk0p1", ["mmcblk0p1", "mmcblk0"]),
        ("dm-0", ["dm-0"]),
        ("md127", ["md127"]),
        ("", []),
    ],
)
def test_block_device_candidates(name, candidates):
    assert host_probe.block_device_candidates(name) == candidates


def test_rotational_flag_and_its_lookup_by_device_name(tmp_path):
    assert host_probe.parse_rotational("1\n") is True
    assert host_probe.parse_rotational("0") is False
    assert host_probe.parse_rotational(None) is None and host_probe.parse_rotational("x") is None
    # A fake /sys where only the whole disk has a queue: the partition's flag is its disk's.
    queue = tmp_path / "class" / "block" / "sdz" / "queue"
    queue.mkdir(parents=True)
    (queue / "rotational").write_text("1\n")
    assert host_probe.rotational_of(str(tmp_path / "absent"), "/dev/sdz3", sys_root=str(tmp_path)) is True
    assert host_probe.rotational_of(str(tmp_path / "absent"), "tmpfs", sys_root=str(tmp_path)) is None


def test_nearest_existing():
    existing = {"/", "/var", "/var/tmp"}
    assert host_probe.nearest_existing("/var/tmp/a/b", existing.__contains__) == "/var/tmp"
    assert host_probe.nearest_existing("/var/tmp/", existing.__contains__) == "/var/tmp"
    assert host_probe.nearest_existing("/nope/x", existing.__contains__) == "/"


def test_filesystem_of_a_directory_and_of_one_not_made_yet(tmp_path):
    here = host_probe.filesystem_of(str(tmp_path))
    assert here["exists"] is True and here["probed_path"] == os.path.realpath(str(tmp_path))
    assert here["mount_point"] and here["fstype"] and here["free_bytes"] > 0 and here["total_bytes"] > 0
    later = host_probe.filesystem_of(str(tmp_path / "a" / "b"))
    assert later["exists"] is False and later["path"] == str(tmp_path / "a" / "b")
    assert later["probed_path"] == here["probed_path"] and later["fstype"] == here["fstype"]


@pytest.mark.parametrize(
    "text, flavor, implementation, version, version_tuple",
    [
        ("mpirun (Open MPI) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/\n",
         "openmpi", "Open MPI", "4.1.4", (4, 1)),
        ("mpirun (Open MPI) 5.0.3\n", "openmpi", "Open MPI", "5.0.3", (5, 0)),
        ("mpirun (OpenRTE) 2.1.1\n", "openmpi", "Open MPI", "2.1.1", (2, 1)),
        ("prterun (PRRTE) 3.0.5\n", "openmpi", "Open MPI", "3.0.5", (3, 0)),
        ("Open MPI v4.1.4, package: Debian OpenMPI, ident: 4.1.4\n", "openmpi", "Open MPI", "4.1.4", (4, 1)),
        ("HYDRA build details:\n    Version:                  4.1.2\n", "mpich", "MPICH", "4.1.2", (4, 1)),
        ("MPICH Version:      4.0\nMPICH Release date: Fri Jan 21 2022\n", "mpich", "MPICH", "4.0", (4, 0)),
        # Intel MPI launches through Hydra: kvcache_command builds MPICH's argv for it, so both say mpich.
        ("Intel(R) MPI Library for Linux* OS, Version 2021.10 Build 20230619\n",
         "mpich", "Intel MPI", "2021.10", (2021, 10)),
        ("HYDRA build details:\n  Version: 2.3.7\n  MVAPICH2 Version: 2.3.7\n", "mpich", "MVAPICH", "2.3.7", (2, 3)),
        ("bash: mpirun: command not found\n", None, None, None, None),
        ("", None, None, None, None),
    ],
)  # fmt: skip
def test_mpi_version(text, flavor, implementation, version, version_tuple):
    assert host_probe.parse_mpi_version(text) == {
        "flavor": flavor, "implementation": implementation, "version": version, "version_tuple": version_tuple,
    }  # fmt: skip


def test_the_probe_needs_only_the_standard_library():
    # The modules load this same file on hosts without the engine: it may import nothing of kvcache's.
    with open(host_probe.__file__, encoding="utf-8") as handle:
        imports = [line.split()[1] for line in handle if line.startswith(("import ", "from "))]
    assert imports == ["os", "re", "typing"]
