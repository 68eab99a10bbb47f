# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""The engine's option contract (`python -m kvcache describe`), read and applied: the plugins' one interpreter of it.

The engine declares every option once (flag, type, default, choices, bounds, the commands that accept
it) and every model; this file knows only what the contract's fields mean, never an option, a bound or
a model of its own. A value is checked as the engine checks a config-file value: booleans must be real
booleans, integers real integers, numbers finite, strings non-empty, then choices and bounds.
"""

import difflib
import json
import math

from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import OptionError, quote, shown

# Every command accepts a config file besides the options of the table.
CONFIG = "config"
_TYPES = ("int", "float", "str", "bool")
_WHAT = {"int": "an integer", "float": "a number", "str": "a string"}


def parse_describe(text):
    """Check and return the JSON printed by `python -m kvcache describe` (ValueError when malformed)."""
    data = json.loads(text) if isinstance(text, str) else text
    if not isinstance(data, dict):
        raise ValueError("describe output is not a JSON object")
    if not isinstance(data.get("options"), list) or not isinstance(data.get("models"), list):
        raise ValueError("describe output lacks an options list or a models list")
    if not isinstance(data.get("commands"), dict):
        raise ValueError("describe output lacks a commands mapping")
    for entry in data["options"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ValueError("describe output has an option without a name")
        if not isinstance(entry.get("flag"), str) or not isinstance(entry.get("commands"), list):
            raise ValueError(f"describe output: option {entry['name']!r} lacks its flag or its commands")
        if entry.get("type") not in _TYPES:
            raise ValueError(f"describe output: option {entry['name']!r} has an unknown type {entry.get('type')!r}")
    for model in data["models"]:
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            raise ValueError("describe output has a model without a name")
    return data


class OptionContract:
    """Lookups in a parsed describe output: the options of a command, an option by name, the models."""

    def __init__(self, description):
        self.description = description
        self.version = str(description.get("version", ""))
        self.by_name = dict((entry["name"], entry) for entry in description["options"])
        self.models = [model["name"] for model in description["models"]]

    def options_for(self, command):
        """The options `kvcache COMMAND` accepts, by name, in the engine's order."""
        return dict((name, entry) for name, entry in self.by_name.items() if command in entry["commands"])

    def option(self, name, command, where):
        """The entry of option `name` for `command`; OptionError(where) when that command has no such option."""
        entry = self.by_name.get(name)
        if entry is not None and command in entry["commands"]:
            return entry
        if entry is not None:
            raise OptionError(
                where, f"'kvcache {command}' has no {entry['flag']} flag (an option of {', '.join(entry['commands'])})"
            )
        flag = "--" + name.replace("_", "-")
        close = difflib.get_close_matches(name, sorted(self.options_for(command)), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise OptionError(
            where, f"'kvcache {command}' has no {quote(flag)} flag{hint} ('kvcache {command} --help' lists them)"
        )

    def model_warning(self, value, where, config):
        """None for a built-in model; a warning when a config file may define it; OptionError(where) otherwise."""
        if value in self.models:
            return None
        if not config:
            raise OptionError(where, f"unknown model {quote(value)}; choose one of: {', '.join(self.models)}")
        return f"{where}: {quote(value)} is not a built-in model; the config file must define it"


def _bound(number):
    """A bound as the engine prints it: 4194304 and 9223372036854775807 in full, 0.05 as is."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _range_problem(entry, value):
    minimum, maximum, nonzero = entry.get("minimum"), entry.get("maximum"), entry.get("nonzero_minimum")
    if minimum is not None:
        exclusive = bool(entry.get("exclusive_minimum"))
        if value < minimum or (exclusive and value == minimum):
            return f"must be {'>' if exclusive else '>='} {_bound(minimum)}, got {shown(value)}"
    if nonzero is not None and value != 0 and value < nonzero:
        return f"must be 0 or >= {_bound(nonzero)}, got {shown(value)}"
    if maximum is not None and value > maximum:
        return f"must be <= {_bound(maximum)}, got {shown(value)}"
    return None


def check_value(entry, value, where):
    """`value` checked against a contract entry and returned as the engine holds it (an int given for a float
    becomes a float); OptionError(where) otherwise. None is "unset" for an option whose default is null."""
    kind = entry["type"]
    if value is None and entry.get("default") is None:
        return None
    if kind == "bool":
        if not isinstance(value, bool):
            raise OptionError(where, f"must be true or false, got {shown(value)}")
        return value
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        # float() of a huge int overflows: check the bounds on the int (Python compares int and float exactly).
        problem = _range_problem(entry, value)
        if problem:
            raise OptionError(where, problem)
        value = float(value)
    python_type = {"int": int, "float": float, "str": str}[kind]
    if isinstance(value, bool) or not isinstance(value, python_type):
        raise OptionError(where, f"must be {_WHAT[kind]}, got {shown(value)}")
    if kind == "float" and not math.isfinite(value):
        raise OptionError(where, f"must be a finite number, got {shown(value)}")
    if kind == "str" and not value:
        raise OptionError(where, "must not be empty")
    if kind == "str" and "\0" in value:
        raise OptionError(where, "must not contain a NUL byte")
    choices = entry.get("choices")
    if choices is not None and value not in choices:
        raise OptionError(where, f"must be one of {', '.join(str(choice) for choice in choices)}, got {shown(value)}")
    if kind in ("int", "float"):
        problem = _range_problem(entry, value)
        if problem:
            raise OptionError(where, problem)
    return value
