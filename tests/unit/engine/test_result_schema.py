"""The result/v1 JSON Schema shipped with the engine, the one reader that checks results against it, and the
headline built from what it read.

Real results (a short run, and a run stopped by SIGTERM) and the failed results build_result makes validate
under the reference validator (jsonschema) and under the reader's own interpreter of the schema; the two agree
on damaged copies of them, and `kvcache report` refuses a damaged copy with exit 2 or reads it, never a traceback.
"""

import copy
import io
import json
import os
import signal
import subprocess
import sys
import time

import jsonschema
import pytest
from field_paths import field_paths

from kvcache import RESULT_SCHEMA, result_reader
from kvcache.cli import main
from kvcache.describe import describe
from kvcache.errors import UsageError
from kvcache.headline import HOSTS_SHOWN, headline_figures, headline_lines
from kvcache.result import build_result
from kvcache.summary import format_summary

ENGINE = [sys.executable, "-m", "kvcache"]
RUN = ["run", "--model", "tiny-1b", "--num-users", "2", "--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--quiet"]
VALIDATOR = jsonschema.Draft202012Validator(result_reader.result_schema())


def _run_dir_has_an_entry(cache):
    return any(name.endswith(".kv") for _top, _dirs, names in os.walk(cache) for name in names)


@pytest.fixture(scope="module")
def real_results(tmp_path_factory):
    """{name: result} from the engine itself: a finished run, one stopped by SIGTERM mid-run, and an autoscaling
    run (its block, users timeline and time-series users)."""
    work = tmp_path_factory.mktemp("real")
    (work / "cache").mkdir()
    done = subprocess.run(
        ENGINE + RUN + ["--duration", "1", "--cache-dir", str(work / "cache"), "--output", str(work / "ok.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    scaled = ["--enable-autoscaling", "--autoscaler-step-s", "0.5", "--duration", "1.5"]
    done = subprocess.run(
        ENGINE + RUN + scaled + ["--cache-dir", str(work / "cache"), "--output", str(work / "auto.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    process = subprocess.Popen(
        ENGINE + RUN + ["--duration", "120", "--cache-dir", str(work / "cache"), "--output", str(work / "term.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not _run_dir_has_an_entry(work / "cache") and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 1
    finally:
        if process.poll() is None:
            process.kill()
    results = {name: json.loads((work / f"{name}.json").read_text()) for name in ("ok", "term", "auto")}
    assert results["ok"]["status"] == "ok" and results["term"]["status"] == "failed"
    assert results["auto"]["autoscaling"]["steps"] and "autoscaling" not in results["ok"]
    return results


def failed_results(real):
    """Failed results as build_result makes them: a rank's error, and a failure reported outside the payloads."""
    ok = real["ok"]
    payload = {
        "rank": 0, "host": "h", "seed": 42, "cache_namespace": "/c/rank-0", "status": "failed",
        "error": "OSError: [Errno 28] No space left on device", "timeseries": [], "io_engine": "direct",
        "window": {"start_unix_s": 1.0, "end_unix_s": 2.0, "start_offset_s": 0.0, "end_offset_s": 1.0},
        "metrics": _metrics(), "tiers": {}, "warnings": [],
    }  # fmt: skip
    return [
        build_result(ok["config"], ok["environment"], [payload], 1.0),
        build_result(ok["config"], ok["environment"], [dict(payload, status="ok", error=None)], 1.0, (0, "lost")),
    ]


def _metrics():
    from kvcache.metrics import Metrics  # noqa: PLC0415 - numpy only for this helper

    return Metrics().export()


def all_results(real):
    return list(real.values()) + failed_results(real)


def test_the_schema_is_a_valid_draft_2020_12_schema_and_names_the_engines_version():
    schema = result_reader.result_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema"]["const"] == RESULT_SCHEMA == describe()["result_schema"]


def test_the_reader_checks_every_keyword_the_schema_uses():
    used = set()

    def walk(node):
        if isinstance(node, dict):
            used.update(node)
            for key, value in node.items():
                if key in ("properties", "$defs"):
                    for sub in value.values():
                        walk(sub)
                elif key == "prefixItems":
                    for sub in value:
                        walk(sub)
                elif key not in ("required", "enum", "const", "type"):
                    walk(value)

    walk(result_reader.result_schema())
    assert used <= result_reader.CHECKED | result_reader.ANNOTATIONS
    assert used & result_reader.CHECKED == result_reader.CHECKED  # and none of the checks is dead


def test_real_results_validate(real_results):
    for result in all_results(real_results):
        assert list(VALIDATOR.iter_errors(result)) == []
        assert result_reader.first_problem(result) is None


def test_every_field_a_real_result_has_is_described_by_the_schema(real_results):
    # A field the engine adds must be added to the schema too (additive, still v1), or the schema drifts.
    root = result_reader.result_schema()

    def undescribed(value, schema, path):
        schema = result_reader._resolve(schema, root)
        if isinstance(value, dict) and path != "config":  # config holds the options, below
            for key, item in value.items():
                sub = schema.get("properties", {}).get(key, schema.get("additionalProperties"))
                where = f"{path}.{key}" if path else key
                if not isinstance(sub, dict):
                    yield where
                else:
                    yield from undescribed(item, sub, where)
        if isinstance(value, list) and value and "items" in schema:
            yield from undescribed(value[0], schema["items"], f"{path}[0]")

    for result in all_results(real_results):
        assert list(undescribed(result, root, "")) == []
    options = {opt["config_key"] for opt in describe()["options"] if "run" in opt["commands"]}
    assert options <= set(real_results["ok"]["config"])


def damaged_copies(result):
    """(where, copy) for every field: its value replaced by a string, a list, or deleted."""

    for path in field_paths(result):
        if path[0] in ("config", "environment") and len(path) > 2:
            continue  # free-form below their first level
        if path[0] == "per_rank" and len(path) > 4:
            continue  # the same blocks as the run's, damaged above
        for replacement in ("abc", [1], None, -1, True):
            damaged = copy.deepcopy(result)
            target = damaged
            for key in path[:-1]:
                target = target[key]
            if replacement is None:
                if isinstance(target, dict):
                    del target[path[-1]]
                else:
                    continue
            else:
                target[path[-1]] = replacement
            yield ".".join(map(str, path)), damaged


def test_the_reader_agrees_with_jsonschema_on_damaged_results(real_results):
    checked = 0
    for where, damaged in damaged_copies(real_results["ok"]):
        valid = not list(VALIDATOR.iter_errors(damaged))
        assert (result_reader.first_problem(damaged) is None) == valid, where
        checked += 1
    assert checked > 500


def test_report_reads_or_refuses_a_damaged_result_never_a_traceback(real_results, tmp_path):
    path = tmp_path / "R.json"
    refused = 0
    forms = ([], ["--json"], ["--headline"])
    for index, (where, damaged) in enumerate(damaged_copies(real_results["ok"])):
        path.write_text(json.dumps(damaged))
        out, err = io.StringIO(), io.StringIO()
        code = main(["report", *forms[index % len(forms)], str(path)], stdout=out, stderr=err)
        assert code in (0, 2), where
        if code == 2:
            assert err.getvalue().startswith("kvcache report: error: RESULT.json: ") and out.getvalue() == ""
            assert len(err.getvalue().splitlines()) == 1
            refused += 1
    assert refused > 100


@pytest.mark.parametrize(
    "change, message",
    [
        ({"latency_ms": {"ttft": {"p95": "abc"}}}, "latency_ms.ttft.p95 has the wrong type"),
        ({"tiers": {"storage": {"read_latency_ms": {"p95": "abc"}}}}, "read_latency_ms.p95 has the wrong type"),
        ({"status": "maybe"}, "status must be one of ok, failed"),
        ({"ranks": 0}, "ranks must be at least 1"),
        ({"hosts": "h1"}, "hosts has the wrong type: must be a list"),
    ],
)
def test_messages_name_the_field(real_results, tmp_path, change, message):
    damaged = copy.deepcopy(real_results["ok"])

    def merge(target, changes):
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                merge(target[key], value)
            else:
                target[key] = value

    merge(damaged, change)
    path = tmp_path / "R.json"
    path.write_text(json.dumps(damaged))
    with pytest.raises(UsageError) as refused:
        result_reader.load_result(str(path))
    assert message in str(refused.value) and str(path) in str(refused.value)


def test_another_schema_version_and_an_oversized_file_are_refused(real_results, tmp_path, monkeypatch):
    path = tmp_path / "R.json"
    path.write_text(json.dumps(dict(real_results["ok"], schema="storagebench.kvcache/result/v2")))
    with pytest.raises(UsageError, match="result/v2.* result; this engine reads storagebench.kvcache/result/v1"):
        result_reader.load_result(str(path))
    path.write_text(json.dumps(real_results["ok"]))
    monkeypatch.setattr(result_reader, "MAX_RESULT_BYTES", path.stat().st_size - 1)
    with pytest.raises(UsageError, match="is larger than"):
        result_reader.load_result(str(path))


def test_an_older_result_without_dropped_entries_is_read(real_results, tmp_path):
    older = {key: value for key, value in real_results["ok"].items() if key != "dropped_entries"}
    path = tmp_path / "R.json"
    path.write_text(json.dumps(older))
    assert result_reader.load_result(str(path)) == older


def test_the_headline_lines(real_results):
    result = copy.deepcopy(real_results["ok"])
    result.update(
        ranks=12, hosts=[f"node{n}" for n in range(10)], host_count=10, window={"seconds": 9.96},
        dropped_entries={"count": 49, "entry_writes": 400, "share_of_writes": 0.1225},
    )  # fmt: skip
    result["tiers"]["storage"].update(read_bandwidth_bytes_per_s=3 << 30, write_bandwidth_bytes_per_s=1 << 29)
    result["tiers"]["storage"]["write_latency_ms"]["p95"] = None
    result["latency_ms"]["ttft"]["p95"] = 12.3456
    result["tokens"]["generated_per_second"] = 1106.53
    result["hit_rate"]["overall"] = 0.984127
    lines = headline_lines(headline_figures(result))
    assert lines[0] == "storagebench.kvcache  status: OK"
    hosts = ", ".join(f"node{n}" for n in range(HOSTS_SHOWN))
    assert lines[1] == f"12 rank(s) on 10 host(s) ({hosts} and 2 more), 10.0 s window, model tiny-1b"
    p95 = result["tiers"]["storage"]["read_latency_ms"]["p95"]
    assert lines[2] == f"storage read 3.000 GiB/s, p95 {p95:.2f} ms | write 0.500 GiB/s, p95 n/a ms"
    assert lines[3] == "TTFT p95 12.35 ms, 1106.5 generated tokens/s, hit rate 98.41 %"
    assert lines[4] == "dropped entries 49 (12.25 % of entry writes)"
    failed = headline_lines(headline_figures(real_results["term"]))
    assert failed[0].startswith("storagebench.kvcache  status: FAILED  (rank 0: ") and "SIGTERM" in failed[0]


def test_report_headline_summary_and_json_share_the_one_headline(real_results, tmp_path):
    path = tmp_path / "R.json"
    path.write_text(json.dumps(real_results["ok"]))
    lines = headline_lines(headline_figures(real_results["ok"]))
    out = io.StringIO()
    assert main(["report", "--headline", str(path)], stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue() == "\n".join(lines) + "\n"
    assert format_summary(real_results["ok"]).splitlines()[: len(lines)] == lines
    out = io.StringIO()
    assert main(["report", "--json", str(path), str(path)], stdout=out, stderr=io.StringIO()) == 0
    printed = json.loads(out.getvalue())
    assert (
        printed
        == [{"path": str(path), "headline": headline_figures(real_results["ok"]), "result": real_results["ok"]}] * 2
    )
    out = io.StringIO()
    assert main(["report", "--headline", str(path), str(path)], stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue() == f"== {path}\n" + "\n".join(lines) + f"\n\n== {path}\n" + "\n".join(lines) + "\n"


def test_headline_and_json_cannot_be_combined(tmp_path):
    err = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        main(["report", "--json", "--headline", str(tmp_path / "R.json")], stdout=io.StringIO(), stderr=err)
    assert exited.value.code == 2 and "--headline" in err.getvalue()
