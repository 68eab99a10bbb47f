"""The test harness's Slurm cluster itself (slurm_cluster.py): srun with PMIx across the namespace hosts, each
task seeing its host's own files, sbatch, and a teardown that leaves nothing running."""

import os
import subprocess
import sys

from fleet import SHARED_CACHE
from slurm_cluster import SlurmCluster

# Each rank: its rank, the world's size, its host, and the allreduce of the ranks; rank r writes a file named by
# its rank into the host's cache directory.
RANK_SCRIPT = """
import os, socket
from mpi4py import MPI
world = MPI.COMM_WORLD
total = world.allreduce(world.Get_rank())
open(os.path.join(os.environ["OUT"], f"rank-{world.Get_rank()}"), "w").close()
print(world.Get_rank(), world.Get_size(), socket.gethostname(), total, flush=True)
"""


def on_host(fleet, cluster, index, *argv, timeout=90):
    """A command on a fleet host as a login there runs it, with the cluster's client settings."""
    settings = [f"{name}={value}" for name, value in cluster.env.items()]
    return fleet.ssh(index, "env", *settings, *argv, timeout=timeout)


def test_srun_starts_two_mpi_ranks_on_each_host_and_each_sees_its_hosts_files(fleet, slurm_fleet, tmp_path):
    script = tmp_path / "ranks.py"  # a file every host sees: ssh would split a script given on its command line
    script.write_text(RANK_SCRIPT)
    done = on_host(
        fleet, slurm_fleet, 0, "env", f"OUT={SHARED_CACHE}", "srun", "--mpi=pmix", "--nodes=3", "--ntasks=6",
        "--ntasks-per-node=2", f"--nodelist={','.join(fleet.names)}", sys.executable, str(script),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = sorted(line.split() for line in done.stdout.splitlines())
    assert [int(row[0]) for row in rows] == list(range(6))
    assert {row[1] for row in rows} == {"6"} and {row[3] for row in rows} == {str(sum(range(6)))}
    hosts = [row[2] for row in rows]
    assert all(hosts.count(name) == 2 for name in fleet.names)
    for index, name in enumerate(fleet.names):
        written = sorted(os.path.basename(path) for path in fleet.private_cache_files(index))
        assert written == sorted(f"rank-{row[0]}" for row in rows if row[2] == name)  # only its own ranks' files
        for path in fleet.private_cache_files(index):
            os.remove(path)


def test_sbatch_wait_runs_a_batch_job_on_a_node(fleet, slurm_fleet, tmp_path):
    script = tmp_path / "job.sh"
    output = tmp_path / "job.out"
    script.write_text("#!/bin/sh\necho batch on $(hostname) job $SLURM_JOB_ID\n")
    done = on_host(fleet, slurm_fleet, 1, "sbatch", "--wait", "--nodes=1", f"--output={output}", str(script))
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[-1]
    assert output.read_text().strip().startswith("batch on kvfleet") and output.read_text().split()[-1] == job_id


def daemons_naming(directory):
    listing = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if directory in line and "ps -eo" not in line]


def test_a_cluster_taken_down_leaves_no_daemon_and_no_directory(fleet, slurm_fleet):
    # A second cluster on the same hosts cannot run beside the first (same ports): bring the first down and up.
    slurm_fleet.down()
    assert daemons_naming(slurm_fleet.dir) == [] and not os.path.exists(slurm_fleet.dir)
    again = SlurmCluster(fleet).up()
    assert len(daemons_naming(again.dir)) == 2 + len(fleet.names)  # munged, slurmctld, one slurmd a host
    # Down from another object, as `fleet.py down` in another process does: by the daemons' pid files.
    SlurmCluster(fleet).down()
    assert daemons_naming(again.dir) == [] and not os.path.exists(again.dir)
    slurm_fleet.up()  # for the tests after this one
