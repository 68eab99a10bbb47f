"""The typed, frozen run configuration: made from the option table, so a new option needs nothing else."""

import dataclasses
import io
import json
from typing import Optional

import pytest

from kvcache import options
from kvcache.cli import build_parser, main
from kvcache.describe import describe
from kvcache.errors import UsageError
from kvcache.options import CLEAN, DATASIZE, RUN, Option, options_for
from kvcache.run_config import config_class, make_config, resolve
from kvcache.workload import DEFAULT_PROFILE

EXTRAS = ["config", "workload", "config_warnings"]


def test_one_frozen_typed_attribute_per_option_and_the_config_file_last():
    config = resolve(RUN, build_parser().parse_args(["run"]))[0]
    fields = dataclasses.fields(config)
    assert [f.name for f in fields] == [o.name for o in options_for(RUN)] + EXTRAS
    types = {f.name: f.type for f in fields}
    assert types["num_users"] is int and types["duration"] is float and types["keep_cache"] is bool
    assert types["cache_dir"] == Optional[str]  # no default: unset is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_users = 5
    assert config.num_users == 100 and config.config is None
    assert config.workload == DEFAULT_PROFILE and config.config_warnings == ()


def test_each_command_has_its_own_options_only():
    assert set(dataclasses.asdict(make_config(CLEAN))) == {"cache_dir", "dry_run", *EXTRAS}
    size = make_config(DATASIZE)
    assert size.ranks == 1 and not hasattr(size, "duration")
    assert config_class(RUN) is config_class(RUN) and config_class(RUN) is not config_class(DATASIZE)


def test_as_dict_is_the_values_by_name_in_table_order():
    config = make_config(RUN, num_users=3, config="c.yaml")
    values = config.as_dict()
    # The warnings are reported by the run, not kept in the result's config block; the profile is plain data.
    assert list(values) == [o.name for o in options_for(RUN)] + ["config", "workload"]
    assert values["num_users"] == 3 and values["config"] == "c.yaml"
    assert values["workload"] == DEFAULT_PROFILE.as_dict()
    plain = dataclasses.asdict(config)
    assert {k: v for k, v in values.items() if k != "workload"} == {
        k: v for k, v in plain.items() if k not in ("workload", "config_warnings")
    }


def test_make_config_checks_what_it_is_given():
    assert make_config(RUN, duration=2).duration == 2.0  # an int is accepted for a float, as in a config file
    with pytest.raises(UsageError, match="must be > 0"):
        make_config(RUN, duration=0)
    with pytest.raises(UsageError, match="must be true or false"):
        make_config(RUN, keep_cache="yes")
    with pytest.raises(TypeError, match="not options of run: ranks"):
        make_config(RUN, ranks=2)


SAMPLE = Option("sample_depth", int, 4, "a temporary option", minimum=1, maximum=9, unit="requests")


@pytest.fixture
def sample_option(monkeypatch):
    """How a test adds an option: a new OPTIONS tuple; everything reads the table when it is called."""
    monkeypatch.setattr(options, "OPTIONS", options.OPTIONS + (SAMPLE,))
    return SAMPLE


def test_an_option_added_to_the_table_reaches_parser_config_file_resolve_and_describe(sample_option, tmp_path):
    config = resolve(RUN, build_parser().parse_args(["run", "--sample-depth", "7"]))[0]
    assert config.sample_depth == 7
    path = tmp_path / "c.yaml"
    path.write_text("sample-depth: 3\n")
    assert resolve(DATASIZE, build_parser().parse_args(["datasize", "--config", str(path)]))[0].sample_depth == 3
    assert make_config(RUN).sample_depth == 4
    entry = [o for o in describe()["options"] if o["name"] == "sample_depth"]
    assert entry and entry[0]["maximum"] == 9 and entry[0]["flag"] == "--sample-depth"
    err = io.StringIO()
    path.write_text("sample_depth: 10\n")
    assert main(["datasize", "--config", str(path)], io.StringIO(), err) == 2
    assert "sample_depth: must be <= 9, got 10" in err.getvalue()
    out = io.StringIO()
    assert main(["describe"], out, io.StringIO()) == 0
    assert "sample_depth" in {o["name"] for o in json.loads(out.getvalue())["options"]}


def test_the_added_option_is_gone_again_after_the_test():
    assert "sample_depth" not in options.BY_NAME
    assert not hasattr(make_config(RUN), "sample_depth")
