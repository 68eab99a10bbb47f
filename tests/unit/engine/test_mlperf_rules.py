"""The MLPerf rules as data: what CLOSED fixes, what it refuses, what OPEN records, and the commands they make."""

import pytest

from kvcache import options
from kvcache.cli import build_parser
from kvcache.describe import describe
from kvcache.errors import UsageError
from kvcache.mlperf import rules
from kvcache.options import MLPERF_RUN, RUN
from kvcache.run_config import make_config, resolve

CACHE = "/var/tmp/kvcache-mlperf-rules-test"


@pytest.mark.parametrize("option", rules.OPTION_ORDER)
def test_a_closed_option_sets_every_workload_parameter_to_a_valid_value(option):
    values = rules.closed_parameters(option)
    assert set(values) == set(rules.workload_names())
    config = make_config(RUN, cache_dir=CACHE, **values)  # each value passes the option's own checks
    assert (config.duration, config.gpu_mem_gb, config.generation_mode, config.seed) == (300.0, 0.0, "none", 42)
    assert config.model == rules.WORKLOADS[option]["model"]


def test_the_three_options_are_the_rules_workloads():
    picked = {o: (w["model"], w["num_users"], w["cpu_mem_gb"], w["max_concurrent_allocs"]) for o, w in
              rules.WORKLOADS.items()}  # fmt: skip
    assert picked == {
        "1": ("llama3.1-8b", 200, 0.0, 16),
        "2": ("llama3.1-8b", 100, 4.0, 16),
        "3": ("llama3.1-70b-instruct", 70, 0.0, 4),
    }
    assert (rules.TRIALS, rules.DELAY_S) == (3, 90.0)
    assert rules.selected("all") == ("1", "2", "3") and rules.selected("2") == ("2",)


def test_workload_parameters_are_the_run_options_closed_may_not_set():
    names = set(rules.workload_names())
    assert {"duration", "num_users", "io_engine", "max_concurrent_allocs", "user_loop"} <= names
    assert not names & set(rules.CLOSED_MAY_SET)
    # An MLPerf trial takes every workload option of `kvcache run` but the result and workbook files (the
    # results tree has its own), the I/O trace and the autoscaler (the rules run fixed user counts).
    run_only = {o.name for o in options.options_for(RUN)} - {o.name for o in options.options_for(MLPERF_RUN)}
    autoscaling = {"enable_autoscaling", "autoscaler_mode", "target_saturation"}
    autoscaling |= {o.name for o in options.OPTIONS if o.name.startswith("autoscaler_")}
    assert len(autoscaling) == 10
    assert run_only == {"output", "xlsx_output", "io_trace_log"} | autoscaling


def test_closed_accepts_what_the_rules_allow_and_the_fixed_values_themselves():
    rules.check_closed(
        {"cache_dir": CACHE, "results_dir": "/r", "organization": "acme", "mpi": "on", "trials": 3, "delay": 90.0},
        None,
    )


def _other_value(name):
    """A value of the parameter that no CLOSED option runs."""
    opt, closed = options.BY_NAME[name], {rules.closed_parameters(o)[name] for o in rules.OPTION_ORDER}
    if opt.kind is bool:
        return not closed.pop()
    if opt.choices:
        return next(c for c in opt.choices if c not in closed)
    if opt.kind is str:
        return "something-else"
    return opt.kind(max(v or 0 for v in closed) + 1)


@pytest.mark.parametrize("name", rules.workload_names())
def test_closed_refuses_every_workload_parameter_naming_it_and_the_way_out(name):
    with pytest.raises(UsageError) as caught:
        rules.check_closed({"cache_dir": CACHE, name: _other_value(name)}, None)
    message = str(caught.value)
    assert message.startswith(options.BY_NAME[name].flag + ":") and message.endswith("use --category open to change it")
    named = any(name in rules.fixed_names(o) for o in rules.OPTION_ORDER)
    assert ("the MLPerf rules fix it at" if named else "CLOSED runs it at its default") in message


