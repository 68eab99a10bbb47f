"""The MLPerf Storage KV-cache rules as data: the three CLOSED workloads, trials, seed, the delay between options,
and which parameters a CLOSED run may set. Everything that runs, summarizes or checks a submission reads them here.

Figures from the MLPerf Storage KV-cache rules and `mlpstorage`'s options (see the README's MLPerf section).
"""

from typing import Any, Dict, Iterable, List, Mapping, Tuple

from kvcache import options
from kvcache.errors import UsageError
from kvcache.options import MLPERF_RUN, RUN

RULES = "MLPerf Storage KV-cache rules"
CLOSED, OPEN, INVALID = "CLOSED", "OPEN", "INVALID"
TRIALS = 3
DELAY_S = 90.0  # rest before each option after the first
OPTION_ORDER = ("1", "2", "3")

# What every CLOSED option runs (the rules' values, and kv-cache.py's own users: the open loop the rules measured).
COMMON: Dict[str, Any] = {
    "duration": 300.0,
    "gpu_mem_gb": 0.0,
    "generation_mode": "none",
    "seed": 42,
    "user_loop": "open",
}
WORKLOADS: Dict[str, Dict[str, Any]] = {
    "1": {"model": "llama3.1-8b", "num_users": 200, "cpu_mem_gb": 0.0, "max_concurrent_allocs": 16},
    "2": {"model": "llama3.1-8b", "num_users": 100, "cpu_mem_gb": 4.0, "max_concurrent_allocs": 16},
    "3": {"model": "llama3.1-70b-instruct", "num_users": 70, "cpu_mem_gb": 0.0, "max_concurrent_allocs": 4},
}
# The mlperf command's own options, fixed by the rules in CLOSED: a different value is refused there.
FIXED_IN_CLOSED = {"trials": TRIALS, "delay": DELAY_S}

# What a CLOSED run may set: where it runs and writes, and what it prints. None of them changes the workload the
# storage sees.
CLOSED_PLACEMENT = ("cache_dir", "results_dir", "organization", "system_name", "mpi", "keep_cache")
CLOSED_OUTPUT = ("category", "option", "what_if", "json", "quiet", "log_level", "stats_interval", "straggler_fraction")
CLOSED_MAY_SET = CLOSED_PLACEMENT + CLOSED_OUTPUT


def selected(option: str) -> Tuple[str, ...]:
    """The options `--option` names, in the order they run."""
    return OPTION_ORDER if option == "all" else (option,)


def workload_names() -> List[str]:
    """The parameters of a trial that shape the load: every option a trial takes that CLOSED may not set."""
    return [o.name for o in options.options_for(MLPERF_RUN) if RUN in o.commands and o.name not in CLOSED_MAY_SET]


def closed_parameters(option: str) -> Dict[str, Any]:
    """Every workload parameter of a CLOSED option: the rules' value, else the option table's default."""
    values = {name: options.BY_NAME[name].default for name in workload_names()}
    values.update(COMMON)
    values.update(WORKLOADS[option])
    return values


def describe_option(option: str) -> str:
    """One line naming what the rules fix for an option (for messages and the what-if plan)."""
    w = dict(COMMON, **WORKLOADS[option])
    return (
        f"option {option}: {w['model']}, {w['num_users']} users per rank, GPU tier {w['gpu_mem_gb']:g} GiB, "
        f"CPU tier {w['cpu_mem_gb']:g} GiB, at most {w['max_concurrent_allocs']} allocations at once, "
        f"{w['duration']:g} s, generation {w['generation_mode']}, seed {w['seed']} + rank"
    )


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_closed(given: Mapping[str, Any], config_path) -> None:
    """Refuse (exit 2) what a CLOSED run may not set: `given` maps each option typed or set in --config to its value."""
    allowed = ", ".join(options.BY_NAME[name].flag for name in CLOSED_PLACEMENT) + " and what it prints"
    if config_path:
        raise UsageError(
            "--config",
            f"a CLOSED run takes no config file: the {RULES} fix every workload parameter; "
            "use --category open to run a config's workload",
        )
    for name, value in given.items():
        flag = options.BY_NAME[name].flag
        if name in FIXED_IN_CLOSED:
            if value != FIXED_IN_CLOSED[name]:
                raise UsageError(
                    flag,
                    f"CLOSED runs {_shown(FIXED_IN_CLOSED[name])} ({RULES}), got {_shown(value)}; "
                    "use --category open to change it",
                )
            continue
        if name in CLOSED_MAY_SET:
            continue
        # Each option's value in option order (one value when they agree), so the message pairs them right.
        values = [_shown(closed_parameters(o)[name]) for o in OPTION_ORDER]
        fixed = values[:1] if len(set(values)) == 1 else values
        raise UsageError(
            flag,
            f"the MLPerf rules fix it at {' / '.join(fixed)} for options {', '.join(OPTION_ORDER)} in CLOSED; "
            f"use --category open to change it (CLOSED takes only {allowed})",
        )


def changes(option: str, values: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """What an OPEN trial changes from the CLOSED option: [{parameter, closed, value}], in the table's order."""
    closed = closed_parameters(option)
    return [
        {"parameter": name, "closed": closed[name], "value": values[name]}
        for name in closed
        if name in values and values[name] != closed[name]
    ]


def trial_values(option: str, category: str, given: Mapping[str, Any], placement: Mapping[str, Any]) -> Dict[str, Any]:
    """The `kvcache run` option values of one trial: the CLOSED option, then (OPEN only) what was given,
    then where it runs (cache dir, MPI, output settings: `placement`, the same for every trial)."""
    values = closed_parameters(option)
    if category == "open":
        values.update({name: value for name, value in given.items() if name in values})
    values.update({name: value for name, value in placement.items() if name in options.BY_NAME})
    return values


def run_flags(values: Mapping[str, Any], always: Iterable[str] = ()) -> List[str]:
    """`kvcache run` flags for these values, in the table's order: those that differ from the table's default,
    and those named in `always` (what the rules fix is shown even where it is our default)."""
    always = set(always)
    argv: List[str] = []
    for opt in options.options_for(RUN):
        if opt.name not in values or values[opt.name] is None:
            continue
        value = values[opt.name]
        if value == opt.default and opt.name not in always:
            continue
        if opt.kind is bool:
            if value:
                argv.append(opt.flag)
        else:
            argv += [opt.flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


def fixed_names(option: str) -> Tuple[str, ...]:
    """The parameters the rules name for an option (the others are the option table's defaults)."""
    return tuple(COMMON) + tuple(WORKLOADS[option])
