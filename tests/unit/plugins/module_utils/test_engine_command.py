"""Engine argv builder: options and extra_args checked against the real `describe` contract, and the container
wrapper. Bounds, choices and models in these tests are read from the contract, never written here."""

import shlex

import pytest
from ansible_collections.storagebench.kvcache.plugins.module_utils.engine_command import (
    COMMANDS,
    ENGINE_OPTIONS,
    build_engine_argv,
    with_env,
    wrap_in_container,
)
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import DEFAULT_PYTHON, OptionError

PY = DEFAULT_PYTHON


def build(description, command="run", extra_args=None, **options):
    return build_engine_argv(PY, command, options, extra_args, description)


def test_run_argv_in_engine_flag_order(description):
    argv, warnings = build(description, model="tiny-1b", num_users=2, duration=3.0, seed=7, gpu_mem_gb=0.0,
                           cpu_mem_gb=0.25, cache_dir="/mnt/kv", generation_mode="fast",
                           performance_profile="throughput", output="/tmp/r.json", config="/etc/kv.yaml")  # fmt: skip
    assert argv == [
        PY, "-m", "kvcache", "run", "--model", "tiny-1b", "--num-users", "2", "--duration", "3.0", "--seed", "7",
        "--gpu-mem-gb", "0.0", "--cpu-mem-gb", "0.25", "--cache-dir", "/mnt/kv", "--generation-mode", "fast",
        "--performance-profile", "throughput", "--output", "/tmp/r.json", "--config", "/etc/kv.yaml",
    ]  # fmt: skip
    assert warnings == []


def test_options_not_given_are_left_to_the_engine(description):
    argv, _warnings = build(description, model=None, num_users=None)
    assert argv == [PY, "-m", "kvcache", "run"]


def test_datasize_argv(description):
    argv, _warnings = build(description, command="datasize", model="mistral-7b", num_users=10,
                            extra_args={"json": True, "ranks": 4})  # fmt: skip
    assert argv == [PY, "-m", "kvcache", "datasize", "--model", "mistral-7b", "--num-users", "10", "--json",
                    "--ranks", "4"]  # fmt: skip


def test_baseline_argv_and_its_refusals(description):
    argv, _warnings = build(description, command="baseline", cache_dir="/mnt/kv", output="/var/tmp/b.json",
                            extra_args={"io_depth": 4, "ranks": 2, "baseline_runtime": 5.0})  # fmt: skip
    assert argv == [PY, "-m", "kvcache", "baseline", "--cache-dir", "/mnt/kv", "--output", "/var/tmp/b.json",
                    "--io-depth", "4", "--ranks", "2", "--baseline-runtime", "5.0"]  # fmt: skip
    with pytest.raises(OptionError, match="'kvcache baseline' has no --model flag"):
        build(description, command="baseline", model="tiny-1b")
    with pytest.raises(OptionError, match="baseline_read_share"):
        build(description, command="baseline", extra_args={"baseline_read_share": 2.0})
    run, _warnings = build(description, extra_args={"baseline": "/var/tmp/b.json"})
    assert run[-2:] == ["--baseline", "/var/tmp/b.json"]


@pytest.mark.parametrize("option, value", [("duration", 5.0), ("cache_dir", "/mnt/kv"), ("seed", 1), ("output", "/r")])
def test_datasize_refuses_run_only_options_naming_them(description, option, value):
    with pytest.raises(OptionError) as err:
        build(description, command="datasize", **{option: value})
    assert err.value.option == option
    assert "'kvcache datasize' has no" in str(err.value)


def test_unknown_model_is_an_error_naming_model(description):
    with pytest.raises(OptionError) as err:
        build(description, model="gpt-9")
    assert err.value.option == "model"
    assert str(err.value).startswith("model: unknown model 'gpt-9'; choose one of: ")
    for model in description["models"]:
        assert model["name"] in str(err.value)


def test_every_model_of_the_contract_is_accepted(description):
    for model in description["models"]:
        argv, warnings = build(description, model=model["name"])
        assert argv[4:] == ["--model", model["name"]] and warnings == []


def test_unknown_model_with_a_config_file_is_only_a_warning(description):
    argv, warnings = build(description, model="my-model", config="/etc/kv/models.yaml")
    assert argv[4:6] == ["--model", "my-model"]
    assert warnings and "config" in warnings[0]


