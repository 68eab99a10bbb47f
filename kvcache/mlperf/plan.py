"""What `kvcache mlperf run` will run: each selected option's `kvcache run` config, checked before anything is
created, and the --what-if plan that shows it (text for people, or --json for the playbook).

The --json plan is one object; its keys are stable (the playbook reads them):
- schema ("kvcache-mlperf-plan/v1"), category, organization, system_name, trials, delay_s, world_size,
  rules (the rules' name), results_dir, cache_dir
- options: [{option, rule (the rules' one line), parameters ({name: value}: every `kvcache run` value of its
  trials), changes ([{parameter, closed, value}]: what OPEN changes; [] for CLOSED), run_argv (the equivalent
  `kvcache run` command line, without --output), run_directory, trials: [{trial, directory, result,
  rank_files}], datasize ({model, storage_bytes_needed_per_rank, largest_entry_bytes,
  working_set_bytes_per_rank, host_memory_bytes_needed_per_rank}: `kvcache datasize` for one rank)}]
- largest_option: the option needing the most storage per rank (the playbook sizes the hosts for it)
Paths hold the literal TIMESTAMP_PLACEHOLDER where the run's timestamp goes.
"""

import json
import shlex
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Tuple

from kvcache import datasize, options
from kvcache.benchmark import validate_run
from kvcache.errors import UsageError, shown
from kvcache.mlperf import layout, rules
from kvcache.models import Model
from kvcache.options import DATASIZE, RUN
from kvcache.run_config import make_config
from kvcache.units import GIB
from kvcache.workload import DEFAULT_PROFILE

PLAN_SCHEMA = "kvcache-mlperf-plan/v1"
TIMESTAMP_PLACEHOLDER = "<timestamp>"


@dataclass(frozen=True)
class OptionPlan:
    option: str
    values: Dict[str, Any]  # every `kvcache run` option value of its trials, but --output
    config: Any  # the `kvcache run` config of its trials (output None; each trial sets its own)
    changes: List[Dict[str, Any]]
    checked: Tuple[Model, str]  # what benchmark.validate_run returned for config

    @property
    def model(self) -> str:
        return self.checked[0].name


