"""`kvcache run` on one host, for real: storage I/O in a temporary directory, the result JSON, cleanup."""

import math
import os
import signal
import subprocess
import time

import pytest
import yaml
from engine_helpers import ENGINE, SHORT_RUN, kvcache, leftovers, load

from kvcache.break_even import crossing_tokens
from kvcache.models import BUILTIN_MODELS
from kvcache.options import RUN, options_for


def test_issue_example_run_measures_storage_and_cleans_up(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "user-file.npy").write_bytes(b"not ours")  # the reference deleted every *.npy; we must not
    result_path = tmp_path / "R.json"
    done = kvcache(
        "run",
        "--model",
        "tiny-1b",
        "--num-users",
        "4",
        "--duration",
        "5",
        "--gpu-mem-gb",
        "0",
        "--cpu-mem-gb",
        "0",
        "--cache-dir",
        cache,
        "--output",
        result_path,
    )
    assert done.returncode == 0, done.stderr
    result = load(result_path)
    assert result["schema"] == "storagebench.kvcache/result/v1"
    assert result["status"] == "ok"
    storage = result["tiers"]["storage"]
    assert storage["bytes_read"] > 0 and storage["bytes_written"] > 0
    assert storage["read_latency_ms"]["p95"] > 0
    window = result["window"]["seconds"]
    assert storage["read_bandwidth_bytes_per_s"] == pytest.approx(storage["bytes_read"] / window, rel=1e-5)
    assert result["tiers"]["gpu"]["simulated"] is True
    assert result["environment"]["io_engine"] == "direct"
    assert result["ranks"] == 1 and result["per_rank"][0]["status"] == "ok"
    # One process, started by this test: no launcher (this machine runs no Slurm job around the tests).
    assert result["environment"]["launcher"]["kind"] == "none"
    # The break-even against recompute, from this run's own entry reads, for tiny-1b on the default GPU profile.
    block = result["break_even"]
    assert (block["gpu_profile"], block["gpu_peak_tflops"], block["gpu_utilization"]) == ("h100", 989.0, 0.5)
    assert block["read_mean_bytes"] == pytest.approx(storage["bytes_read"] / storage["read_ops"], abs=1e-3)
    assert block["read_latency_mean_ms"] == storage["read_latency_ms"]["mean"]
    model = BUILTIN_MODELS["tiny-1b"]
    load_s_per_token = model.bytes_per_token * block["read_latency_mean_ms"] / 1000 / block["read_mean_bytes"]
    assert block["context_tokens"] == math.ceil(crossing_tokens(model, load_s_per_token, 989e12 * 0.5))
    assert "break-even vs recompute (h100 x1 at 50%): loading a context" in done.stdout
    assert result["timeseries"], "a sample every --stats-interval"
    assert "storage" in done.stdout and "ttft" in done.stdout  # the summary table
    assert leftovers(cache) == ["user-file.npy"]
    assert (cache / "user-file.npy").read_bytes() == b"not ours"


