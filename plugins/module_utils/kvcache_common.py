# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""What the collection's plugins share: the engine's default interpreter, the error type, quoting values in
messages, environment-variable names."""

import re
import shlex

# Where the deps role installs the engine: the default `python` of the modules and the roles' venv/bin/python.
DEFAULT_PYTHON = "/opt/storagebench-kvcache/venv/bin/python"

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A message quotes at most this many characters of a value: a huge value must not make a huge message.
QUOTE_CHARS = 60


class OptionError(ValueError):
    """Invalid input; ``option`` is the name of the module option the message (``option: message``) is about."""

    def __init__(self, option, message):
        self.option = option
        super().__init__(f"{option}: {message}")


def quote(value, limit=QUOTE_CHARS):
    """`value` quoted for a message, cut to its first `limit` characters (marked with ...)."""
    try:
        text = str(value)
    except ValueError:  # an integer with more digits than Python prints
        return "a number too long to print"
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + "..."


def shown(value, limit=QUOTE_CHARS):
    """A value for a message: a number as it prints (as the engine's own messages show it), anything else quoted."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            text = str(value)
        except ValueError:  # an integer with more digits than Python prints
            return "a number too long to print"
        return text if len(text) <= limit else text[:limit] + "..."
    return quote(value, limit)


def check_no_nul(params):
    """Raise OptionError naming the first option whose value holds a NUL byte (no program argument can carry one)."""
    for option, value in params.items():
        pending = [value]
        while pending:  # a loop, not recursion: however deep the value is nested
            item = pending.pop()
            if isinstance(item, str) and "\0" in item:
                raise OptionError(option, "must not contain a NUL byte")
            if isinstance(item, dict):
                pending.extend(item.keys())
                pending.extend(item.values())
            elif isinstance(item, (list, tuple)):
                pending.extend(item)


def check_env_name(option, name):
    """Raise OptionError unless `name` is a valid environment variable name."""
    if not _ENV_NAME_RE.match(str(name)):
        raise OptionError(option, f"{quote(name)} is not a valid environment variable name")


def env_pairs(env):
    """The `env` option as [(NAME, value)], names checked, values as strings (true/false as 1/0)."""
    pairs = []
    for name, value in (env or {}).items():
        check_env_name("env", name)
        if value is None:
            value = ""
        elif isinstance(value, bool):
            value = "1" if value else "0"
        pairs.append((str(name), str(value)))
    return pairs


def split_launcher_params(option, value):
    """A launcher's extra flags (`mpi_params`, `slurm_params`) as an argv list: a list item by item, a string
    split like a shell would."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise OptionError(option, f"cannot split {quote(value)}: {exc}") from None
    raise OptionError(option, f"must be a list or a string, got {type(value).__name__}")


def launcher_flags(option, argv, value_counts, refused, launcher):
    """Walk a launcher's extra flags (`mpi_params`, `slurm_params`): yields (flag, name, values) per flag.

    `value_counts` gives how many values follow a flag (a `--flag=value` holds its first one), `refused` the flags
    that may not be given and why. A bare word, `--` or `:` is refused: the launcher would run something other
    than the engine.
    """
    index = 0
    while index < len(argv):
        token = argv[index]
        _refuse_separator(option, token, launcher)
        if len(token) < 2 or not token.startswith("-"):
            raise OptionError(
                option,
                f"{quote(token)} is neither a flag (it would start with '-') nor the value of a flag before it; "
                f"{launcher} would run it as the program",
            )
        name, inline = token.lstrip("-"), None
        if "=" in name:
            name, inline = name.split("=", 1)
        flag = token.split("=", 1)[0]
        if name in refused:
            raise OptionError(option, f"{flag} {refused[name]}")
        wanted = value_counts.get(name, 0)
        following = wanted - 1 if inline is not None and wanted else wanted
        values = ([inline] if inline is not None and wanted else []) + argv[index + 1 : index + 1 + following]
        if len(values) < wanted:
            raise OptionError(option, f"{flag} needs {'a value' if wanted == 1 else f'{wanted} values'}")
        for value in values:
            _refuse_separator(option, value, launcher)
        yield flag, name, values
        index += 1 + following


def _refuse_separator(option, token, launcher):
    if token == "--":
        raise OptionError(option, f"'--' ends {launcher}'s options: what follows would run instead of the engine")
    if token == ":":
        raise OptionError(option, f"':' starts a second program (MPMD): {launcher} would run more than the engine")
