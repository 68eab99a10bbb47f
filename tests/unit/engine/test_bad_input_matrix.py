"""Bad input to the engine, as a table: every case exits 2 with one short line naming the option or file,
no traceback, and nothing created or changed.

Each case is (id, argv, what the message must name, files to make first). In argv, {ws} is the case's
workspace (also the working directory) and {cache} an empty cache dir inside it. The numeric cases are
generated from the option table itself, so a new option is covered without a second list of options.
"""

import io
import json
import os
import stat
import subprocess
import sys

import pytest

from kvcache.cli import main
from kvcache.config_file import MAX_CONFIG_BYTES
from kvcache.options import DATASIZE, MLPERF_RUN, OPTIONS, RUN

MAX_MESSAGE_CHARS = 300
LONG = "x" * 5000  # a value far longer than any message may quote
HUGE_INT = "9" * 30
FIFO, CHARDEV, DIRECTORY = "<fifo>", "<character device>", "<directory>"
RUN_BASE = ["run", "--model", "tiny-1b", "--num-users", "1", "--duration", "1", "--quiet", "--cache-dir", "{cache}"]
# An OPEN MLPerf run of the same small workload (its own options are checked like run's).
MLPERF_BASE = ["mlperf", "run", "--category", "open", "--option", "1", "--results-dir", "{ws}/results"] + RUN_BASE[1:]
BURST = ["--use-burst-trace", "--burst-trace-path"]

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n" for previous, name in zip("abcdefgh", "bcdefghi")
)


def result_text(**changes):
    """A small but complete result JSON (what `kvcache report` reads), with fields replaced by `changes`."""
    block = {"p50": 1.0, "p95": 2.0, "p99": 3.0, "p999": 4.0, "max": 5.0, "mean": 1.5, "count": 3}
    tier = {
        "bytes_read": 1,
        "bytes_written": 1,
        "read_bandwidth_bytes_per_s": 1,
        "write_bandwidth_bytes_per_s": 1,
        "read_latency_ms": block,
        "write_latency_ms": block,
    }
    result = {
        "schema": "storagebench.kvcache/result/v1",
        "status": "ok",
        "config": {"model": "tiny-1b", "num_users": 1},
        "environment": {},
        "ranks": 1,
        "hosts": ["h"],
        "window": {"seconds": 1.0},
        "tiers": {"gpu": dict(tier), "cpu": dict(tier), "storage": dict(tier)},
        "latency_ms": {"end_to_end": block, "ttft": dict(block), "queue_wait": block},
        "requests": {"completed": 3, "per_second": 3.0},
        "tokens": {"prefill_per_second": 1.0, "generated_per_second": 1.0},
        "hit_rate": {"overall": 0.5},
    }
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = result
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return json.dumps(result)


def case(case_id, argv, names, files=None, via_process=False):
    return pytest.param(argv, names, files or {}, via_process, id=case_id)


