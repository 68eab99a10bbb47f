"""The one set of value rules (kvcache/value_rules.py, also the plugins' module_utils/value_rules.py), on the
contract's field values alone."""

import math
import sys

import pytest

from kvcache import value_rules
from kvcache.value_rules import check, shown

RANGE = {"minimum": 1, "maximum": 9, "default": 1}
BLOCKS = {"minimum": 1 / 256, "maximum": 1024, "multiple_of": 1 / 256, "default": 16.0}  # MiB of whole 4 KiB blocks


@pytest.mark.parametrize(
    ("kind", "value", "fields", "expected"),
    [
        ("int", 5, RANGE, 5),
        ("float", 5, {"minimum": 0, "exclusive_minimum": True, "default": 1.0}, 5.0),  # an int for a float
        ("bool", False, {"default": False}, False),
        ("str", "fast", {"choices": ["fast", "slow"], "default": "fast"}, "fast"),
        ("int", 0, {"nonzero_minimum": 4, "default": 0}, 0),  # 0 switches the feature off
        ("float", 0.25, BLOCKS, 0.25),  # 64 blocks
        ("float", 3, BLOCKS, 3.0),
        ("float", 1 / 256, BLOCKS, 1 / 256),
        ("float", 1.01171875, BLOCKS, 1.01171875),  # 259 blocks
        ("str", None, {"default": None}, None),  # unset
    ],
)
def test_a_valid_value_comes_back_as_the_engine_holds_it(kind, value, fields, expected):
    checked, problem = check(kind, value, **fields)
    assert problem is None
    assert checked == expected and type(checked) is type(expected)


@pytest.mark.parametrize(
    ("kind", "value", "fields", "problem"),
    [
        ("int", True, RANGE, "must be an integer, got True"),
        ("int", "5", RANGE, "must be an integer, got '5'"),
        ("int", 4.0, RANGE, "must be an integer, got 4.0"),
        ("int", 0, RANGE, "must be >= 1, got 0"),
        ("int", 10, RANGE, "must be <= 9, got 10"),
        ("int", 2, {"nonzero_minimum": 4, "default": 0}, "must be 0 or >= 4, got 2"),
        ("float", 0.0, {"minimum": 0, "exclusive_minimum": True, "default": 1.0}, "must be > 0, got 0.0"),
        ("float", 10**400, {"maximum": 2**63 - 1, "default": 1.0}, "must be <= 9223372036854775807, got 1000"),
        ("float", math.nan, {"default": 1.0}, "must be a finite number, got nan"),
        ("float", "1", {"default": 1.0}, "must be a number, got '1'"),
        ("float", 0.01, {"minimum": 0.05, "default": 1.0}, "must be >= 0.05, got 0.01"),
        ("float", 0.1, BLOCKS, "must be a multiple of 0.00390625, got 0.1"),
        ("float", 0.001, BLOCKS, "must be >= 0.00390625, got 0.001"),
        ("float", 1.001, BLOCKS, "must be a multiple of 0.00390625, got 1.001"),
        ("bool", "yes", {"default": False}, "must be true or false, got 'yes'"),
        ("bool", 0, {"default": False}, "must be true or false, got 0"),
        ("bool", None, {"default": False}, "must be true or false, got None"),  # None is unset only without default
        ("str", 3, {"default": "x"}, "must be a string, got 3"),
        ("str", [1, 2], {"default": "x"}, "must be a string, got [1, 2]"),
        ("str", "", {"default": "x"}, "must not be empty"),
        ("str", "a\0b", {"default": "x"}, "must not contain a NUL character, got 'a\\x00b'"),
        ("str", "slow", {"choices": ["none", "fast"], "default": "none"}, "must be one of none, fast, got 'slow'"),
    ],
)
def test_an_invalid_value_gives_one_problem_text(kind, value, fields, problem):
    checked, found = check(kind, value, **fields)
    assert checked is None
    assert found.startswith(problem), found


def test_an_unknown_type_is_an_error_of_the_contract_not_of_the_value():
    with pytest.raises(ValueError, match="unknown option type 'list'"):
        check("list", [])


def test_values_are_shown_short():
    assert shown("x" * 1000) == repr("x" * 60) + "..."
    assert shown(True) == "True" and shown("True") == "'True'"
    assert len(shown(list(range(10**6)))) <= 63


@pytest.mark.skipif(not hasattr(sys, "set_int_max_str_digits"), reason="Python before 3.11 prints any integer")
def test_an_integer_too_long_to_print_is_named_not_printed():
    assert shown(10**5000) == "a number too long to print"


def test_the_rules_need_only_the_standard_library():
    # The modules load this same file on hosts without the engine: it may import nothing of kvcache's or ansible's.
    with open(value_rules.__file__, encoding="utf-8") as handle:
        imports = [line.split()[1] for line in handle if line.startswith(("import ", "from "))]
    assert imports == ["math", "reprlib"]
