"""The SUMMARY of an MLPerf run directory: per option, the rules' figures and ours, computed from the tree alone.

The rules' aggregation (MLPerf Storage KV-cache): per trial, each figure is the SUM over ranks of the rank's own
figure; the headline is the MEAN over trials; device p95 is the MAX over ranks and trials. Ours stands beside it,
labelled: the IOR-style bandwidth of the one common window and percentiles pooled over every rank's histogram.

Only complete trials count: trial.json COMPLETE with status ok, the trial's result present, and every rank file
0..world_size-1 present with status ok. A trial with a missing or failed rank is never averaged in (mlpstorage
averaged the survivors); it is listed with its reason instead. The checker recomputes this and compares it with
the file, so every float is rounded to DIGITS decimals and the result depends on nothing but the files.
"""

import json
import math
import os
import statistics
from typing import Any, Dict, List, Optional, Tuple

from kvcache.mlperf import layout
from kvcache.units import GIB

DIGITS = 6
# A tree file is a few KiB per rank; the bound keeps a stray huge file from being read whole.
MAX_TREE_FILE_BYTES = 64 << 20

RULES_DEFINITION = (
    "MLPerf rules: per trial, storage read/write bandwidth and storage tokens/s are the SUM over ranks of each rank's "
    "own figure (a rank without storage I/O counts 0); mean, median, population stdev, min and max are over complete "
    "trials; device p95 is the MAX over ranks and trials of each rank's storage p95"
)
OURS_DEFINITION = (
    "storagebench.kvcache's own view: IOR-style bandwidth (all ranks' bytes / the one common window of the trial) and "
    "storage latency percentiles pooled over all ranks' histograms, per trial, with their mean and max"
)
DIRECTIONS = ("read", "write")


def read_json(path: str) -> Dict[str, Any]:
    """One file of the tree as a JSON object; ValueError (with why) when it cannot be, OSError when absent."""
    size = os.path.getsize(path)
    if size > MAX_TREE_FILE_BYTES:
        raise ValueError(f"{size:,} bytes, more than any file of a results tree ({MAX_TREE_FILE_BYTES:,})")
    with open(path, "rb") as handle:
        data = handle.read(MAX_TREE_FILE_BYTES + 1)
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg}, line {exc.lineno})") from exc
    except RecursionError as exc:
        raise ValueError("nested deeper than any file of a results tree") from exc
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(float(value), DIGITS)


def spread(per_trial: List[float]) -> Dict[str, Any]:
    """mean (the headline), median, population stdev (0 for one trial), min, max over trials, and the values."""
    values = [_round(v) for v in per_trial]
    if not values:
        return {"mean": None, "median": None, "stdev": None, "min": None, "max": None, "per_trial": []}
    return {
        "mean": _round(statistics.fmean(values)),
        "median": _round(statistics.median(values)),
        "stdev": _round(statistics.pstdev(values)),
        "min": min(values),
        "max": max(values),
        "per_trial": values,
    }


def _mean_max(per_trial: List[Optional[float]]) -> Dict[str, Any]:
    values = [_round(v) for v in per_trial]
    measured = [v for v in values if v is not None]
    return {
        "per_trial": values,
        "mean": _round(statistics.fmean(measured)) if measured else None,
        "max": max(measured) if measured else None,
    }