HAND_CASES = [
    # argparse: unknown flags, missing values, bad choices, wrong types
    case("no-command", [], ["COMMAND"], via_process=True),
    case("unknown-flag", RUN_BASE + ["--no-such-flag"], ["--no-such-flag"], via_process=True),
    case("unknown-flag-long-value", RUN_BASE + ["--bogus", LONG], ["--bogus"]),
    case("flag-without-value", RUN_BASE + ["--num-users"], ["--num-users"]),
    case("bad-choice-io-engine", RUN_BASE + ["--io-engine", "libaio"], ["--io-engine", "direct"]),
    case("bad-choice-long-value", RUN_BASE + ["--generation-mode", LONG], ["--generation-mode"]),
    case("bad-choice-mpi", RUN_BASE + ["--mpi", "maybe"], ["--mpi", "auto"]),
    # kv-cache.py's options (issue 11)
    case("bad-choice-user-loop", RUN_BASE + ["--user-loop", "sideways"], ["--user-loop", "closed", "open"]),
    case("bad-choice-log-level", RUN_BASE + ["--log-level", "info"], ["--log-level", "INFO"]),
    case("bad-choice-rag-distribution", RUN_BASE + ["--rag-retrieval-distribution", "zipf"], ["zipfian", "uniform"]),
    case("bad-choice-multi-turn-reads", RUN_BASE + ["--multi-turn-reads", "some"], ["--multi-turn-reads", "all"]),
    case("rag-top-k-0", RUN_BASE + ["--rag-top-k", "0"], ["--rag-top-k"]),
    case("prefix-probability-above-1", RUN_BASE + ["--prefix-hit-probability", "1.5"], ["--prefix-hit-probability"]),
    case("tensor-parallel-above-gpus", RUN_BASE + ["--tensor-parallel", "2"], ["--tensor-parallel", "--num-gpus"]),
    case(
        "datasize-tensor-parallel-above-gpus",
        ["datasize", "--tensor-parallel", "8", "--num-gpus", "4"],
        ["--tensor-parallel", "--num-gpus (4)"],
    ),  # fmt: skip
    case(
        "open-users-and-a-request-rate",
        RUN_BASE + ["--user-loop", "open", "--request-rate", "5"],
        ["--user-loop", "--request-rate"],
    ),  # fmt: skip
    # phases (issue 12)
    case("phases-both", RUN_BASE + ["--prefill-only", "--decode-only"], ["--prefill-only", "--decode-only"]),
    case("decode-only-with-rag", RUN_BASE + ["--decode-only", "--enable-rag"], ["--decode-only", "--enable-rag"]),
    case(
        "precondition-without-storage-io",
        RUN_BASE + ["--precondition", "--io-trace-log", "{ws}/trace.csv"],
        ["--precondition", "--io-trace-log"],
    ),  # fmt: skip
    case(
        "reference-config-wrong-type",
        RUN_BASE + ["--config", "{ws}/c.yaml"],
        ["decode.batch_size"],
        {"c.yaml": "decode: {batch_size: many}\n"},
    ),  # fmt: skip
    case(
        "reference-config-unknown-section-key",
        RUN_BASE + ["--config", "{ws}/c.yaml"],
        ["rag.top_k"],
        {"c.yaml": "rag: {top_k: 3}\n"},
    ),  # fmt: skip
    case("not-an-int", RUN_BASE + ["--num-users", "lots"], ["--num-users"]),
    case("int-with-5000-digits", RUN_BASE + ["--num-users", "1" * 5000], ["--num-users"]),
    case("float-for-an-int", RUN_BASE + ["--io-depth", "2.5"], ["--io-depth"]),
    case("keep-cache-takes-no-value", RUN_BASE + ["--keep-cache", "yes"], ["yes"]),
    # values out of range (item 8)
    case("gpu-mem-1e308-run", RUN_BASE + ["--gpu-mem-gb", "1e308"], ["--gpu-mem-gb"], via_process=True),
    case("gpu-mem-1e308-datasize", ["datasize", "--gpu-mem-gb", "1e308"], ["--gpu-mem-gb"], via_process=True),
    case("cpu-mem-1e308-run", RUN_BASE + ["--cpu-mem-gb", "1e308"], ["--cpu-mem-gb"]),
    case("cpu-mem-1e308-datasize", ["datasize", "--cpu-mem-gb", "1e308"], ["--cpu-mem-gb"]),
    case("request-rate-1e-300", RUN_BASE + ["--request-rate", "1e-300"], ["--request-rate", "0.001"]),
    case("max-concurrent-1e19", RUN_BASE + ["--max-concurrent-requests", "1e19"], ["--max-concurrent-requests"]),
    case("max-concurrent-10e19", RUN_BASE + ["--max-concurrent-requests", "1" + "0" * 19], ["--max-concurrent"]),
    case("duration-inf", RUN_BASE + ["--duration", "inf"], ["--duration"]),
    case("duration-nan", RUN_BASE + ["--duration", "nan"], ["--duration"]),
    case("stats-interval-too-small", RUN_BASE + ["--stats-interval", "0.01"], ["--stats-interval"]),
    case("datasize-ranks-0", ["datasize", "--ranks", "0"], ["--ranks"]),
    case("datasize-run-only-flag", ["datasize", "--duration", "5"], ["--duration"]),
    case("run-datasize-only-flag", RUN_BASE + ["--ranks", "2"], ["--ranks"]),
    # model and cache dir
    case("unknown-model", RUN_BASE + ["--model", "nope"], ["--model", "llama3.1-8b"], via_process=True),
    case("unknown-model-long-name", RUN_BASE + ["--model", LONG], ["--model"]),
    case("empty-model", RUN_BASE + ["--model", ""], ["--model"]),
    case("datasize-unknown-model", ["datasize", "--model", "nope"], ["--model"]),
    case("cache-dir-missing", ["run", "--duration", "1"], ["--cache-dir"]),
    case("cache-dir-empty", ["run", "--cache-dir", ""], ["--cache-dir"]),
    case("cache-dir-absent", ["run", "--cache-dir", "{ws}/absent"], ["--cache-dir"]),
    case("cache-dir-system", ["run", "--cache-dir", "/etc"], ["--cache-dir"]),
    case("cache-dir-is-a-file", ["run", "--cache-dir", "{ws}/data"], ["--cache-dir"], {"data": b"user data"}),
    # --output (item 4)
    case("output-empty", RUN_BASE + ["--output", ""], ["--output"], via_process=True),
    case("output-fifo", RUN_BASE + ["--output", "{ws}/pipe"], ["--output", "FIFO"], {"pipe": FIFO}),
    case("output-char-device", RUN_BASE + ["--output", "{ws}/null"], ["--output", "device"], {"null": CHARDEV}),
    case("output-dev-null", RUN_BASE + ["--output", "/dev/null"], ["--output", "/dev/null"]),
    case(
        "output-symlink",
        RUN_BASE + ["--output", "{ws}/link.json"],
        ["--output", "symlink"],
        {"target.json": b"precious", "link.json": ("symlink", "target.json")},
    ),
    case("output-directory", RUN_BASE + ["--output", "{ws}/d"], ["--output", "directory"], {"d": DIRECTORY}),
    case("output-trailing-slash", RUN_BASE + ["--output", "{ws}/new/"], ["--output"]),
    case("output-under-a-file", RUN_BASE + ["--output", "{ws}/data/r.json"], ["--output"], {"data": b"user data"}),
    case("output-name-too-long", RUN_BASE + ["--output", "{ws}/" + "n" * 300], ["--output", "too long"]),
    case(
        "output-symlink-loop", RUN_BASE + ["--output", "{ws}/loop/r.json"], ["--output"], {"loop": ("symlink", "loop")}
    ),
    case("output-in-proc", RUN_BASE + ["--output", "/proc/x.json"], ["--output", "/proc"]),
    case("output-dir-missing", RUN_BASE + ["--output", "{ws}/absent/r.json"], ["--output", "absent"]),
    # config files (items 8, 9, 10)
    case("config-empty-path", RUN_BASE + ["--config", ""], ["--config"]),
    case("config-absent", RUN_BASE + ["--config", "{ws}/absent.yaml"], ["--config", "absent.yaml"]),
    case("config-endless", RUN_BASE + ["--config", "/dev/zero"], ["--config", "/dev/zero", "MiB"]),
    case("config-is-a-directory", RUN_BASE + ["--config", "{ws}/d"], ["--config"], {"d": DIRECTORY}),
    case(
        "config-not-utf8", RUN_BASE + ["--config", "{ws}/c.yaml"], ["--config", "UTF-8"], {"c.yaml": b"model: \xff\n"}
    ),
    case("config-alias-bomb", ["datasize", "--config", "{ws}/c.yaml"], ["--config", "c.yaml"], {"c.yaml": BOMB}),
    case(
        "config-too-large",
        RUN_BASE + ["--config", "{ws}/c.yaml"],
        ["--config", "MiB"],
        {"c.yaml": "#" * MAX_CONFIG_BYTES + "\n"},
    ),
    case("config-nested-deep", RUN_BASE + ["--config", "{ws}/c.yaml"], ["--config"], {"c.yaml": "a: " + "[" * 5000}),
    case("config-cyclic-alias", RUN_BASE + ["--config", "{ws}/c.yaml"], ["--config"], {"c.yaml": "a: &a [*a]\n"}),
    case(
        "config-duplicate-key",
        RUN_BASE + ["--config", "{ws}/c.yaml"],
        ["--config", "duplicate", "num_users"],
        {"c.yaml": "num_users: 2\nnum_users: 3\n"},
    ),
    case(
        "config-duplicate-key-in-models",
        ["datasize", "--config", "{ws}/c.yaml"],
        ["--config", "duplicate", "layers"],
        {"c.yaml": "models:\n  m: {layers: 2, kv_heads: 2, head_dim: 64, layers: 4}\n"},
    ),
    case(
        "config-duplicate-model",
        ["datasize", "--config", "{ws}/c.yaml"],
        ["--config", "duplicate", "'m'"],
        {"c.yaml": "models:\n  m: {layers: 2, kv_heads: 2, head_dim: 64}\n  m: {layers: 4}\n"},
    ),
    case("config-not-a-mapping", RUN_BASE + ["--config", "{ws}/c.yaml"], ["--config", "mapping"], {"c.yaml": "- 1\n"}),
    case("config-invalid-yaml", RUN_BASE + ["--config", "{ws}/c.yaml"], ["--config", "YAML"], {"c.yaml": "a: [1, 2\n"}),
    case("config-tab-yaml", RUN_BASE + ["--config", "{ws}/c.yaml"], ["--config", "YAML"], {"c.yaml": "a:\n\t- 1\n"}),
    case(
        "config-unknown-key",
        RUN_BASE + ["--config", "{ws}/c.yaml"],
        ["--config", "num_userz", "num_users"],
        {"c.yaml": "num_userz: 3\n"},
    ),
    case(
        "config-unknown-long-key", RUN_BASE + ["--config", "{ws}/c.yaml"], ["--config"], {"c.yaml": f"? {LONG}\n: 1\n"}
    ),
    case("config-unknown-int-key", RUN_BASE + ["--config", "{ws}/c.yaml"], ["--config"], {"c.yaml": "1: 2\n"}),
    case("config-wrong-type", RUN_BASE + ["--config", "{ws}/c.yaml"], ["num_users"], {"c.yaml": "num_users: many\n"}),
    case(
        "config-long-string", RUN_BASE + ["--config", "{ws}/c.yaml"], ["num_users"], {"c.yaml": f"num_users: {LONG}\n"}
    ),
    case("config-model-long", ["run", "--config", "{ws}/c.yaml"], ["--model"], {"c.yaml": f"model: {LONG}\n"}),
    case("config-list-value", RUN_BASE + ["--config", "{ws}/c.yaml"], ["model"], {"c.yaml": "model: [1, 2]\n"}),
    case("config-nan", RUN_BASE + ["--config", "{ws}/c.yaml"], ["duration", "finite"], {"c.yaml": "duration: .nan\n"}),
    case("config-inf", ["datasize", "--config", "{ws}/c.yaml"], ["gpu_mem_gb"], {"c.yaml": "gpu_mem_gb: .inf\n"}),
    case(
        "config-5000-digits", RUN_BASE + ["--config", "{ws}/c.yaml"], ["--config"], {"c.yaml": "seed: 1" + "0" * 5000}
    ),
    case(
        "config-nul-in-path",
        ["run", "--config", "{ws}/c.yaml"],
        ["cache_dir", "NUL"],
        {"c.yaml": 'cache_dir: "a\\0b"\n'},
    ),
    case(
        "config-nul-in-output", RUN_BASE + ["--config", "{ws}/c.yaml"], ["output", "NUL"], {"c.yaml": 'output: "\\0"\n'}
    ),
    case("config-bool-as-int", RUN_BASE + ["--config", "{ws}/c.yaml"], ["keep_cache"], {"c.yaml": "keep_cache: 1\n"}),
    case("config-empty-output", RUN_BASE + ["--config", "{ws}/c.yaml"], ["output"], {"c.yaml": "output: ''\n"}),
    case(
        "config-run-key-checked-by-datasize",
        ["datasize", "--config", "{ws}/c.yaml"],
        ["duration"],
        {"c.yaml": "duration: -1\n"},
    ),
    case(
        "config-datasize-key-checked-by-run",
        RUN_BASE + ["--config", "{ws}/c.yaml"],
        ["check_free_bytes"],
        {"c.yaml": f"check_free_bytes: {HUGE_INT}\n"},
    ),
    case("config-models-a-list", ["datasize", "--config", "{ws}/c.yaml"], ["models"], {"c.yaml": "models: [1]\n"}),
    case(
        "config-model-bad-field",
        ["datasize", "--config", "{ws}/c.yaml", "--model", "m"],
        ["models.m.layers"],
        {"c.yaml": "models:\n  m: {layers: -1, kv_heads: 2, head_dim: 64}\n"},
    ),
    case(
        "config-model-mixed-keys",
        ["datasize", "--config", "{ws}/c.yaml"],
        ["models.m"],
        {"c.yaml": "models:\n  m: {1: 2, zzz: 3}\n"},
    ),
    case(
        "config-model-shadows-builtin",
        ["datasize", "--config", "{ws}/c.yaml"],
        ["models.tiny-1b"],
        {"c.yaml": "models:\n  tiny-1b: {layers: 2, kv_heads: 2, head_dim: 64}\n"},
    ),
    # BurstGPT trace replay
    case("burst-trace-no-path", RUN_BASE + ["--use-burst-trace"], ["--burst-trace-path"], via_process=True),
    case("burst-trace-absent", RUN_BASE + BURST + ["{ws}/absent.csv"], ["--burst-trace-path", "absent.csv"]),
    case("burst-trace-empty-dir", RUN_BASE + BURST + ["{ws}/d"], ["--burst-trace-path", "*.csv"], {"d": DIRECTORY}),
    case("burst-trace-glob-nothing", RUN_BASE + BURST + ["{ws}/*.csv"], ["--burst-trace-path", "glob"]),
    case("burst-trace-fifo", RUN_BASE + BURST + ["{ws}/t.csv"], ["--burst-trace-path", "regular"], {"t.csv": FIFO}),
    case(
        "burst-trace-columns",
        RUN_BASE + BURST + ["{ws}/t.csv"],
        ["--burst-trace-path", "Response tokens"],
        {"t.csv": "Timestamp,Request tokens\n0,10\n"},
    ),
    case(
        "burst-trace-no-good-row",
        RUN_BASE + BURST + ["{ws}/t.csv"],
        ["--burst-trace-path", "no row"],
        {"t.csv": "Timestamp,Request tokens,Response tokens\nnow,ten,one\n"},
    ),
    case(
        "burst-trace-path-alone",
        RUN_BASE + ["--burst-trace-path", "{ws}/t.csv"],
        ["--burst-trace-path", "--use-burst-trace"],
        {"t.csv": "Timestamp,Request tokens,Response tokens\n0,10,1\n"},
    ),
    # ShareGPT dataset replay
    case("sharegpt-absent", RUN_BASE + ["--dataset-path", "{ws}/absent.json"], ["--dataset-path", "absent.json"]),
    case(
        "sharegpt-fifo", RUN_BASE + ["--dataset-path", "{ws}/s.json"], ["--dataset-path", "regular"], {"s.json": FIFO}
    ),
    case(
        "sharegpt-not-json", RUN_BASE + ["--dataset-path", "{ws}/s.json"], ["--dataset-path", "JSON"], {"s.json": "[{"}
    ),
    case(
        "sharegpt-not-a-list",
        RUN_BASE + ["--dataset-path", "{ws}/s.json"],
        ["--dataset-path", "list of conversations"],
        {"s.json": '{"conversations": []}'},
    ),
    case(
        "sharegpt-wrong-shape",
        RUN_BASE + ["--dataset-path", "{ws}/s.json"],
        ["--dataset-path", "first entry"],
        {"s.json": '[{"id": "x", "turns": []}]'},
    ),
    case(
        "sharegpt-no-usable-conversation",
        RUN_BASE + ["--dataset-path", "{ws}/s.json"],
        ["--dataset-path", "no usable conversation"],
        {"s.json": '[{"id": "x", "conversations": [{"from": "gpt", "value": "hi"}]}]'},
    ),
    # kvcache report
    case("report-absent", ["report", "{ws}/absent.json"], ["RESULT.json", "absent.json"], via_process=True),
    case("report-directory", ["report", "{ws}/d"], ["RESULT.json"], {"d": DIRECTORY}),
    case("report-not-json", ["report", "{ws}/r.json"], ["RESULT.json", "r.json"], {"r.json": "{oops"}),
    case("report-not-utf8", ["report", "{ws}/r.json"], ["RESULT.json", "UTF-8"], {"r.json": b'{"a": "\xff"}'}),
    case("report-no-schema", ["report", "{ws}/r.json"], ["RESULT.json", "schema"], {"r.json": '{"hello": 1}'}),
    case("report-a-list", ["report", "{ws}/r.json"], ["RESULT.json", "schema"], {"r.json": "[1, 2]"}),
    case(
        "report-nested-100k",
        ["report", "{ws}/r.json"],
        ["RESULT.json", "nested"],
        {"r.json": "[" * 100_000 + "]" * 100_000},
        via_process=True,
    ),
    case(
        "report-wrong-type",
        ["report", "{ws}/r.json"],
        ["RESULT.json", "r.json", "wrong type"],
        {"r.json": result_text(latency_ms__ttft=dict(p50=1, p95="abc", p99=1, p999=1, max=1, mean=1, count=1))},
    ),
    case(
        "report-json-wrong-type",
        ["report", "--json", "{ws}/r.json"],
        ["RESULT.json", "latency_ms.ttft.p95"],
        {"r.json": result_text(latency_ms__ttft=dict(p50=1, p95="abc", p99=1, p999=1, max=1, mean=1, count=1))},
    ),
    case(
        "report-status-not-a-string",
        ["report", "{ws}/r.json"],
        ["RESULT.json"],
        {"r.json": result_text(status=7)},
    ),
    case(
        "report-incomplete", ["report", "{ws}/r.json"], ["RESULT.json", "window"], {"r.json": result_text(window=None)}
    ),
    case(
        "report-one-good-one-bad",
        ["report", "{ws}/good.json", "{ws}/bad.json"],
        ["RESULT.json", "bad.json"],
        {"good.json": result_text(), "bad.json": "{oops"},
    ),
    # kvcache mlperf run: CLOSED takes only what the rules allow; both categories need their directories
    case("mlperf-no-category", ["mlperf", "run", "--results-dir", "{ws}/results", "--cache-dir", "{cache}"],
         ["--category", "closed", "open"]),
    case("mlperf-bad-category", MLPERF_BASE[:2] + ["--category", "submitted"], ["--category", "closed", "open"]),
    case("mlperf-bad-option", MLPERF_BASE + ["--option", "4"], ["--option", "1, 2, 3, all"]),
    case("mlperf-closed-duration",
         ["mlperf", "run", "--category", "closed", "--option", "1", "--duration", "5", "--results-dir",
          "{ws}/results", "--cache-dir", "{cache}"], ["--duration", "300", "--category open"]),
    case("mlperf-closed-num-users",
         ["mlperf", "run", "--category", "closed", "--num-users", "2", "--results-dir", "{ws}/results",
          "--cache-dir", "{cache}"], ["--num-users", "200", "--category open"]),
    case("mlperf-closed-trials",
         ["mlperf", "run", "--category", "closed", "--trials", "2", "--results-dir", "{ws}/results",
          "--cache-dir", "{cache}"], ["--trials", "3"]),
    case("mlperf-closed-config",
         ["mlperf", "run", "--category", "closed", "--config", "{ws}/c.yaml", "--results-dir", "{ws}/results",
          "--cache-dir", "{cache}"], ["--config", "CLOSED"], {"c.yaml": "num_users: 3\n"}),
    case("mlperf-no-results-dir", MLPERF_BASE[:6] + RUN_BASE[1:], ["--results-dir"]),
    case("mlperf-bad-organization", MLPERF_BASE + ["--organization", "../escape"], ["--organization"]),
    case("mlperf-bad-system-name", MLPERF_BASE + ["--system-name", "a b"], ["--system-name"]),
    case("mlperf-trials-zero", MLPERF_BASE + ["--trials", "0"], ["--trials", ">= 1"]),
    case("mlperf-check-not-a-directory", ["mlperf", "check", "{ws}/nothing-here"], ["DIR"]),
    case("mlperf-check-no-run", ["mlperf", "check", "{ws}"], ["DIR"]),
]  # fmt: skip


