"""`kvcache mlperf run`: the selected options x trials, each trial one synchronized `kvcache run` on the same
communicator, written in the results layout (layout.py) by rank 0.

checks (exit 2, nothing created) -> [--what-if: the plan, exit 0] -> timestamp, system name and cluster facts
-> per option: [rest --delay] -> per trial: trial.json STARTED -> run -> result, rank files, trial.json COMPLETE
-> METADATA (complete | failed) and SUMMARY per run directory -> headline.

A failed trial stops the invocation (exit 1); so does SIGINT/SIGTERM, which ends a trial as interrupted (the run
machinery's handlers) or ends the rest. Every decision that changes what the ranks do next is taken on rank 0
and broadcast, so no rank is left waiting in a collective the others skipped.
With --json, stdout is one JSON object: {state, error, run_directories, summaries, check} (check: the checker's
command line for the results tree, shell-quoted; null when no run directory was made).
"""

import io
import json
import os
import shlex
import signal
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from dataclasses import replace
from typing import Any, Dict, List, Optional

from kvcache.benchmark import plan_rank, run_benchmark
from kvcache.errors import UsageError, shown_path
from kvcache.headline import headline
from kvcache.host_probe import nearest_existing
from kvcache.mlperf import layout, metadata, summary
from kvcache.mlperf.plan import OptionPlan, groups, option_plans, print_plan, what_if
from kvcache.mpi import open_comm
from kvcache.output import write_json_atomically
from kvcache.result_reader import load_result

COUNTDOWN_EVERY_S = 10.0
POLL_S = 0.1  # how often the rest looks for a signal or another rank's stop
TIMESTAMP_TRIES = 3  # seconds to wait for a timestamp no run directory holds yet


def run_mlperf(config, models, given, argv, stdout, stderr) -> int:
    plans = option_plans(config, models, given)  # the same answer on every rank: before MPI does anything
    comm = open_comm(config.mpi)
    if config.what_if:
        system_name = config.system_name or comm.host
        problem = comm.bcast(_system_name_problem(system_name) if comm.rank == 0 else None)
        if problem:  # the same refusal as the run's: the plan must not show a path the run would refuse
            if comm.rank == 0:
                raise UsageError(None, problem)
            return 2
        if comm.rank == 0:
            print_plan(what_if(config, plans, models, comm.size, system_name), config.json, stdout)
        return 0
    return Invocation(config, models, plans, comm, argv, stdout, stderr).run()


def _system_name_problem(system_name: str) -> Optional[str]:
    """Why rank 0's system name cannot be a directory of the results tree (None: it can)."""
    if layout.NAME_RE.match(system_name):
        return None
    return f"--system-name: rank 0's host name {system_name!r} cannot be a directory name: give one"


def _results_dir_problem(results_dir: str) -> Optional[str]:
    """Why rank 0 could not create the results tree under `results_dir` (None: it can). Creates nothing."""
    absolute = os.path.abspath(results_dir)
    nearest = nearest_existing(absolute, os.path.exists)
    if not os.path.isdir(nearest):
        return f"--results-dir: {shown_path(nearest)} is not a directory"
    # os.access says yes to root on read-only mounts: create (and remove) a file to be sure.
    try:
        fd, probe = tempfile.mkstemp(prefix=".kvcache-mlperf-probe-", dir=nearest)
    except OSError as exc:
        return f"--results-dir: cannot create files in {shown_path(nearest)}: {exc.strerror}"
    os.close(fd)
    os.unlink(probe)
    return None


