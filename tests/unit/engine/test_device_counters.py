"""Device counters: the parsers, the block devices under a filesystem, one host's sampler, the result's block."""

import os

import pytest

from kvcache.device_counters import (
    SECTOR_BYTES,
    Counters,
    Source,
    disks_below,
    find_source,
    parse_diskstats,
    parse_nfs_mountstats,
    parse_page_cache,
)
from kvcache.device_result import device_block, device_line, device_warnings
from kvcache.device_sampler import DeviceSampler

DISKSTATS = """\
 259       0 nvme0n1 1000 5 {r_sectors} 300 2000 7 {w_sectors} 900 0 {busy} {queue} 0 0 0 0 0 0
 259       1 nvme0n1p1 10 0 80 1 20 0 160 2 0 3 3 0 0 0 0
 253       0 dm-0 900 0 {r_sectors} 280 1900 0 {w_sectors} 880 0 {busy} {queue}
   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
broken line
"""

MOUNTSTATS = """\
device rootfs mounted on / with fstype rootfs
device srv:/export mounted on /mnt/nfs with fstype nfs4 statvers=1.1
\topts:\trw,vers=4.2
\tbytes:\t100 200 300 400 {read} {write} 7 8
\tper-op statistics
\t        NULL: 1 1 0 44 24 0 0 0 0
\t        READ: {reads} {reads} 0 1000 2000 1 2 3 0
\t       WRITE: {writes} {writes} 0 3000 100 4 5 6 0
device srv:/other mounted on /mnt/other with fstype nfs4 statvers=1.1
\tbytes:\t1 1 1 1 9999 9999 1 1
\t        READ: 5 5 0 1 1 1 1 1 0
\t       WRITE: 5 5 0 1 1 1 1 1 0
"""


def diskstats(r_sectors=0, w_sectors=0, busy=0, queue=0):
    return DISKSTATS.format(r_sectors=r_sectors, w_sectors=w_sectors, busy=busy, queue=queue)


def test_diskstats_in_bytes_of_512_byte_sectors_and_the_busy_and_queue_times():
    stats = parse_diskstats(diskstats(r_sectors=8, w_sectors=16, busy=500, queue=1500))
    assert sorted(stats) == ["dm-0", "loop0", "nvme0n1", "nvme0n1p1"]  # the broken line is skipped
    assert stats["nvme0n1"] == Counters(8 * SECTOR_BYTES, 16 * SECTOR_BYTES, 1000, 2000, busy_ms=500, queue_ms=1500)


def test_counters_subtract_and_add_and_never_go_negative():
    later, earlier = Counters(10, 20, 3, 4, 50, 60), Counters(4, 25, 1, 1, 10, 20)
    assert later.minus(earlier) == Counters(6, 0, 2, 3, 40, 40)
    assert later.plus(earlier) == Counters(14, 45, 4, 5, 60, 80)
    assert Counters(5, 5, 1, 1).minus(Counters(1, 1, 0, 0)) == Counters(4, 4, 1, 1, None, None)  # NFS: no busy time


def test_nfs_mountstats_take_the_mount_asked_for_the_bytes_on_the_wire_and_the_read_write_ops():
    text = MOUNTSTATS.format(read=4096, write=8192, reads=3, writes=5)
    assert parse_nfs_mountstats(text, "/mnt/nfs") == Counters(4096, 8192, 3, 5)
    assert parse_nfs_mountstats(text, "/mnt/other") == Counters(9999, 9999, 5, 5)
    assert parse_nfs_mountstats(text, "/mnt/absent") is None


def test_page_cache_fields_in_bytes():
    text = "MemTotal: 100 kB\nCached: 2048 kB\nDirty: 4 kB\nWriteback: 0 kB\n"
    assert parse_page_cache(text) == {"dirty_bytes": 4096, "writeback_bytes": 0, "cached_bytes": 2048 * 1024}
    assert parse_page_cache("") == {"dirty_bytes": None, "writeback_bytes": None, "cached_bytes": None}


def fake_block(root, name, slaves=(), parent=None):
    directory = os.path.join(root, "devices", parent or "", name)
    os.makedirs(os.path.join(directory, "slaves"), exist_ok=True)
    if parent:
        open(os.path.join(directory, "partition"), "w").close()
    for slave in slaves:
        os.symlink(slave, os.path.join(directory, "slaves", os.path.basename(slave)))
    return directory


def test_disks_below_an_lvm_on_a_mirror_of_two_partitions(tmp_path):
    sda1 = fake_block(str(tmp_path), "sda1", parent="sda")
    sdb1 = fake_block(str(tmp_path), "sdb1", parent="sdb")
    md0 = fake_block(str(tmp_path), "md0", slaves=[sda1, sdb1])
    dm0 = fake_block(str(tmp_path), "dm-0", slaves=[md0])
    assert disks_below(dm0) == ["sda", "sdb"]
    assert disks_below(sda1) == ["sda"]  # a partition's disk
    assert disks_below(fake_block(str(tmp_path), "nvme0n1")) == ["nvme0n1"]


def test_find_source_for_a_block_device_through_sys_dev_block(tmp_path):
    st_dev = os.stat(tmp_path).st_dev
    sys_root = tmp_path / "sys"
    disk = fake_block(str(sys_root), "vdz")
    (sys_root / "dev" / "block").mkdir(parents=True)
    os.symlink(disk, sys_root / "dev" / "block" / f"{os.major(st_dev)}:{os.minor(st_dev)}")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vdz rw\n")
    source = find_source(str(tmp_path), sys_root=str(sys_root), mountinfo=str(mountinfo))
    assert (source.kind, source.device, source.disks, source.fstype) == ("diskstats", "vdz", ("vdz",), "ext4")