def _bad_numbers(opt):
    """(suffix, typed value, config value) cases that must fail for a numeric option."""
    huge = "1e308" if opt.kind is float else HUGE_INT
    cases = [("huge", huge, huge if opt.kind is int else "1.0e+308"), ("negative", "-1", "-1")]
    if opt.kind is float:
        cases += [("inf", "inf", ".inf"), ("nan", "nan", ".nan")]
    return cases


def _generated_cases():
    params = []
    for opt in OPTIONS:
        if opt.kind not in (int, float):
            continue
        if RUN in opt.commands:
            base = RUN_BASE
        elif MLPERF_RUN in opt.commands:
            base = MLPERF_BASE
        else:
            base = [DATASIZE]
        for suffix, typed, in_config in _bad_numbers(opt):
            params.append(case(f"flag-{opt.name}-{suffix}", base + [opt.flag, typed], [opt.flag]))
            params.append(
                case(
                    f"config-{opt.name}-{suffix}",
                    base + ["--config", "{ws}/c.yaml"],
                    ["--config", opt.name],
                    {"c.yaml": f"{opt.name}: {in_config}\n"},
                )
            )
    return params


CASES = HAND_CASES + _generated_cases()


def make_files(workspace, files):
    for name, content in files.items():
        path = os.path.join(workspace, name)
        if content == FIFO:
            os.mkfifo(path)
        elif content == CHARDEV:
            try:
                os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
            except PermissionError:
                pytest.skip("making a device node needs root (CAP_MKNOD)")
        elif content == DIRECTORY:
            os.mkdir(path)
        elif isinstance(content, tuple):
            os.symlink(content[1], path)
        else:
            with open(path, "wb") as handle:
                handle.write(content.encode() if isinstance(content, str) else content)


