# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""Pure functions that build the engine's argv (`python -m kvcache run|datasize ...`) and its container wrapper.

The engine describes itself (`python -m kvcache describe`: models and the long flags of each
subcommand); these functions check options against that description instead of keeping a copy.
"""

import difflib
import json
import posixpath
import re

from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import OptionError, env_pairs, quote

DEFAULT_PYTHON = "/opt/storagebench-kvcache/venv/bin/python"
COMMANDS = ("run", "datasize")
CONTAINER_ENGINES = ("docker", "podman")

# Module option -> engine flag, in the order they appear on the engine's command line.
ENGINE_OPTIONS = (
    ("model", "--model"),
    ("num_users", "--num-users"),
    ("duration", "--duration"),
    ("seed", "--seed"),
    ("gpu_mem_gb", "--gpu-mem-gb"),
    ("cpu_mem_gb", "--cpu-mem-gb"),
    ("cache_dir", "--cache-dir"),
    ("generation_mode", "--generation-mode"),
    ("performance_profile", "--performance-profile"),
    ("output", "--output"),
    ("config", "--config"),
)
_FIRST_CLASS_FLAGS = dict((flag, name) for name, flag in ENGINE_OPTIONS)
_EXTRA_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def parse_describe(text):
    """Check and return the JSON printed by `python -m kvcache describe` (ValueError when malformed)."""
    data = json.loads(text) if isinstance(text, str) else text
    if not isinstance(data, dict):
        raise ValueError("describe output is not a JSON object")
    models = data.get("models")
    commands = data.get("commands")
    if not isinstance(models, list) or not isinstance(commands, dict):
        raise ValueError("describe output lacks a models list or a commands mapping")
    for command in COMMANDS:
        if not isinstance(commands.get(command), list):
            raise ValueError(f"describe output lists no flags for {command!r}")
    return data


def format_value(value):
    """An option value as one argv word: integers as such, floats in their shortest exact form."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _check_value(name, value):
    """Range checks the engine would also make, done early so the message names the module option."""
    if name == "num_users" and value < 1:
        raise OptionError(name, f"must be at least 1, got {value}")
    if name == "duration" and value <= 0:
        raise OptionError(name, f"must be greater than 0 seconds, got {value}")
    if name in ("seed", "gpu_mem_gb", "cpu_mem_gb") and value < 0:
        raise OptionError(name, f"must be 0 or more, got {value}")
    if isinstance(value, str) and not value:
        raise OptionError(name, "must not be empty")
    if name == "cache_dir" and not posixpath.isabs(value):
        raise OptionError(
            name, f"must be an absolute path (every rank resolves it on its own host), got {quote(value)}"
        )


def _unknown_flag_message(key, command, flag, accepted):
    """Short, whatever the number of flags: the closest ones, and where the whole list is."""
    close = difflib.get_close_matches(flag, sorted(accepted), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"{quote(key)}: 'kvcache {command}' has no {quote(flag)} flag{hint} ('kvcache {command} --help' lists them)"


def build_engine_argv(python, command, options, extra_args=None, description=None):
    """The engine's argv: [python, -m, kvcache, command, flags...].

    `options` maps module option names (see ENGINE_OPTIONS) to values; None means "not given".
    `extra_args` maps engine option names (underscores or dashes) to values: true adds a bare
    flag, false or null leaves it out. `description` is the parsed `describe` output; with it,
    the model and every flag are checked. Returns (argv, warnings).
    """
    warnings = []
    if command not in COMMANDS:
        raise OptionError("command", "must be one of {}, got {}".format(", ".join(COMMANDS), quote(command)))
    if not python or str(python).startswith("-"):
        raise OptionError("python", f"must name the Python interpreter that has the engine, got {quote(python)}")
    accepted = None
    models = None
    if description is not None:
        accepted = set(description["commands"][command])
        models = [str(model) for model in description["models"]]

    argv = [str(python), "-m", "kvcache", command]
    for name, flag in ENGINE_OPTIONS:
        value = options.get(name)
        if value is None:
            continue
        if accepted is not None and flag not in accepted:
            raise OptionError(name, f"'kvcache {command}' has no {flag} flag")
        _check_value(name, value)
        if name == "model" and models is not None and value not in models:
            if options.get("config"):
                warnings.append(f"model: {quote(value)} is not a built-in model; the config file must define it")
            else:
                raise OptionError(name, "unknown model {}; choose one of: {}".format(quote(value), ", ".join(models)))
        argv.extend([flag, format_value(value)])

    for key, value in (extra_args or {}).items():
        key = str(key)
        if not _EXTRA_KEY_RE.match(key):
            raise OptionError("extra_args", f"{quote(key)} is not an engine option name")
        flag = "--" + key.replace("_", "-")
        if flag in _FIRST_CLASS_FLAGS:
            raise OptionError("extra_args", f"{key}: use the module's {_FIRST_CLASS_FLAGS[flag]} option instead")
        if accepted is not None and flag not in accepted:
            raise OptionError("extra_args", _unknown_flag_message(key, command, flag, accepted))
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple, dict, set)):
            raise OptionError("extra_args", f"{quote(key)}: the value must be a string, a number or a boolean")
        else:
            argv.extend([flag, format_value(value)])
    return argv, warnings


def with_env(argv, env):
    """Run argv with extra environment variables: `env NAME=value ... argv` (argv unchanged without any)."""
    pairs = env_pairs(env)
    if not pairs:
        return list(argv)
    return ["env"] + ["{}={}".format(*pair) for pair in pairs] + list(argv)


def _mount_dir(option, path, cache_dir):
    """The directory to bind-mount so that `path` (a file option) exists inside the container, or None."""
    if not posixpath.isabs(path):
        raise OptionError(option, f"must be an absolute path with exec_type=container, got {quote(path)}")
    directory = posixpath.dirname(posixpath.normpath(path))
    if cache_dir and (directory + "/").startswith(cache_dir.rstrip("/") + "/"):
        return None
    return directory


def wrap_in_container(
    engine_argv, image, container_engine="docker", cache_dir=None, output=None, config=None, env=None, command="run"
):
    """[docker|podman, run, --rm, --network, host, -v, CACHE:CACHE, ..., IMAGE] + engine_argv.

    The cache directory (and the directories of output and config) are mounted at the same path,
    so the engine's argv is the same inside as outside.
    """
    if container_engine not in CONTAINER_ENGINES:
        raise OptionError(
            "container_engine",
            "must be one of {}, got {}".format(", ".join(CONTAINER_ENGINES), quote(container_engine)),
        )
    if not image or str(image).startswith("-"):
        raise OptionError("container_image", f"exec_type=container needs an image name, got {quote(image)}")
    if command == "run" and not cache_dir:
        raise OptionError("cache_dir", "exec_type=container needs cache_dir, the directory to mount into the container")
    mounts = []
    if cache_dir:
        mounts.append(("cache_dir", posixpath.normpath(cache_dir)))
    for option, path in (("output", output), ("config", config)):
        if path:
            directory = _mount_dir(option, path, cache_dir)
            if directory and directory not in [mounted for _option, mounted in mounts]:
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
