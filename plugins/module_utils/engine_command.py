# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""Pure functions that build the engine's argv (`python -m kvcache run|datasize|baseline|mlperf run ...`) and its
container wrapper.

The engine describes its options and models (`python -m kvcache describe`, the option contract); every
option and value is checked against that description (option_contract.py) instead of a copy of it.
"""

import posixpath
import re

from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import OptionError, env_pairs, quote
from ansible_collections.storagebench.kvcache.plugins.module_utils.option_contract import (
    CONFIG,
    OptionContract,
    check_value,
)

COMMANDS = ("run", "datasize", "baseline", "mlperf run")
# The commands that work in a cache directory: a container needs it mounted.
CACHE_COMMANDS = ("run", "baseline", "mlperf run")
CONTAINER_ENGINES = ("docker", "podman")

# The module's own options that stand for the engine option of the same name, in the order they go on the
# engine's command line. Only which of them the module offers is decided here: flags, types, choices and
# bounds come from the contract, and config (a file, not an option of the table) is accepted by every command.
ENGINE_OPTIONS = (
    "model",
    "num_users",
    "duration",
    "seed",
    "gpu_mem_gb",
    "cpu_mem_gb",
    "cache_dir",
    "generation_mode",
    "performance_profile",
    "output",
    "results_dir",
    CONFIG,
)
# Directory options: absolute (every rank, or rank 0 on its host, resolves them) and mounted into a container.
_DIRECTORY_OPTIONS = ("cache_dir", "results_dir")
_EXTRA_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def format_value(value):
    """An option value as one argv word: integers as such, floats in their shortest exact form."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _words(entry, value):
    """The argv words of a checked value: a bool option is a bare flag when true and absent when false."""
    if entry["type"] == "bool":
        return [entry["flag"]] if value else []
    return [entry["flag"], format_value(value)]


def _module_option(contract, command, name, value, config):
    """(argv words, warning or None) of one of the module's engine options, checked against the contract."""
    if name == CONFIG:
        if not value:
            raise OptionError(name, "must not be empty: give the path of a YAML file")
        return ["--config", value], None
    entry = contract.option(name, command, name)
    value = check_value(entry, value, name)
    warning = contract.model_warning(value, name, config) if name == "model" else None
    if name in _DIRECTORY_OPTIONS and not posixpath.isabs(value):
        raise OptionError(
            name, f"must be an absolute path (every rank resolves it on its own host), got {quote(value)}"
        )
    return _words(entry, value), warning


def _extra_arg(contract, command, key, value):
    """The argv words of one extra_args item: the key an option of `command`, the value of its type and bounds."""
    key = str(key)
    if not _EXTRA_KEY_RE.match(key):
        raise OptionError("extra_args", f"{quote(key)} is not an engine option name")
    name = key.replace("-", "_")
    if name in ENGINE_OPTIONS:
        raise OptionError("extra_args", f"{key}: use the module's {name} option instead")
    try:
        entry = contract.option(name, command, quote(key))
        if value is None:
            return []  # null leaves the option to the engine (and to a config file)
        return _words(entry, check_value(entry, value, key))
    except OptionError as exc:
        raise OptionError("extra_args", str(exc)) from None


def build_engine_argv(python, command, options, extra_args, description):
    """The engine's argv: [python, -m, kvcache, command, flags...] (`mlperf run` is two words).

    `options` maps the module's engine options (ENGINE_OPTIONS) to values; None means "not given".
    `extra_args` maps any other engine option (its name, underscores or dashes) to a value: true or false
    for a flag option (false leaves it out), a value of the option's type otherwise; null leaves it out.
    `description` is the parsed `describe` output: every option and value is checked against it.
    Returns (argv, warnings).
    """
    if command not in COMMANDS:
        raise OptionError("command", "must be one of {}, got {}".format(", ".join(COMMANDS), quote(command)))
    if not python or str(python).startswith("-"):
        raise OptionError("python", f"must name the Python interpreter that has the engine, got {quote(python)}")
    contract = OptionContract(description)
    argv = [str(python), "-m", "kvcache"] + command.split()
    warnings = []
    for name in ENGINE_OPTIONS:
        value = options.get(name)
        if value is None:
            continue
        words, warning = _module_option(contract, command, name, value, options.get(CONFIG))
        argv.extend(words)
        if warning:
            warnings.append(warning)
    for key, value in (extra_args or {}).items():
        argv.extend(_extra_arg(contract, command, key, value))
    return argv, warnings


def with_env(argv, env):
    """Run argv with extra environment variables: `env NAME=value ... argv` (argv unchanged without any)."""
    pairs = env_pairs(env)
    if not pairs:
        return list(argv)
    return ["env"] + ["{}={}".format(*pair) for pair in pairs] + list(argv)


def _covered(directory, mounts):
    """Whether `directory` is one of the mounted directories or inside one (a second mount would be redundant)."""
    return any((directory + "/").startswith(mounted.rstrip("/") + "/") for _option, mounted in mounts)


def _file_dir(option, path):
    """The directory to bind-mount so that `path` (a file option) exists inside the container."""
    if not posixpath.isabs(path):
        raise OptionError(option, f"must be an absolute path with exec_type=container, got {quote(path)}")
    return posixpath.dirname(posixpath.normpath(path))


def wrap_in_container(
    engine_argv,
    image,
    container_engine="docker",
    cache_dir=None,
    output=None,
    config=None,
    env=None,
    command="run",
    results_dir=None,
):
    """[docker|podman, run, --rm, --network, host, -v, CACHE:CACHE, ..., IMAGE] + engine_argv.

    The cache directory, the results directory (mlperf run's tree) and the directories of output and config
    are mounted at the same path, so the engine's argv is the same inside as outside.
    """
    if container_engine not in CONTAINER_ENGINES:
        raise OptionError(
            "container_engine",
            "must be one of {}, got {}".format(", ".join(CONTAINER_ENGINES), quote(container_engine)),
        )
    if not image or str(image).startswith("-"):
        raise OptionError("container_image", f"exec_type=container needs an image name, got {quote(image)}")
    if command in CACHE_COMMANDS and not cache_dir:
        raise OptionError("cache_dir", "exec_type=container needs cache_dir, the directory to mount into the container")
    if command == "mlperf run" and not results_dir:
        raise OptionError(
            "results_dir", "exec_type=container needs results_dir, the directory of the results tree to mount"
        )
    wanted = []
    for option, directory in (("cache_dir", cache_dir), ("results_dir", results_dir)):
        if directory:
            if not posixpath.isabs(directory):
                raise OptionError(option, f"must be an absolute path with exec_type=container, got {quote(directory)}")
            wanted.append((option, posixpath.normpath(directory)))
    for option, path in (("output", output), ("config", config)):
        if path:
            wanted.append((option, _file_dir(option, path)))
    mounts = []
    for option, directory in wanted:
        if not _covered(directory, mounts):
            mounts.append((option, directory))
    argv = [container_engine, "run", "--rm", "--network", "host"]
    for option, directory in mounts:
        if ":" in directory or "," in directory:
            raise OptionError(option, f"{quote(directory)} cannot be bind-mounted: it contains ':' or ','")
        argv.extend(["-v", f"{directory}:{directory}"])
    for name, value in env_pairs(env):
        argv.extend(["-e", f"{name}={value}"])
    argv.append(str(image))
    return argv + list(engine_argv)
