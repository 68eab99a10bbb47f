"""`kvcache mlperf check DIR`: the rules verdict of each run directory under DIR, with every reason.

INVALID: the tree does not hold what a finished run wrote (a trial missing, interrupted or failed, a rank missing
or failed, a file changed after the run, a rank that ran other parameters than the metadata says, a short window,
a stale summary), or it claims CLOSED and is not. CLOSED: nothing invalid, and every option ran the rules'
workload (read from the rank files, not only the metadata), their trial count, seeds and rests. OPEN: nothing
invalid, category open; the reasons are every difference from CLOSED.
"""

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from kvcache.cachedir import SHARED_STORAGE
from kvcache.errors import UsageError, shown_path
from kvcache.mlperf import layout, rules
from kvcache.mlperf.summary import as_dict, as_list, headline_lines, read_json, summarize
from kvcache.workload import DEFAULT_PROFILE

SEVERITY = (rules.CLOSED, rules.OPEN, rules.INVALID)
# A window may end a little before the duration asked (the last poll, the stop barrier); less than this is short.
WINDOW_SHARE = 0.99
# The trial config's workload profile (a --config file's templates, QoS, timing): no option, but it shapes the load.
WORKLOAD = "workload"


def _default_profile() -> dict:
    """kv-cache.py's own profile as a result holds it (JSON: tuples are lists)."""
    return json.loads(json.dumps(DEFAULT_PROFILE.as_dict()))


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: 5 and 5.0 are, True and 1 are not."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _first_difference(a: Any, b: Any, where: str = "") -> Optional[str]:
    """The dotted path of the first place two JSON values differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{where}{key}"
            found = _first_difference(a[key], b[key], f"{where}{key}.")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{where}{index}.")
            if found:
                return found
        return None
    return None if _same(a, b) else (where.rstrip(".") or "the whole file")


def _read(path: str, label: str, invalid: List[str]) -> Optional[dict]:
    try:
        return read_json(path)
    except OSError:
        invalid.append(f"{label} missing")
    except ValueError as exc:
        invalid.append(f"{label} unreadable: {exc}")
    return None


def _digest(path: str) -> Optional[str]:
    try:
        return layout.digest(path)
    except OSError:
        return None  # unreadable: it differs from any recorded digest


def _check_digests(directory: str, record: dict, expected: List[str], label: str, invalid: List[str]) -> None:
    files = record.get("files")
    if not isinstance(files, dict):
        invalid.append(f"{label}: {layout.TRIAL_FILE} records no file digests")
        return
    for path in expected:
        relative = os.path.relpath(path, directory)
        if relative not in files and os.path.exists(path):
            invalid.append(f"{label}: {relative} is not recorded in {layout.TRIAL_FILE}")
    for relative, sha in sorted(files.items()):
        path = os.path.normpath(os.path.join(directory, str(relative)))
        if os.path.relpath(path, directory).startswith(os.pardir):
            invalid.append(f"{label}: {layout.TRIAL_FILE} records a file outside the trial: {relative}")
        elif not os.path.isfile(path):
            continue  # named where its absence matters (the trial result, a rank file)
        elif _digest(path) != sha:
            invalid.append(f"{label}: {relative} changed after the run (its sha256 differs from {layout.TRIAL_FILE})")


def _check_rank(record: dict, rank: int, where: Dict[str, Any], parameters: dict, label: str, invalid: List[str]):
    """One rank file against its place in the tree and the metadata; returns its config (or None)."""
    for field in ("option", "trial", "rank", "world_size"):
        if not _same(record.get(field), where[field]):
            invalid.append(
                f"{label}: its {field} is {record.get(field)!r}, its place in the tree says {where[field]!r}"
            )
    rank_result = record.get("rank_result")
    if not isinstance(rank_result, dict):
        invalid.append(f"{label}: no rank_result")
        return None
    if rank_result.get("status") != "ok":
        invalid.append(f"{label} failed: {rank_result.get('error') or 'status ' + str(rank_result.get('status'))}")
    if not isinstance(as_dict(rank_result.get("tiers")).get("storage"), dict):
        invalid.append(f"{label}: no storage tier figures")
    if not isinstance(rank_result.get("reference_metrics"), dict):
        invalid.append(f"{label}: no reference_metrics (kv-cache.py's figures)")
    config = record.get("config")
    if not isinstance(config, dict):
        invalid.append(f"{label}: no config")
        return None
    for name in rules.workload_names() + [WORKLOAD]:
        if name not in config:
            invalid.append(f"{label}: its config lacks {name}")
        elif name == WORKLOAD:
            if parameters and config[name] != parameters.get(name):
                invalid.append(f"{label}: ran another workload profile than the metadata says")
        elif parameters and not _same(config[name], parameters.get(name)):
            says = rules.shown_value(name, parameters.get(name))
            invalid.append(f"{label}: ran {name} {rules.shown_value(name, config[name])}, the metadata says {says}")
    seed = config.get("seed")
    seeds = config.get("seeds_per_rank")
    if isinstance(seed, int) and seeds != [seed + r for r in range(where["world_size"])]:
        invalid.append(f"{label}: seeds_per_rank {seeds!r} is not seed {seed} + rank")
    if "seed" in rank_result and isinstance(seed, int) and not _same(rank_result["seed"], seed + rank):
        invalid.append(f"{label}: ran seed {rank_result['seed']!r}, not seed {seed} + rank {rank}")
    timed = not config.get("max_requests") and not config.get("use_burst_trace") and config.get("dataset_path") is None
    duration = config.get("duration")
    seconds = as_dict(rank_result.get("window")).get("seconds")
    if timed and isinstance(duration, (int, float)):
        if not isinstance(seconds, (int, float)) or seconds < WINDOW_SHARE * duration:
            invalid.append(
                f"{label}: its window is {seconds!r} s, shorter than {WINDOW_SHARE:.0%} of the {duration:g} s asked"
            )
    return config


def _check_trial_result(result: dict, option: str, label: str, invalid: List[str], notes: List[str]) -> None:
    """What the trial's `kvcache run` result alone tells: another run on the storage (INVALID), and the I/O engine
    in effect, which is not the config's when the cache dir refused O_DIRECT (a difference from CLOSED)."""
    if not isinstance(result.get("warnings"), list):
        invalid.append(f"{label}: its {layout.TRIAL_RESULT_FILE} holds no list of warnings")
    if not isinstance(as_dict(result.get("tiers")).get("storage"), dict):
        invalid.append(f"{label}: its {layout.TRIAL_RESULT_FILE} holds no storage tier figures")
    shared = [w for w in as_list(result.get("warnings")) if isinstance(w, str) and SHARED_STORAGE in w]
    if shared:
        invalid.append(f"{label}: another run shared the storage: {shared[0]}")
    environment = as_dict(result.get("environment"))
    engine, requested = environment.get("io_engine"), environment.get("io_engine_requested")
    closed = rules.closed_parameters(option)["io_engine"]
    if not isinstance(engine, str) or not isinstance(requested, str):
        invalid.append(f"{label}: its {layout.TRIAL_RESULT_FILE} does not say which I/O engine ran")
    elif engine == requested:
        return  # an OPEN run that asked for another engine is named by its parameters
    elif engine.startswith("mixed"):
        notes.append(f"{label}: buffered I/O on some ranks ({engine}; a cache dir refused O_DIRECT; CLOSED: {closed})")
    else:
        notes.append(f"{label}: {engine} I/O (the cache dir refused O_DIRECT; CLOSED: {closed})")