def test_filesystem_without_o_direct_falls_back_to_buffered_io_visibly(tmp_path):
    # tmpfs accepts O_DIRECT since Linux 6.6; ramfs still refuses it (EINVAL), as older tmpfs did.
    if os.geteuid() != 0:
        pytest.skip("mounting a ramfs needs root (CI is root)")
    shm = tmp_path / "ramfs"
    shm.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "kvcache-test", str(shm)], check=True)
    try:
        # ramfs reports no size, so the storage tier's size must be given.
        unsized = kvcache("run", *SHORT_RUN, "--duration", "2", "--cache-dir", shm)
        assert unsized.returncode == 2 and "--storage-capacity-gb" in unsized.stderr and "no size" in unsized.stderr
        assert leftovers(shm) == []
        done = kvcache("run", *SHORT_RUN, "--duration", "2", "--storage-capacity-gb", "1", "--cache-dir", shm,
                       "--output", tmp_path / "R.json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "O_DIRECT" in done.stderr and "buffered" in done.stderr
        result = load(tmp_path / "R.json")
        assert result["environment"]["io_engine_requested"] == "direct"
        assert result["environment"]["io_engine"] == "buffered"
        assert result["environment"]["cache_dir_mount"]["fstype"] == "ramfs"
        assert any("O_DIRECT" in w for w in result["warnings"])
        assert any("RAM" in w for w in result["warnings"])  # a memory filesystem is not storage
        assert leftovers(shm) == []
    finally:
        subprocess.run(["umount", str(shm)], check=True)


def test_cpu_tier_demotes_to_storage(tmp_path):
    done = kvcache(
        "run",
        "--model",
        "tiny-1b",
        "--num-users",
        "3",
        "--duration",
        "4",
        "--gpu-mem-gb",
        "0",
        "--cpu-mem-gb",
        "0.05",
        "--cache-dir",
        tmp_path,
        "--output",
        tmp_path / "R.json",
        "--quiet",
        "--performance-profile",
        "throughput",
    )
    assert done.returncode == 0, done.stderr
    result = load(tmp_path / "R.json")
    assert result["tiers"]["cpu"]["bytes_written"] > 0
    assert result["tiers"]["cpu"]["read_latency_ms"]["count"] > 0
    assert result["events"]["demotions.cpu"] > 0
    assert result["tiers"]["storage"]["bytes_written"] > 0  # demoted entries really reach the storage


def test_config_file_with_user_model_and_request_limit(tmp_path):
    config = tmp_path / "bench.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": "my-model",
                "num_users": 2,
                "max_requests": 5,
                "duration": 60,
                "gpu_mem_gb": 0,
                "cpu_mem_gb": 0,
                "cache-dir": str(tmp_path),
                "quiet": True,
                "models": {"my-model": {"layers": 2, "kv_heads": 2, "head_dim": 64}},
            }
        )
    )
    done = kvcache("run", "--config", config, "--output", tmp_path / "R.json")
    assert done.returncode == 0, done.stderr
    result = load(tmp_path / "R.json")
    assert result["config"]["bytes_per_token"] == 2 * 2 * 64 * 2 * 2
    # The config block: every run option as resolved (the file's values), then what the run derived from them.
    options = [o.name for o in options_for(RUN)]
    derived = ["bytes_per_token", "model_geometry", "storage_capacity_bytes_per_rank", "seeds_per_rank"]
    assert list(result["config"]) == options + ["config", "workload"] + derived
    assert result["config"]["num_users"] == 2 and result["config"]["max_requests"] == 5
    assert result["config"]["config"] == str(config) and result["config"]["seeds_per_rank"] == [42]
    assert result["requests"]["completed"] == 5
    assert result["window"]["seconds"] < 60  # it stopped at the request limit, not at the duration


def test_open_loop_arrivals_queue(tmp_path):
    done = kvcache(
        "run",
        *SHORT_RUN,
        "--duration",
        "3",
        "--request-rate",
        "20",
        "--max-concurrent-requests",
        "1",
        "--cache-dir",
        tmp_path,
        "--output",
        tmp_path / "R.json",
    )
    assert done.returncode == 0, done.stderr
    result = load(tmp_path / "R.json")
    assert result["latency_ms"]["queue_wait"]["count"] == result["requests"]["completed"] > 0
    assert result["latency_ms"]["queue_wait"]["max"] > 0  # one server slot, 20 arrivals/s: requests wait


def test_keep_cache_leaves_the_run_directory(tmp_path):
    done = kvcache("run", *SHORT_RUN, "--duration", "2", "--keep-cache", "--cache-dir", tmp_path)
    assert done.returncode == 0, done.stderr
    runs = [n for n in os.listdir(tmp_path) if n.startswith("kvcache-run-")]
    assert len(runs) == 1
    assert any(name.endswith(".kv") for name in os.listdir(tmp_path / runs[0] / "rank-0"))
    assert "kept" in done.stderr