class Invocation:
    """One `kvcache mlperf run` on every rank: the preflight, the options and trials, the files on rank 0."""

    def __init__(self, config, models, plans: List[OptionPlan], comm, argv, stdout, stderr):
        self.config, self.models, self.plans, self.comm = config, models, plans, comm
        self.stdout, self.stderr = stdout, stderr
        self.command = [sys.executable, "-m", "kvcache", *argv]
        self.timestamp = ""
        self.system_name = ""
        self.started = 0.0
        self.schedule: List[Dict[str, Any]] = []
        self.delays: List[Dict[str, Any]] = []
        self.created: List[str] = []  # run directories rank 0 made, in run order
        self.cluster: Dict[str, Any] = {"start": [], "end": []}
        self.hosts: List[str] = []
        self.versions: Dict[str, Any] = {}
        self.error: Optional[str] = None
        self.signalled: Optional[str] = None
        self.signal_seen = threading.Event()

    @property
    def rank0(self) -> bool:
        return self.comm.rank == 0

    def _say(self, line: str) -> None:
        if self.rank0 and not self.config.quiet:
            self.stderr.write(f"kvcache: {line}\n")
            self.stderr.flush()

    def _agree(self, problem: Optional[str]) -> Optional[str]:
        """Rank 0's decision (`problem` on rank 0) for every rank."""
        return self.comm.bcast(problem if self.rank0 else None)

    def _first(self, local: Optional[str]) -> Optional[str]:
        """The first rank's `local` that is not None, known to every rank."""
        found = self.comm.gather(local)
        return self.comm.bcast(next((f for f in found if f), None) if self.rank0 else None)

    # -- before anything is created ----------------------------------------------------------------
    def preflight(self) -> bool:
        """Every check on every rank, nothing created. False on ranks other than 0 when any check failed (rank 0
        raises the UsageError), so that every rank exits 2 together."""
        problem = None
        if self.rank0:
            self.system_name = self.config.system_name or self.comm.host
            problem = _system_name_problem(self.system_name)
            problem = problem or _results_dir_problem(self.config.results_dir) or self._choose_timestamp()
        problem = self._agree(problem)
        if problem:
            if self.rank0:
                raise UsageError(None, problem)
            return False
        self.system_name = self.comm.bcast(self.system_name)
        self.timestamp = self.comm.bcast(self.timestamp)
        for plan in self.plans:  # every option's host checks before the first trial
            if plan_rank(plan.config, self.models, self.comm, plan.checked) is None:
                return False
        return True

    def _choose_timestamp(self) -> Optional[str]:
        for attempt in range(TIMESTAMP_TRIES):
            timestamp = time.strftime(layout.TIMESTAMP_FORMAT)
            if not any(os.path.lexists(self._run_dir(model, timestamp)) for model, _plans in groups(self.plans)):
                self.timestamp = timestamp
                return None
            if attempt + 1 < TIMESTAMP_TRIES:
                time.sleep(1.0)
        return (
            f"--results-dir: a run directory for {timestamp} exists already under {shown_path(self.config.results_dir)}"
        )

    def _run_dir(self, model: str, timestamp: Optional[str] = None) -> str:
        c = self.config
        return layout.run_dir(
            c.results_dir, c.category, c.organization, self.system_name, model, timestamp or self.timestamp
        )

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            ready = self.preflight()
        except UsageError:
            raise  # every rank took part in the check: the others return 2 together
        except Exception:
            self._abort_the_others()
            raise
        if not ready:
            return 2
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.started = time.time()
            self.versions = metadata.versions(self.comm, self.config.cache_dir)
            self.cluster["start"] = metadata.gather_cluster(self.comm, self.config.cache_dir)
            self.hosts = self.comm.bcast(
                list(dict.fromkeys(f["host"] for f in self.cluster["start"])) if self.rank0 else None
            )
            self.error = self._options()
            self.cluster["end"] = metadata.gather_cluster(self.comm, self.config.cache_dir)
        except Exception:
            self._abort_the_others()
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._finish() if self.rank0 else (1 if self.error else 0)

    def _abort_the_others(self) -> None:
        """An unexpected error on one rank would leave the others waiting in a collective forever: end the job."""
        if self.comm.size > 1:
            traceback.print_exc(file=self.stderr)
            self.stderr.flush()
            self.comm.abort(1)

    def _on_signal(self, signum, _frame) -> None:
        self.signalled = signal.Signals(signum).name
        self.signal_seen.set()

    def _interrupted(self) -> Optional[str]:
        """ "interrupted by SIG..." when a signal reached any rank, known to every rank (collective)."""
        return self._first(f"interrupted by {self.signalled}" if self.signalled else None)

    def _options(self) -> Optional[str]:
        """Every option's trials; the error that stopped them (the same on every rank), or None."""
        previous_end = None
        for index, plan in enumerate(self.plans):
            if index:
                stopped = self._rest(plan.option)
                if stopped:
                    return stopped
            for trial in range(1, self.config.trials + 1):
                stopped = self._interrupted()
                if stopped:
                    return stopped
                last = index == len(self.plans) - 1 and trial == self.config.trials
                error = self._trial(plan, trial, previous_end if trial == 1 and index else None, last)
                previous_end = self.schedule[-1]["ended_unix_s"] if self.rank0 and self.schedule else None
                if error:
                    return f"option {plan.option} trial {trial}: {error}"
        return None

    def _rest(self, option: str) -> Optional[str]:
        """--delay seconds on every rank before `option`; a signal on any rank ends it (and the invocation)."""
        delay = self.config.delay
        self._say(f"rest before option {option}: {delay:g} s")
        local = None
        rest_start = time.monotonic()
        last_said = rest_start
        reported = False
        for _tick in range(int(delay / POLL_S) + 10):  # bounded: each tick waits POLL_S unless stopping
            left = delay - (time.monotonic() - rest_start)
            if left <= 0:
                break
            if self.signal_seen.is_set() and not reported:
                local = f"interrupted by {self.signalled} during the rest before option {option}"
                self.comm.report_failure(local)  # the others stop resting too
                reported = True
                break
            remote = self.comm.poll_failure()
            if remote is not None:
                local = remote[1] if remote[1].startswith("interrupted") else f"rank {remote[0]}: {remote[1]}"
                break
            if time.monotonic() - last_said >= COUNTDOWN_EVERY_S:
                last_said = time.monotonic()
                self._say(f"rest before option {option}: {left:.0f} s left")
            self.signal_seen.wait(min(POLL_S, left))
        stopped = self._first(local)
        self.comm.finish()  # drain the stop messages, so the next trial starts with none
        return stopped

    def _trial(self, plan: OptionPlan, trial: int, previous_end: Optional[float], last: bool) -> Optional[str]:
        """One trial on every rank (`last`: the invocation's last). Returns its error (the same on every rank), or
        None."""
        model_dir = self._run_dir(plan.model)
        trial_directory = layout.trial_dir(model_dir, plan.option, trial)
        result_path = layout.trial_result_file(trial_directory)
        entry = {"option": plan.option, "trial": trial, "started_unix_s": time.time(), "ended_unix_s": None}
        problem = None
        if self.rank0:
            if previous_end is not None:
                self.delays.append(
                    {
                        "before_option": plan.option,
                        "asked_s": self.config.delay,
                        "measured_s": round(entry["started_unix_s"] - previous_end, 3),
                    }
                )
            self.schedule.append(entry)
            problem = self._start_trial(model_dir, trial_directory, entry)
        problem = self._agree(problem)
        if problem:
            return problem
        c = plan.config
        self._say(
            f"option {plan.option} trial {trial}/{self.config.trials}: {c.duration:g} s, {c.model}, "
            f"{c.num_users} users per rank x {self.comm.size} rank(s)"
        )
        # --keep-cache keeps only the last trial's cache: a kept one would be another run sharing the storage with
        # the next trial (and shrink its automatic storage capacity).
        trial_config = replace(c, output=result_path, keep_cache=c.keep_cache and last)
        # A signal since the trial-start check reached only our handlers, not the run's yet: it would be missed
        # for the trial's whole duration.
        refused = self._interrupted()
        code = 1
        if refused is None:
            # A trial's own summary table stays in its result (`kvcache report` prints it): stdout gets its
            # headline (below), and with --json nothing but the one object.
            try:
                code = run_benchmark(trial_config, self.models, io.StringIO(), self.stderr, comm=self.comm)
            except UsageError as exc:  # rank 0's account of a check that failed on some rank at the trial's start
                code, refused = 2, str(exc)
        if self.rank0:
            problem = self._end_trial(trial_directory, result_path, entry, code, refused)
            self._say(f"option {plan.option} trial {trial}/{self.config.trials}: {problem or 'ok'}")
        return self._agree(problem)

    def _start_trial(self, model_dir: str, trial_directory: str, entry: Dict[str, Any]) -> Optional[str]:
        """Rank 0: the run directory (and its METADATA, running) on its first trial, then trial.json STARTED."""
        try:
            if model_dir not in self.created:
                os.makedirs(model_dir)
                self.created.append(model_dir)
            os.makedirs(trial_directory)
            self._write_metadata("running", None)
            write_json_atomically(
                os.path.join(trial_directory, layout.TRIAL_FILE),
                self._trial_doc(entry, layout.STARTED, None, None, [], {}),
            )
        except OSError as exc:
            return f"cannot write the results tree: {exc}"
        return None

    def _end_trial(self, trial_directory, result_path, entry, code: int, refused: Optional[str]) -> Optional[str]:
        """Rank 0: the rank files from the trial's result, then trial.json COMPLETE. Returns the trial's error."""
        written, error, failed_ranks, status = [], refused, [], "failed"
        try:
            result = load_result(result_path) if os.path.exists(result_path) else None
        except UsageError as exc:
            result, error = None, error or str(exc)
        try:
            if result is not None:
                written.append(result_path)
                for rank_result in result["per_rank"]:
                    path = layout.rank_file(trial_directory, rank_result["rank"], self.timestamp)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    write_json_atomically(path, self._rank_doc(entry, result, rank_result))
                    written.append(path)
                if not self.config.json:
                    self.stdout.write(f"option {entry['option']} trial {entry['trial']}/{self.config.trials}:\n")
                    self.stdout.write(textwrap.indent(headline(result), "  ") + "\n")
                    self.stdout.flush()
                failed_ranks = list(result.get("failed_ranks") or [])
                if result["status"] == "ok" and code == 0:
                    status = "ok"
                else:
                    error = error or result.get("error") or f"the run exited {code}"
            else:
                error = error or f"the run exited {code} and wrote no result"
            entry["ended_unix_s"] = time.time()
            digests = layout.relative_digests(trial_directory, written)
            write_json_atomically(
                os.path.join(trial_directory, layout.TRIAL_FILE),
                self._trial_doc(entry, layout.COMPLETE, status, error, failed_ranks, digests),
            )
        except OSError as exc:
            entry["ended_unix_s"] = entry["ended_unix_s"] or time.time()
            return f"cannot write the trial's files: {exc}"
        return None if status == "ok" else error

    def _trial_doc(self, entry, state, status, error, failed_ranks, files) -> Dict[str, Any]:
        return {
            "schema": layout.TRIAL_SCHEMA,
            "option": entry["option"],
            "trial": entry["trial"],
            "state": state,
            "world_size": self.comm.size,
            "started_unix_s": entry["started_unix_s"],
            "ended_unix_s": entry["ended_unix_s"],
            "status": status,
            "error": error,
            "failed_ranks": failed_ranks,
            "files": files,
        }

    def _rank_doc(self, entry, result, rank_result) -> Dict[str, Any]:
        return {
            "schema": layout.RANK_SCHEMA,
            "option": entry["option"],
            "trial": entry["trial"],
            "rank": rank_result["rank"],
            "world_size": self.comm.size,
            "timestamp": self.timestamp,
            "config": result["config"],
            "rank_result": rank_result,
        }

    # -- the end, on rank 0 --------------------------------------------------------------------------
    def _write_metadata(self, state: str, error: Optional[str]) -> None:
        """Rank 0: METADATA of every run directory made so far (OSError when it cannot be written)."""
        for model, plans in groups(self.plans):
            directory = self._run_dir(model)
            if directory not in self.created:
                continue
            document = metadata.document(
                state=state,
                error=error,
                category=self.config.category,
                organization=self.config.organization,
                system_name=self.system_name,
                model=model,
                timestamp=self.timestamp,
                run_options=[p.option for p in plans],
                trials=self.config.trials,
                delay_s=self.config.delay,
                parameters={p.option: p.config.as_dict() for p in plans},
                changes={p.option: p.changes for p in plans},
                schedule=self.schedule,
                delays=self.delays,
                command=self.command,
                versions_=self.versions,
                hosts=self.hosts,
                cluster=self.cluster,
                started_unix_s=self.started,
                ended_unix_s=None if state == "running" else time.time(),
            )
            write_json_atomically(layout.metadata_file(directory, self.timestamp), document)

    def _finish(self) -> int:
        """Rank 0: METADATA complete or failed, SUMMARY of each run directory, the headline. The exit code."""
        error = self.error
        summaries = []
        try:
            self._write_metadata("failed" if error else "complete", error)
            for directory in self.created:
                document = summary.summarize(directory)
                write_json_atomically(layout.summary_file(directory, self.timestamp), document)
                summaries.append(document)
        except (OSError, ValueError) as exc:
            error = error or f"cannot write the run's metadata or summary: {exc}"
            self.stderr.write(f"kvcache: {error}\n")
        # A hint, not a verdict: only the checker gives that.
        check = f"kvcache mlperf check {shlex.quote(self.config.results_dir)}" if self.created else None
        if self.config.json:
            state = "failed" if error else "complete"
            out = {
                "state": state,
                "error": error,
                "run_directories": self.created,
                "summaries": summaries,
                "check": check,
            }
            self.stdout.write(json.dumps(out, indent=2) + "\n")
        else:
            for document in summaries:
                for line in summary.headline_lines(document):
                    self.stdout.write(line + "\n")
            if check:
                self.stdout.write(f"for the rules verdict run: {check}\n")
        self.stdout.flush()
        if error:
            self.stderr.write(f"kvcache: mlperf run failed: {error}\n")
            return 1
        return 0