def _check_trial(
    run_directory: str, option: str, trial: int, metadata: dict, invalid: List[str], notes: List[str]
) -> List[dict]:
    """Every defect of one trial into `invalid`, its differences from CLOSED that no config shows into `notes`;
    returns the configs its rank files ran."""
    label = f"option {option} trial {trial}"
    world_size = metadata["world_size"]
    directory = layout.trial_dir(run_directory, option, trial)
    if not os.path.isdir(directory):
        invalid.append(f"{label}: missing (asked {metadata['trials']} trials)")
        return []
    record = _read(os.path.join(directory, layout.TRIAL_FILE), f"{label}: {layout.TRIAL_FILE}", invalid)
    if record is None:
        return []
    if record.get("schema") != layout.TRIAL_SCHEMA:
        invalid.append(f"{label}: {layout.TRIAL_FILE} has schema {record.get('schema')!r}, not {layout.TRIAL_SCHEMA}")
    for field, value in (("option", option), ("trial", trial), ("world_size", world_size)):
        if not _same(record.get(field), value):
            invalid.append(f"{label}: {layout.TRIAL_FILE} says {field} {record.get(field)!r}, its place {value!r}")
    if record.get("state") == layout.STARTED:
        invalid.append(f"{label}: interrupted (state {layout.STARTED}: it started and never finished)")
    elif record.get("state") != layout.COMPLETE:
        invalid.append(f"{label}: state {record.get('state')!r}, not {layout.COMPLETE}")
    elif record.get("status") != "ok":
        failed = as_list(record.get("failed_ranks"))
        invalid.append(
            f"{label}: failed (status {record.get('status')!r}, failed ranks {failed}): "
            f"{record.get('error') or 'no error recorded'}"
        )
    result_path = layout.trial_result_file(directory)
    rank_paths = [layout.rank_file(directory, r, os.path.basename(run_directory)) for r in range(world_size)]
    _check_digests(directory, record, [result_path] + rank_paths, label, invalid)
    result = _read(result_path, f"{label}: {layout.TRIAL_RESULT_FILE}", invalid)
    if result is not None:
        _check_trial_result(result, option, label, invalid, notes)
    parameters = as_dict(as_dict(metadata.get("parameters")).get(option))
    configs = []
    for rank, path in enumerate(rank_paths):
        rank_label = f"{label} rank {rank}"
        rank_record = _read(path, rank_label, invalid)
        if rank_record is not None:
            where = {"option": option, "trial": trial, "rank": rank, "world_size": world_size}
            config = _check_rank(rank_record, rank, where, parameters, rank_label, invalid)
            if config is not None:
                configs.append(config)
    return configs


