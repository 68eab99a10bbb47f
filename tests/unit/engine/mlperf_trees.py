"""Hand-made MLPerf results trees, file by file as kvcache/mlperf/layout.py's docstring describes them.

Every figure is a formula of (option, trial, rank) (FIGURES), so that the tests can compute what the summary must
say. Helpers rewrite a file in place and, when a test wants only one defect, refresh the digests and the summary.
"""

import json
import os

from kvcache.mlperf import layout, rules
from kvcache.mlperf.summary import summarize
from kvcache.workload import DEFAULT_PROFILE

MIB = 1 << 20
TIMESTAMP = "20260101_120000"
T0 = 1_767_268_800.0


def figures(option, trial, rank):
    """One rank's storage figures in one trial: distinct per trial and rank, so sums and means are checkable."""
    o = int(option)
    return {
        "read_bw": (100 * trial + 10 * rank + o) * MIB,
        "write_bw": (50 * trial + 5 * rank + o) * MIB,
        "tokens": 1000.0 * trial + 100.0 * rank,
        "read_p95": 1.5 * trial + 0.25 * rank,
        "write_p95": 2.0 * trial + 0.5 * rank,
        "entries": 10 + rank,
    }


def _percentiles(p95, count=100):
    return {"p50": p95 / 2, "p95": p95, "p99": p95 * 1.5, "p999": p95 * 2, "p9999": p95 * 2, "max": p95 * 3,
            "mean": p95 / 2, "count": count}  # fmt: skip


def _tier(read_bw, write_bw, seconds, read_p95, write_p95, entries):
    return {
        "bytes_read": int(read_bw * seconds),
        "bytes_written": int(write_bw * seconds),
        "read_bandwidth_bytes_per_s": read_bw,
        "write_bandwidth_bytes_per_s": write_bw,
        "read_latency_ms": _percentiles(read_p95),
        "write_latency_ms": _percentiles(write_p95),
        "entries": entries,
    }


def _window(start, seconds):
    return {"start_unix_s": start, "end_unix_s": start + seconds, "seconds": seconds}


def rank_result(option, trial, rank, start, seconds, status="ok"):
    f = figures(option, trial, rank)
    return {
        "rank": rank,
        "host": f"host{rank}",
        "seed": 42 + rank,
        "status": status,
        "error": None if status == "ok" else "killed",
        "window": _window(start, seconds),
        "tiers": {"storage": _tier(f["read_bw"], f["write_bw"], seconds, f["read_p95"], f["write_p95"], f["entries"])},
        "reference_metrics": {
            "storage_throughput_tokens_per_sec": f["tokens"],
            "tokens": int(f["tokens"] * seconds),
            "storage_io_seconds": seconds,
            "definition": "tokens / storage I/O seconds",
        },
    }


def trial_result(option, trial, world_size, config, start, seconds):
    """The trial's `kvcache run` result: the aggregate bandwidth is not the ranks' sum (ranks overlap unevenly)."""
    ranks = [rank_result(option, trial, r, start, seconds) for r in range(world_size)]
    read = sum(figures(option, trial, r)["read_bw"] for r in range(world_size)) * 0.9
    write = sum(figures(option, trial, r)["write_bw"] for r in range(world_size)) * 0.8
    p95 = max(figures(option, trial, r)["read_p95"] for r in range(world_size))
    return {
        "schema": "storagebench.kvcache/result/v1",
        "status": "ok",
        "error": None,
        "failed_ranks": [],
        "config": config,
        "environment": {"io_engine_requested": config["io_engine"], "io_engine": config["io_engine"]},
        "warnings": [],
        "ranks": world_size,
        "window": _window(start, seconds),
        "tiers": {"storage": _tier(read, write, seconds, p95 * 0.9, p95 * 1.1, 10)},
        "per_rank": ranks,
    }


def trial_config(option, category, world_size, given):
    values = rules.trial_values(option, category, given, {"cache_dir": "/tmp/kvcache-cache"})
    values["workload"] = json.loads(json.dumps(DEFAULT_PROFILE.as_dict()))
    values["seeds_per_rank"] = [values["seed"] + r for r in range(world_size)]
    return values


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1)


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def edit_json(path, change):
    """Rewrite a file of the tree with `change(value)` applied (a tampering: the digests are left as they were)."""
    value = read_json(path)
    change(value)
    write_json(path, value)


