"""Engine argv builder: flags, extra_args checked against `describe`, validation and the container wrapper."""

import json
import shlex

import pytest
from ansible_collections.storagebench.kvcache.plugins.module_utils.engine_command import (
    DEFAULT_PYTHON,
    build_engine_argv,
    parse_describe,
    with_env,
    wrap_in_container,
)
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import OptionError

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
    assert "tiny-1b" in str(err.value)


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
    "option, value", [("num_users", 0), ("duration", 0.0), ("duration", -1.0), ("seed", -1), ("gpu_mem_gb", -0.5)]
)
def test_out_of_range_values_name_their_option(description, option, value):
    with pytest.raises(OptionError) as err:
        build(description, **{option: value})
    assert err.value.option == option


def test_extra_args_booleans_numbers_and_strings(description):
    argv, _warnings = build(
        description,
        extra_args={"io_chunk_mib": 8, "keep_cache": True, "promote": False, "quiet": None, "io-engine": "buffered",
                    "request_rate": 2.5},
    )  # fmt: skip
    assert argv[4:] == ["--io-chunk-mib", "8", "--keep-cache", "--io-engine", "buffered", "--request-rate", "2.5"]


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


def test_without_a_description_nothing_is_checked_against_the_engine():
    argv, _warnings = build_engine_argv(PY, "run", {"model": "anything"}, {"new_flag": 1}, None)
    assert argv[4:] == ["--model", "anything", "--new-flag", "1"]


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


def test_parse_describe(description):
    assert parse_describe(json.dumps(description)) == description
    for bad in ("[]", "{}", json.dumps({"models": [], "commands": {"run": []}}), "not json"):
        with pytest.raises(ValueError):
            parse_describe(bad)


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