def test_sigterm_stops_cleans_up_and_reports_failure(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    process = subprocess.Popen(
        ENGINE
        + ["run", *SHORT_RUN, "--duration", "120", "--cache-dir", str(cache), "--output", str(tmp_path / "R.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _attempt in range(300):  # up to 30 s for the run to start writing
            if any(name.endswith(".kv") for name in leftovers(cache)):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the run never wrote an entry")
        process.send_signal(signal.SIGTERM)
        stderr = process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, stderr
    result = load(tmp_path / "R.json")
    assert result["status"] == "failed"
    assert "SIGTERM" in result["error"]
    assert leftovers(cache) == []


def test_report_prints_the_summary_of_a_result(tmp_path):
    assert (
        kvcache(
            "run", *SHORT_RUN, "--duration", "2", "--cache-dir", tmp_path, "--output", tmp_path / "R.json"
        ).returncode
        == 0
    )
    done = kvcache("report", tmp_path / "R.json")
    assert done.returncode == 0
    assert "storage" in done.stdout and "status: OK" in done.stdout
    bad = tmp_path / "not-a-result.json"
    bad.write_text("{}")
    refused = kvcache("report", bad)
    assert refused.returncode == 2 and "schema" in refused.stderr


def test_progress_line_on_a_terminal_only(tmp_path):
    import pty

    primary, secondary = pty.openpty()
    try:
        process = subprocess.Popen(
            ENGINE
            + ["run", *SHORT_RUN[:-1], "--duration", "2", "--stats-interval", "0.5", "--cache-dir", str(tmp_path)],
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=secondary,
        )
        os.close(secondary)
        secondary = None
        chunks = []
        for _attempt in range(600):  # bounded: read the terminal until the process has exited and it is drained
            try:
                data = os.read(primary, 4096)
            except OSError:  # EIO once the child closed its side of the terminal
                break
            if not data:
                break
            chunks.append(data)
        process.communicate(timeout=60)
    finally:
        if secondary is not None:
            os.close(secondary)
        os.close(primary)
    screen = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0
    assert "requests" in screen and "GiB/s" in screen and "p95" in screen
    piped = kvcache("run", *SHORT_RUN[:-1], "--duration", "1", "--stats-interval", "0.5", "--cache-dir", tmp_path)
    assert "GiB/s" not in piped.stderr  # not a terminal: no progress line


def test_mpi_required_without_mpi4py_is_a_usage_error(tmp_path):
    blocker = tmp_path / "blocker" / "mpi4py"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('mpi4py hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker.parent))
    cache = tmp_path / "cache"
    cache.mkdir()
    done = kvcache("run", *SHORT_RUN, "--duration", "1", "--mpi", "on", "--cache-dir", cache, env=env)
    assert done.returncode == 2
    assert "--mpi" in done.stderr and "mpi4py" in done.stderr
    assert leftovers(cache) == []
    single = kvcache("run", *SHORT_RUN, "--duration", "1", "--cache-dir", cache, env=env)
    assert single.returncode == 0, single.stderr  # without a launcher, MPI is never needed


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--io-depth", "1024", "--io-chunk-mib", "1024"], "--io-depth"),
        (["--seed", str(2**70)], "--seed"),
        (["--storage-capacity-gb", "100000000"], "--storage-capacity-gb"),
    ],
)
def test_resource_requests_beyond_the_host_are_usage_errors(tmp_path, args, option):
    done = kvcache("run", *SHORT_RUN, "--duration", "1", "--cache-dir", tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert option in done.stderr
    assert leftovers(tmp_path) == []


def test_open_loop_user_has_one_request_in_flight(tmp_path):
    # 1 user, 4 servers, arrivals far faster than service: turns are still served one at a time and in
    # order, so each finds every earlier turn cached. (Seed 14: user 0 is a chatbot user, small entries.)
    done = kvcache("run", *SHORT_RUN, "--num-users", "1", "--max-concurrent-requests", "4", "--duration", "3",
                   "--request-rate", "50", "--seed", "14", "--disable-prefix-caching",
                   "--cache-dir", tmp_path, "--output", tmp_path / "R.json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = load(tmp_path / "R.json")
    assert result["requests"]["completed"] >= 2
    assert result["hit_rate"]["misses"] == 0  # no turn was served before the one it re-reads
    assert result["hit_rate"]["lookups"] > result["requests"]["completed"]  # decode reads, and earlier turns
    assert result["latency_ms"]["queue_wait"]["max"] > 0


def test_xlsx_output_writes_the_results_workbook_beside_the_result(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    cache = tmp_path / "cache"
    cache.mkdir()
    book_path = tmp_path / "R.xlsx"
    done = kvcache(
        "run", *SHORT_RUN, "--duration", "2", "--cache-dir", cache, "--output", tmp_path / "R.json",
        "--xlsx-output", book_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"workbook: {book_path}" in done.stdout
    result = load(tmp_path / "R.json")
    book = openpyxl.load_workbook(book_path, read_only=True)
    assert book.sheetnames == ["summary", "config", "per_rank", "timeseries", "qos"]
    header, row = book["summary"].iter_rows(values_only=True)
    summary = dict(zip(header, row))
    assert summary["path"] == str(tmp_path / "R.json")
    assert summary["tiers.storage.bytes_read"] == result["tiers"]["storage"]["bytes_read"] > 0
    assert summary["latency_ms.ttft.p95"] == result["latency_ms"]["ttft"]["p95"]
    samples = list(book["timeseries"].iter_rows(values_only=True))[1:]
    assert len(samples) == len(result["timeseries"])
    assert leftovers(cache) == []


def test_xlsx_output_refusals_exit_2_before_the_run_creating_nothing(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    mine = tmp_path / "mine.xlsx"
    mine.write_bytes(b"not ours")
    for target, message in (
        (mine, "exists; the tool does not replace a file it did not create"),
        (tmp_path / "missing" / "R.xlsx", "the directory of"),
        (tmp_path, "is a directory"),
    ):
        done = kvcache("run", *SHORT_RUN, "--duration", "1", "--cache-dir", cache, "--xlsx-output", target)
        assert done.returncode == 2 and "--xlsx-output: " in done.stderr and message in done.stderr, done.stderr
        assert leftovers(cache) == []
    assert mine.read_bytes() == b"not ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mine.xlsx"]
