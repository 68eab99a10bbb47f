"""kvcache_run.yml with kvcache_baseline: fio measures the host's cache dir, and the run is stated against it.

Real ansible-playbook on this machine (inventory/localhost.ini, local connection) with the engine of this checkout.
"""

import pytest
from ansible_cli import run_with_this_engine, the_run

pytestmark = [pytest.mark.slow, pytest.mark.mpi]
WORKLOAD = {"kvcache_model": "tiny-1b", "kvcache_num_users": 2, "kvcache_duration": 3, "kvcache_cpu_mem_gb": 0.125}
QUICK = {"baseline_runtime": 1, "baseline_size_gb": 0.05}


def test_two_ranks_stated_against_a_baseline_of_their_shape(tmp_path):
    variables = {"kvcache_baseline": True, "kvcache_baseline_args": QUICK, "kvcache_processes_per_host": 2,
                 "kvcache_extra_args": {"io_chunk_mib": 4, "io_depth": 2}}  # fmt: skip
    proc = run_with_this_engine("kvcache_run.yml", tmp_path, {**WORKLOAD, **variables})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "localhost: baseline of " in proc.stdout and "(4 jobs of 4 MiB)" in proc.stdout  # 2 ranks x depth 2
    run, result = the_run(tmp_path / "results")
    assert result["status"] == "ok" and result["ranks"] == 2
    [host] = result["baseline"]["per_host"]
    assert (host["baseline"]["jobs"], host["baseline"]["chunk_bytes"]) == (4, 4 << 20)
    assert result["config"]["baseline"] == str(tmp_path / "work" / f"run-{run.name}" / "baseline.json")
    assert not [w for w in result["warnings"] if "the baseline" in w]
    headline = (run / "headline.txt").read_text(encoding="utf-8")
    assert f"(fio baseline): read {result['baseline']['read_percent']:.0f} %" in headline
    assert list((tmp_path / "work").iterdir()) == []  # the baseline went with the run's directory
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # fio's files too