def _differences_from_closed(metadata: dict, configs: Dict[str, List[dict]], notes: Dict[str, List[str]]) -> List[str]:
    """Every way the run differs from CLOSED, in a stable order: per option its parameters (as the ranks ran them)
    and its trials' `notes`, then the trial count, then the rests."""
    found = []
    default = _default_profile()
    for option in metadata["options"]:
        closed = rules.closed_parameters(option)
        for name, value in closed.items():
            ran = []
            for config in configs.get(option, []):
                if name in config and not _same(config[name], value) and config[name] not in ran:
                    ran.append(config[name])
            for other in ran:
                ran_text, closed_text = rules.shown_value(name, other), rules.shown_value(name, value)
                found.append(f"option {option}: {name} {ran_text} (CLOSED: {closed_text})")
        if any(c.get(WORKLOAD, default) != default for c in configs.get(option, [])):
            found.append(
                f"option {option}: a workload profile of its own (a --config file's templates, QoS or timing; "
                "CLOSED: kv-cache.py's)"
            )
        found += notes.get(option, [])
    if metadata["trials"] != rules.TRIALS:
        trials = metadata["trials"]
        found.append(f"{trials} trial{'' if trials == 1 else 's'} (CLOSED: {rules.TRIALS})")
    measured = {str(d.get("before_option")): d.get("measured_s") for d in map(as_dict, as_list(metadata.get("delays")))}
    schedule = as_list(metadata.get("schedule"))
    first = str(as_dict(schedule[0]).get("option")) if schedule else metadata["options"][0]
    for option in metadata["options"]:
        if option == first:
            continue
        rest = measured.get(option)
        if not isinstance(rest, (int, float)):
            found.append(f"no delay measured before option {option} (CLOSED: at least {rules.DELAY_S:g} s)")
        elif rest < rules.DELAY_S:
            found.append(f"delay {rest:g} s before option {option} (CLOSED: at least {rules.DELAY_S:g} s)")
    return found


def _rule_changes(recorded: Any) -> Any:
    """The recorded changes of the rules' parameters (the workload profile's is checked on the ranks' configs)."""
    if not isinstance(recorded, list):
        return recorded
    return [c for c in recorded if not (isinstance(c, dict) and c.get("parameter") == WORKLOAD)]


def _metadata_problems(metadata: dict) -> Tuple[List[str], List[str]]:
    """(what makes the rest unreadable against it, the other defects of the METADATA file)."""
    fatal, problems = [], []
    if metadata.get("schema") != layout.METADATA_SCHEMA:
        fatal.append(f"metadata schema {metadata.get('schema')!r}, not {layout.METADATA_SCHEMA}")
    if metadata.get("category") not in ("closed", "open"):
        fatal.append(f"metadata category {metadata.get('category')!r}, not closed or open")
    world_size, trials = metadata.get("world_size"), metadata.get("trials")
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        fatal.append(f"metadata world_size {world_size!r} is not a count of ranks")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        fatal.append(f"metadata trials {trials!r} is not a count of trials")
    names = metadata.get("options")
    if not isinstance(names, list) or not names or any(o not in rules.OPTION_ORDER for o in names):
        fatal.append(f"metadata options {names!r}: not a list of {', '.join(rules.OPTION_ORDER)}")
    if metadata.get("state") == "running":
        problems.append("the invocation never ended (metadata state running)")
    elif metadata.get("state") == "failed":
        problems.append(f"the invocation failed: {metadata.get('error') or 'no error recorded'}")
    elif metadata.get("state") != "complete":
        problems.append(f"metadata state {metadata.get('state')!r}, not complete")
    for name in ("parameters", "changes"):
        if not isinstance(metadata.get(name), dict):
            problems.append(f"the metadata has no {name} per option")
    for name in ("schedule", "delays"):
        value = metadata.get(name)
        if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
            problems.append(f"the metadata's {name} is not a list of objects")
    return fatal, problems


