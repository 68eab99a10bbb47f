"""Bad input: exit code 2. (A run that fails returns 1 with its error in the result.)"""


class UsageError(Exception):
    """Bad input: the message names the option and what is allowed. Exit code 2."""

    def __init__(self, option, message):
        super().__init__(f"{option}: {message}" if option else message)
        self.option = option
