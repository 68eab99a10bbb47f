"""What started the ranks: the process tree decides the kind, Slurm's environment gives the job."""

import pytest

from kvcache.headline import headline_lines
from kvcache.launcher import ANCESTORS_SEARCHED, describe_launcher, launcher_process


def tree(*names):
    """A process chain: pid 100 is this process, its parent 101 is names[0], 102 is names[1], ..."""
    parents = {100 + i: 101 + i for i in range(len(names))}
    comms = {101 + i: name for i, name in enumerate(names)}
    return {"pid": 100, "parent": parents.get, "name": comms.get}


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["slurmstepd"], "slurm"),
        (["sh", "slurmstepd"], "slurm"),  # a wrapper script between the rank and srun's step daemon
        (["mpirun"], "mpi"),
        (["orted"], "mpi"),
        (["prted"], "mpi"),
        (["hydra_pmi_proxy"], "mpi"),
        (["orted", "slurmstepd"], "mpi"),  # mpirun inside an allocation: its daemons run as a Slurm step
        (["bash", "sshd"], None),
    ],
)
def test_the_nearest_launcher_ancestor_decides(names, expected):
    assert launcher_process(**tree(*names)) == expected


def test_the_search_is_bounded():
    deep = ["sh"] * ANCESTORS_SEARCHED + ["slurmstepd"]
    assert launcher_process(**tree(*deep)) is None


SRUN_ENV = {
    "SLURM_JOB_ID": "42",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "3",
    "SLURM_STEP_NODELIST": "kvfleet[0-2]",
    "SLURM_JOB_NODELIST": "kvfleet[0-3]",
    "PMIX_RANK": "3",
}


def test_srun_ranks_record_the_job_its_step_and_the_steps_nodes():
    assert describe_launcher(SRUN_ENV, "slurm") == {
        "kind": "slurm",
        "job_id": "42",
        "step_id": "0",
        "nodes": "kvfleet[0-2]",
    }


def test_mpirun_inside_an_allocation_is_mpirun_with_the_job():
    inside = dict(SRUN_ENV, OMPI_COMM_WORLD_SIZE="6")
    assert describe_launcher(inside, "mpi") == {
        "kind": "mpirun",
        "job_id": "42",
        "step_id": None,
        "nodes": "kvfleet[0-3]",
    }


def test_without_a_launcher_ancestor_the_environment_decides():
    assert describe_launcher(SRUN_ENV, None)["kind"] == "slurm"
    assert describe_launcher({"OMPI_COMM_WORLD_SIZE": "2"}, None)["kind"] == "mpirun"
    assert describe_launcher({}, None) == {"kind": "none", "job_id": None, "step_id": None, "nodes": None}
    # A single process in a batch script: no step, no launcher, but the job is known.
    assert describe_launcher({"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n1"}, None) == {
        "kind": "none",
        "job_id": "7",
        "step_id": None,
        "nodes": "n1",
    }


def figures(launcher):
    base = {
        "status": "ok",
        "error": None,
        "model": "tiny-1b",
        "ranks": 6,
        "hosts": ["a", "b", "c"],
        "host_count": 3,
        "window_s": 3.0,
        "storage_read_bytes_per_s": 0,
        "storage_write_bytes_per_s": 0,
        "storage_read_p95_ms": None,
        "storage_write_p95_ms": None,
        "ttft_p95_ms": None,
        "generated_tokens_per_s": None,
        "hit_rate": None,
        "dropped_entries": 0,
        "dropped_share_of_writes": 0.0,
        "sla": "PASS",
        "autoscaling": None,
        "autoscaling_mode": None,
        "break_even": None,
        "device": None,
        "device_share": None,
        "block_latency": None,
    }
    base.update(launcher)
    return base


@pytest.mark.parametrize(
    ("launcher", "ending"),
    [
        ({"launcher": "slurm", "slurm_job_id": "42"}, "model tiny-1b, launched by slurm job 42"),
        ({"launcher": "mpirun", "slurm_job_id": None}, "model tiny-1b, launched by mpirun"),
        ({"launcher": "none", "slurm_job_id": None}, "model tiny-1b"),
        ({"launcher": None, "slurm_job_id": None}, "model tiny-1b"),  # a result older than the launcher block
    ],
)
def test_the_headline_names_the_launcher_and_slurms_job(launcher, ending):
    assert headline_lines(figures(launcher))[1].endswith(ending)
