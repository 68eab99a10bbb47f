# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""Checks of the playbooks' shared kvcache_* variables, made on the controller before any host is touched.

The rules are the engine's own: its option table (types, choices, bounds), its model registry and
its list of system directories are imported from this collection's `kvcache/` source (only the
light modules that need nothing beyond PyYAML, which Ansible itself requires), and extra_args keys
go through the same builder kvcache_command uses. Nothing here keeps a copy of those lists.
"""

import difflib
import importlib
import os
import posixpath
import re
import sys

from ansible import context
from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.validation import check_type_bool, check_type_float, check_type_int
from ansible_collections.storagebench.kvcache.plugins.module_utils.engine_command import build_engine_argv
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import OptionError, quote

# The collection's root, where galaxy packs the engine's kvcache/ beside plugins/.
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIX = "kvcache_"
# Shared variables that are engine options under the same name: kvcache_<option>.
ENGINE_OPTION_VARIABLES = (
    "model",
    "num_users",
    "duration",
    "seed",
    "gpu_mem_gb",
    "cpu_mem_gb",
    "generation_mode",
    "performance_profile",
)
# Ranks per host are what `kvcache datasize --ranks` sizes: the engine's bounds for that option apply.
PROCESSES_OPTION = "ranks"
BOOLEAN_VARIABLES = ("ssh_mesh", "shared_storage")
# Paths on the hosts: every host resolves them on its own, so a relative one means something else on each.
HOST_PATH_VARIABLES = ("cache_dir", "venv", "config")
OTHER_VARIABLES = ("extra_args", "results_dir", "run_id", "hosts")
SHARED_VARIABLES = tuple(
    PREFIX + name
    for name in ENGINE_OPTION_VARIABLES
    + ("processes_per_host",)
    + BOOLEAN_VARIABLES
    + HOST_PATH_VARIABLES
    + OTHER_VARIABLES
)
# The run id names a directory under the results dir: one path component.
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# A plain inventory name, as opposed to a pattern (web:&rack1, db*, ~regex, !host).
_PLAIN_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_CONVERTERS = {int: check_type_int, float: check_type_float}


def engine_module(name):
    """A light engine module (kvcache.options, .models, .cachedir, .describe) from this collection's source."""
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


def _engine_value(variable, option, value):
    """`value` converted as the module converts it, then checked by the engine's rule for `option`."""
    options = engine_module("options")
    errors = engine_module("errors")
    opt = options.BY_NAME[option]
    if isinstance(value, (dict, list)):
        raise OptionError(variable, f"must be a single value, got {quote(value)}")
    convert = _CONVERTERS.get(opt.kind)
    if convert is not None and not isinstance(value, bool):
        try:
            value = convert(value)
        except (TypeError, ValueError):
            kind = "an integer" if opt.kind is int else "a number"
            raise OptionError(variable, f"must be {kind}, got {quote(value)}") from None
    elif opt.kind is str:
        value = str(value)
    try:
        return options._check_value(opt, value, variable)  # pylint: disable=protected-access
    except errors.UsageError as exc:
        raise OptionError(variable, str(exc)[len(variable) + 2 :]) from None


def _check_model(value, config):
    models = list(engine_module("models").BUILTIN_MODELS)
    if value not in models and not config:
        raise OptionError(PREFIX + "model", f"unknown model {quote(value)}; choose one of: {', '.join(models)}")


def _check_host_path(variable, value):
    if not isinstance(value, str):
        raise OptionError(variable, f"must be a path, got {quote(value)}")
    if variable == PREFIX + "config" and value == "":
        return  # no config file
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


def _check_extra_args(value):
    variable = PREFIX + "extra_args"
    if not isinstance(value, dict):
        raise OptionError(variable, f"must be a mapping of engine option: value, got {quote(value)}")
    options = engine_module("options")
    description = engine_module("describe").describe()
    # The engine's own flag list, asked first for a short message with a suggestion (the builder lists every flag).
    flags = description["commands"][options.RUN]
    for key in value:
        flag = "--" + str(key).replace("_", "-")
        shared = PREFIX + flag[2:].replace("-", "_")
        if shared in SHARED_VARIABLES and flag in flags:
            raise OptionError(variable, f"{quote(key)}: set {shared} instead")
        if flag not in flags:
            close = difflib.get_close_matches(flag, flags, n=1)
            hint = f"did you mean {close[0][2:].replace('-', '_')}?" if close else "see kvcache run --help"
            raise OptionError(variable, f"{quote(key)} is not an option of kvcache run ({hint})")
    try:
        build_engine_argv("python", options.RUN, {}, value, description)
    except OptionError as exc:
        raise OptionError(variable, exc.message) from None
    for key, item in value.items():
        if item is None:
            continue  # left out, as kvcache_command leaves it out
        option = str(key).replace("-", "_")
        if option in options.BY_NAME:
            _engine_value(f"{variable}: {key}", option, item)


def _check_other(name, value):
    variable = PREFIX + name
    if name in BOOLEAN_VARIABLES:
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
    elif not isinstance(value, str) or not value.strip():
        raise OptionError(variable, f"must be a non-empty string, got {quote(value)}")


def _unknown_variable(variable):
    close = difflib.get_close_matches(variable, SHARED_VARIABLES, n=1)
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
    for variable in sorted(variables):
        value = variables[variable]
        name = variable[len(PREFIX) :] if variable.startswith(PREFIX) else variable
        try:
            if variable not in SHARED_VARIABLES:
                raise OptionError(variable, _unknown_variable(variable))
            if name in ENGINE_OPTION_VARIABLES:
                checked = _engine_value(variable, name, value)
                if name == "model":
                    _check_model(checked, config)
            elif name == "processes_per_host":
                _engine_value(variable, PROCESSES_OPTION, value)
            elif name in HOST_PATH_VARIABLES:
                _check_host_path(variable, value)
            elif name == "extra_args":
                _check_extra_args(value)
            else:
                _check_other(name, value)
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
