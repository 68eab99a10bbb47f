"""Bad input: exit code 2. (A run that fails returns 1 with its error in the result.)

Messages quote what the user gave, but only a short prefix of it: a value can be megabytes long
(a pasted file, a YAML alias bomb), and the message must stay one short line.
"""

# The quoting of values is the one of the option checks (value_rules.py, shared with the plugins).
from kvcache.value_rules import SHOWN_CHARS, clip, shown

SHOWN_PATH_CHARS = 160  # a path is quoted longer than a value: deep paths are common and legitimate
MESSAGE_CHARS = 1000  # a last guard for messages that join several parts (one per rank, ...)

__all__ = ["SHOWN_CHARS", "SHOWN_PATH_CHARS", "MESSAGE_CHARS", "UsageError", "clip", "not_utf8", "shown", "shown_path"]


def shown_path(path) -> str:
    """A path as typed when it is printable and not too long, else its clipped repr."""
    text = str(path)
    if text.isprintable() and len(text) <= SHOWN_PATH_CHARS:
        return text
    return clip(repr(text[: SHOWN_PATH_CHARS + 1]), SHOWN_PATH_CHARS)


class UsageError(Exception):
    """Bad input: the message names the option and what is allowed. Exit code 2."""

    def __init__(self, option, message):
        super().__init__(clip(f"{option}: {message}" if option else message, MESSAGE_CHARS))
        self.option = option


def not_utf8(data: bytes, exc: UnicodeDecodeError) -> str:
    """Why `data` is not text, for a message about the file it came from."""
    return f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
