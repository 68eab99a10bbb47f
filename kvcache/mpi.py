"""Rank, world size and the few collectives the engine needs; a one-rank stand-in when MPI is off.

mpi4py is imported only when MPI is really in use, so the engine runs without it.
Only the main thread of each rank calls MPI; worker threads never do.
"""

import os
import socket
import sys
from typing import Any, List, Optional, Tuple

from kvcache.errors import UsageError

# Set by Open MPI, MPICH/Hydra, Intel MPI or PMIx launchers in every rank's environment.
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS")
TAG_FAILED = 7101  # a rank tells rank 0 it failed
TAG_STOP = 7102  # rank 0 tells every rank to stop early
TAG_PROGRESS = 7103  # a rank's latest time-series sample, for rank 0's live view of the fleet
MAX_PROGRESS_PER_POLL = 4  # messages taken from each rank per poll: a poll stays short, and none piles up


def launched_by_mpi(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return any(name in environ for name in LAUNCHER_VARIABLES)


class LocalComm:
    """A single rank: the same interface as MpiComm with nothing to talk to."""

    rank = 0
    size = 1
    library = None

    def __init__(self):
        self.host = socket.gethostname()

    def barrier(self) -> None:
        pass

    def bcast(self, value: Any) -> Any:
        return value

    def gather(self, value: Any) -> Optional[List[Any]]:
        return [value]

    def report_failure(self, message: str) -> None:
        pass

    def poll_failure(self) -> Optional[Tuple[int, str]]:
        return None

    def send_progress(self, point: dict) -> None:
        pass

    def poll_progress(self) -> List[Tuple[int, dict]]:
        return []

    def finish(self) -> None:
        pass

    def abort(self, code: int) -> None:
        pass


class MpiComm:
    """COMM_WORLD through mpi4py, with an out-of-band failure channel polled by the control loop."""

    def __init__(self, mpi_module):
        self.MPI = mpi_module
        self.comm = mpi_module.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.host = socket.gethostname()
        self.library = mpi_module.Get_library_version().replace("\x00", "").strip().splitlines()[0]
        self._start_run()

    def _start_run(self) -> None:
        """The failure channel's state of one run: nothing sent or received yet."""
        self._pending = []
        self._stop_sent = False
        self._failures_sent = 0  # this rank's TAG_FAILED messages in this run
        self._received = [0] * self.size  # rank 0: TAG_FAILED messages received from each rank
        self._stop_received = False
        self._progress_sends = []  # this rank's TAG_PROGRESS messages not known to be complete yet
        self._progress_sent = 0
        self._progress_received = [0] * self.size  # rank 0: TAG_PROGRESS messages received from each rank

    def barrier(self) -> None:
        self.comm.Barrier()

    def bcast(self, value: Any) -> Any:
        return self.comm.bcast(value, root=0)

    def gather(self, value: Any) -> Optional[List[Any]]:
        return self.comm.gather(value, root=0)

    def report_failure(self, message: str) -> None:
        """Tell the world this rank failed, without waiting for the window to end."""
        if self.rank == 0:
            self._broadcast_stop((0, message))
        else:
            self._pending.append(self.comm.isend((self.rank, message), dest=0, tag=TAG_FAILED))
            self._failures_sent += 1

    def _broadcast_stop(self, failure) -> None:
        if self._stop_sent:
            return
        self._stop_sent = True
        for dest in range(1, self.size):
            self._pending.append(self.comm.isend(failure, dest=dest, tag=TAG_STOP))

    def poll_failure(self) -> Optional[Tuple[int, str]]:
        """(rank, error) of a failed rank, or None. Rank 0 relays the first failure to everyone."""
        if self.rank == 0:
            status = self.MPI.Status()
            if self.comm.iprobe(source=self.MPI.ANY_SOURCE, tag=TAG_FAILED, status=status):
                source = status.Get_source()
                failure = self.comm.recv(source=source, tag=TAG_FAILED)
                self._received[source] += 1
                self._broadcast_stop(failure)
                return failure
            return None
        if not self._stop_received and self.comm.iprobe(source=0, tag=TAG_STOP):
            self._stop_received = True  # rank 0 sends at most one per run
            return self.comm.recv(source=0, tag=TAG_STOP)
        return None

    def send_progress(self, point: dict) -> None:
        """This rank's latest sample for rank 0's view, without waiting (rank 0 reads them in its control loop)."""
        self._progress_sends = [request for request in self._progress_sends if not request.Test()]
        self._progress_sends.append(self.comm.isend((self.rank, point), dest=0, tag=TAG_PROGRESS))
        self._progress_sent += 1

    def poll_progress(self) -> List[Tuple[int, dict]]:
        """Rank 0: the (rank, sample) messages that have arrived, a few per rank at most."""
        arrived = []
        status = self.MPI.Status()
        for _message in range(MAX_PROGRESS_PER_POLL * (self.size - 1)):
            if not self.comm.iprobe(source=self.MPI.ANY_SOURCE, tag=TAG_PROGRESS, status=status):
                break
            source = status.Get_source()
            arrived.append(self.comm.recv(source=source, tag=TAG_PROGRESS))
            self._progress_received[source] += 1
        return arrived

    def abort(self, code: int) -> None:
        """End every rank of the job now (mpirun then exits non-zero)."""
        self.comm.Abort(code)

    def finish(self) -> None:
        """End of a run: receive every failure, stop and sample message still in flight, complete our sends, so MPI
        finalizes cleanly and the next run on this communicator (an MLPerf run's next trial) starts with none.

        Counted, not probed: a message still on its way when a probe looks would be missed and would stop the
        next run. Rank 0 learns how many failures and samples each rank sent and every rank whether a stop was
        sent; then each receives exactly what it has not received yet (blocking, bounded: they were all sent)."""
        sent = self.comm.gather((self._failures_sent, self._progress_sent), root=0)
        stop_sent = self.comm.bcast(self._stop_sent if self.rank == 0 else None, root=0)
        if self.rank == 0:
            for source in range(1, self.size):
                failures, samples = sent[source]
                for _message in range(failures - self._received[source]):
                    self.comm.recv(source=source, tag=TAG_FAILED)
                for _message in range(samples - self._progress_received[source]):
                    self.comm.recv(source=source, tag=TAG_PROGRESS)
        elif stop_sent and not self._stop_received:
            self.comm.recv(source=0, tag=TAG_STOP)
        for request in self._pending + self._progress_sends:
            request.wait()
        self.comm.Barrier()
        self._start_run()


def open_comm(mode: str):
    """mode: auto (MPI when a launcher started us), on (MPI required), off."""
    if mode == "off" or (mode == "auto" and not launched_by_mpi()):
        return LocalComm()
    try:
        from mpi4py import MPI  # noqa: PLC0415 - optional dependency, imported only when MPI is in use
    except ImportError:
        why = "launched by mpirun/mpiexec" if mode == "auto" else "--mpi on"
        raise UsageError(
            "--mpi",
            f"{why} but mpi4py is not installed for {sys.executable}; install it (pip install mpi4py) or use --mpi off",
        ) from None
    return MpiComm(MPI)
