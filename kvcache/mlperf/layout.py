"""The results tree of `kvcache mlperf run`, in mlpstorage's layout, and the names of its files.

    <results_dir>/<category>/<organization>/results/<system_name>/kv_cache/<model>/run/<timestamp>/
        kv_cache_<timestamp>_metadata.json   parameters, command, versions, cluster at start and end (METADATA)
        kv_cache_<timestamp>_summary.json    per option: the rules' figures and ours, labelled (SUMMARY)
        option_<O>/trial_<T>/
            trial.json                       state (started -> complete), ranks, status, file digests (TRIAL)
            kvcache_result.json              the trial's `kvcache run` result (result/v1): every rank, one window
            rank_<N>/kvcache_results_<timestamp>.json   one rank's share of it (RANK)

Rank 0 writes all of it on its own host from what every rank sent it: no shared filesystem is needed.
`<category>` is closed or open (what was asked); the checker's verdict may still be OPEN or INVALID.
A run directory holds one model's options: `--option all` makes two (llama3.1-8b for 1 and 2, 70b for 3),
under the same timestamp.

What each file holds (JSON objects; "schema" names the format):
- TRIAL (trial.json): schema, option ("1"), trial (1..), state (STARTED | COMPLETE), world_size, started_unix_s,
  ended_unix_s (null while STARTED), status (ok | failed; null while STARTED), error, failed_ranks,
  files ({path relative to the trial directory: sha256} of kvcache_result.json and every rank file).
- RANK (rank_<N>/...): schema, option, trial, rank, world_size, timestamp, config (the trial result's config
  block: every `kvcache run` option value, seeds_per_rank, ...), rank_result (the trial result's per_rank entry
  of this rank: status, error, window, tiers, latency_ms, requests, tokens, reference_metrics, ...).
- METADATA: schema, benchmark ("kv_cache"), state (running | complete | failed), error, category, organization,
  system_name, model, timestamp, options (this directory's, in run order), trials, delay_s (asked),
  rules ({name, trials, delay_s, closed_parameters: {option: {parameter: value}}}),
  parameters ({option: every `kvcache run` option value its trials ran with}), changes ({option: [{parameter,
  closed, value}]}: what OPEN changed; [] for CLOSED), schedule ([{option, trial, started_unix_s,
  ended_unix_s}] of the whole invocation, both models), delays ([{before_option, asked_s, measured_s}]: the rest
  between the end of one option's last trial and the start of the next option's first), command (argv),
  versions ({kvcache, python, numpy, mpi}), world_size, hosts, cluster ({start: [...], end: [...]}: each rank's
  host facts), started_unix_s, ended_unix_s.
- SUMMARY: schema, category, model, timestamp, total_ranks, options ({option: figures}; see summary.py).
"""

import hashlib
import os
import re
from typing import Dict, List

TIMESTAMP_FORMAT = "%Y%m%d_%H%M%S"
TIMESTAMP_RE = re.compile(r"^\d{8}_\d{6}$")
# A name that becomes one directory of the tree: no separators, no dot-only names, no spaces.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

BENCHMARK_DIR = "kv_cache"
TRIAL_FILE = "trial.json"
TRIAL_RESULT_FILE = "kvcache_result.json"
OPTION_PREFIX, TRIAL_PREFIX = "option_", "trial_"
# The deepest directory of a run directory (option_<O>/trial_<T>/rank_<N>) is this many levels below it.
RUN_DIR_DEPTH = 3

METADATA_SCHEMA = "kvcache-mlperf-metadata/v1"
SUMMARY_SCHEMA = "kvcache-mlperf-summary/v1"
TRIAL_SCHEMA = "kvcache-mlperf-trial/v1"
RANK_SCHEMA = "kvcache-mlperf-rank/v1"

# trial.json's state: written as STARTED before the trial's barrier, rewritten as COMPLETE after rank 0 wrote the
# trial's files. A trial still STARTED was interrupted (a rank was killed, the job aborted).
STARTED, COMPLETE = "started", "complete"


def run_dir(results_dir: str, category: str, organization: str, system_name: str, model: str, timestamp: str) -> str:
    return os.path.join(
        results_dir, category, organization, "results", system_name, BENCHMARK_DIR, model, "run", timestamp
    )


def metadata_file(run_directory: str, timestamp: str) -> str:
    return os.path.join(run_directory, f"kv_cache_{timestamp}_metadata.json")


def summary_file(run_directory: str, timestamp: str) -> str:
    return os.path.join(run_directory, f"kv_cache_{timestamp}_summary.json")


def option_dir(run_directory: str, option: str) -> str:
    return os.path.join(run_directory, f"{OPTION_PREFIX}{option}")


def trial_dir(run_directory: str, option: str, trial: int) -> str:
    """Trials count from 1."""
    return os.path.join(option_dir(run_directory, option), f"{TRIAL_PREFIX}{trial}")


def trial_result_file(trial_directory: str) -> str:
    """The trial's `kvcache run` result (its --output)."""
    return os.path.join(trial_directory, TRIAL_RESULT_FILE)


def rank_file(trial_directory: str, rank: int, timestamp: str) -> str:
    return os.path.join(trial_directory, f"rank_{rank}", f"kvcache_results_{timestamp}.json")


def is_run_dir(path: str) -> bool:
    """A directory named by a timestamp that holds its kv_cache_<timestamp>_metadata.json."""
    name = os.path.basename(os.path.normpath(path))
    return bool(TIMESTAMP_RE.match(name)) and os.path.isfile(metadata_file(path, name))


def find_run_dirs(top: str) -> List[str]:
    """Every run directory at or under `top`, sorted; bounded by the layout's depth, and never following symlinks.
    A `top` inside a run directory (option_1, a trial) gives the run directory it is in."""
    top = os.path.normpath(top)  # "run/" has an empty basename
    found = []
    top_depth = top.count(os.sep)
    for root, dirs, _files in os.walk(top):
        if root.count(os.sep) - top_depth >= 12:  # deeper than any run directory under a results dir
            dirs[:] = []
        if is_run_dir(root):
            found.append(root)
            dirs[:] = []  # a run directory holds no other run
    if not found:
        above = os.path.abspath(top)  # a relative "." has no parent to walk up to
        for _level in range(RUN_DIR_DEPTH):
            above = os.path.dirname(above)
            if is_run_dir(above):
                found.append(above)
                break
    return sorted(found)


def digest(path: str) -> str:
    """sha256 of a file the run wrote (trial.json records them; the checker compares)."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def relative_digests(trial_directory: str, paths: List[str]) -> Dict[str, str]:
    return {os.path.relpath(p, trial_directory): digest(p) for p in paths}
