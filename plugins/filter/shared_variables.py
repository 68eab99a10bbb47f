# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""Checks of the playbooks' shared kvcache_* variables, made on the controller before any host is touched.

The rules are the engine's own: its option contract (`describe`: types, choices, bounds, models) and
its list of system directories come from this collection's `kvcache/` source (only the light modules
that need nothing beyond PyYAML, which Ansible itself requires). Values are checked by the plugins'
one interpreter of that contract (module_utils/option_contract.py), and extra_args go through the
same builder kvcache_command uses. Nothing here keeps a copy of an option, a bound or a model.
"""

import difflib
import importlib
import os
import posixpath
import re
import sys

import yaml
from ansible import context
from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.validation import check_type_bool, check_type_float, check_type_int
from ansible_collections.storagebench.kvcache.plugins.module_utils.engine_command import build_engine_argv
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import OptionError, quote
from ansible_collections.storagebench.kvcache.plugins.module_utils.option_contract import (
    OptionContract,
    check_value,
    parse_describe,
)

# The collection's root, where galaxy packs the engine's kvcache/ beside plugins/.
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIX = "kvcache_"
# The playbooks run this engine command; kvcache_extra_args are its options.
RUN = "run"
# The shared variables are those of the kvcache role (every role depends on it), declared once in its argument
# specs, and two that the playbooks set themselves. A kvcache_<option> named like an engine option gets that
# option's rules from the contract; a bool of the specs must be a boolean.
SHARED_SPECS = os.path.join(COLLECTION_ROOT, "roles", "kvcache", "meta", "argument_specs.yml")
PLAY_VARIABLES = (PREFIX + "run_id", PREFIX + "hosts")
# Ranks per host are what `kvcache datasize --ranks` sizes: the engine's bounds for that option apply.
PROCESSES_OPTION = "ranks"
# Autoscaling: kvcache_autoscale, one of the engine's autoscaler modes or empty (null, false) for none, is the
# engine's enable_autoscaling and autoscaler_mode; the kvcache_autoscale_* variables follow the rules of an engine
# option of another name, null leaving it to the engine. kvcache_extra_args may not give what they give.
AUTOSCALE = "autoscale"
AUTOSCALE_MODE_OPTION = "autoscaler_mode"
AUTOSCALE_OPTIONS = {
    "autoscale_step_s": "autoscaler_step_s",
    "autoscale_min_users": "autoscaler_min_users",
    "autoscale_max_users": "autoscaler_max_users",
}
AUTOSCALE_GIVEN = dict(
    {"enable_autoscaling": AUTOSCALE, AUTOSCALE_MODE_OPTION: AUTOSCALE},
    **{option: name for name, option in AUTOSCALE_OPTIONS.items()},
)
# kvcache_baseline (true: the run role measures the cache dirs with `kvcache baseline` first) is a switch, not the
# engine's baseline option (a file on the hosts, which kvcache_extra_args may give); kvcache_baseline_args holds
# options of `kvcache baseline`, checked against that command as the module checks them.
BASELINE = "baseline"
BASELINE_ARGS = "baseline_args"
BASELINE_COMMAND = "baseline"
# Paths on the hosts: every host resolves them on its own, so a relative one means something else on each.
HOST_PATH_VARIABLES = ("cache_dir", "venv", "config", "slurm_conf")
# Of those, the ones that may be empty: no engine config file; Slurm's own configuration.
OPTIONAL_HOST_PATHS = ("config", "slurm_conf")
# The run id names a directory under the results dir: one path component.
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# A plain inventory name, as opposed to a pattern (web:&rack1, db*, ~regex, !host).
_PLAIN_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
# An inventory gives strings: the shared variables that are engine options are converted as kvcache_command's
# argument_spec converts them (extra_args values are not converted, there or here).
_CONVERTERS = {"int": check_type_int, "float": check_type_float}


def engine_module(name):
    """A light engine module (kvcache.describe, .cachedir) from this collection's source."""
    added = COLLECTION_ROOT not in sys.path
    if added:
        sys.path.insert(0, COLLECTION_ROOT)
    try:
        return importlib.import_module("kvcache." + name)
    except ImportError as exc:
        raise AnsibleFilterError(f"cannot load the engine's kvcache.{name} from {COLLECTION_ROOT}: {exc}") from None
    finally:
        if added:
            sys.path.remove(COLLECTION_ROOT)