def test_relative_cache_dir_is_an_error(description):
    with pytest.raises(OptionError) as err:
        build(description, cache_dir="kvcache/here")
    assert err.value.option == "cache_dir"
    assert "absolute" in str(err.value)


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("num_users", 0, "must be >= 1, got 0"),
        ("duration", 0.0, "must be > 0, got 0.0"),
        ("duration", -1.0, "must be > 0"),
        ("duration", float("nan"), "must be a finite number, got nan"),
        ("duration", float("inf"), "must be a finite number"),
        ("seed", -1, "must be >= 0"),
        ("gpu_mem_gb", -0.5, "must be >= 0"),
        ("generation_mode", "slow", "must be one of none, fast, realistic, got 'slow'"),
        ("performance_profile", "", "must not be empty"),
        ("output", "", "must not be empty"),
        ("config", "", "must not be empty"),
    ],
)
def test_out_of_range_values_name_their_option(description, option, value, says):
    with pytest.raises(OptionError) as err:
        build(description, **{option: value})
    assert err.value.option == option
    assert str(err.value).startswith(f"{option}: {says}")


def test_the_module_options_get_the_contract_bounds(description):
    contract = {entry["name"]: entry for entry in description["options"]}
    for name in ENGINE_OPTIONS:
        entry = contract.get(name)
        if entry is None or entry["maximum"] is None:
            continue
        top = entry["maximum"] if entry["type"] == "float" else int(entry["maximum"])
        argv, _warnings = build(description, **{name: top})
        assert argv[4:] == [entry["flag"], repr(float(top)) if entry["type"] == "float" else str(top)]
        with pytest.raises(OptionError) as err:
            build(description, **{name: top * 2 + 1})
        assert str(err.value).startswith(f"{name}: must be <= ")


def test_extra_args_booleans_numbers_and_strings(description):
    argv, _warnings = build(
        description,
        extra_args={"io_chunk_mib": 8, "keep_cache": True, "promote": False, "quiet": None, "io-engine": "buffered",
                    "request_rate": 2.5},
    )  # fmt: skip
    assert argv[4:] == ["--io-chunk-mib", "8.0", "--keep-cache", "--io-engine", "buffered", "--request-rate", "2.5"]


def test_unknown_extra_args_flag_is_an_error_naming_extra_args(description):
    with pytest.raises(OptionError) as err:
        build(description, extra_args={"turbo": True})
    assert err.value.option == "extra_args"
    assert "--turbo" in str(err.value)


def test_extra_args_for_the_other_subcommand_is_an_error(description):
    with pytest.raises(OptionError) as err:
        build(description, extra_args={"json": True})
    assert err.value.option == "extra_args"


def test_extra_args_cannot_repeat_a_module_option(description):
    with pytest.raises(OptionError) as err:
        build(description, extra_args={"num_users": 3})
    assert err.value.option == "extra_args"
    assert "num_users option" in str(err.value)


@pytest.mark.parametrize("key, value", [("io_depth", [1, 2]), ("--io-depth", 1), ("a;b", 1), ("io depth", 1)])
def test_extra_args_bad_keys_and_values(description, key, value):
    with pytest.raises(OptionError) as err:
        build(description, extra_args={key: value})
    assert err.value.option == "extra_args"


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("keep_cache", "yes", "keep_cache: must be true or false, got 'yes'"),
        ("quiet", 0, "quiet: must be true or false, got 0"),
        ("promote", "false", "promote: must be true or false"),
        ("io_chunk_mib", "abc", "io_chunk_mib: must be a number, got 'abc'"),
        ("io_chunk_mib", "8", "io_chunk_mib: must be a number, got '8'"),
        ("io_depth", True, "io_depth: must be an integer, got True"),
        ("io_depth", 4.0, "io_depth: must be an integer, got 4.0"),
        ("io-depth", 0, "io-depth: must be >= 1, got 0"),
        ("stats_interval", float("nan"), "stats_interval: must be a finite number, got nan"),
        ("request_rate", float("inf"), "request_rate: must be a finite number"),
        ("request_rate", 1e-9, "request_rate: must be 0 or >= 0.001, got 1e-09"),
        ("straggler_fraction", 10**400, "straggler_fraction: must be <= 1"),
        pytest.param(
            "max_requests",
            10**5000,
            "max_requests: must be <= 1000000000000, got a number too long to print",
            id="huge-int",
        ),
        ("io_engine", "fast", "io_engine: must be one of direct, buffered, got 'fast'"),
        ("io_engine", 3, "io_engine: must be a string, got 3"),
        ("gpu_backend", "", "gpu_backend: must not be empty"),
        ("io_depth", False, "io_depth: must be an integer, got False"),
    ],
)
def test_extra_args_values_are_checked_against_the_contract_naming_the_key(description, key, value, says):
    with pytest.raises(OptionError) as err:
        build(description, extra_args={key: value})
    assert err.value.option == "extra_args"
    assert str(err.value).startswith("extra_args: " + says)


