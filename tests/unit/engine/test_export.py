"""`kvcache report --csv / --xlsx`: the tables read back (csv, openpyxl) hold the results' own numbers, one row
per run, rank, sample and class; a path that exists, a missing directory and a missing xlsxwriter are refused
with exit 2 and nothing created or changed.

The results are real: one from a short `python -m kvcache run`, one from build_result on two ranks' metrics.
"""

import builtins
import csv
import io
import json
import subprocess
import sys

import openpyxl
import pytest
from built_results import two_rank_result

from kvcache.cli import main
from kvcache.headline import headline_figures
from kvcache.result_reader import load_result


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Paths of two result files: a real short run's and a two-rank build_result's, and their checked contents."""
    where = tmp_path_factory.mktemp("results")
    cache = where / "cache"
    cache.mkdir()
    ran = where / "ran.json"
    argv = [sys.executable, "-m", "kvcache", "run", "--model", "tiny-1b", "--num-users", "2", "--gpu-mem-gb", "0"]
    argv += ["--cpu-mem-gb", "0", "--quiet", "--duration", "2", "--cache-dir", str(cache), "--output", str(ran)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    built = where / "built.json"
    built.write_text(json.dumps(two_rank_result(window_s=30.0, requests=4, qos_class="interactive", read_mib_step=1)))
    return [(str(path), load_result(str(path))) for path in (ran, built)]


def report(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(["report", *map(str, argv)], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def csv_cell(value):
    """What the CSV holds for a JSON scalar."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_csv_has_one_row_per_result_with_its_numbers(results, tmp_path):
    out = tmp_path / "runs.csv"
    code, printed, err = report(*(path for path, _result in results), "--csv", out)
    assert (code, printed, err) == (0, f"wrote {out} (csv, 2 run(s))\n", "")
    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    header = list(rows[0])
    assert header[0] == "path"
    for row, (path, result) in zip(rows, results):
        storage = result["tiers"]["storage"]
        assert row["path"] == path
        assert row["status"] == result["status"] == "ok"
        assert int(row["ranks"]) == result["ranks"]
        assert row["hosts"] == "; ".join(result["hosts"])
        assert float(row["window.seconds"]) == result["window"]["seconds"]
        assert int(row["tiers.storage.read_bandwidth_bytes_per_s"]) == storage["read_bandwidth_bytes_per_s"] > 0
        assert row["tiers.storage.read_latency_ms.p95"] == csv_cell(storage["read_latency_ms"]["p95"])
        assert float(row["latency_ms.ttft.p95"]) == result["latency_ms"]["ttft"]["p95"]
        assert int(row["requests.completed"]) == result["requests"]["completed"] > 0
        assert row["hit_rate.overall"] == csv_cell(result["hit_rate"]["overall"])
        for name, block in result["qos"].items():
            assert int(row[f"qos.{name}.requests"]) == block["requests"]
            assert row[f"qos.{name}.met"] == csv_cell(block["met"])
        for figure, value in headline_figures(result).items():
            expected = "; ".join(value) if isinstance(value, list) else csv_cell(value)
            assert row[f"headline.{figure}"] == expected
    assert rows[0]["headline.model"] == rows[1]["headline.model"] == "tiny-1b"
    assert rows[1]["hosts"] == "h0; h1"
    assert not any(column.startswith(("config.", "per_rank", "timeseries")) for column in header)


