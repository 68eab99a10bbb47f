"""Reading a `--config` YAML file with bounded cost: its size, nesting and alias expansion are limited.

A config is a few dozen keys and a handful of models. Anything far beyond that is a mistake or an
attack (a 458-byte "billion laughs" file expands to a billion values), and is refused with a short
message before it can use the machine's memory or minutes of parsing. A key given twice in one
mapping is an error: "last one wins" would silently run something other than what was read.
"""

from typing import Any

import yaml

from kvcache.errors import SHOWN_CHARS, UsageError, clip, not_utf8, shown, shown_path

MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 10_000  # keys, values and list items, counting every alias as the values it stands for
MAX_CONFIG_DEPTH = 20
PROBLEM_CHARS = 120  # of the YAML parser's own description of a syntax error


class _Refused(Exception):
    """A limit of this module was exceeded; the text says which."""


class _BoundedLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """SafeLoader that counts what the document expands to while composing it, and refuses duplicate keys."""

    def __init__(self, stream):
        super().__init__(stream)
        self._values = 0
        self._depth = 0
        self._expanded = {}  # id(node) -> (node, values it stands for), for aliases to it
        self._aliases = 0

    def _count(self, values: int) -> None:
        self._values += values
        if self._values > MAX_CONFIG_VALUES:
            how = " once its YAML aliases are expanded" if self._aliases else ""
            raise _Refused(f"holds more than {MAX_CONFIG_VALUES:,} values{how}; a config is a few dozen keys")

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            target = self.anchors.get(self.peek_event().anchor)
            if target is not None:  # an unknown anchor is the composer's own error
                known = self._expanded.get(id(target))
                if known is None:
                    raise _Refused(f"the alias *{clip(self.peek_event().anchor, 40)} refers to a node that contains it")
                self._aliases += 1
                self._count(known[1])
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_CONFIG_DEPTH:
            raise _Refused(f"nested more than {MAX_CONFIG_DEPTH} levels deep")
        before = self._values
        self._count(1)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._expanded[id(node)] = (node, self._values - before)
        return node

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` followed by an override is the point of a merge, not a duplicate
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable: the base class reports it
                break
            if duplicate:
                raise _Refused(f"duplicate key {shown(key)} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem and mark is not None:
        return f"{clip(problem, PROBLEM_CHARS)} (line {mark.line + 1}, column {mark.column + 1})"
    return clip(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, PROBLEM_CHARS)


def read_config_file(path: str) -> Any:
    """The YAML document in `path` (None when empty); any problem is a UsageError naming --config and the file."""
    where = shown_path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)  # never more, whatever the file is (even /dev/zero)
    except OSError as exc:
        raise UsageError("--config", f"cannot read {where}: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError("--config", f"{where} is larger than the {MAX_CONFIG_BYTES >> 20} MiB limit for a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError("--config", f"{where} {not_utf8(data, exc)}") from None
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except _Refused as exc:
        raise UsageError("--config", f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError("--config", f"{where} is not valid YAML: {_yaml_problem(exc)}") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more digits than Python converts
        raise UsageError(
            "--config", f"{where} has a value that cannot be read: {clip(str(exc), SHOWN_CHARS)}"
        ) from None
    finally:
        loader.dispose()
