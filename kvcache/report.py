"""`kvcache report RESULT.json...`: the summary (or headline JSON) of result files.

Every file is read and checked before anything is printed, so a damaged file among several gives
exit 2 and one short message naming it, never a traceback or half a report.
"""

import json
from typing import List

from kvcache.errors import UsageError, clip, not_utf8, shown, shown_path
from kvcache.summary import format_summary

SCHEMA_PREFIX = "storagebench.kvcache/result/"
PROBLEM_CHARS = 120
# The figures `report --json` prints: (its key, where it sits in the result). None is allowed (no requests).
HEADLINE_NUMBERS = (
    ("storage_read_bytes_per_s", ("tiers", "storage", "read_bandwidth_bytes_per_s")),
    ("storage_write_bytes_per_s", ("tiers", "storage", "write_bandwidth_bytes_per_s")),
    ("ttft_p95_ms", ("latency_ms", "ttft", "p95")),
    ("ranks", ("ranks",)),
)


def _damaged(where: str, problem: str) -> UsageError:
    return UsageError("RESULT.json", f"{where}: {problem}")


def read_result(path: str) -> dict:
    """The result in `path`, or a UsageError naming RESULT.json and the file."""
    where = shown_path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise _damaged(where, f"cannot read: {exc.strerror}") from None
    try:
        result = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _damaged(where, not_utf8(data, exc)) from None
    except json.JSONDecodeError as exc:
        raise _damaged(where, f"is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise _damaged(where, "is nested too deeply to be a result") from None
    if not isinstance(result, dict) or not str(result.get("schema", "")).startswith(SCHEMA_PREFIX):
        raise _damaged(where, "is not a storagebench.kvcache result (no schema key)")
    return result


def _field(result: dict, keys, where: str):
    value = result
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise _damaged(where, f"is incomplete or damaged: no {'.'.join(keys[: depth + 1])}")
        value = value[key]
    return value


def headline(path: str, result: dict) -> dict:
    where = shown_path(path)
    status = _field(result, ("status",), where)
    if not isinstance(status, str):
        raise _damaged(where, f"is damaged: status must be a string, got {shown(status)}")
    line = {"path": path, "status": status}
    for name, keys in HEADLINE_NUMBERS:
        value = _field(result, keys, where)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _damaged(where, f"is damaged: {'.'.join(keys)} must be a number, got {shown(value)}")
        line[name] = value
    return line


def summary(path: str, result: dict) -> str:
    where = shown_path(path)
    try:
        return format_summary(result)
    except KeyError as exc:
        raise _damaged(where, f"is incomplete or damaged: no {shown(exc.args[0] if exc.args else '')} key") from None
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        # The summary formats numbers: a string or a list where a number belongs lands here.
        raise _damaged(where, f"is damaged: a field has the wrong type ({clip(str(exc), PROBLEM_CHARS)})") from None


def run_report(paths: List[str], as_json: bool, stdout) -> int:
    results = [(path, read_result(path)) for path in paths]
    if as_json:
        text = json.dumps([headline(path, result) for path, result in results], indent=2)
    else:
        text = "\n".join(f"== {path}\n{summary(path, result)}" for path, result in results)
    stdout.write(text + "\n")
    return 0
