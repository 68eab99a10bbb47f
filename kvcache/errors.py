"""Exceptions that map to the engine's exit codes (2 bad input, 1 run failed)."""


class UsageError(Exception):
    """Bad input: the message names the option and what is allowed. Exit code 2."""

    def __init__(self, option, message):
        super().__init__(f"{option}: {message}" if option else message)
        self.option = option


class RunFailed(Exception):
    """The run could not complete. Exit code 1."""
