# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""The engine's option contract (`python -m kvcache describe`), read and applied: the plugins' one interpreter of it.

The engine declares every option once (flag, type, default, choices, bounds, the commands that accept
it) and every model; this file knows only what the contract's fields mean, never an option, a bound or
a model of its own. A value is checked by the engine's own rules (value_rules.py), as a config-file value is.
"""

import difflib
import json

from ansible_collections.storagebench.kvcache.plugins.module_utils import value_rules
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import OptionError, quote

# Every command accepts a config file besides the options of the table.
CONFIG = "config"


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
        if entry.get("type") not in value_rules.TYPES:
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


def check_value(entry, value, where):
    """`value` checked against a contract entry and returned as the engine holds it (an int given for a float
    becomes a float); OptionError(where) otherwise. None is "unset" for an option whose default is null.

    The rules are the engine's own (value_rules.py is a link to kvcache/value_rules.py), so the module and
    a config file reject a value with the same message."""
    checked, problem = value_rules.check(
        entry["type"],
        value,
        choices=entry.get("choices"),
        minimum=entry.get("minimum"),
        maximum=entry.get("maximum"),
        exclusive_minimum=entry.get("exclusive_minimum"),
        nonzero_minimum=entry.get("nonzero_minimum"),
        default=entry.get("default"),
        multiple_of=entry.get("multiple_of"),
    )
    if problem is not None:
        raise OptionError(where, problem)
    return checked
