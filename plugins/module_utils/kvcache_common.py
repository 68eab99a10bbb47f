# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""What the kvcache_command builders share: the error type and environment-variable checking."""

import re

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class OptionError(ValueError):
    """Invalid input; ``option`` is the name of the module option the message is about."""

    def __init__(self, option, message):
        self.option = option
        self.message = message
        super().__init__(f"{option}: {message}")


def env_pairs(env):
    """The `env` option as [(NAME, value)], names checked, values as strings (true/false as 1/0)."""
    pairs = []
    for name, value in (env or {}).items():
        if not _ENV_NAME_RE.match(str(name)):
            raise OptionError("env", f"{name!r} is not a valid environment variable name")
        if value is None:
            value = ""
        elif isinstance(value, bool):
            value = "1" if value else "0"
        pairs.append((str(name), str(value)))
    return pairs
