"""The MLPerf Storage KV-cache rules: the three CLOSED workloads (their figures in workloads.py), which parameters a
CLOSED run may set, what OPEN changes. Everything that runs, summarizes or checks a submission reads them here.
"""

from typing import Any, Dict, Iterable, List, Mapping, Tuple

from kvcache import options
from kvcache.errors import UsageError
from kvcache.mlperf.workloads import COMMON, DELAY_S, OPTION_ORDER, TRIALS, WORKLOADS
from kvcache.options import MLPERF_RUN, RUN

RULES = "MLPerf Storage KV-cache rules"
CLOSED, OPEN, INVALID = "CLOSED", "OPEN", "INVALID"

# The mlperf command's own options, fixed by the rules in CLOSED: a different value is refused there.
FIXED_IN_CLOSED = {"trials": TRIALS, "delay": DELAY_S}

# What a CLOSED run may set: where it runs and writes, and what it prints (the GPU of the break-even against
# recompute is an estimate beside the measurement; the fio baseline and the block-layer tracing observe the device
# beside the trial). None of them changes the workload the storage sees.
CLOSED_MAY_SET = (
    "cache_dir",
    "results_dir",
    "organization",
    "system_name",
    "mpi",
    "keep_cache",
    "category",
    "option",
    "what_if",
    "json",
    "quiet",
    "progress",
    "log_level",
    "stats_interval",
    "straggler_fraction",
    "gpu_profile",
    "gpu_peak_tflops",
    "gpu_utilization",
    "baseline",
    "enable_latency_tracing",
)


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


def shown_value(name: str, value: Any) -> str:
    """A parameter's value with its unit, as messages and reasons show it: `300 s`, `200 users`, `llama3.1-8b`."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    unit = options.BY_NAME[name].unit if name in options.BY_NAME else None
    return f"{text} {unit}" if unit and value is not None and not isinstance(value, bool) else text


def check_closed(given: Mapping[str, Any], config_path, chosen: Iterable[str] = OPTION_ORDER) -> None:
    """Refuse (exit 2) what a CLOSED run of the `chosen` options may not set: `given` maps each option typed or set
    in --config to its value. A workload parameter given at the value CLOSED runs anyway is accepted."""
    chosen = tuple(chosen)
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
                    f"CLOSED runs {shown_value(name, FIXED_IN_CLOSED[name])} ({RULES}), got "
                    f"{shown_value(name, value)}; use --category open to change it",
                )
            continue
        closed = [closed_parameters(o)[name] for o in chosen] if name not in CLOSED_MAY_SET else []
        if all(value == c for c in closed):
            continue
        # Each option's value in option order (one value when they agree), so the message pairs them right.
        values = [shown_value(name, c) for c in closed]
        fixed = " / ".join(values[:1] if len(set(values)) == 1 else values)
        which = f"option{'s' if len(chosen) > 1 else ''} {', '.join(chosen)}"
        if any(name in fixed_names(o) for o in chosen):
            says = f"the MLPerf rules fix it at {fixed} for {which} in CLOSED"
        else:
            says = f"CLOSED runs it at its default, {fixed}, for {which}"
        raise UsageError(flag, f"{says}, got {shown_value(name, value)}; use --category open to change it")


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
