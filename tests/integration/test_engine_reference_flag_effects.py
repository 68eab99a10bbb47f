"""kv-cache.py's general flags, each asserted on a real run by its effect on the result (its config block
and counters), not only by being parsed. The pipeline's own options are in test_engine_reference_metrics
and test_engine_pipeline_options; --log-level in test_engine_log_level; --config in
test_engine_reference_config."""

import pytest
from engine_helpers import kvcache, load

from kvcache.units import GIB

SEED = 14  # user 0 is a chatbot user: small entries (see test_engine_reference_metrics)
BASE = ["--model", "tiny-1b", "--num-users", "1", "--seed", SEED, "--max-requests", "3",
        "--performance-profile", "throughput", "--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--quiet"]  # fmt: skip


def run(tmp_path, *args):
    """A run with BASE, then `args` (a later flag wins)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    done = kvcache("run", *BASE, *args, "--cache-dir", tmp_path, "--output", tmp_path / "R.json")
    assert done.returncode == 0, done.stderr
    return load(tmp_path / "R.json")


def test_model(tmp_path):
    result = run(tmp_path, "--model", "llama3.1-8b")
    assert result["config"]["bytes_per_token"] == 131072 and result["config"]["model_geometry"]["layers"] == 32


def test_num_users(tmp_path):
    result = run(tmp_path, "--num-users", "3", "--max-requests", "0", "--duration", "2")
    assert result["config"]["num_users"] == 3
    # every user's first request writes an entry of its own conversation
    assert result["tiers"]["storage"]["peak_entries"] >= 3


def test_duration_and_max_requests(tmp_path):
    timed = run(tmp_path / "timed", "--max-requests", "0", "--duration", "1.5")
    assert 1.4 < timed["window"]["seconds"] < 5  # the window, plus at most the last request's end
    counted = run(tmp_path / "counted", "--max-requests", "2", "--duration", "60")
    assert counted["requests"]["completed"] == 2 and counted["window"]["seconds"] < 60


@pytest.mark.parametrize("tier, flag", [("gpu", "--gpu-mem-gb"), ("cpu", "--cpu-mem-gb")])
def test_tier_budgets(tmp_path, tier, flag):
    result = run(tmp_path, flag, "0.5", "--gpu-backend", "simulated")
    assert result["tiers"][tier]["capacity_bytes_per_rank"] == GIB // 2
    assert result["tiers"][tier]["write_ops"] > 0  # new entries go to the highest tier with room


def test_storage_capacity_and_cache_dir(tmp_path):
    result = run(tmp_path, "--storage-capacity-gb", "1")
    assert result["tiers"]["storage"]["capacity_bytes_per_rank"] == GIB
    assert result["per_rank"][0]["cache_namespace"].startswith(str(tmp_path) + "/")


def test_generation_mode(tmp_path):
    """fast sleeps 2 ms per generated token after the storage work; none does not."""
    fast = run(tmp_path / "fast", "--generation-mode", "fast")
    none = run(tmp_path / "none", "--generation-mode", "none")
    decode_ms = {}
    for name, result, per_token_s in (("fast", fast, 0.002), ("none", none, 0.0)):
        latency = result["latency_ms"]
        decode_ms[name] = latency["end_to_end"]["mean"] - latency["ttft"]["mean"]
        tokens_per_request = result["tokens"]["generated"] / result["requests"]["completed"]
        assert decode_ms[name] >= 0.9 * tokens_per_request * per_token_s * 1000
    # The part after the first token, not the whole request: the storage reads before it vary from run to run
    # by more than the sleep (seen under a loaded machine), the sleep itself does not.
    sleep_ms = fast["tokens"]["generated"] / fast["requests"]["completed"] * 2
    assert decode_ms["fast"] > decode_ms["none"] + 0.5 * sleep_ms


def test_performance_profile(tmp_path):
    latency = run(tmp_path / "latency", "--performance-profile", "latency")
    throughput = run(tmp_path / "throughput", "--performance-profile", "throughput")
    assert latency["sla"]["applies"] is True and throughput["sla"]["applies"] is False
    assert throughput["sla"]["passed"] is None


def test_seed(tmp_path):
    first, again, other = (run(tmp_path / name, "--seed", seed) for name, seed in (("a", 5), ("b", 5), ("c", 6)))
    assert first["config"]["seeds_per_rank"] == [5] and other["config"]["seeds_per_rank"] == [6]
    written = [r["tiers"]["storage"]["bytes_written"] for r in (first, again, other)]
    assert written[0] == written[1] != written[2]  # the same seed draws the same requests


def test_request_rate(tmp_path):
    result = run(tmp_path, "--request-rate", "4", "--max-requests", "0", "--duration", "2")
    assert result["config"]["request_rate"] == 4
    # Poisson arrivals at 4/s for 2 s: far fewer than a closed-loop throughput user would make
    assert 1 <= result["requests"]["completed"] <= 20


def test_output(tmp_path):
    result = run(tmp_path)
    assert result["config"]["output"] == str(tmp_path / "R.json") and result["status"] == "ok"
