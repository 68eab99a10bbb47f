"""Options: one declaration gives flags, config keys and validation; defaults < config < typed flags."""

import argparse
import time

import pytest

from kvcache.cli import build_parser
from kvcache.errors import SHOWN_CHARS, UsageError, shown
from kvcache.options import BY_NAME, DATASIZE, OPTIONS, RUN, check_value, load_config, options_for
from kvcache.run_config import resolve


def parse(*argv):
    return build_parser().parse_args(list(argv))


def write_config(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_when_nothing_is_given():
    values, models = resolve(RUN, parse("run"))
    for opt in options_for(RUN):
        assert getattr(values, opt.name) == opt.default, opt.name
    assert models == {}
    assert values.config is None
    assert values.model == "llama3.1-8b" and values.num_users == 100 and values.io_engine == "direct"


def test_resolve_only_returns_the_commands_options():
    run_values = resolve(RUN, parse("run"))[0].as_dict()
    size_values = resolve(DATASIZE, parse("datasize"))[0].as_dict()
    assert "ranks" not in run_values and "duration" in run_values
    assert "ranks" in size_values and "duration" not in size_values and "cache_dir" not in size_values
    assert list(run_values) == [o.name for o in options_for(RUN)] + ["config", "workload"]  # the result's config block


def test_config_overrides_defaults_and_typed_flags_override_config(tmp_path):
    path = write_config(tmp_path, "num_users: 7\nduration: 3\nseed: 9\nio-engine: buffered\nkeep_cache: true\n")
    values = resolve(RUN, parse("run", "--config", path, "--num-users", "11"))[0]
    assert values.num_users == 11  # typed wins
    assert values.duration == 3.0 and isinstance(values.duration, float)  # config int accepted for float
    assert values.seed == 9
    assert values.io_engine == "buffered"  # dashes accepted in config keys
    assert values.keep_cache is True
    assert values.model == "llama3.1-8b"  # untouched default
    assert values.config == path


def test_typed_flag_equal_to_default_still_overrides_config(tmp_path):
    path = write_config(tmp_path, "num_users: 7\n")
    values = resolve(RUN, parse("run", "--config", path, "--num-users", "100"))[0]
    assert values.num_users == 100


def test_bool_flags():
    values = resolve(RUN, parse("run", "--keep-cache", "--promote", "--disable-multi-turn", "--quiet"))[0]
    assert values.keep_cache is True and values.promote is True
    assert values.disable_multi_turn is True and values.quiet is True
    assert values.disable_prefix_caching is False
    with pytest.raises(SystemExit):
        parse("run", "--keep-cache", "yes")  # a bare flag takes no value


def test_config_models_mapping_is_returned(tmp_path):
    path = write_config(tmp_path, "model: mine\nmodels:\n  mine: {layers: 2, kv_heads: 2, head_dim: 64}\n")
    values, models = resolve(DATASIZE, parse("datasize", "--config", path))
    assert values.model == "mine"
    assert models == {"mine": {"layers": 2, "kv_heads": 2, "head_dim": 64}}


def test_empty_config_file_is_allowed(tmp_path):
    values, models = resolve(RUN, parse("run", "--config", write_config(tmp_path, "")))
    assert values.num_users == 100 and models == {}


def test_unknown_config_key_names_key_and_allowed(tmp_path):
    path = write_config(tmp_path, "num_userz: 3\n")
    with pytest.raises(UsageError) as info:
        resolve(RUN, parse("run", "--config", path))
    text = str(info.value)
    assert info.value.option == "--config"
    assert "num_userz" in text and "num_users" in text and "models" in text
    assert "kv-cache.py's sections" in text  # its config.yaml's sections are allowed too


def test_one_config_file_serves_run_and_datasize(tmp_path):
    path = write_config(
        tmp_path,
        "model: tiny-1b\nnum_users: 3\nranks: 4\njson: true\ncheck_free_bytes: 1000\n"
        "duration: 5\ncache_dir: /mnt/x\noutput: r.json\nio-engine: buffered\n",
    )
    run_values = resolve(RUN, parse("run", "--config", path))[0]
    size_values = resolve(DATASIZE, parse("datasize", "--config", path))[0]
    # Each command takes its own keys and the shared ones, and ignores the other's.
    assert run_values.duration == 5.0 and run_values.cache_dir == "/mnt/x" and run_values.output == "r.json"
    assert run_values.io_engine == "buffered" and not hasattr(run_values, "ranks") and not hasattr(run_values, "json")
    assert size_values.ranks == 4 and size_values.json is True and size_values.check_free_bytes == 1000
    assert not any(hasattr(size_values, name) for name in ("duration", "cache_dir", "output"))
    assert run_values.num_users == size_values.num_users == 3


def test_a_key_of_the_other_command_is_still_checked(tmp_path):
    # datasize comes first in the playbook: a bad run-only value fails there, before anything runs.
    path = write_config(tmp_path, "duration: -1\n")
    with pytest.raises(UsageError, match="duration: must be > 0"):
        resolve(DATASIZE, parse("datasize", "--config", path))
    path = write_config(tmp_path, "ranks: 0\n", "ranks.yaml")
    with pytest.raises(UsageError, match="ranks: must be >= 1"):
        resolve(RUN, parse("run", "--config", path))


@pytest.mark.parametrize(
    "text,key,fragment",
    [
        ("num_users: many\n", "num_users", "must be an integer, got 'many'"),
        ("num_users: 2.5\n", "num_users", "must be an integer, got 2.5"),
        ("num_users: true\n", "num_users", "must be an integer, got True"),
        ("duration: fast\n", "duration", "must be a number"),
        ("duration: .nan\n", "duration", "finite"),
        ("keep_cache: 1\n", "keep_cache", "true or false"),
        ("keep_cache: 'yes'\n", "keep_cache", "true or false"),
        ("model: 3\n", "model", "must be a string, got 3"),
    ],
)
def test_wrong_type_in_config_names_the_key(tmp_path, text, key, fragment):
    path = write_config(tmp_path, text)
    with pytest.raises(UsageError) as info:
        resolve(RUN, parse("run", "--config", path))
    assert key in info.value.option
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("num_users: 0\n", ">= 1"),
        ("num_users: 100001\n", "<= 100000"),
        ("duration: 0\n", "> 0"),
        ("duration: -1\n", "> 0"),
        ("straggler_fraction: 1.5\n", "<= 1"),
        ("io_chunk_mib: 0\n", ">= 0.00390625"),
        ("stats_interval: 0.01\n", ">= 0.05"),
    ],
)
def test_out_of_range_in_config(tmp_path, text, fragment):
    path = write_config(tmp_path, text)
    with pytest.raises(UsageError) as info:
        resolve(RUN, parse("run", "--config", path))
    assert text.split(":")[0] in info.value.option
    assert fragment in str(info.value)