def shared_specs():
    """Variable name -> argument spec, for every shared variable of the kvcache role."""
    try:
        with open(SHARED_SPECS, encoding="utf-8") as handle:
            return yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise AnsibleFilterError(f"cannot read the shared variables from {SHARED_SPECS}: {exc}") from None


def contract():
    """The engine's option contract, as `python -m kvcache describe` prints it, from this collection's source."""
    return OptionContract(parse_describe(engine_module("describe").describe()))


def _engine_value(variable, option, value, engine):
    """`value` converted as the module converts it, then checked against the contract's entry for `option`."""
    entry = engine.by_name[option]
    if isinstance(value, (dict, list)):
        raise OptionError(variable, f"must be a single value, got {quote(value)}")
    convert = _CONVERTERS.get(entry["type"])
    if convert is not None and not isinstance(value, bool):
        try:
            value = convert(value)
        except (TypeError, ValueError):
            kind = "an integer" if entry["type"] == "int" else "a number"
            raise OptionError(variable, f"must be {kind}, got {quote(value)}") from None
    elif entry["type"] == "str":
        value = str(value)
    return check_value(entry, value, variable)


def _check_host_path(variable, value):
    if not isinstance(value, str):
        raise OptionError(variable, f"must be a path, got {quote(value)}")
    if value == "" and variable[len(PREFIX) :] in OPTIONAL_HOST_PATHS:
        return
    if not posixpath.isabs(value):
        raise OptionError(variable, f"must be an absolute path (each host resolves it on its own), got {quote(value)}")
    if variable != PREFIX + "cache_dir":
        return
    cachedir = engine_module("cachedir")
    normal = posixpath.normpath(value)
    if normal.startswith("//"):
        normal = normal[1:]
    if cachedir.is_system_directory(normal):
        raise OptionError(
            variable,
            f"{quote(value)} is a system directory; choose one on the storage under test (e.g. /mnt/nvme/kvcache)",
        )


def _check_autoscale(variable, value, engine):
    if value is None or value is False or value == "":
        return  # no autoscaling
    choices = engine.by_name[AUTOSCALE_MODE_OPTION]["choices"]
    if not isinstance(value, str) or value not in choices:
        raise OptionError(variable, f"must be one of {', '.join(choices)} (or empty for none), got {quote(value)}")


def _check_extra_args(value, engine, shared):
    """Keys and values checked as kvcache_command checks them for the run; a shared variable is named instead."""
    variable = PREFIX + "extra_args"
    if not isinstance(value, dict):
        raise OptionError(variable, f"must be a mapping of engine option: value, got {quote(value)}")
    for key in value:
        name = str(key).replace("-", "_")
        if PREFIX + name in shared and name in engine.options_for(RUN) and name != BASELINE:
            raise OptionError(variable, f"{quote(key)}: set {PREFIX + name} instead")
        if name in AUTOSCALE_GIVEN:
            raise OptionError(variable, f"{quote(key)}: set {PREFIX + AUTOSCALE_GIVEN[name]} instead")
    try:
        build_engine_argv("python", RUN, {}, value, engine.description)
    except OptionError as exc:
        # The builder names its own option, extra_args; keep its message and name the variable.
        raise OptionError(variable, str(exc).partition(": ")[2]) from None


def _check_baseline_args(value, engine):
    variable = PREFIX + BASELINE_ARGS
    if not isinstance(value, dict):
        raise OptionError(variable, f"must be a mapping of kvcache baseline option: value, got {quote(value)}")
    try:
        build_engine_argv("python", BASELINE_COMMAND, {}, value, engine.description)
    except OptionError as exc:
        raise OptionError(variable, str(exc).partition(": ")[2]) from None


