"""The options of one command, resolved once into a frozen object with one typed attribute per option.

The class is made from the option table (kvcache.options.OPTIONS) when it is first needed, so an option
added to the table is an attribute here with no other change: `config.num_users`, `config.io_engine`.
Besides the options it carries what a config file may define beyond them: the workload profile
(templates, QoS classes, generation timing) and the warnings about config keys that have no effect here.
"""

import argparse
import dataclasses
import functools
from typing import Any, Dict, Mapping, Optional, Tuple

from kvcache import options
from kvcache.errors import UsageError
from kvcache.options import Option, check_value, load_config, options_for
from kvcache.workload import DEFAULT_PROFILE, WorkloadProfile

# Fields of every config that are not options: (name, type, default).
EXTRA_FIELDS = (
    ("config", Optional[str], None),  # the --config file the values came from, or None
    ("workload", WorkloadProfile, DEFAULT_PROFILE),
    ("config_warnings", Tuple[str, ...], ()),  # reported by the run, not part of the result's config block
)


def _as_dict(self) -> Dict[str, Any]:
    """The values by option name, in the table's order, then `config` and `workload` (the result's config block)."""
    values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
    values.pop("config_warnings")
    values["workload"] = self.workload.as_dict()
    return values


@functools.cache
def _config_class(command: str, table: Tuple[Option, ...]) -> type:
    fields = [(o.name, o.kind if o.default is not None else Optional[o.kind]) for o in table if command in o.commands]
    fields += [(name, kind) for name, kind, _default in EXTRA_FIELDS]
    return dataclasses.make_dataclass(
        "".join(word.capitalize() for word in command.split()) + "Config",
        fields,
        frozen=True,
        namespace={"as_dict": _as_dict},
    )


def config_class(command: str) -> type:
    """The frozen dataclass of `command`'s options, made from the table as it is now (cached per table)."""
    return _config_class(command, options.OPTIONS)


def make_config(command: str, **values: Any):
    """A config with the table's defaults and these values, each checked as a typed flag would be."""
    chosen: Dict[str, Any] = {name: values.pop(name, default) for name, _kind, default in EXTRA_FIELDS}
    for opt in options_for(command):
        chosen[opt.name] = check_value(opt, values.pop(opt.name), opt.flag) if opt.name in values else opt.default
    if values:
        raise TypeError(f"not options of {command}: {', '.join(sorted(values))}")
    return config_class(command)(**chosen)


def resolve(command: str, typed: argparse.Namespace) -> Tuple[Any, Mapping]:
    """Defaults, then the config file, then typed flags. Returns (the command's config, user models mapping)."""
    config, models, _given = resolve_given(command, typed)
    return config, models


def resolve_given(command: str, typed: argparse.Namespace) -> Tuple[Any, Mapping, Dict[str, Any]]:
    """resolve(), and what was set by the config file or a typed flag (no defaults): an MLPerf run compares
    exactly that with the rules."""
    typed_values = {k: v for k, v in vars(typed).items() if k in options.BY_NAME}
    config_path = getattr(typed, "config", None)
    if config_path == "":
        raise UsageError("--config", "must not be empty: give the path of a YAML file")
    loaded = load_config(config_path, command) if config_path else None
    config_values = loaded.values if loaded else {}
    values: Dict[str, Any] = {
        "config": config_path,
        "workload": loaded.workload if loaded else DEFAULT_PROFILE,
        "config_warnings": loaded.warnings if loaded else (),
    }
    given: Dict[str, Any] = {}
    for opt in options_for(command):
        if opt.name in typed_values:
            values[opt.name] = given[opt.name] = check_value(opt, typed_values[opt.name], opt.flag)
        elif opt.name in config_values:
            values[opt.name] = given[opt.name] = config_values[opt.name]
        else:
            values[opt.name] = opt.default
    return config_class(command)(**values), (loaded.models if loaded else {}), given
