"""What started the ranks: Slurm's srun, an MPI launcher, or nobody (one process), and Slurm's job and nodes.

The kind is read off the process tree (a rank's nearest launcher ancestor), not off environment variables
alone: mpirun inside a Slurm allocation inherits SLURM_JOB_ID too, and a rank started by srun may see
Open MPI's variables. The job id and node list come from Slurm's environment wherever the job is one.
"""

import os
from typing import Callable, Dict, Optional

from kvcache.mpi import launched_by_mpi

ANCESTORS_SEARCHED = 4  # a rank, perhaps a wrapper script or `timeout`, then the launcher's process
# Process names (/proc/PID/comm, at most 15 characters) of each launcher's rank parent.
SLURM_PARENTS = ("slurmstepd",)
MPI_PARENTS = ("mpirun", "mpiexec", "orterun", "orted", "prterun", "prted", "hydra_pmi_proxy", "mpiexec.hydra")


def _proc_parent(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            # The name is in parentheses and may hold spaces: the fields after its closing one are fixed.
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _proc_name(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


def launcher_process(
    pid: Optional[int] = None,
    parent: Callable[[int], Optional[int]] = _proc_parent,
    name: Callable[[int], Optional[str]] = _proc_name,
) -> Optional[str]:
    """'slurm' or 'mpi' after the nearest launcher among this process's ancestors, else None."""
    current = os.getpid() if pid is None else pid
    for _step in range(ANCESTORS_SEARCHED):
        current = parent(current)
        if not current or current <= 1:
            return None
        process = name(current)
        if process in SLURM_PARENTS:
            return "slurm"
        if process in MPI_PARENTS:
            return "mpi"
    return None


def describe_launcher(environ: Optional[Dict[str, str]] = None, process: Optional[str] = "") -> dict:
    """The result's environment.launcher: kind (slurm, mpirun or none), Slurm's job id, step id and node list.

    `process` is launcher_process()'s answer (looked up when left as ""); kind is "mpirun" for any MPI
    launcher, and Slurm's fields are null outside a Slurm job.
    """
    environ = os.environ if environ is None else environ
    process = launcher_process() if process == "" else process
    if process == "slurm" or (process is None and "SLURM_STEP_ID" in environ and "SLURM_PROCID" in environ):
        kind = "slurm"
    elif process == "mpi" or launched_by_mpi(environ):
        kind = "mpirun"
    else:
        kind = "none"
    return {
        "kind": kind,
        "job_id": environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID"),
        "step_id": environ.get("SLURM_STEP_ID") if kind == "slurm" else None,
        # Slurm's compressed form (kvfleet[0-2]); the result's hosts field lists the names the ranks reported.
        "nodes": environ.get("SLURM_STEP_NODELIST" if kind == "slurm" else "SLURM_JOB_NODELIST")
        or environ.get("SLURM_JOB_NODELIST"),
    }
