"""The one way a result file is read: `kvcache report`, the report role and the Molecule checks go through it.

A file is refused (UsageError naming RESULT.json and the file: exit 2) when it is too large, not UTF-8, not
JSON, nested deeper than any result, not a storagebench.kvcache result, or when it breaks the result/v1
JSON Schema shipped with the engine (kvcache/schema/result-v1.json). The schema is checked here by a small
interpreter of the keywords that schema uses, so every host reads results the same way with nothing beyond
the standard library; the tests hold it to the reference validator (jsonschema) on real results.
"""

import json
import math
import os
from functools import lru_cache
from typing import Iterator, Optional, Tuple

from kvcache import RESULT_SCHEMA
from kvcache.errors import UsageError, not_utf8, shown, shown_path

SCHEMA_PREFIX = "storagebench.kvcache/result/"
SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema", "result-v1.json")
# A result is about 5 KiB per rank: 256 MiB holds some 50,000 ranks, and bounds what a stray file costs.
MAX_RESULT_BYTES = 256 << 20
# Keywords that only document (the interpreter skips them); any other keyword in the schema is an error.
ANNOTATIONS = frozenset(("$schema", "$id", "title", "description", "$comment", "$defs"))
CHECKED = frozenset(
    ("type", "enum", "const", "required", "properties", "additionalProperties", "items", "prefixItems",
     "minItems", "maxItems", "minimum", "$ref")
)  # fmt: skip
_TYPE_NAMES = {"object": "an object", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}  # fmt: skip


def _damaged(where: str, problem: str) -> UsageError:
    return UsageError("RESULT.json", f"{where}: {problem}")


@lru_cache(maxsize=1)
def result_schema() -> dict:
    """The result/v1 JSON Schema (package data beside this module)."""
    with open(SCHEMA_FILE, encoding="utf-8") as handle:
        return json.load(handle)


def _is_type(value, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if name == "integer":  # JSON Schema: a number without a fractional part, 3.0 included
        return isinstance(value, int) or (math.isfinite(value) and value.is_integer())
    return name == "number"


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"the result schema refers outside itself: {ref}")
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        schema = target
    return schema


def schema_problems(value, schema: dict, root: dict, path: str = "") -> Iterator[Tuple[str, str]]:
    """(where, what is wrong) for each place `value` breaks `schema`; where is a dotted path ('' = the top)."""
    schema = _resolve(schema, root)
    unknown = set(schema) - CHECKED - ANNOTATIONS
    if unknown:
        raise ValueError(f"the result schema uses keywords this reader does not check: {sorted(unknown)}")
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, name) for name in names):
            yield (
                path,
                "has the wrong type: must be {}, got {}".format(
                    " or ".join(_TYPE_NAMES[name] for name in names), shown(value)
                ),
            )
            return
    if "const" in schema and value != schema["const"]:
        yield path, f"must be {shown(schema['const'])}, got {shown(value)}"
    if "enum" in schema and value not in schema["enum"]:
        yield path, "must be one of {}, got {}".format(", ".join(map(str, schema["enum"])), shown(value))
    if "minimum" in schema and _is_type(value, "number") and value < schema["minimum"]:
        yield path, f"must be at least {schema['minimum']}, got {shown(value)}"
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                yield _join(path, key), "is missing"
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                yield from schema_problems(item, properties[key], root, _join(path, key))
            elif extra is False:
                yield _join(path, key), "is not a field of this block"
            elif extra is not True:
                yield from schema_problems(item, extra, root, _join(path, key))
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield path, f"must have at least {schema['minItems']} items, got {len(value)}"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield path, f"must have at most {schema['maxItems']} items, got {len(value)}"
        # Draft 2020-12: prefixItems check the first items by position, items the ones after them.
        prefix = schema.get("prefixItems", [])
        for index, item in enumerate(value):
            sub = prefix[index] if index < len(prefix) else schema.get("items")
            if sub is not None:
                yield from schema_problems(item, sub, root, f"{path}[{index}]")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def first_problem(result) -> Optional[str]:
    """Why `result` is not a valid result/v1 (the first problem found), or None."""
    schema = result_schema()
    for where, problem in schema_problems(result, schema, schema):
        if problem == "is missing":
            return f"is incomplete or damaged: no {where}"
        return f"is damaged: {where or 'the result'} {problem}"
    return None


def _read_bytes(path: str, where: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_RESULT_BYTES + 1)
    except OSError as exc:
        raise _damaged(where, f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_RESULT_BYTES:
        raise _damaged(where, f"is larger than {MAX_RESULT_BYTES >> 20} MiB, more than any result")
    return data


def load_result(path: str) -> dict:
    """The result in `path`, checked against the result/v1 schema, or a UsageError naming RESULT.json and the file."""
    where = shown_path(path)
    data = _read_bytes(path, where)
    try:
        result = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _damaged(where, not_utf8(data, exc)) from None
    except json.JSONDecodeError as exc:
        raise _damaged(where, f"is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise _damaged(where, "is nested too deeply to be a result") from None
    schema = result.get("schema") if isinstance(result, dict) else None
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        raise _damaged(where, "is not a storagebench.kvcache result (no schema key)")
    if schema != RESULT_SCHEMA:
        raise _damaged(where, f"is a {shown(schema)} result; this engine reads {RESULT_SCHEMA}")
    problem = first_problem(result)
    if problem:
        raise _damaged(where, problem)
    return result