def test_extra_args_values_as_the_engine_holds_them(description):
    argv, _warnings = build(description, extra_args={"request_rate": 0, "straggler_fraction": 1, "keep_cache": False})
    assert argv[4:] == ["--request-rate", "0.0", "--straggler-fraction", "1.0"]
    argv, _warnings = build(description, command="datasize", extra_args={"check_free_bytes": 2**63 - 1})
    assert argv[4:] == ["--check-free-bytes", str(2**63 - 1)]


def _good_value(entry):
    if entry["type"] == "bool":
        return True
    if entry["choices"]:
        return entry["choices"][-1]
    if entry["default"] is not None:
        return entry["default"]
    if entry["type"] == "str":
        return "/mnt/kv/x"
    return entry["maximum"] if entry["maximum"] is not None else entry["minimum"]


def _bad_values(entry):
    """Values of the wrong type, and just past each bound, from the entry's own fields."""
    bad = {"bool": ["yes", 1], "int": ["abc", True, 1.5], "float": ["abc", float("nan"), True], "str": [7, ""]}
    values = list(bad[entry["type"]])
    if entry["minimum"] is not None:
        values.append(entry["minimum"] if entry["exclusive_minimum"] else entry["minimum"] - 1)
    if entry["maximum"] is not None:
        values.append(entry["maximum"] + 1)
    if entry["nonzero_minimum"] is not None:
        values.append(entry["nonzero_minimum"] / 2)
    return values


def test_every_option_of_the_contract_is_checked_as_extra_args(description):
    """Generic over the whole table: whatever options the engine has, each gets its own type and bounds."""
    checked = 0
    for entry in description["options"]:
        if entry["name"] in ENGINE_OPTIONS:
            continue
        for command in set(entry["commands"]) & set(COMMANDS):
            argv, _warnings = build(description, command=command, extra_args={entry["name"]: _good_value(entry)})
            assert argv[3 + len(command.split())] == entry["flag"]
            for value in _bad_values(entry):
                with pytest.raises(OptionError) as err:
                    build(description, command=command, extra_args={entry["name"]: value})
                assert str(err.value).startswith(f"extra_args: {entry['name']}: must "), (entry["name"], value)
                checked += 1
    assert checked > 50


def test_unknown_command_and_bad_python():
    with pytest.raises(OptionError) as err:
        build_engine_argv(PY, "report", {}, None, None)
    assert err.value.option == "command"
    with pytest.raises(OptionError) as err:
        build_engine_argv("", "run", {}, None, None)
    assert err.value.option == "python"


def test_hostile_values_stay_single_arguments(description):
    argv, _warnings = build(description, cache_dir="/mnt/a b;$(reboot)", output="/tmp/`id`.json")
    line = shlex.join(argv)
    assert shlex.split(line) == argv
    assert "'/mnt/a b;$(reboot)'" in line


def test_with_env():
    assert with_env(["py", "-m", "kvcache"], {}) == ["py", "-m", "kvcache"]
    assert with_env(["py"], {"A": "1", "B": "x y"}) == ["env", "A=1", "B=x y", "py"]
    with pytest.raises(OptionError) as err:
        with_env(["py"], {"1A": "x"})
    assert err.value.option == "env"


def test_container_wraps_the_engine_with_the_cache_mounted(description):
    engine, _warnings = build(description, model="tiny-1b", cache_dir="/mnt/kv")
    argv = wrap_in_container(engine, "kv:0.1", cache_dir="/mnt/kv")
    assert argv == ["docker", "run", "--rm", "--network", "host", "-v", "/mnt/kv:/mnt/kv", "kv:0.1"] + engine


def test_container_podman_env_and_output_and_config_mounts():
    argv = wrap_in_container(["python3", "-m", "kvcache", "run"], "kv:0.1", "podman", cache_dir="/mnt/kv",
                             output="/results/r.json", config="/mnt/kv/conf.yaml", env={"A": "1"})  # fmt: skip
    assert argv == ["podman", "run", "--rm", "--network", "host", "-v", "/mnt/kv:/mnt/kv", "-v", "/results:/results",
                    "-e", "A=1", "kv:0.1", "python3", "-m", "kvcache", "run"]  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"image": "kv", "cache_dir": None}, "cache_dir"),
        ({"image": "", "cache_dir": "/c"}, "container_image"),
        ({"image": "--privileged", "cache_dir": "/c"}, "container_image"),
        ({"image": "kv", "cache_dir": "/c", "output": "r.json"}, "output"),
        ({"image": "kv", "cache_dir": "/c", "container_engine": "lxc"}, "container_engine"),
        ({"image": "kv", "cache_dir": "/c:ro"}, "cache_dir"),
    ],
)
def test_container_errors_name_the_option(kwargs, option):
    image = kwargs.pop("image")
    with pytest.raises(OptionError) as err:
        wrap_in_container(["py"], image, **kwargs)
    assert err.value.option == option