def _options_text(names: List[str]) -> str:
    return f"option{'' if len(names) == 1 else 's'} {', '.join(names)}"


def _check_folders(run_directory: str, metadata: dict, invalid: List[str]) -> None:
    """Every option_*/trial_* folder is one the metadata names: a copied trial or option, or trials hidden by
    editing the metadata's count, are never left out of the verdict silently."""
    names, trials = metadata["options"], metadata["trials"]
    asked = f"{_options_text(names)}, {trials} trial{'' if trials == 1 else 's'} each"
    options = {os.path.basename(layout.option_dir(run_directory, o)): o for o in names}
    for entry in sorted(os.listdir(run_directory)):
        if not entry.startswith(layout.OPTION_PREFIX):
            continue
        if entry not in options:
            invalid.append(f"{entry} is not an option the metadata names ({asked})")
            continue
        option_directory = os.path.join(run_directory, entry)
        if not os.path.isdir(option_directory):
            continue  # its trials are named missing
        expected = {os.path.basename(layout.trial_dir(run_directory, options[entry], t)) for t in range(1, trials + 1)}
        for trial in sorted(os.listdir(option_directory)):
            if trial.startswith(layout.TRIAL_PREFIX) and trial not in expected:
                invalid.append(f"{entry}/{trial} is not a trial the metadata names ({asked})")


def _check_schedule(metadata: dict, invalid: List[str]) -> None:
    """The schedule (the whole invocation's, both models) lists exactly this directory's trials, in run order."""
    names = metadata["options"]
    listed = [as_dict(e) for e in as_list(metadata.get("schedule"))]
    ran = [f"{e.get('option')}/{e.get('trial')}" for e in listed if e.get("option") in names]
    trials = [f"{o}/{t}" for o in names for t in range(1, metadata["trials"] + 1)]
    if ran != trials:
        invalid.append(
            f"the metadata's schedule lists {', '.join(ran) or 'no trial'} of this directory, "
            f"the trials are {', '.join(trials)}"
        )


def _recompute(run_directory: str) -> Tuple[Optional[dict], Optional[Exception]]:
    """summarize() of the tree, once per check (the summary file is compared with it, the headline shows it), or
    why it failed: judged where the figures are used."""
    try:
        return summarize(run_directory), None
    except Exception as exc:  # noqa: BLE001 - _check_summary reports it, or lets check_run_dir name its shape
        return None, exc


def _check_summary(run_directory: str, recomputed: Tuple[Optional[dict], Optional[Exception]], invalid) -> None:
    path = layout.summary_file(run_directory, os.path.basename(run_directory))
    written = _read(path, "the summary file", invalid)
    if written is None:
        return
    figures, error = recomputed
    if isinstance(error, (TypeError, ValueError, OSError)):  # a figure that is not a number: a damaged rank file
        invalid.append(f"the tree's figures cannot be summarized: {error}")
        return
    if error is not None:
        raise error
    where = _first_difference(written, figures)
    if where:
        invalid.append(f"the summary file differs from the tree at {where} (tampered with, or stale)")