@pytest.mark.parametrize("option", rules.OPTION_ORDER)
def test_closed_accepts_a_workload_parameter_given_at_the_value_it_runs_anyway(option):
    rules.check_closed(rules.closed_parameters(option), None, (option,))
    with pytest.raises(UsageError, match="^--num-users: the MLPerf rules fix it at 200 users for option 1 in CLOSED"):
        rules.check_closed({"num_users": rules.WORKLOADS["3"]["num_users"]}, None, ("1",))


@pytest.mark.parametrize(("name", "value", "fixed"), [("trials", 2, "3 trials"), ("delay", 0.0, "90 s")])
def test_closed_refuses_other_trials_or_delays(name, value, fixed):
    with pytest.raises(UsageError, match=rf"^--{name}: CLOSED runs {fixed} "):
        rules.check_closed({name: value}, None)


def test_closed_refuses_a_config_file():
    with pytest.raises(UsageError, match="^--config: a CLOSED run takes no config file"):
        rules.check_closed({}, "/etc/kvcache.yaml")


def test_the_duration_message_says_what_closed_fixes():
    with pytest.raises(UsageError, match="fix it at 300 s for options 1, 2, 3 in CLOSED, got 5 s"):
        rules.check_closed({"duration": 5.0}, None)
    with pytest.raises(UsageError, match="fix it at 200 users / 100 users / 70 users for options 1, 2, 3"):
        rules.check_closed({"num_users": 2}, None)


def test_open_applies_what_was_given_and_closed_ignores_it():
    given = {"duration": 5.0, "num_users": 2, "cache_dir": CACHE}
    placement = {"cache_dir": CACHE, "quiet": True}
    opened = rules.trial_values("3", "open", given, placement)
    assert (opened["duration"], opened["num_users"], opened["model"], opened["quiet"]) == (
        5.0,
        2,
        "llama3.1-70b-instruct",
        True,
    )
    closed = rules.trial_values("3", "closed", given, placement)
    assert (closed["duration"], closed["num_users"], closed["cache_dir"]) == (300.0, 70, CACHE)


def test_changes_list_each_parameter_that_differs_from_closed_in_table_order():
    values = rules.trial_values("1", "open", {"num_users": 2, "duration": 5.0, "seed": 42}, {})
    assert rules.changes("1", values) == [
        {"parameter": "num_users", "closed": 200, "value": 2},
        {"parameter": "duration", "closed": 300.0, "value": 5.0},
    ]
    assert rules.changes("1", rules.closed_parameters("1")) == []


@pytest.mark.parametrize("option", rules.OPTION_ORDER)
def test_the_run_flags_of_an_option_make_exactly_its_parameters(option):
    values = dict(rules.closed_parameters(option), cache_dir=CACHE)
    argv = [RUN] + rules.run_flags(values, rules.fixed_names(option))
    for name in rules.fixed_names(option):  # the rules' own values are spelled out even where they are defaults
        assert options.BY_NAME[name].flag in argv
    config, _models = resolve(RUN, build_parser().parse_args(argv))
    assert {name: getattr(config, name) for name in values} == values


def test_describe_exports_the_rules():
    exported = describe()["mlperf"]
    assert exported["trials"] == rules.TRIALS and exported["delay_s"] == rules.DELAY_S
    assert exported["options"]["2"]["cpu_mem_gb"] == 4.0 and exported["options"]["3"]["num_users"] == 70
    assert exported["workload_parameters"] == rules.workload_names()
    assert exported["closed_may_set"] == list(rules.CLOSED_MAY_SET)


def test_the_option_table_takes_the_rules_figures():
    assert options.BY_NAME["trials"].default == rules.TRIALS and options.BY_NAME["delay"].default == rules.DELAY_S
    assert options.BY_NAME["option"].choices == (*rules.OPTION_ORDER, "all")
    for option, workload in rules.WORKLOADS.items():
        assert f"{option} ({workload['model']}, {workload['num_users']} users" in options.BY_NAME["option"].help