def as_dict(value: Any) -> dict:
    """A level of a tree file read as an object: {} where the file holds something else (a damaged file is the
    checker's to name, never a crash)."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _field(block: Any, *names: str) -> Any:
    """block[names[0]][names[1]]...; None where a level is missing (a damaged file is the checker's to name)."""
    for name in names:
        if not isinstance(block, dict):
            return None
        block = block.get(name)
    return block


def trial_state(run_directory: str, option: str, trial: int, world_size: int) -> Tuple[Optional[dict], str]:
    """(the trial's files, "") when the trial is complete, else (None, why not): {"result": the trial result,
    "ranks": [each rank file, in rank order]}."""
    timestamp = os.path.basename(os.path.normpath(run_directory))
    directory = layout.trial_dir(run_directory, option, trial)
    if not os.path.isdir(directory):
        return None, "missing"
    try:
        record = read_json(os.path.join(directory, layout.TRIAL_FILE))
    except OSError:
        return None, f"{layout.TRIAL_FILE} missing"
    except ValueError as exc:
        return None, f"{layout.TRIAL_FILE} unreadable: {exc}"
    if record.get("state") != layout.COMPLETE:
        return None, "interrupted: it started and never finished"
    if record.get("status") != "ok":
        failed = as_list(record.get("failed_ranks"))
        ranks = f" (ranks {', '.join(str(r) for r in failed)})" if failed else ""
        return None, f"failed{ranks}: {record.get('error') or 'no error recorded'}"
    ranks = []
    for rank in range(world_size):
        try:
            rank_record = read_json(layout.rank_file(directory, rank, timestamp))
        except OSError:
            return None, f"rank {rank} missing"
        except ValueError as exc:
            return None, f"rank {rank} unreadable: {exc}"
        status = _field(rank_record, "rank_result", "status")
        if status != "ok":
            error = _field(rank_record, "rank_result", "error")
            return None, f"rank {rank} failed: {error or f'status {status}'}"
        ranks.append(rank_record)
    try:
        result = read_json(layout.trial_result_file(directory))
    except OSError:
        return None, f"{layout.TRIAL_RESULT_FILE} missing"
    except ValueError as exc:
        return None, f"{layout.TRIAL_RESULT_FILE} unreadable: {exc}"
    return {"result": result, "ranks": ranks}, ""


def _rules_figures(complete: List[Tuple[int, dict]]) -> Dict[str, Any]:
    sums: Dict[str, List[float]] = {"read": [], "write": [], "tokens": []}
    p95: Dict[str, List[float]] = {"read": [], "write": []}
    without_io, without_entries = [], []
    for trial, files in complete:
        totals = {"read": 0.0, "write": 0.0, "tokens": 0.0}
        for rank, record in enumerate(files["ranks"]):
            rank_result = record.get("rank_result")
            storage = as_dict(_field(rank_result, "tiers", "storage"))
            for direction in DIRECTIONS:
                totals[direction] += storage.get(f"{direction}_bandwidth_bytes_per_s") or 0.0
                latency = _field(storage, f"{direction}_latency_ms", "p95")
                if latency is not None:
                    p95[direction].append(latency)
            tokens = _field(rank_result, "reference_metrics", "storage_throughput_tokens_per_sec")
            if tokens is None:  # no storage time was measured: this rank adds nothing, and is named
                without_io.append({"trial": trial, "rank": rank})
            totals["tokens"] += tokens or 0.0
            if storage.get("entries") == 0:
                without_entries.append({"trial": trial, "rank": rank})
        for name, total in totals.items():
            sums[name].append(total)
    return {
        "definition": RULES_DEFINITION,
        "read_bandwidth_bytes_per_s": spread(sums["read"]),
        "write_bandwidth_bytes_per_s": spread(sums["write"]),
        "storage_throughput_tokens_per_sec": spread(sums["tokens"]),
        "device_read_p95_ms": _round(max(p95["read"])) if p95["read"] else None,
        "device_write_p95_ms": _round(max(p95["write"])) if p95["write"] else None,
        "ranks_without_storage_io": without_io,
        "ranks_without_storage_entries": without_entries,
    }


def _our_figures(complete: List[Tuple[int, dict]]) -> Dict[str, Any]:
    figures: Dict[str, Any] = {"definition": OURS_DEFINITION}
    storages = [as_dict(_field(files["result"], "tiers", "storage")) for _trial, files in complete]
    for direction in DIRECTIONS:
        key = f"{direction}_bandwidth_bytes_per_s"
        figures[key] = spread([s.get(key) or 0.0 for s in storages])
    for direction in DIRECTIONS:
        key = f"{direction}_latency_ms"
        figures[key] = {p: _mean_max([_field(s, key, p) for s in storages]) for p in ("p95", "p99")}
    return figures


def option_figures(run_directory: str, option: str, trials: int, world_size: int) -> Dict[str, Any]:
    complete, incomplete = [], []
    for trial in range(1, trials + 1):
        files, reason = trial_state(run_directory, option, trial, world_size)
        if files is None:
            incomplete.append({"trial": trial, "reason": reason})
        else:
            complete.append((trial, files))
    return {
        "trials": trials,
        "complete_trials": [trial for trial, _files in complete],
        "incomplete_trials": incomplete,
        "rules": _rules_figures(complete),
        "ours": _our_figures(complete),
    }


def summarize(run_directory: str) -> Dict[str, Any]:
    """The SUMMARY file's content (layout.SUMMARY_SCHEMA) from the run directory's files alone. Raises ValueError
    (or OSError) when the METADATA file cannot be read: without it there is nothing to summarize."""
    timestamp = os.path.basename(os.path.normpath(run_directory))
    metadata = read_json(layout.metadata_file(run_directory, timestamp))
    world_size, trials = metadata.get("world_size"), metadata.get("trials")
    if not isinstance(world_size, int) or world_size < 1 or not isinstance(trials, int) or trials < 0:
        raise ValueError(f"the metadata's world_size ({world_size!r}) and trials ({trials!r}) are not counts")
    return {
        "schema": layout.SUMMARY_SCHEMA,
        "category": metadata.get("category"),
        "model": metadata.get("model"),
        "timestamp": timestamp,
        "total_ranks": world_size,
        "options": {
            str(option): option_figures(run_directory, str(option), trials, world_size)
            for option in as_list(metadata.get("options"))
        },
    }


def _gib(value: Optional[float]) -> str:
    """GiB/s with 3 significant digits (never an exponent)."""
    if value is None:
        return "n/a"
    gib = value / GIB
    if gib == 0:
        return "0"
    return f"{gib:.{max(0, 2 - math.floor(math.log10(abs(gib))))}f}"


def _ms(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3g} ms"


def _bandwidth(stats: Dict[str, Any]) -> str:
    return f"{_gib(stats['mean'])} GiB/s (median {_gib(stats['median'])}, {_gib(stats['min'])}-{_gib(stats['max'])})"


def headline_lines(summary: Dict[str, Any]) -> List[str]:
    """One line per option for people, the rules' figures first, then one line per trial that did not count."""
    lines = []
    ranks = summary.get("total_ranks")
    ranks_text = f"{ranks} rank{'' if ranks == 1 else 's'}"
    for option, figures in summary.get("options", {}).items():
        rules = figures["rules"]
        counted = len(figures["complete_trials"])
        head = f"option {option} ({summary.get('model')}):"
        if not counted:
            lines.append(f"{head} no complete trial of {figures['trials']}: nothing to report")
        else:
            tokens = rules["storage_throughput_tokens_per_sec"]
            lines.append(
                f"{head} storage read {_bandwidth(rules['read_bandwidth_bytes_per_s'])}, "
                f"write {_bandwidth(rules['write_bandwidth_bytes_per_s'])}, "
                f"{tokens['mean']:,.0f} tokens/s, device p95 read {_ms(rules['device_read_p95_ms'])} / "
                f"write {_ms(rules['device_write_p95_ms'])}, {counted} of {figures['trials']} trials x {ranks_text}"
            )
        for missing in figures["incomplete_trials"]:
            lines.append(f"option {option} trial {missing['trial']}: not counted: {missing['reason']}")
    return lines
