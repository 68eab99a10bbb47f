"""The plugins check a value with the engine's own rules: module_utils/value_rules.py is kvcache/value_rules.py,
and for every option of the real contract the module and a config file accept and refuse the same values with
the same message (the rules themselves: tests/unit/engine/test_value_rules.py)."""

import math
import os

import pytest
from ansible_collections.storagebench.kvcache.plugins.module_utils import value_rules
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import OptionError
from ansible_collections.storagebench.kvcache.plugins.module_utils.option_contract import check_value

from kvcache import options
from kvcache.errors import UsageError

COLLECTION_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
)
# Wrong for some option or other: every type, a bound on either side, a choice, unset.
VALUES = (None, True, False, 0, 1, -1, 2.5, 0.0, 10**30, math.nan, math.inf, "", "x", "5", "a\0b", [1], {"a": 1})


def test_the_modules_value_rules_are_the_engines_file():
    link = os.path.join(COLLECTION_ROOT, "plugins", "module_utils", "value_rules.py")
    assert os.path.islink(link) and not os.path.isabs(os.readlink(link))
    assert os.path.realpath(value_rules.__file__) == os.path.realpath(
        os.path.join(COLLECTION_ROOT, "kvcache", "value_rules.py")
    )


def _outcome(check, error, *args):
    try:
        return "ok", check(*args)
    except error as exc:
        return "error", str(exc)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_module_and_engine_judge_every_option_alike(description, value):
    entries = {entry["name"]: entry for entry in description["options"]}
    for opt in options.OPTIONS:
        engine = _outcome(options.check_value, UsageError, opt, value, opt.name)
        module = _outcome(check_value, OptionError, entries[opt.name], value, opt.name)
        assert module == engine, (opt.name, value)
        if engine[0] == "error":
            assert engine[1].startswith(f"{opt.name}: must "), engine


def test_num_users_true_reads_the_same_on_both_sides(description):
    (entry,) = [entry for entry in description["options"] if entry["name"] == "num_users"]
    with pytest.raises(OptionError) as module:
        check_value(entry, True, "extra_args: num_users")
    with pytest.raises(UsageError) as engine:
        options.check_value(options.BY_NAME["num_users"], True, "num_users")
    assert str(module.value) == "extra_args: num_users: must be an integer, got True"
    assert str(engine.value) == "num_users: must be an integer, got True"