def test_bad_choice_in_config_lists_allowed_values(tmp_path):
    path = write_config(tmp_path, "io_engine: libaio\n")
    with pytest.raises(UsageError) as info:
        resolve(RUN, parse("run", "--config", path))
    assert "io_engine" in info.value.option
    assert "direct" in str(info.value) and "buffered" in str(info.value) and "libaio" in str(info.value)


@pytest.mark.parametrize(
    "argv,flag",
    [
        (("--num-users", "0"), "--num-users"),
        (("--duration", "0"), "--duration"),
        (("--duration", "inf"), "--duration"),
        (("--duration", "nan"), "--duration"),
        (("--straggler-fraction", "2"), "--straggler-fraction"),
        (("--io-depth", "0"), "--io-depth"),
        (("--gpu-mem-gb", "-1"), "--gpu-mem-gb"),
    ],
)
def test_out_of_range_flag_names_the_flag(argv, flag):
    with pytest.raises(UsageError) as info:
        resolve(RUN, parse("run", *argv))
    assert info.value.option == flag


def test_flag_type_errors_are_argparse_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        parse("run", "--num-users", "lots")
    assert info.value.code == 2
    assert "--num-users" in capsys.readouterr().err


def test_config_that_is_not_a_mapping(tmp_path):
    with pytest.raises(UsageError, match="mapping"):
        load_config(write_config(tmp_path, "- 1\n- 2\n"), RUN)
    with pytest.raises(UsageError, match="models must be a mapping"):
        load_config(write_config(tmp_path, "models: [1]\n", "m.yaml"), RUN)


def test_config_missing_or_invalid_yaml(tmp_path):
    with pytest.raises(UsageError) as info:
        load_config(str(tmp_path / "absent.yaml"), RUN)
    assert info.value.option == "--config"
    with pytest.raises(UsageError, match="not valid YAML"):
        load_config(write_config(tmp_path, "a: [1, 2\n"), RUN)


