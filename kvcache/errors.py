"""Bad input: exit code 2. (A run that fails returns 1 with its error in the result.)

Messages quote what the user gave, but only a short prefix of it: a value can be megabytes long
(a pasted file, a YAML alias bomb), and the message must stay one short line.
"""

import reprlib

SHOWN_CHARS = 60  # of any offending value
SHOWN_PATH_CHARS = 160  # a path is quoted longer than a value: deep paths are common and legitimate
MESSAGE_CHARS = 1000  # a last guard for messages that join several parts (one per rank, ...)


def clip(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and "..." when it is longer."""
    return text if len(text) <= limit else text[:limit] + "..."


# reprlib bounds the work as well as the text: a YAML alias bomb is a list of a billion shared items.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel = 2
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = _SHORT_REPR.maxset = 4
_SHORT_REPR.maxlong = _SHORT_REPR.maxother = SHOWN_CHARS


def shown(value) -> str:
    """The repr of an offending value, cut to a short prefix (repr also escapes newlines and controls)."""
    if isinstance(value, str):
        # repr of the prefix only: never build the repr of a huge string.
        return repr(value[:SHOWN_CHARS]) + ("..." if len(value) > SHOWN_CHARS else "")
    return clip(_SHORT_REPR.repr(value), SHOWN_CHARS)


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