def _check_other(name, value, spec):
    variable = PREFIX + name
    if spec.get("type") == "bool":
        try:
            check_type_bool(value)
        except TypeError:
            raise OptionError(variable, f"must be true or false, got {quote(value)}") from None
    elif name == "run_id":
        if not isinstance(value, str) or not _RUN_ID_RE.match(value) or len(value) > 128:
            raise OptionError(
                variable, f"must be a name of letters, digits, '.', '_' and '-' (a directory), got {quote(value)}"
            )
    elif name == "hosts" and isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return  # a list of patterns, as a play's hosts may be
    elif "choices" in spec:
        if value not in spec["choices"]:
            raise OptionError(variable, f"must be one of {', '.join(spec['choices'])}, got {quote(value)}")
    elif not isinstance(value, str) or not value.strip():
        raise OptionError(variable, f"must be a non-empty string, got {quote(value)}")


def _unknown_variable(variable, shared):
    close = difflib.get_close_matches(variable, sorted(shared), n=1)
    hint = f"did you mean {close[0]}?" if close else "the README lists the shared variables"
    return f"not a variable of the kvcache playbooks ({hint})"


def variable_problems(variables):
    """The problems of the given kvcache_* variables (name -> value), one short message each; [] when all is well."""
    if not isinstance(variables, dict):
        raise AnsibleFilterError(
            f"kvcache_variable_problems expects a mapping of variable: value, got {quote(variables)}"
        )
    problems = []
    config = variables.get(PREFIX + "config")
    engine = contract()
    specs = shared_specs()
    shared = set(specs) | set(PLAY_VARIABLES)
    for variable in sorted(variables):
        value = variables[variable]
        name = variable[len(PREFIX) :] if variable.startswith(PREFIX) else variable
        try:
            if variable not in shared:
                raise OptionError(variable, _unknown_variable(variable, shared))
            if name in HOST_PATH_VARIABLES:
                _check_host_path(variable, value)
            elif name == "processes_per_host":
                _engine_value(variable, PROCESSES_OPTION, value, engine)
            elif name == AUTOSCALE:
                _check_autoscale(variable, value, engine)
            elif name in AUTOSCALE_OPTIONS:
                if value is not None:  # null: the engine's value
                    _engine_value(variable, AUTOSCALE_OPTIONS[name], value, engine)
            elif name == BASELINE_ARGS:
                _check_baseline_args(value, engine)
            elif name in engine.by_name and name != BASELINE:
                checked = _engine_value(variable, name, value, engine)
                if name == "model":
                    engine.model_warning(checked, variable, config)  # unknown without a config: OptionError
            elif name == "extra_args":
                _check_extra_args(value, engine, shared)
            else:
                _check_other(name, value, specs.get(variable, {}))
        except OptionError as exc:
            problems.append(str(exc))
    return problems


def hosts_pattern(pattern, groups):
    """The play's host pattern, refused when it names a group (or host) the inventory lacks or leaves empty.

    A pattern proper (several names, &, !, wildcards) is passed on as it is: only Ansible can resolve it.
    """
    if context.CLIARGS.get("syntax"):
        return pattern  # --syntax-check (ansible-lint, molecule) runs nothing, often with no inventory at all
    how = "put hosts under [kvcache] in the inventory, or choose a group with -e kvcache_hosts=GROUP"
    if isinstance(pattern, list) and pattern:
        for item in pattern:
            hosts_pattern(item, groups)
        return pattern
    if not isinstance(pattern, str) or not pattern.strip():
        raise AnsibleFilterError(f"kvcache_hosts: must name an inventory group, got {quote(pattern)}; {how}")
    if not _PLAIN_NAME_RE.match(pattern):
        return pattern
    if pattern in groups:
        if groups[pattern]:
            return pattern
        raise AnsibleFilterError(f"kvcache_hosts: the inventory group {quote(pattern)} has no hosts; {how}")
    if pattern in groups.get("all", []) or pattern == "localhost":  # Ansible's implicit localhost
        return pattern
    raise AnsibleFilterError(f"kvcache_hosts: the inventory has no group or host {quote(pattern)}; {how}")


class FilterModule:
    """storagebench.kvcache.kvcache_variable_problems and storagebench.kvcache.kvcache_hosts."""

    def filters(self):
        return {"kvcache_variable_problems": variable_problems, "kvcache_hosts": hosts_pattern}
