"""Usage errors exit 2 with a message naming the option, and create nothing under --cache-dir."""

import io
import json
import os
import subprocess
import sys

import pytest

from kvcache.cli import main


def call(argv, capsys):
    """Run kvcache.cli.main in-process; returns (exit code, stdout + stderr text)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(list(argv), out, err)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    captured = capsys.readouterr()
    return code, out.getvalue() + err.getvalue() + captured.out + captured.err


@pytest.fixture
def cache_dir(tmp_path):
    directory = tmp_path / "cache"
    directory.mkdir()
    return directory


def bad_runs(cache_dir):
    """(argv, the option the message must name). Every case must fail before anything is written."""
    base = ["run", "--duration", "1", "--quiet", "--max-requests", "1"]
    return [
        (base + ["--cache-dir", str(cache_dir), "--num-users", "0"], "--num-users"),
        (base + ["--cache-dir", str(cache_dir), "--model", "nope"], "--model"),
        (base + ["--cache-dir", "/etc"], "--cache-dir"),
        (base + ["--cache-dir", str(cache_dir / "missing")], "--cache-dir"),
        (base + ["--cache-dir", str(cache_dir), "--io-engine", "bogus"], "--io-engine"),
    ]


CASE_IDS = ["num-users-0", "unknown-model", "system-dir", "missing-dir", "bad-io-engine"]


@pytest.mark.parametrize("case", range(len(CASE_IDS)), ids=CASE_IDS)
def test_usage_errors_in_process(case, cache_dir, capsys):
    argv, option = bad_runs(cache_dir)[case]
    code, text = call(argv, capsys)
    assert code == 2, text
    assert option in text
    assert os.listdir(cache_dir) == []


@pytest.mark.parametrize("case", range(len(CASE_IDS)), ids=CASE_IDS)
def test_usage_errors_via_python_m(case, cache_dir):
    argv, option = bad_runs(cache_dir)[case]
    proc = subprocess.run(
        [sys.executable, "-m", "kvcache", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(cache_dir.parent),
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert option in proc.stderr
    assert proc.stdout == ""
    assert os.listdir(cache_dir) == []


def test_model_error_lists_choices(cache_dir, capsys):
    code, text = call(["run", "--cache-dir", str(cache_dir), "--model", "nope"], capsys)
    assert code == 2
    assert "llama3.1-8b" in text and "nope" in text


def test_io_engine_error_lists_choices(cache_dir, capsys):
    code, text = call(["run", "--cache-dir", str(cache_dir), "--io-engine", "bogus"], capsys)
    assert code == 2
    assert "direct" in text and "buffered" in text


def test_cache_dir_required(capsys):
    code, text = call(["run", "--duration", "1"], capsys)
    assert code == 2
    assert "--cache-dir" in text


def test_cache_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("user data")
    code, text = call(["run", "--cache-dir", str(path)], capsys)
    assert code == 2 and "--cache-dir" in text
    assert path.read_text() == "user data"


def test_unknown_config_key_exits_2(cache_dir, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("bogus_key: 1\n")
    code, text = call(["run", "--cache-dir", str(cache_dir), "--config", str(config)], capsys)
    assert code == 2
    assert "bogus_key" in text and "--config" in text
    assert os.listdir(cache_dir) == []


def test_unknown_flag_and_missing_command_exit_2(capsys):
    assert call(["run", "--no-such-flag"], capsys)[0] == 2
    assert call([], capsys)[0] == 2


def test_datasize_usage_error(capsys):
    code, text = call(["datasize", "--num-users", "0"], capsys)
    assert code == 2 and "--num-users" in text
    code, text = call(["datasize", "--model", "nope"], capsys)
    assert code == 2 and "--model" in text


def test_report_on_non_result_file_exits_2(tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"hello": 1}))
    code, text = call(["report", str(path)], capsys)
    assert code == 2 and "schema" in text
    code, text = call(["report", str(tmp_path / "absent.json")], capsys)
    assert code == 2 and "absent.json" in text


def test_report_of_a_damaged_result_is_a_usage_error(tmp_path):
    damaged = tmp_path / "R.json"
    damaged.write_text('{"schema": "storagebench.kvcache/result/v1", "status": "ok"}')
    err = io.StringIO()
    assert main(["report", str(damaged)], stdout=io.StringIO(), stderr=err) == 2
    assert "RESULT.json" in err.getvalue() and "incomplete" in err.getvalue()


def test_argparse_errors_go_to_the_given_stream():
    err = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        main(["run", "--io-engine", "sideways"], stdout=io.StringIO(), stderr=err)
    assert exited.value.code == 2
    assert "--io-engine" in err.getvalue() and "direct" in err.getvalue()


def test_argparse_errors_are_one_short_line_without_the_usage_block():
    err = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        main(["run", "--io-engine", "z" * 10_000], stdout=io.StringIO(), stderr=err)
    assert exited.value.code == 2
    message = err.getvalue()
    assert message.count("\n") == 1 and len(message) < 300
    assert message.startswith("kvcache run: error: argument --io-engine: must be one of direct, buffered")
    assert "usage:" not in message and "kvcache run --help" in message


def test_help_still_lists_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "{direct,buffered}" in capsys.readouterr().out


def test_one_config_file_serves_datasize_and_run(tmp_path, cache_dir):
    output = tmp_path / "result.json"
    config = tmp_path / "shared.yaml"
    config.write_text(
        "model: tiny-1b\nnum_users: 1\ngpu_mem_gb: 0\ncpu_mem_gb: 0.01\n"
        f"ranks: 1\njson: true\ncheck_free_bytes: {1 << 40}\n"  # datasize only
        f"duration: 0.3\ncache_dir: {cache_dir}\noutput: {output}\nquiet: true\n"  # run only
    )
    out, err = io.StringIO(), io.StringIO()
    assert main(["datasize", "--config", str(config)], out, err) == 0, err.getvalue()
    assert json.loads(out.getvalue())["model"] == "tiny-1b"
    out, err = io.StringIO(), io.StringIO()
    assert main(["run", "--config", str(config)], out, err) == 0, err.getvalue()
    result = json.loads(output.read_text())
    assert result["config"]["duration"] == 0.3 and "ranks" not in result["config"]
    assert os.stat(output).st_mode & 0o777 == 0o666 & ~_umask()
    assert os.listdir(cache_dir) == []


def _umask():
    current = os.umask(0)
    os.umask(current)
    return current


def test_output_fifo_is_refused_before_the_run_via_python_m(tmp_path, cache_dir):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "kvcache", "run", "--cache-dir", str(cache_dir), "--output", str(fifo), "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "--output" in proc.stderr and "FIFO" in proc.stderr
    assert os.listdir(cache_dir) == [] and sorted(os.listdir(tmp_path)) == ["cache", "out.fifo"]