def test_every_option_flag_is_declared_once():
    names = [o.name for o in OPTIONS]
    assert len(names) == len(set(names)) == len(BY_NAME)
    run_flags = [o.flag for o in options_for(RUN)]
    assert "--num-users" in run_flags and "--ranks" not in run_flags
    assert "--ranks" in [o.flag for o in options_for(DATASIZE)]


def test_every_default_passes_its_own_validation():
    for opt in OPTIONS:
        assert check_value(opt, opt.default, opt.flag) == opt.default


def test_resolve_ignores_foreign_namespace_attributes():
    values = resolve(RUN, argparse.Namespace(command="run", config=None, results=["x"]))[0]
    assert not hasattr(values, "results") and not hasattr(values, "command")


def test_every_number_has_both_bounds():
    # Without an upper bound a value like 1e308 overflows the arithmetic that uses it (item 8 of issue 9).
    for opt in OPTIONS:
        if opt.kind in (int, float):
            assert opt.minimum is not None and opt.maximum is not None, opt.name


def test_request_rate_is_zero_or_a_real_rate():
    assert resolve(RUN, parse("run", "--request-rate", "0"))[0].request_rate == 0
    assert resolve(RUN, parse("run", "--request-rate", "0.001"))[0].request_rate == 0.001
    with pytest.raises(UsageError, match="must be 0 or >= 0.001, got 0.0001"):
        resolve(RUN, parse("run", "--request-rate", "0.0001"))


def test_anchors_and_merge_keys_within_the_limits_are_fine(tmp_path):
    path = write_config(
        tmp_path,
        "models:\n  base: &geometry {layers: 2, kv_heads: 2, head_dim: 64}\n"
        "  deeper:\n    <<: *geometry\n    layers: 4\nmodel: deeper\n",
    )
    values, models = resolve(DATASIZE, parse("datasize", "--config", path))
    assert values.model == "deeper"
    assert models["deeper"] == {"layers": 4, "kv_heads": 2, "head_dim": 64}  # the override is not a duplicate


def test_alias_bomb_fails_fast(tmp_path):
    levels = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi")
    )
    assert len(levels) < 600  # a billion values from a few hundred bytes
    started = time.monotonic()
    with pytest.raises(UsageError, match="more than 10,000 values once its YAML aliases are expanded"):
        load_config(write_config(tmp_path, levels), RUN)
    assert time.monotonic() - started < 5


def test_a_large_config_without_aliases_is_refused_without_blaming_aliases(tmp_path):
    many = "models:\n" + "".join(f"  m{n}: {{layers: 1, kv_heads: 1, head_dim: 8}}\n" for n in range(3000))
    with pytest.raises(UsageError, match="holds more than 10,000 values; ") as err:
        load_config(write_config(tmp_path, many), RUN)
    assert "alias" not in str(err.value)


def test_config_read_is_bounded_even_from_an_endless_file():
    with pytest.raises(UsageError, match="larger than the 1 MiB limit"):
        load_config("/dev/zero", RUN)


def test_duplicate_keys_are_errors_at_every_level(tmp_path):
    with pytest.raises(UsageError, match="duplicate key 'seed' \\(line 3\\)"):
        load_config(write_config(tmp_path, "seed: 1\nnum_users: 2\nseed: 3\n"), RUN)
    with pytest.raises(UsageError, match="duplicate key 'head_dim'"):
        load_config(write_config(tmp_path, "models:\n  m: {layers: 1, head_dim: 1, head_dim: 2}\n", "m.yaml"), RUN)


def test_messages_quote_a_short_prefix_of_the_value(tmp_path):
    long_value = "v" * 100_000
    with pytest.raises(UsageError) as info:
        load_config(write_config(tmp_path, f"model: [{long_value}]\n"), RUN)
    assert len(str(info.value)) < 200
    assert shown(long_value) == repr("v" * SHOWN_CHARS) + "..."
    assert shown("short") == "'short'"
    nested = []
    for _level in range(30):
        nested = [nested] * 9  # 9**30 items if expanded: shown() must not try
    assert len(shown(nested)) <= SHOWN_CHARS + 3


@pytest.mark.parametrize("digits,fragment", [("9" * 400, "<= 4194304"), ("-" + "9" * 400, ">= 0")])
def test_a_huge_yaml_integer_for_a_float_option_is_out_of_range_not_an_overflow(tmp_path, digits, fragment):
    with pytest.raises(UsageError, match=fragment):
        load_config(write_config(tmp_path, f"gpu_mem_gb: {digits}\n"), DATASIZE)