def write_trial(run_directory, option, trial, world_size, config, start, seconds):
    directory = layout.trial_dir(run_directory, option, trial)
    result = trial_result(option, trial, world_size, config, start, seconds)
    paths = [os.path.join(directory, layout.TRIAL_RESULT_FILE)]
    write_json(paths[0], result)
    for rank in range(world_size):
        path = layout.rank_file(directory, rank, TIMESTAMP)
        write_json(path, {"schema": layout.RANK_SCHEMA, "option": option, "trial": trial, "rank": rank,
                          "world_size": world_size, "timestamp": TIMESTAMP, "config": config,
                          "rank_result": result["per_rank"][rank]})  # fmt: skip
        paths.append(path)
    write_json(os.path.join(directory, layout.TRIAL_FILE), {
        "schema": layout.TRIAL_SCHEMA, "option": option, "trial": trial, "state": layout.COMPLETE,
        "world_size": world_size, "started_unix_s": start - 1, "ended_unix_s": start + seconds + 1,
        "status": "ok", "error": None, "failed_ranks": [],
        "files": layout.relative_digests(directory, paths),
    })  # fmt: skip


def refresh_digests(run_directory, option, trial):
    """Record the trial's files as they are now (a defect other than a digest mismatch is what the test wants)."""
    directory = layout.trial_dir(run_directory, option, trial)
    path = os.path.join(directory, layout.TRIAL_FILE)
    record = read_json(path)
    present = [os.path.join(directory, p) for p in record["files"] if os.path.exists(os.path.join(directory, p))]
    record["files"] = layout.relative_digests(directory, present)
    write_json(path, record)


def write_summary(run_directory):
    write_json(layout.summary_file(run_directory, TIMESTAMP), summarize(run_directory))


def build(base, category="open", options=("1",), trials=2, world_size=2, given=None, delay_s=0.0, summary=True):
    """A complete run directory under `base`: metadata, every trial, the summary. `given`: what an OPEN run changed
    (the same for every option). Returns the run directory."""
    given = dict(given or {})
    run_directory = layout.run_dir(str(base), category, "acme", "sys1", rules.closed_parameters(options[0])["model"],
                                   TIMESTAMP)  # fmt: skip
    os.makedirs(run_directory)
    parameters, schedule, delays = {}, [], []
    clock = T0
    for index, option in enumerate(options):
        if index:
            delays.append({"before_option": option, "asked_s": delay_s, "measured_s": delay_s})
            clock += delay_s
        config = trial_config(option, category, world_size, given)
        parameters[option] = {k: v for k, v in config.items() if k != "seeds_per_rank"}
        seconds = float(config["duration"])
        for trial in range(1, trials + 1):
            write_trial(run_directory, option, trial, world_size, config, clock, seconds)
            schedule.append({"option": option, "trial": trial, "started_unix_s": clock - 1,
                             "ended_unix_s": clock + seconds + 1})  # fmt: skip
            clock += seconds + 2
    write_json(layout.metadata_file(run_directory, TIMESTAMP), {
        "schema": layout.METADATA_SCHEMA, "benchmark": layout.BENCHMARK_DIR, "state": "complete", "error": None,
        "category": category, "organization": "acme", "system_name": "sys1",
        "model": parameters[options[0]]["model"], "timestamp": TIMESTAMP, "options": list(options),
        "trials": trials, "delay_s": delay_s,
        "rules": {"name": rules.RULES, "trials": rules.TRIALS, "delay_s": rules.DELAY_S,
                  "closed_parameters": {o: rules.closed_parameters(o) for o in options}},
        "parameters": parameters,
        "changes": {o: rules.changes(o, parameters[o]) for o in options},
        "schedule": schedule, "delays": delays, "command": ["kvcache", "mlperf", "run"],
        "versions": {"kvcache": "0", "python": "3", "numpy": "1", "mpi": None},
        "world_size": world_size, "hosts": [f"host{r}" for r in range(world_size)],
        "cluster": {"start": [], "end": []}, "started_unix_s": T0 - 5, "ended_unix_s": clock,
    })  # fmt: skip
    if summary:
        write_summary(run_directory)
    return run_directory


def closed(base, **kwargs):
    """A CLOSED run as the rules want it: 3 trials, the rules' parameters, the rules' delay."""
    return build(base, category="closed", trials=rules.TRIALS, delay_s=rules.DELAY_S, **kwargs)
