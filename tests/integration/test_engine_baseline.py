"""`kvcache baseline` with the real fio, then `kvcache run --baseline` stating its bandwidth as a share of it."""

import json
import shutil

import pytest
from engine_helpers import SHORT_RUN, kvcache, leftovers, load

from kvcache.mlperf import layout

pytestmark = pytest.mark.skipif(shutil.which("fio") is None, reason="needs fio (make test installs it)")

QUICK = ["--io-chunk-mib", "4", "--io-depth", "2", "--baseline-runtime", "1", "--baseline-size-gb", "0.05"]


def test_the_baseline_file_and_a_run_stated_against_it(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    done = kvcache("baseline", "--cache-dir", cache, "--output", tmp_path / "b.json", *QUICK)
    assert done.returncode == 0, done.stderr
    assert leftovers(cache) == []  # fio's files went with the baseline's own directory
    baseline = json.loads((tmp_path / "b.json").read_text())
    assert baseline["schema"] == "storagebench.kvcache/baseline/v1" and baseline["jobs"] == 2
    assert baseline["chunk_bytes"] == 4 << 20 and baseline["io_engine"] == "direct" and baseline["fio"]
    assert baseline["read"]["bytes_per_s"] > 0 and baseline["write"]["bytes_per_s"] > 0
    assert baseline["mixed"]["read"]["bytes_per_s"] > baseline["mixed"]["write"]["bytes_per_s"] > 0  # 75 % reads
    assert done.stdout.startswith(f"baseline of {cache} (") and f"wrote {tmp_path / 'b.json'}" in done.stdout

    run = kvcache("run", *SHORT_RUN, "--duration", "2", "--io-chunk-mib", "4", "--io-depth", "2", "--cache-dir",
                  cache, "--output", tmp_path / "R.json", "--baseline", tmp_path / "b.json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = load(tmp_path / "R.json")
    block = result["baseline"]
    [host] = block["per_host"]
    storage, seconds = result["tiers"]["storage"], result["window"]["seconds"]
    assert host["engine_read_bytes_per_s"] == pytest.approx(storage["bytes_read"] / seconds, rel=1e-3)
    assert block["read_percent"] == round(100 * host["engine_read_bytes_per_s"] / baseline["read"]["bytes_per_s"], 1)
    mixed = baseline["mixed"]["read"]["bytes_per_s"] + baseline["mixed"]["write"]["bytes_per_s"]
    engine = host["engine_read_bytes_per_s"] + host["engine_write_bytes_per_s"]
    assert block["mixed_percent"] == pytest.approx(100 * engine / mixed, abs=0.06)
    assert not [w for w in result["warnings"] if "the baseline" in w]  # same shape, host and place
    headline = kvcache("report", "--headline", tmp_path / "R.json").stdout
    assert f"(fio baseline): read {block['read_percent']:.0f} %, write {block['write_percent']:.0f} %" in headline


def test_a_baseline_of_another_shape_is_said_and_a_bad_file_refused(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    assert kvcache("baseline", "--cache-dir", cache, "--output", tmp_path / "b.json", *QUICK).returncode == 0
    run = kvcache("run", *SHORT_RUN, "--duration", "1", "--cache-dir", cache, "--output", tmp_path / "R.json",
                  "--baseline", tmp_path / "b.json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert any("the baseline was measured with 4194304-byte chunks" in w for w in load(tmp_path / "R.json")["warnings"])
    (tmp_path / "bad.json").write_text("{}")
    refused = kvcache("run", *SHORT_RUN, "--duration", "1", "--cache-dir", cache, "--output", tmp_path / "R2.json",
                      "--baseline", tmp_path / "bad.json")  # fmt: skip
    assert refused.returncode == 2 and "--baseline:" in refused.stderr and "is not a baseline" in refused.stderr
    assert leftovers(cache) == [] and not (tmp_path / "R2.json").exists()


def test_mlperf_trials_are_stated_against_the_baseline_and_a_bad_one_refuses_the_run(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    assert kvcache("baseline", "--cache-dir", cache, "--output", tmp_path / "b.json", *QUICK).returncode == 0
    trials = ["mlperf", "run", "--category", "open", "--option", "1", "--model", "tiny-1b", "--num-users", "2",
              "--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--duration", "2", "--delay", "0", "--trials", "1",
              "--io-chunk-mib", "4", "--io-depth", "2", "--cache-dir", cache, "--quiet"]  # fmt: skip
    (tmp_path / "bad.json").write_text("{}")
    refused = kvcache(*trials, "--results-dir", tmp_path / "refused", "--baseline", tmp_path / "bad.json")
    assert refused.returncode == 2 and "--baseline:" in refused.stderr and "is not a baseline" in refused.stderr
    assert not (tmp_path / "refused").exists() and leftovers(cache) == []

    done = kvcache(*trials, "--results-dir", tmp_path / "results", "--baseline", tmp_path / "b.json", timeout=180)
    assert done.returncode == 0, done.stderr
    [result_path] = (tmp_path / "results").rglob(layout.TRIAL_RESULT_FILE)
    block = load(result_path)["baseline"]
    assert block["per_host"][0]["engine_read_bytes_per_s"] > 0 and block["read_percent"] > 0
    assert f"(fio baseline): read {block['read_percent']:.0f} %" in done.stdout  # the trial's headline
    checked = kvcache("mlperf", "check", tmp_path / "results", "--json")
    reasons = json.loads(checked.stdout)["runs"][0]["reasons"]
    assert not [r for r in reasons if "baseline" in r], reasons  # an observation, not a change of the workload