def _verdict(
    run_directory: str, recomputed: Tuple[Optional[dict], Optional[Exception]]
) -> Tuple[Optional[dict], str, List[str]]:
    invalid: List[str] = []
    timestamp = os.path.basename(run_directory)
    metadata = _read(layout.metadata_file(run_directory, timestamp), "the metadata file", invalid)
    if metadata is None:
        return None, rules.INVALID, invalid
    fatal, problems = _metadata_problems(metadata)
    if fatal:  # the trials cannot be read against it
        return metadata, rules.INVALID, fatal + problems
    invalid += problems
    parameters, changes = as_dict(metadata.get("parameters")), as_dict(metadata.get("changes"))
    configs: Dict[str, List[dict]] = {}
    notes: Dict[str, List[str]] = {}
    for option in metadata["options"]:
        if not isinstance(parameters.get(option), dict):
            invalid.append(f"option {option}: the metadata records no parameters")
        elif _rule_changes(changes.get(option)) != rules.changes(option, parameters[option]):
            invalid.append(f"option {option}: the metadata's changes are not what its parameters change")
        elif parameters[option].get("model") != metadata.get("model"):
            invalid.append(f"option {option}: ran {parameters[option].get('model')}, the run directory's model is "
                           f"{metadata.get('model')}")  # fmt: skip
        for trial in range(1, metadata["trials"] + 1):
            found = _check_trial(run_directory, option, trial, metadata, invalid, notes.setdefault(option, []))
            configs.setdefault(option, []).extend(found)
    _check_folders(run_directory, metadata, invalid)
    if metadata.get("state") == "complete":  # an invocation that stopped early is named so, not by its schedule
        _check_schedule(metadata, invalid)
    _check_summary(run_directory, recomputed, invalid)
    differences = _differences_from_closed(metadata, configs, notes)
    if metadata["category"] == "closed" and differences:
        invalid += [f"claims CLOSED and is not: {d}" for d in differences]
    if invalid:
        return metadata, rules.INVALID, invalid
    if metadata["category"] == "open":
        return metadata, rules.OPEN, differences or ["category open, though nothing differs from CLOSED"]
    ranks = metadata["world_size"]
    engine = " or ".join(sorted({rules.closed_parameters(o)["io_engine"] for o in metadata["options"]}))
    return (
        metadata,
        rules.CLOSED,
        [
            f"{_options_text(metadata['options'])}: every workload parameter of every rank is the rules' value, "
            f"and every trial ran {engine} I/O",
            f"{rules.TRIALS} trials of each option, all complete, {ranks} rank{'' if ranks == 1 else 's'} each, "
            "every file as the run wrote it",
            f"seed {rules.COMMON['seed']} + rank on every rank; every window at least {WINDOW_SHARE:.0%} of the "
            f"{rules.COMMON['duration']:g} s asked",
            f"every rest between options at least {rules.DELAY_S:g} s; the summary is the tree's",
        ],
    )


def check_run_dir(run_directory: str) -> Dict[str, Any]:
    """The verdict of one run directory: {run_dir, category, model, verdict, reasons, headline}."""
    run_directory = os.path.normpath(run_directory)
    recomputed = _recompute(run_directory)
    try:
        metadata, verdict, reasons = _verdict(run_directory, recomputed)
    except OSError as exc:
        metadata, verdict, reasons = None, rules.INVALID, [f"a file of the tree cannot be read: {exc}"]
    except Exception as exc:  # noqa: BLE001 - a damaged tree is an INVALID verdict, never a traceback
        metadata, verdict, reasons = None, rules.INVALID, [f"a file of the tree has the wrong shape: {exc!r}"]
    metadata = metadata or {}
    return {
        "run_dir": run_directory,
        "category": metadata.get("category"),
        "model": metadata.get("model"),
        "verdict": verdict,
        "reasons": reasons,
        "headline": _headline(recomputed[0]),
    }


def _headline(figures: Optional[dict]) -> List[str]:
    """The per-option headline of the figures recomputed from the rank files (not the summary file, which may
    have been changed); none when the tree is too damaged to compute them."""
    try:
        return headline_lines(figures) if figures is not None else []
    except Exception:  # noqa: BLE001 - the verdict already says why the tree is damaged
        return []


def check_tree(path: str) -> Dict[str, Any]:
    """Every run directory at or under `path`: {verdict: the worst of them, runs: [...]}. UsageError (exit 2) when
    `path` is not a directory or holds no run."""
    if not os.path.isdir(path):
        raise UsageError("DIR", f"{shown_path(path)} is not a directory")
    found = layout.find_run_dirs(path)
    if not found:
        raise UsageError(
            "DIR", f"{shown_path(path)} holds no MLPerf run directory (one with a kv_cache_<timestamp>_metadata.json)"
        )
    runs = [check_run_dir(run) for run in found]
    return {"verdict": max((r["verdict"] for r in runs), key=SEVERITY.index), "runs": runs}


def run_check(path: str, as_json: bool, stdout) -> int:
    """Print the verdicts (text, or the dict as JSON); 0 for CLOSED or OPEN, 1 for INVALID."""
    report = check_tree(path)
    if as_json:
        stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        for run in report["runs"]:
            stdout.write(f"{run['verdict']}: {run['run_dir']} ({run['model']}, category {run['category']})\n")
            for reason in run["reasons"]:
                stdout.write(f"  - {reason}\n")
            for line in run["headline"]:
                stdout.write(f"  {line}\n")
        count = len(report["runs"])
        stdout.write(f"overall: {report['verdict']} ({count} run director{'y' if count == 1 else 'ies'})\n")
    stdout.flush()
    return 1 if report["verdict"] == rules.INVALID else 0
