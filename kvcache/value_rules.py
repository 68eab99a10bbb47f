# Copyright: storagebench developers
# MIT License (see LICENSE in the collection root)
"""Whether a value is valid for one option of the contract, and how a message shows the offending value.

The one implementation for the engine (kvcache.options checks flags and config-file values with it) and for
the collection's plugins, which load this very file as plugins/module_utils/value_rules.py (a link to this
one) to check `extra_args` and role variables against `kvcache describe`. So it needs nothing but the
standard library and runs on every Python the modules support (3.8 and later): no imports from kvcache or
ansible, no newer syntax. It works on the contract's field values (type name, choices, bounds, default),
not on either side's option objects, and returns a problem text: each caller prefixes the option's name.
"""

import math
import reprlib

SHOWN_CHARS = 60  # of any offending value: a value can be megabytes long (a pasted file, a YAML alias bomb)
TYPES = ("int", "float", "str", "bool")
_PYTHON_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
_WHAT = {"int": "an integer", "float": "a number", "str": "a string"}

# reprlib bounds the work as well as the text: a YAML alias bomb is a list of a billion shared items.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel = 2
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = _SHORT_REPR.maxset = 4
_SHORT_REPR.maxlong = _SHORT_REPR.maxother = SHOWN_CHARS


def clip(text, limit):
    """`text`, or its first `limit` characters and "..." when it is longer."""
    return text if len(text) <= limit else text[:limit] + "..."


def shown(value):
    """The repr of an offending value, cut to a short prefix (repr also escapes newlines and controls)."""
    if isinstance(value, str):
        # repr of the prefix only: never build the repr of a huge string.
        return repr(value[:SHOWN_CHARS]) + ("..." if len(value) > SHOWN_CHARS else "")
    try:
        return clip(_SHORT_REPR.repr(value), SHOWN_CHARS)
    except ValueError:  # an integer with more digits than Python converts to text (3.11 and later)
        return "a number too long to print"


def bound(number):
    """A bound as the contract gives it: 4194304 and 9223372036854775807 in full, 0.05 as is."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def choices_problem(choices, value):
    """The message for a value that is not one of `choices`."""
    return f"must be one of {', '.join(str(choice) for choice in choices)}, got {shown(value)}"


def multiple_problem(value, multiple_of):
    """Why a number is not a whole multiple of `multiple_of` (0.25 of 0.00390625 is; 0.1 is not), or None."""
    steps = value / multiple_of
    if abs(steps - round(steps)) > 1e-9 * max(1.0, abs(steps)):
        return f"must be a multiple of {bound(multiple_of)}, got {shown(value)}"
    return None


def range_problem(value, minimum=None, maximum=None, exclusive_minimum=False, nonzero_minimum=None):
    """Why a number is out of range, or None."""
    if minimum is not None and (value < minimum or (exclusive_minimum and value == minimum)):
        return f"must be {'>' if exclusive_minimum else '>='} {bound(minimum)}, got {shown(value)}"
    if nonzero_minimum is not None and value != 0 and value < nonzero_minimum:
        return f"must be 0 or >= {bound(nonzero_minimum)}, got {shown(value)}"
    if maximum is not None and value > maximum:
        return f"must be <= {bound(maximum)}, got {shown(value)}"
    return None


def check(
    kind,
    value,
    choices=None,
    minimum=None,
    maximum=None,
    exclusive_minimum=False,
    nonzero_minimum=None,
    default=None,
    multiple_of=None,
):
    """(value as the engine holds it, None) when `value` is valid for an option of type `kind` ("int", "float",
    "str" or "bool") with these fields; (None, problem) otherwise.

    Booleans must be real booleans, integers real integers (an int given for a float becomes a float), numbers
    finite, strings non-empty without NUL, then choices and bounds. None is "unset" when the default is None.
    """
    if kind not in _PYTHON_TYPES:
        raise ValueError(f"unknown option type {kind!r}")
    if value is None and default is None:
        return None, None
    bounds = {
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": bool(exclusive_minimum),
        "nonzero_minimum": nonzero_minimum,
    }
    if kind == "bool":
        if not isinstance(value, bool):
            return None, f"must be true or false, got {shown(value)}"
        return value, None
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        # float() of a huge int overflows: check the bounds on the int (Python compares int and float exactly).
        problem = range_problem(value, **bounds)
        if problem:
            return None, problem
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, _PYTHON_TYPES[kind]):
        return None, f"must be {_WHAT[kind]}, got {shown(value)}"
    if kind == "float" and not math.isfinite(value):
        return None, f"must be a finite number, got {shown(value)}"
    if kind == "str" and not value:
        return None, "must not be empty"
    if kind == "str" and "\0" in value:  # no path or name can hold one (YAML can write "\0")
        return None, f"must not contain a NUL character, got {shown(value)}"
    if choices and value not in choices:
        return None, choices_problem(choices, value)
    if kind in ("int", "float"):
        problem = range_problem(value, **bounds) or (multiple_of and multiple_problem(value, multiple_of))
        if problem:
            return None, problem
    return value, None
