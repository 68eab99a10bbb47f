"""--log-level: what a real run prints on stderr at each level, and config warnings reaching the user.

The runs are in-process (kvcache.benchmark.run_benchmark) so that stderr can be a terminal or not, and the
config can carry warnings as a reference config.yaml gives them; one run goes through the command line.
"""

import io

import pytest
from engine_helpers import kvcache, load

from kvcache import benchmark
from kvcache.run_config import make_config

CONFIG_WARNING = "generation_timing has no effect here: the test's warning"
LIVE_VIEW = " s left   users "  # the live view's status line (kvcache/live_view.py)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run(tmp_path, log_level, stderr, **options):
    """A short real run on tmp_path/cache; returns (exit code, stderr text, the result)."""
    cache = tmp_path / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    settings = {
        "model": "tiny-1b",
        "num_users": 2,
        "gpu_mem_gb": 0,
        "cpu_mem_gb": 0,
        "duration": 1.0,
        "stats_interval": 0.25,
        "mpi": "off",
        "cache_dir": str(cache),
        "output": str(tmp_path / "R.json"),
        "log_level": log_level,
        "config_warnings": (CONFIG_WARNING,),
    }
    settings.update(options)
    code = benchmark.run_benchmark(make_config("run", **settings), {}, io.StringIO(), stderr)
    result = load(tmp_path / "R.json") if (tmp_path / "R.json").exists() else None
    return code, stderr.getvalue(), result


def warning_lines(text):
    return [line for line in text.splitlines() if line.startswith("kvcache: warning: ")]


def debug_lines(text, what):
    return [line for line in text.splitlines() if line.startswith(f"kvcache: debug: rank 0: {what}")]


def test_debug_adds_setup_and_a_line_per_sample(tmp_path):
    code, err, result = run(tmp_path, "DEBUG", io.StringIO())
    assert code == 0, err
    (setup,) = debug_lines(err, "setup: ")
    for part in ("tiers gpu 0.000 GiB simulated, cpu 0.000 GiB, storage ", "gpu backend simulated", "seed 42"):
        assert part in setup
    assert f"io engine {result['environment']['io_engine']}" in setup
    assert setup.endswith(f"rank dir {result['per_rank'][0]['cache_namespace']}")
    assert f"rank dir {tmp_path / 'cache'}/kvcache-run-" in setup
    samples = debug_lines(err, "sample ")
    assert len(samples) == len(result["timeseries"]) >= 3
    assert f"requests={result['timeseries'][-1]['requests']}" in samples[-1]
    assert warning_lines(err) == [f"kvcache: warning: rank 0: {CONFIG_WARNING}"]
    assert LIVE_VIEW not in err  # not on a terminal; DEBUG prints whole lines whatever stderr is


def test_debug_on_a_terminal_prints_lines_not_the_live_line(tmp_path):
    code, err, _result = run(tmp_path, "DEBUG", Terminal())
    assert code == 0, err
    assert debug_lines(err, "sample ") and LIVE_VIEW not in err


def test_info_is_the_live_line_on_a_terminal_and_warnings(tmp_path):
    code, err, result = run(tmp_path, "INFO", Terminal())
    assert code == 0, err
    assert LIVE_VIEW in err and "requests" in err
    assert "kvcache: debug:" not in err
    assert warning_lines(err) == [f"kvcache: warning: rank 0: {CONFIG_WARNING}"]
    assert CONFIG_WARNING in result["warnings"]


def test_info_not_on_a_terminal_prints_warnings_only(tmp_path):
    code, err, _result = run(tmp_path, "INFO", io.StringIO())
    assert code == 0, err
    assert err == f"kvcache: warning: rank 0: {CONFIG_WARNING}\n"


def test_quiet_drops_the_progress_at_every_level(tmp_path):
    code, err, _result = run(tmp_path, "INFO", Terminal(), quiet=True)
    assert (code, err) == (0, f"kvcache: warning: rank 0: {CONFIG_WARNING}\n")
    code, err, _result = run(tmp_path, "DEBUG", Terminal(), quiet=True)
    assert code == 0 and not debug_lines(err, "sample ") and debug_lines(err, "setup: ")


def test_warning_level_has_no_progress_line(tmp_path):
    code, err, result = run(tmp_path, "WARNING", Terminal())
    assert code == 0, err
    assert err == f"kvcache: warning: rank 0: {CONFIG_WARNING}\n"
    assert result["timeseries"], "the samples are still recorded"


@pytest.mark.parametrize("level", ["ERROR", "CRITICAL"])
def test_error_levels_keep_warnings_in_the_result_only_and_still_print_errors(tmp_path, monkeypatch, level):
    code, err, result = run(tmp_path, level, Terminal(), keep_cache=True)
    assert (code, err) == (0, "")  # not even where the kept cache files are: that is information
    assert CONFIG_WARNING in result["warnings"]

    def refuse(path, _result):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(benchmark, "write_json_atomically", refuse)
    code, err, _result = run(tmp_path / "full", level, io.StringIO())
    assert code == 1
    assert err.startswith(f"kvcache: cannot write the result to {tmp_path / 'full' / 'R.json'}: ")


def test_config_warnings_are_said_once_by_rank_0_at_setup(tmp_path):
    warnings = ("a has no effect", "b has no effect")
    code, err, result = run(tmp_path, "INFO", io.StringIO(), config_warnings=warnings)
    assert code == 0, err
    assert warning_lines(err) == [f"kvcache: warning: rank 0: {w}" for w in warnings]
    assert set(warnings) <= set(result["warnings"])


def test_log_level_from_the_command_line(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    argv = ["run", "--model", "tiny-1b", "--num-users", "2", "--gpu-mem-gb", "0", "--cpu-mem-gb", "0"]
    done = kvcache(*argv, "--duration", "1", "--stats-interval", "0.5", "--cache-dir", cache, "--log-level", "DEBUG")
    assert done.returncode == 0, done.stderr
    assert "kvcache: debug: rank 0: setup: tiers gpu" in done.stderr
    assert "kvcache: debug: rank 0: sample t_s=" in done.stderr
    bad = kvcache(*argv, "--cache-dir", cache, "--log-level", "verbose")
    assert bad.returncode == 2
    assert "--log-level" in bad.stderr and "DEBUG" in bad.stderr and "CRITICAL" in bad.stderr