def test_container_datasize_needs_no_cache_dir():
    argv = wrap_in_container(["py", "-m", "kvcache", "datasize"], "kv", command="datasize")
    assert argv == ["docker", "run", "--rm", "--network", "host", "kv", "py", "-m", "kvcache", "datasize"]


# `kvcache mlperf run` (issue 13): two words of command, its own options through extra_args, results_dir a directory.
MLPERF = "mlperf run"


def _engine_args(argv):
    """What the engine's own parser makes of an argv the module built."""
    cli = pytest.importorskip("kvcache.cli")
    return cli.build_parser().parse_args(argv[3:])


def test_mlperf_run_argv_is_what_the_engine_parses(description):
    extra = {"category": "open", "option": "1", "trials": 2, "delay": 0, "organization": "org", "quiet": True}
    argv, warnings = build(description, command=MLPERF, extra_args=extra, model="tiny-1b", num_users=2,
                           duration=2, cache_dir="/mnt/kv", results_dir="/var/tmp/mlperf")  # fmt: skip
    assert argv == [
        PY, "-m", "kvcache", "mlperf", "run", "--model", "tiny-1b", "--num-users", "2", "--duration", "2.0",
        "--cache-dir", "/mnt/kv", "--results-dir", "/var/tmp/mlperf", "--category", "open", "--option", "1",
        "--trials", "2", "--delay", "0.0", "--organization", "org", "--quiet",
    ]  # fmt: skip
    assert warnings == []
    args = _engine_args(argv)
    assert (args.command, args.step, args.category, args.option, args.trials, args.delay) == (
        "mlperf",
        "run",
        "open",
        "1",
        2,
        0.0,
    )
    assert (args.results_dir, args.cache_dir, args.num_users) == ("/var/tmp/mlperf", "/mnt/kv", 2)


def test_mlperf_run_refuses_output_with_the_contracts_message(description):
    with pytest.raises(OptionError) as err:
        build(description, command=MLPERF, output="/tmp/r.json")
    assert err.value.option == "output"
    assert str(err.value) == "output: 'kvcache mlperf run' has no --output flag (an option of run, baseline)"


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"option": 1}, "extra_args: option: must be a string, got 1"),
        ({"option": "4"}, "extra_args: option: must be one of 1, 2, 3, all, got '4'"),
        ({"category": "CLOSED"}, "extra_args: category: must be one of closed, open, got 'CLOSED'"),
        ({"trials": 0}, "extra_args: trials: must be >= 1, got 0"),
        ({"io_trace_log": "/t.csv"}, "extra_args: 'io_trace_log': 'kvcache mlperf run' has no --io-trace-log flag"),
        ({"results_dir": "/r"}, "extra_args: results_dir: use the module's results_dir option instead"),
    ],
)
def test_mlperf_run_options_are_checked_against_the_contract(description, extra, message):
    with pytest.raises(OptionError) as err:
        build(description, command=MLPERF, extra_args=extra)
    assert str(err.value).startswith(message)


def test_results_dir_is_absolute_and_only_for_mlperf_run(description):
    with pytest.raises(OptionError) as err:
        build(description, command=MLPERF, results_dir="results")
    assert str(err.value).startswith("results_dir: must be an absolute path")
    for command in ("run", "datasize"):
        with pytest.raises(OptionError) as err:
            build(description, command=command, results_dir="/r")
        assert str(err.value).startswith(f"results_dir: 'kvcache {command}' has no --results-dir flag")


def test_container_mlperf_run_mounts_the_cache_and_the_results_tree(description):
    engine, _warnings = build(description, command=MLPERF, cache_dir="/mnt/kv", results_dir="/srv/mlperf")
    argv = wrap_in_container(engine, "kv", cache_dir="/mnt/kv", results_dir="/srv/mlperf/", command=MLPERF)
    assert argv == ["docker", "run", "--rm", "--network", "host", "-v", "/mnt/kv:/mnt/kv",
                    "-v", "/srv/mlperf:/srv/mlperf", "kv"] + engine  # fmt: skip
    # A results tree inside the cache directory is already there.
    argv = wrap_in_container(engine, "kv", cache_dir="/mnt/kv", results_dir="/mnt/kv/results", command=MLPERF)
    assert argv == ["docker", "run", "--rm", "--network", "host", "-v", "/mnt/kv:/mnt/kv", "kv"] + engine


@pytest.mark.parametrize(
    "kwargs, option",
    [({"cache_dir": "/c"}, "results_dir"), ({"results_dir": "/r"}, "cache_dir"),
     ({"cache_dir": "/c", "results_dir": "r"}, "results_dir")],
)  # fmt: skip
def test_container_mlperf_run_needs_both_directories(kwargs, option):
    with pytest.raises(OptionError) as err:
        wrap_in_container(["py"], "kv", command=MLPERF, **kwargs)
    assert err.value.option == option
