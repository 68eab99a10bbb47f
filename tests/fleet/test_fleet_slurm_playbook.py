"""`kvcache_run.yml` through Slurm on the namespace fleet: srun from the first host, one aggregated result,
Slurm's own refusals before anything runs, and rank 0 on a node that is not the launcher."""

import json
import os

import pytest
from playbook_helpers import read_json, result_files, run_playbook, write_inventory


def slurm_inventory(fleet, slurm, path, **overrides):
    """The fleet's inventory, launching through the cluster's srun instead of mpirun."""
    slurm_variables = {
        "kvcache_launcher": "slurm",
        "kvcache_slurm_conf": slurm.conf,
        "run_slurm_partition": slurm.partition,
    }
    return write_inventory(fleet, path, **dict(slurm_variables, **overrides))


def assert_nothing_left(fleet):
    for index in range(fleet.count):
        assert fleet.private_cache_files(index) == [], f"{fleet.names[index]}'s cache dir was left dirty"
        assert os.listdir(fleet.private_results(index)) == [], f"{fleet.names[index]} kept a result copy"


def test_run_playbook_through_slurm_six_tasks_on_three_hosts(fleet, slurm_fleet, collections, tmp_path):
    inventory = slurm_inventory(fleet, slurm_fleet, tmp_path / "hosts.ini")
    done = run_playbook(fleet, collections, inventory, tmp_path / "results")
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Check that srun offers the PMI plugin" in done.stdout  # the deps role's check, on every host
    [result_path] = result_files(tmp_path / "results")
    result = read_json(result_path)
    assert result["status"] == "ok" and result["ranks"] == 6
    hosts = [r["host"] for r in result["per_rank"]]
    assert all(hosts.count(name) == 2 for name in fleet.names)
    assert all(r["tiers"]["storage"]["bytes_written"] > 0 for r in result["per_rank"])
    launcher = result["environment"]["launcher"]
    assert launcher["kind"] == "slurm" and launcher["job_id"].isdigit() and launcher["step_id"] == "0"
    assert launcher["nodes"] == "kvfleet[0-2]"
    assert result["environment"]["mpi"]["world_size"] == 6
    with open(os.path.join(os.path.dirname(result_path), "engine.log"), encoding="utf-8") as handle:
        command = handle.readline()
    assert "srun --nodes=3 --ntasks=6 --ntasks-per-node=2 --nodelist=kvfleet0,kvfleet1,kvfleet2 --mpi=pmix" in command
    assert f"--partition={slurm_fleet.partition}" in command and "mpirun" not in command
    headline = "6 rank(s) on 3 host(s) (kvfleet0, kvfleet1, kvfleet2), "
    assert headline in done.stdout and f"launched by slurm job {launcher['job_id']}" in done.stdout
    with open(os.path.join(os.path.dirname(result_path), "headline.txt"), encoding="utf-8") as handle:
        print("\nslurm fleet run headline:\n" + handle.read())  # `make test-fleet` shows it (pytest -s)
    assert_nothing_left(fleet)


def test_rank_0_on_a_node_that_is_not_the_launcher(fleet, slurm_fleet, collections, tmp_path):
    # kvfleet0 launches; Slurm puts rank 0 on kvfleet1, the allocation's first node, where the result is written.
    nodes = json.dumps(fleet.names[1:])
    inventory = slurm_inventory(fleet, slurm_fleet, tmp_path / "hosts.ini", run_slurm_nodes=nodes)
    done = run_playbook(fleet, collections, inventory, tmp_path / "results", "--skip-tags", "setup,datasize")
    assert done.returncode == 0, done.stdout[-4000:]
    [result_path] = result_files(tmp_path / "results")
    result = read_json(result_path)
    assert result["ranks"] == 4 and result["per_rank"][0]["host"] == fleet.names[1]
    assert sorted({r["host"] for r in result["per_rank"]}) == fleet.names[1:]
    assert result["environment"]["launcher"]["nodes"] == "kvfleet[1-2]"
    assert_nothing_left(fleet)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (
            {"run_slurm_partition": "nosuchpartition"},
            "run_slurm_partition: no partition 'nosuchpartition' in this Slurm cluster (its partitions: kvfleet)",
        ),
        # More tasks on each node than it has CPUs: Slurm's controller refuses the request.
        (
            {"kvcache_processes_per_host": 64},
            "run_processes_per_host / run_slurm_nodes / run_slurm_params: Slurm refuses the job",
        ),
        ({"run_srun_path": "/nonexistent/srun"}, "srun_path: exec_type=slurm needs srun where the module runs"),
    ],
)
def test_slurm_refuses_bad_input_before_anything_runs(fleet, slurm_fleet, collections, tmp_path, overrides, says):
    inventory = slurm_inventory(fleet, slurm_fleet, tmp_path / "hosts.ini", **overrides)
    done = run_playbook(fleet, collections, inventory, tmp_path / "results", "--tags", "run")
    assert done.returncode != 0
    assert says in done.stdout, done.stdout[-3000:]
    assert "Run the benchmark, with a timeout" not in done.stdout
    assert result_files(tmp_path / "results") == []
    assert_nothing_left(fleet)