def call_in_process(argv):
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(argv, out, err)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def call_via_process(argv, cwd):
    proc = subprocess.run(
        [sys.executable, "-m", "kvcache", *argv], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("argv,names,files,via_process", CASES)
def test_bad_input(argv, names, files, via_process, tmp_path, monkeypatch, tree_snapshot):
    workspace = tmp_path / "ws"
    (workspace / "cache").mkdir(parents=True)
    make_files(str(workspace), files)
    argv = [a.replace("{ws}", str(workspace)).replace("{cache}", str(workspace / "cache")) for a in argv]
    dev_null = os.stat("/dev/null")
    before = tree_snapshot(workspace)
    monkeypatch.chdir(workspace)  # a relative output would land here

    code, out, err = call_via_process(argv, str(workspace)) if via_process else call_in_process(argv)

    assert code == 2, (out, err)
    assert out == ""
    message = err.strip()
    for name in names:
        assert name in message, message
    assert "\n" not in message, message
    assert len(message) <= MAX_MESSAGE_CHARS, message
    assert "Traceback" not in err
    assert tree_snapshot(workspace) == before
    after = os.stat("/dev/null")
    assert (after.st_mode, after.st_rdev, after.st_ino) == (dev_null.st_mode, dev_null.st_rdev, dev_null.st_ino)


def test_the_matrix_is_large_and_its_ids_unique():
    ids = [param.id for param in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 80