def test_find_source_for_nfs_and_for_a_filesystem_without_a_device(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"40 1 0:50 / {tmp_path} rw - nfs4 srv:/export rw\n")
    nfs = find_source(str(tmp_path), sys_root=str(tmp_path / "nosys"), mountinfo=str(mountinfo))
    assert (nfs.kind, nfs.mount_point) == ("nfs", str(tmp_path))
    mountinfo.write_text(f"40 1 0:50 / {tmp_path} rw - tmpfs tmpfs rw\n")
    none = find_source(str(tmp_path), sys_root=str(tmp_path / "nosys"), mountinfo=str(mountinfo))
    assert none.kind == "none" and "tmpfs has no block device" in none.why_none


@pytest.fixture
def sampled(tmp_path):
    """A sampler over synthetic /proc files, and a function that moves the device's counters."""
    paths = {name: tmp_path / name for name in ("diskstats", "mountstats", "meminfo")}
    paths["meminfo"].write_text("Cached: 100 kB\nDirty: 8 kB\nWriteback: 4 kB\n")

    def move(**counters):
        paths["diskstats"].write_text(diskstats(**counters))

    move()
    source = Source("diskstats", device="dm-0", disks=("nvme0n1",), mount_point="/m")
    sampler = DeviceSampler(source, *(str(paths[name]) for name in ("diskstats", "mountstats", "meminfo")))
    return sampler, move


def test_the_sampler_counts_the_window_and_its_samples(sampled):
    sampler, move = sampled
    assert not sampler.started
    sampler.start(100.0)
    move(r_sectors=2048, w_sectors=1024, busy=500, queue=1000)  # 1 MiB read, 0.5 MiB written in the first second
    sampler.sample(101.0, 1.0)
    move(r_sectors=4096, w_sectors=1024, busy=1500, queue=4000)
    sampler.finish(102.0)
    report = sampler.report()
    assert (report["read_bytes"], report["write_bytes"]) == (4096 * 512, 1024 * 512)
    assert report["utilisation"] == 0.75 and report["avg_queue_depth"] == 2.0  # 1.5 s of 2, 4 s in queue over 2 s
    assert report["disks_read_bytes"] == 4096 * 512  # the disk below the dm device, counted apart
    [point] = report["timeseries"]
    assert point["read_bytes_per_s"] == 1024 * 1024 and point["write_bytes_per_s"] == 512 * 1024
    assert (point["utilisation"], point["avg_queue_depth"]) == (0.5, 1.0)
    assert point["dirty_bytes"] == 8192 and point["cached_bytes"] == 100 * 1024
    assert report["page_cache"]["start"]["writeback_bytes"] == 4096


def test_a_device_gone_from_diskstats_says_its_counters_could_not_be_read(sampled, tmp_path):
    sampler, _move = sampled
    sampler.start(1.0)
    (tmp_path / "diskstats").write_text("")
    sampler.finish(2.0)
    report = sampler.report()
    assert report["read_bytes"] is None and "could not be read" in report["why_none"]


def payload(rank, host, read, written, device=None):
    return {
        "rank": rank,
        "host": host,
        "metrics": {"bytes": {"storage.read": read, "storage.write": written}},
        **({"device": device} if device else {}),
    }


def report(read, written, name="nvme0n1", utilisation=0.5, depth=2.0):
    return {
        "source": "diskstats", "device": name, "disks": [name], "mount_point": "/m", "fstype": "xfs",
        "why_none": None, "read_bytes": read, "write_bytes": written, "read_ops": 1, "write_ops": 1,
        "utilisation": utilisation, "avg_queue_depth": depth, "page_cache": {}, "timeseries": [],
    }  # fmt: skip


def test_the_block_puts_each_host_beside_its_own_ranks_and_sums_the_hosts():
    gib = 1 << 30
    payloads = [
        payload(0, "a", gib, gib, report(gib, 2 * gib)),
        payload(1, "a", gib, gib),
        payload(2, "b", gib, gib, report(gib // 4, gib, utilisation=0.9, depth=7.0)),
    ]
    block = device_block(payloads)
    a, b = block["per_host"]
    assert (a["ranks"], a["engine_read_bytes"], a["read_ratio"], a["write_ratio"]) == ([0, 1], 2 * gib, 0.5, 1.0)
    assert (b["read_ratio"], b["write_ratio"]) == (0.25, 1.0)
    assert block["read_ratio"] == round((gib + gib // 4) / (3 * gib), 4) and block["write_ratio"] == 1.0
    warnings = device_warnings(block)
    assert len(warnings) == 2 and warnings[1].startswith("on b the device (nvme0n1) delivered 25% of the bytes")
    assert device_line(block) == "device (2 of 2 hosts): read 0.42x, write 1.00x the engine's bytes, 90% busy, " \
        "queue depth 7.0 (busiest host)"  # fmt: skip


def test_no_block_without_a_sampler_and_a_line_that_says_why_there_are_no_counters():
    assert device_block([payload(0, "a", 1, 1)]) is None and device_line(None) is None
    none = dict(report(None, None), source="none", device=None, why_none="tmpfs has no block device")
    block = device_block([payload(0, "a", 1 << 30, 0, none)])
    assert block["hosts_without_counters"] == ["a"] and block["read_ratio"] is None
    assert device_line(block) == "device: no counters (tmpfs has no block device)"
    assert device_warnings(block) == []


def test_few_reads_are_not_judged():
    block = device_block([payload(0, "a", 1 << 20, 1 << 20, report(0, 1 << 20))])
    assert block["read_ratio"] == 0.0 and device_warnings(block) == []