def test_csv_columns_are_the_union_in_a_stable_order(results, tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    assert report(results[0][0], "--csv", first)[0] == 0
    assert report(results[0][0], results[1][0], "--csv", second)[0] == 0
    with open(first, newline="") as a, open(second, newline="") as b:
        alone, both = next(csv.reader(a)), next(csv.reader(b))
    assert both[: len(alone)] == alone  # a second file only adds columns, after the first's
    assert len(set(both)) == len(both)


def test_xlsx_sheets_hold_the_results_numbers(results, tmp_path):
    out = tmp_path / "runs.xlsx"
    code, printed, _err = report(*(path for path, _result in results), "--xlsx", out, "--headline")
    assert code == 0
    assert printed.count("storagebench.kvcache  status: OK") == 2  # the printed form is printed too
    book = openpyxl.load_workbook(out, read_only=True)
    assert book.sheetnames == ["summary", "config", "per_rank", "timeseries", "qos"]
    sheets = {}
    for name in book.sheetnames:
        header, *rows = book[name].iter_rows(values_only=True)
        sheets[name] = [dict(zip(header, row)) for row in rows]

    assert [row["path"] for row in sheets["summary"]] == [path for path, _result in results]
    for row, (path, result) in zip(sheets["summary"], results):
        storage = result["tiers"]["storage"]
        assert row["ranks"] == result["ranks"]
        assert row["tiers.storage.read_bandwidth_bytes_per_s"] == storage["read_bandwidth_bytes_per_s"]
        assert isinstance(row["tiers.storage.read_bandwidth_bytes_per_s"], (int, float))
        assert row["latency_ms.ttft.p95"] == result["latency_ms"]["ttft"]["p95"]
        assert row["headline.storage_read_p95_ms"] == storage["read_latency_ms"]["p95"]
        assert row["tiers.storage.simulated"] is storage["simulated"]

        settings = {r["key"]: r["value"] for r in sheets["config"] if r["path"] == path}
        assert settings["config.num_users"] == result["config"]["num_users"]
        assert settings["config.model"] == "tiny-1b"
        assert settings["environment.io_engine"] == result["environment"]["io_engine"]

        ranks = [r for r in sheets["per_rank"] if r["path"] == path]
        assert [r["rank"] for r in ranks] == [rank["rank"] for rank in result["per_rank"]]
        for got, rank in zip(ranks, result["per_rank"]):
            assert got["host"] == rank["host"]
            assert got["tiers.storage.bytes_read"] == rank["tiers"]["storage"]["bytes_read"]
            assert not any(key.startswith("histograms") for key in got)

        samples = [r for r in sheets["timeseries"] if r["path"] == path]
        assert len(samples) == len(result["timeseries"])
        for got, sample in zip(samples, result["timeseries"]):
            assert got["t_s"] == sample["t_s"]
            assert got["storage_read_bytes_per_s"] == sample["storage_read_bytes_per_s"]

        classes = [r for r in sheets["qos"] if r["path"] == path]
        assert [r["class"] for r in classes] == list(result["qos"])
        for got in classes:
            block = result["qos"][got["class"]]
            assert got["requests"] == block["requests"]
            assert got["end_to_end_ms.p95"] == block["end_to_end_ms"]["p95"]
    assert len(sheets["timeseries"]) > 0  # the real run has samples
    assert {r["class"] for r in sheets["qos"] if r["path"] == results[1][0] and r["requests"]} == {"interactive"}


def test_csv_and_xlsx_together(results, tmp_path):
    path = results[1][0]
    code, printed, _err = report(path, "--csv", tmp_path / "r.csv", "--xlsx", tmp_path / "r.xlsx", "--json")
    assert code == 0
    assert json.loads(printed)[0]["path"] == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.xlsx"]  # no temporary file left


@pytest.mark.parametrize("option, name", [("--csv", "old.csv"), ("--xlsx", "old.xlsx")])
def test_an_existing_file_is_refused_and_left_alone(results, tmp_path, option, name):
    out = tmp_path / name
    out.write_text("someone else's\n")
    code, printed, err = report(results[0][0], option, out)
    assert code == 2
    assert printed == ""
    assert err.startswith(f"kvcache report: error: {option}: ") and "exists" in err and err.count("\n") == 1
    assert out.read_text() == "someone else's\n"
    assert [p.name for p in tmp_path.iterdir()] == [name]


@pytest.mark.parametrize("option", ["--csv", "--xlsx"])
def test_bad_paths_exit_2_and_create_nothing(results, tmp_path, option):
    for target, word in ((tmp_path / "missing" / "out", "does not exist"), (tmp_path, "is a directory")):
        code, _printed, err = report(results[0][0], option, target)
        assert code == 2
        assert f"error: {option}: " in err and word in err
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_result_creates_no_export(results, tmp_path):
    damaged = tmp_path / "damaged.json"
    damaged.write_text("{}")
    code, _printed, err = report(results[0][0], damaged, "--csv", tmp_path / "out.csv")
    assert code == 2 and "damaged.json" in err
    assert [p.name for p in tmp_path.iterdir()] == ["damaged.json"]


def test_same_path_for_both_is_refused(results, tmp_path):
    out = tmp_path / "both"
    code, _printed, err = report(results[0][0], "--csv", out, "--xlsx", out)
    assert code == 2 and "--xlsx" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_xlsxwriter_exits_2_and_creates_nothing(results, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_xlsxwriter(name, *args, **kwargs):
        if name == "xlsxwriter":
            raise ImportError("No module named 'xlsxwriter'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "xlsxwriter", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_xlsxwriter)
    code, printed, err = report(results[0][0], "--csv", tmp_path / "r.csv", "--xlsx", tmp_path / "r.xlsx")
    assert code == 2
    assert printed == ""
    assert err == "kvcache report: error: --xlsx: needs xlsxwriter: pip install 'storagebench-kvcache[report]'\n"
    assert list(tmp_path.iterdir()) == []
