"""Open MPI across three namespace hosts over ssh and TCP: 6 ranks, 3 hostnames, private cache dirs."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from fleet import SHARED_CACHE

pytestmark = pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun")


def fleet_mpirun(fleet, ranks_per_host, *engine_args):
    hosts = ",".join(f"{address}:{ranks_per_host}" for address in fleet.addresses)
    return [
        shutil.which("mpirun"),
        "--allow-run-as-root",
        "-n",
        str(ranks_per_host * fleet.count),
        "-host",
        hosts,
        "--bind-to",
        "none",
        "--map-by",
        "node",
        "--mca",
        "plm_rsh_agent",
        f"ssh -F {fleet.ssh_config}",
        # Pin TCP on the test subnet: no shared-memory shortcut may cross "hosts".
        "--mca",
        "pml",
        "ob1",
        "--mca",
        "btl",
        "tcp,self",
        "--mca",
        "btl_tcp_if_include",
        "10.77.0.0/24",
        "--mca",
        "oob_tcp_if_include",
        "10.77.0.0/24",
        sys.executable,
        "-m",
        "kvcache",
        "run",
        "--model",
        "tiny-1b",
        "--num-users",
        "2",
        "--gpu-mem-gb",
        "0",
        "--cpu-mem-gb",
        "0",
        "--cache-dir",
        SHARED_CACHE,
        "--quiet",
        *engine_args,
    ]


def test_six_ranks_on_three_hosts(fleet, tmp_path):
    result_path = tmp_path / "R.json"
    done = subprocess.run(
        fleet_mpirun(fleet, 2, "--duration", "3", "--output", str(result_path)),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(result_path.read_text())
    assert result["status"] == "ok"
    assert result["ranks"] == 6
    assert sorted({r["host"] for r in result["per_rank"]}) == sorted(fleet.names)
    for host in fleet.names:
        assert [r["host"] for r in result["per_rank"]].count(host) == 2
    assert all(r["tiers"]["storage"]["bytes_written"] > 0 for r in result["per_rank"])
    for index in range(fleet.count):
        assert fleet.private_cache_files(index) == [], f"{fleet.names[index]}'s cache dir was not cleaned"


def test_each_host_writes_to_its_own_private_directory(fleet, tmp_path):
    # Every request begins with a small shared prompt, which each rank's first request writes at once: a
    # rank keeps an entry even when the throttled storage has not finished any of its large contexts.
    small_prompts = ["--prefix-hit-probability", "1", "--system-prompt-tokens", "64"]
    done = subprocess.run(
        fleet_mpirun(fleet, 2, "--duration", "2", "--keep-cache", *small_prompts),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    try:
        for index in range(fleet.count):
            entries = [f for f in fleet.private_cache_files(index) if f.endswith(".kv")]
            rank_dirs = {os.path.basename(os.path.dirname(f)) for f in entries}
            assert len(rank_dirs) == 2, f"{fleet.names[index]} should hold exactly its own two ranks: {rank_dirs}"
    finally:
        for index in range(fleet.count):
            for name in os.listdir(fleet.private_cache(index)):
                shutil.rmtree(os.path.join(fleet.private_cache(index), name))