def _check_name(flag: str, value: str, why: str) -> None:
    if not layout.NAME_RE.match(value):
        raise UsageError(
            flag,
            f"{shown(value)} {why}: give 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )


def check_invocation(config) -> None:
    """The mlperf command's own options (the same answer on every rank; nothing is created)."""
    if config.category is None:
        raise UsageError("--category", "required: closed or open")
    if not config.results_dir:
        raise UsageError("--results-dir", "required: the directory the results tree is written under")
    if not config.cache_dir:
        raise UsageError("--cache-dir", "required: a directory on the storage under test")
    _check_name("--organization", config.organization, "is not a directory name of the results tree")
    if config.system_name is not None:
        _check_name("--system-name", config.system_name, "is not a directory name of the results tree")


def placement(config) -> Dict[str, Any]:
    """Where the trials run and what they print: the `kvcache run` options a CLOSED run may set."""
    return {name: getattr(config, name) for name in rules.CLOSED_MAY_SET if RUN in options.BY_NAME[name].commands}


def option_plans(config, models, given: Mapping[str, Any]) -> List[OptionPlan]:
    """Every selected option's trial config, checked (UsageError, exit 2, before anything is created)."""
    check_invocation(config)
    if config.category == "closed":
        rules.check_closed(given, config.config, rules.selected(config.option))
    plans = []
    for option in rules.selected(config.option):
        values = rules.trial_values(option, config.category, given, placement(config))
        run_config = make_config(
            RUN, **values, config=config.config, workload=config.workload, config_warnings=config.config_warnings
        )
        checked = validate_run(run_config, models)
        _check_name("--model", checked[0].name, "names a model that cannot be a directory of the results tree")
        changes = rules.changes(option, values)
        if config.category == "open" and config.workload != DEFAULT_PROFILE:
            # A config file's workload profile (templates, QoS, timing) changes the load as much as a flag.
            changes.append(
                {"parameter": "workload", "closed": DEFAULT_PROFILE.as_dict(), "value": config.workload.as_dict()}
            )
        plans.append(OptionPlan(option, values, run_config, changes, checked))
    return plans


def groups(plans: List[OptionPlan]) -> List[Tuple[str, List[OptionPlan]]]:
    """The options by model, in run order: one run directory per model."""
    by_model: Dict[str, List[OptionPlan]] = {}
    for plan in plans:
        by_model.setdefault(plan.model, []).append(plan)
    return list(by_model.items())


def datasize_of(plan: OptionPlan, models) -> Dict[str, Any]:
    """`kvcache datasize` of one rank for the option's parameters."""
    values = {k: v for k, v in plan.values.items() if DATASIZE in options.BY_NAME[k].commands}
    report = datasize.compute(make_config(DATASIZE, **values, workload=plan.config.workload), models)
    keys = (
        "model",
        "storage_bytes_needed_per_rank",
        "largest_entry_bytes",
        "working_set_bytes_per_rank",
        "host_memory_bytes_needed_per_rank",
    )
    return {key: report[key] for key in keys}


def run_argv(plan: OptionPlan) -> List[str]:
    """The `kvcache run` command line of the option's trials (each adds its own --output)."""
    return ["kvcache", "run", *rules.run_flags(plan.values, rules.fixed_names(plan.option))]


def what_if(config, plans: List[OptionPlan], models, world_size: int, system_name: str) -> Dict[str, Any]:
    """The plan: what would run and where it would be written; creates and runs nothing."""
    shown_options = []
    for plan in plans:
        directory = layout.run_dir(
            config.results_dir, config.category, config.organization, system_name, plan.model, TIMESTAMP_PLACEHOLDER
        )
        trials = []
        for trial in range(1, config.trials + 1):
            trial_directory = layout.trial_dir(directory, plan.option, trial)
            trials.append(
                {
                    "trial": trial,
                    "directory": trial_directory,
                    "result": layout.trial_result_file(trial_directory),
                    "rank_files": [
                        layout.rank_file(trial_directory, rank, TIMESTAMP_PLACEHOLDER) for rank in range(world_size)
                    ],
                }
            )
        shown_options.append(
            {
                "option": plan.option,
                "rule": rules.describe_option(plan.option),
                "parameters": plan.values,
                "changes": plan.changes,
                "run_argv": run_argv(plan),
                "run_directory": directory,
                "trials": trials,
                "datasize": datasize_of(plan, models),
            }
        )
    largest = max(shown_options, key=lambda o: o["datasize"]["storage_bytes_needed_per_rank"])
    return {
        "schema": PLAN_SCHEMA,
        "category": config.category,
        "organization": config.organization,
        "system_name": system_name,
        "trials": config.trials,
        "delay_s": config.delay,
        "world_size": world_size,
        "rules": rules.RULES,
        "results_dir": config.results_dir,
        "cache_dir": config.cache_dir,
        "options": shown_options,
        "largest_option": largest["option"],
    }


def _gib(nbytes: int) -> str:
    return f"{nbytes / GIB:,.3f} GiB"


def format_plan(plan: Dict[str, Any]) -> str:
    lines = [
        f"MLPerf Storage KV-cache, {plan['category'].upper()}: what would run (--what-if: nothing made or run)",
        f"organization {plan['organization']}, system {plan['system_name']}, {plan['world_size']} rank(s), "
        f"{plan['trials']} trial(s) per option, {plan['delay_s']:g} s rest before each option after the first",
    ]
    for option in plan["options"]:
        lines.append(option["rule"])
        # The command names every parameter the rules fix and every one that differs from the table's default.
        lines.append("  every other workload parameter at its default (--json lists them all)")
        if plan["category"] == "open":
            changed = ", ".join(f"{c['parameter']} {c['closed']} -> {c['value']}" for c in option["changes"])
            lines.append(f"  changes from CLOSED: {changed or 'none'}")
        lines.append(f"  command: {shlex.join(option['run_argv'])} --output TRIAL/{layout.TRIAL_RESULT_FILE}")
        lines.append(f"  run directory: {option['run_directory']}")
        for trial in option["trials"]:
            lines.append(f"  trial {trial['trial']}: {trial['directory']} ({len(trial['rank_files'])} rank file(s))")
        size = option["datasize"]
        lines.append(
            f"  datasize (1 rank): storage needed {_gib(size['storage_bytes_needed_per_rank'])}, largest entry "
            f"{_gib(size['largest_entry_bytes'])}, host memory {_gib(size['host_memory_bytes_needed_per_rank'])}"
        )
    largest = next(o for o in plan["options"] if o["option"] == plan["largest_option"])
    lines.append(
        f"largest option: {plan['largest_option']} "
        f"({_gib(largest['datasize']['storage_bytes_needed_per_rank'])} of storage per rank)"
    )
    return "\n".join(lines)


def print_plan(plan: Dict[str, Any], as_json: bool, stdout) -> None:
    stdout.write((json.dumps(plan, indent=2) if as_json else format_plan(plan)) + "\n")
