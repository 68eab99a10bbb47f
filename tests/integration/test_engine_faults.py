"""Faults against real `python -m kvcache run` processes: a full disk, signals, a killed run's leftovers,
two runs in one cache dir, and storage too small for the workload. Never a PASS that did not happen."""

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import time

import pytest
import yaml
from engine_helpers import ENGINE, kvcache, leftovers, load

# 256 bytes per token: the largest entry is 6.4 MB, so a small filesystem holds many.
TOY_MODELS = {"models": {"toy": {"layers": 1, "kv_heads": 1, "head_dim": 64}}}
TOY_RUN = ["--model", "toy", "--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--io-chunk-mib", "1", "--quiet"]
WAIT_S = 30.0


@pytest.fixture
def toy(tmp_path):
    """Engine arguments for the toy model (its config file lives in tmp_path)."""
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(TOY_MODELS))
    return ["--config", str(config), *TOY_RUN]


def start(*args):
    return subprocess.Popen(
        ENGINE + ["run", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_entries(directory, process):
    """Until the run has written an entry file under `directory` (it is measuring)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if any(name.endswith(".kv") for name in leftovers(directory)):
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended before writing an entry: {process.communicate()}")
        time.sleep(0.05)
    pytest.fail("the run never wrote an entry")


@contextlib.contextmanager
def stopped_at_exit(*processes):
    try:
        yield
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def run_dirs(cache):
    return sorted(name for name in os.listdir(cache) if name.startswith("kvcache-run-"))


@contextlib.contextmanager
def small_ext4(tmp_path, size_mib):
    """A real ext4 filesystem of `size_mib` on a loop device (no reserved blocks), unmounted and detached after."""
    if os.geteuid() != 0:
        pytest.skip("a loop-device filesystem needs root (CI runs as root)")
    missing = [tool for tool in ("mkfs.ext4", "losetup", "mount", "umount") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    image, mount = tmp_path / "ext4.img", tmp_path / "ext4"
    mount.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(size_mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard", str(image)], check=True, capture_output=True)
    attach = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=False)
    if attach.returncode != 0:
        pytest.skip(f"no loop device available: {attach.stderr.strip()}")
    device = attach.stdout.strip()
    try:
        subprocess.run(["mount", "-t", "ext4", device, str(mount)], check=True, capture_output=True)
        try:
            yield mount
        finally:
            subprocess.run(["umount", str(mount)], check=True, capture_output=True)
    finally:
        subprocess.run(["losetup", "--detach", device], check=True, capture_output=True)


def fill_until_exit(path, process):
    """Keep the filesystem full (retaking whatever the run frees) until the run exits; bounded in time."""
    chunk = b"\xa5" * (1 << 20)
    deadline = time.monotonic() + WAIT_S
    with open(path, "wb", buffering=0) as handle:
        while process.poll() is None and time.monotonic() < deadline:
            try:
                handle.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                time.sleep(0.01)


def test_the_issue_example_a_200_mib_cache_dir_for_llama_is_refused_before_anything_is_created(tmp_path):
    with small_ext4(tmp_path, 200) as mount:
        done = kvcache("run", "--model", "llama3.1-8b", "--num-users", "4", "--cache-dir", mount, "--quiet")
        assert done.returncode == 2, done.stdout + done.stderr
        message = done.stderr.strip()
        assert message.startswith("kvcache run: error: --cache-dir: the free space under") and "\n" not in message
        free = shutil.disk_usage(mount).free
        assert f"{free:,} bytes" in message  # the free space ...
        assert "3,276,800,000 bytes" in message  # ... and the largest entry: 25,000 tokens x 131,072 bytes
        assert leftovers(mount) == ["lost+found"]


def test_a_given_storage_capacity_below_the_largest_entry_is_refused(tmp_path):
    done = kvcache(
        "run",
        "--model",
        "llama3.1-8b",
        "--num-users",
        "4",
        "--performance-profile",
        "throughput",
        "--storage-capacity-gb",
        "1e-9",
        "--cache-dir",
        tmp_path,
        "--output",
        tmp_path / "R.json",
    )
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith("kvcache run: error: --storage-capacity-gb: 1e-09 GiB (1 bytes")
    assert "3,276,800,000 bytes" in done.stderr and "give at least 3.052 GiB" in done.stderr
    assert leftovers(tmp_path) == []


def test_dropped_entries_are_counted_and_reported(tmp_path, toy):
    # Room for one largest entry per rank, and 16 users writing at once: entries find no room.
    done = kvcache(
        "run",
        *toy,
        "--num-users",
        "16",
        "--performance-profile",
        "throughput",
        "--duration",
        "2",
        "--storage-capacity-gb",
        "0.0062",
        "--cache-dir",
        tmp_path,
        "--output",
        tmp_path / "R.json",
    )
    assert done.returncode == 0, done.stderr
    result = load(tmp_path / "R.json")
    dropped = result["dropped_entries"]
    assert 0 < dropped["count"] <= dropped["entry_writes"]
    assert dropped["share_of_writes"] == round(dropped["count"] / dropped["entry_writes"], 6)
    assert result["per_rank"][0]["dropped_entries"] == dropped
    assert result["events"]["dropped_entries"] == dropped["count"]
    assert [c for c in result["sla"]["criteria"] if c["name"] == "dropped entries"][0]["passed"] is False
    line = f"warning: {dropped['count']:,} of the {dropped['entry_writes']:,} entries the workload wrote"
    assert line in done.stdout
    assert any(w.startswith(line[len("warning: ") :]) for w in result["warnings"])


def test_disk_full_mid_run_fails_the_run_with_enospc_and_no_verdict(tmp_path, toy):
    with small_ext4(tmp_path, 64) as mount:
        process = start(
            *toy, "--num-users", "4", "--duration", "60", "--cache-dir", mount, "--output", tmp_path / "R.json"
        )
        with stopped_at_exit(process):
            wait_for_entries(mount, process)
            fill_until_exit(mount / "filler", process)
            stdout, stderr = process.communicate(timeout=WAIT_S)
        assert process.returncode == 1, stderr
        result = load(tmp_path / "R.json")
        assert result["status"] == "failed"
        assert "No space left on device" in result["error"], result["error"]
        assert result["sla"]["applies"] is True and result["sla"]["passed"] is None
        assert result["sla"]["no_verdict_reason"] == "the run failed"
        assert "status: FAILED" in stdout and "SLA (latency profile): no verdict (the run failed)" in stdout
        assert "PASS" not in stdout
        assert leftovers(mount) == ["filler", "lost+found"]  # its run directory is gone, even from a full disk


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_cleans_up_and_fails_the_run_without_a_verdict(tmp_path, toy, signum):
    cache = tmp_path / "cache"
    cache.mkdir()
    process = start(*toy, "--num-users", "2", "--duration", "60", "--cache-dir", cache, "--output", tmp_path / "R.json")
    with stopped_at_exit(process):
        wait_for_entries(cache, process)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == 1, stderr
    result = load(tmp_path / "R.json")
    assert result["status"] == "failed" and signum.name in result["error"]
    assert result["sla"]["passed"] is None and result["sla"]["no_verdict_reason"] == "the run failed"
    assert "no verdict (the run failed)" in stdout and "PASS" not in stdout
    assert leftovers(cache) == []


def test_a_cache_dir_deleted_mid_run_fails_the_run_without_a_verdict(tmp_path, toy):
    cache = tmp_path / "cache"
    cache.mkdir()
    process = start(*toy, "--num-users", "2", "--duration", "60", "--cache-dir", cache, "--output", tmp_path / "R.json")
    with stopped_at_exit(process):
        wait_for_entries(cache, process)
        shutil.rmtree(cache)
        stdout, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == 1, stderr
    result = load(tmp_path / "R.json")
    assert result["status"] == "failed" and "No such file or directory" in result["error"]
    assert result["sla"]["passed"] is None and "PASS" not in stdout
    assert not cache.exists()  # nothing was made again


def test_a_killed_run_is_reported_by_the_next_run_and_removed_by_clean(tmp_path, toy):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "precious.npy").write_bytes(b"user data")
    process = start(*toy, "--num-users", "2", "--duration", "60", "--cache-dir", cache)
    with stopped_at_exit(process):
        wait_for_entries(cache, process)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=WAIT_S)
    [stale] = run_dirs(cache)
    assert sorted(os.listdir(cache / stale)) == [".storagebench-kvcache-rank-0", ".storagebench-kvcache-run", "rank-0"]
    (cache / stale / "my-notes.txt").write_text("the user's")

    after = kvcache(
        "run", *toy, "--num-users", "1", "--duration", "1", "--cache-dir", cache, "--output", tmp_path / "R.json"
    )
    assert after.returncode == 0, after.stderr
    hint = f"remove them with: kvcache clean --cache-dir {cache}"
    [warning] = [w for w in load(tmp_path / "R.json")["warnings"] if stale in w]
    assert "no longer running" in warning and hint in warning
    assert hint in after.stderr
    assert run_dirs(cache) == [stale]  # the next run cleaned up its own directory only

    cleaned = kvcache("clean", "--cache-dir", cache)
    assert cleaned.returncode == 0, cleaned.stderr
    assert stale in cleaned.stdout and "my-notes.txt" in cleaned.stdout
    # The engine's files went; the user's file stays, and with it the directory, still marked as ours.
    assert sorted(os.listdir(cache / stale)) == [
        ".storagebench-kvcache-rank-0",
        ".storagebench-kvcache-run",
        "my-notes.txt",
    ]
    assert (cache / stale / "my-notes.txt").read_text() == "the user's"
    os.unlink(cache / stale / "my-notes.txt")
    again = kvcache("clean", "--cache-dir", cache)
    assert again.returncode == 0 and f"removed {stale}" in again.stdout
    assert leftovers(cache) == ["precious.npy"]
    assert (cache / "precious.npy").read_bytes() == b"user data"


def test_two_runs_in_one_cache_dir_each_say_they_shared_the_storage_and_clean_keeps_both(tmp_path, toy):
    cache = tmp_path / "cache"
    cache.mkdir()
    first = start(*toy, "--num-users", "1", "--duration", "4", "--cache-dir", cache, "--output", tmp_path / "A.json")
    with stopped_at_exit(first):
        wait_for_entries(cache, first)
        [first_dir] = run_dirs(cache)
        second = start(*toy, "--num-users", "1", "--duration", "6", "--cache-dir", cache,
                       "--output", tmp_path / "B.json")  # fmt: skip
        with stopped_at_exit(second):
            deadline = time.monotonic() + WAIT_S
            while len(run_dirs(cache)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            [second_dir] = [name for name in run_dirs(cache) if name != first_dir]
            cleaned = kvcache("clean", "--cache-dir", cache)
            assert cleaned.returncode == 0, cleaned.stderr
            assert f"kept {first_dir}: running on this host" in cleaned.stdout
            assert f"kept {second_dir}: running on this host" in cleaned.stdout
            assert "0 run directories removed, 2 kept" in cleaned.stdout
            assert run_dirs(cache) == sorted([first_dir, second_dir])
            first_out, first_err = first.communicate(timeout=WAIT_S)
            second_out, second_err = second.communicate(timeout=WAIT_S)
    assert first.returncode == 0 and second.returncode == 0, first_err + second_err
    # The second found the first when it started; the first found the second when its window ended.
    for mine, other, pid in (("B.json", first_dir, first.pid), ("A.json", second_dir, second.pid)):
        result = load(tmp_path / mine)
        [shared] = [w for w in result["warnings"] if "shared the storage" in w]
        assert other in shared and f"pid {pid} on " in shared
    assert "shared the storage" in first_err and "shared the storage" in second_err
    assert leftovers(cache) == []
