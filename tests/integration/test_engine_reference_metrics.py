"""The metrics kv-cache.py users read, from a real run: whole-entry op counts and bytes that follow the
reference pipeline request by request, entries, storage time per request, p99.99, and the reference's
tokens / summed storage time beside our bytes / window."""

import pytest
from engine_helpers import kvcache, load

from kvcache.models import BUILTIN_MODELS
from kvcache.run_config import make_config
from kvcache.runner import decode_rereads
from kvcache.units import align_up
from kvcache.workload import Settings, User, entry_bytes

# User 0 of this seed is a chatbot user (entries of tens of MB with tiny-1b), whose first 12 requests use a
# shared prompt three times (one of them a hit on a prompt written before), and hold conversations of
# up to five turns: every step of the pipeline is exercised.
SEED = 14
REQUESTS = 12
BYTES_PER_TOKEN = BUILTIN_MODELS["tiny-1b"].bytes_per_token


def expected_io(requests, config=None):
    """What kv-cache.py's pipeline (runner.serve) does for each request with every entry on storage and
    none evicted: the shared prompt read on a hit, written on its first use; every earlier turn read; the
    new context written; decode reads the entry, then re-reads it once per 32 generated tokens (>= 1).
    Returns the whole-entry (reads, writes), their bytes, the entries held and the lookups and hits."""
    config = config or make_config("run")
    size = {}
    reads = writes = read_bytes = written_bytes = lookups = hits = 0

    def read(key, lookup=True):
        nonlocal reads, read_bytes, lookups, hits
        reads, read_bytes = reads + 1, read_bytes + size[key]
        lookups, hits = lookups + lookup, hits + lookup

    def write(key, tokens):
        nonlocal writes, written_bytes
        size[key] = align_up(entry_bytes(tokens, BYTES_PER_TOKEN, config.tensor_parallel))
        writes, written_bytes = writes + 1, written_bytes + size[key]

    for request in requests:
        if request.prefix_key in size:
            read(request.prefix_key)
        elif request.prefix_key:
            lookups += 1  # the miss that makes this request write it
            write(request.prefix_key, request.prefix_tokens)
        for key in request.earlier_keys:
            assert key in size  # one closed-loop user: its earlier turns are all written
            read(key)
        write(request.key, request.context_tokens)
        if config.long_context_tokens and request.context_tokens + request.prefix_tokens >= config.long_context_tokens:
            continue  # a very long context has no decode step
        read(request.key)
        for _batch in range(decode_rereads(request.generation_tokens, config.decode_batch_size)):
            read(request.key, lookup=False)
    return (reads, writes), (read_bytes, written_bytes), len(size), (lookups, hits)


def test_the_seed_exercises_every_step():
    requests = [next(stream) for stream in [User(SEED, 0).requests()] for _request in range(REQUESTS)]
    prompts = [r.prefix_key for r in requests if r.prefix_key]
    assert len(prompts) > len(set(prompts)) >= 1  # a prompt written once and read later
    assert max(r.turn for r in requests) >= 3  # a turn that re-reads more than one earlier turn
    assert any(decode_rereads(r.generation_tokens, 32) > 1 for r in requests)


ONE_USER = ["--model", "tiny-1b", "--num-users", "1", "--seed", SEED, "--max-requests", REQUESTS, "--duration", "60",
            "--performance-profile", "throughput", "--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--quiet"]  # fmt: skip


def flags(options):
    """The command line of option values (a bare flag for True)."""
    argv = []
    for name, value in options.items():
        argv += ["--" + name.replace("_", "-")] + ([] if value is True else [value])
    return argv


@pytest.mark.parametrize(
    "options",
    [
        {"multi_turn_reads": "previous"},
        {"disable_multi_turn": True},
        {"max_turns": 2},
        {"end_conversation_probability": 0.0},
        {"decode_batch_size": 0},
        {"decode_batch_size": 8},
        {"long_context_tokens": 1500},
        {"prefix_hit_probability": 1.0, "system_prompts": 1, "system_prompt_tokens": 256},
        {"disable_prefix_caching": True},
        {"tensor_parallel": 2, "num_gpus": 2},
    ],
    ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()),
)
def test_each_pipeline_option_changes_the_io_as_the_pipeline_says(tmp_path, options):
    """Each option's effect on a real run: the op counts and bytes are those of the pipeline with that option,
    and differ from the defaults' (so the option did something)."""
    done = kvcache("run", *ONE_USER, *flags(options), "--cache-dir", tmp_path, "--output", tmp_path / "R.json")
    assert done.returncode == 0, done.stderr
    result = load(tmp_path / "R.json")
    config = make_config("run", **options)
    assert all(result["config"][name] == getattr(config, name) for name in options)
    stream = User(SEED, 0, Settings.from_config(config)).requests()
    requests = [next(stream) for _request in range(REQUESTS)]
    (reads, writes), (read_bytes, written_bytes), _entries, (lookups, hits) = expected_io(requests, config)
    storage = result["tiers"]["storage"]
    assert (storage["read_ops"], storage["write_ops"], storage["bytes_read"], storage["bytes_written"]) == (
        reads, writes, read_bytes, written_bytes,
    )  # fmt: skip
    assert (result["hit_rate"]["lookups"], result["hit_rate"]["hits"]) == (lookups, hits)
    default_stream = User(SEED, 0).requests()
    assert expected_io([next(default_stream) for _request in range(REQUESTS)])[:2] != (
        (reads, writes),
        (read_bytes, written_bytes),
    )


def test_one_users_op_counts_follow_its_requests_and_the_reference_figure_adds_up(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    done = kvcache(
        "run", "--model", "tiny-1b", "--num-users", "1", "--seed", SEED, "--max-requests", REQUESTS,
        "--duration", "60", "--performance-profile", "throughput", "--generation-mode", "none",
        "--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--quiet", "--cache-dir", cache, "--output", tmp_path / "R.json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = load(tmp_path / "R.json")
    assert result["requests"]["completed"] == REQUESTS
    stream = User(SEED, 0).requests()  # rank 0's seed is --seed, and every option here is the default
    (reads, writes), (read_bytes, written_bytes), entries, (lookups, hits) = expected_io(
        [next(stream) for _request in range(REQUESTS)]
    )
    storage = result["tiers"]["storage"]
    assert (storage["read_ops"], storage["write_ops"]) == (reads, writes)
    assert (storage["bytes_read"], storage["bytes_written"]) == (read_bytes, written_bytes)
    assert (result["hit_rate"]["lookups"], result["hit_rate"]["hits"]) == (lookups, hits)
    assert storage["read_ops"] == storage["read_latency_ms"]["count"]  # no move read an entry untimed
    assert (storage["entries"], storage["peak_entries"]) == (entries, entries)
    for tier in ("gpu", "cpu"):
        assert result["tiers"][tier]["read_ops"] == result["tiers"][tier]["write_ops"] == 0
    assert result["per_rank"][0]["tiers"]["storage"]["write_ops"] == writes

    # One user: every storage operation belongs to a request, so the per-request sums add up to all of them.
    per_request = result["latency_ms"]["storage_per_request"]
    assert per_request["count"] == REQUESTS and per_request["p9999"] <= per_request["max"]
    op_ms = sum(storage[f"{op}_latency_ms"]["mean"] * storage[f"{op}_latency_ms"]["count"] for op in ("read", "write"))
    assert per_request["mean"] * REQUESTS == pytest.approx(op_ms, rel=0.01)  # HdrHistogram: 3 digits

    reference = result["reference_metrics"]
    assert reference["tokens"] == result["tokens"]["generated"]
    assert reference["storage_io_seconds"] == pytest.approx(per_request["mean"] * REQUESTS / 1000.0, rel=0.01)
    assert reference["storage_throughput_tokens_per_sec"] == pytest.approx(
        reference["tokens"] / reference["storage_io_seconds"], rel=1e-5
    )
    assert "not a bandwidth" in reference["definition"]
    assert "storage_per_request" in done.stdout and "p99.99" in done.stdout and "kv-cache.py storage" in done.stdout
    assert result["per_rank"][0]["reference_metrics"] == reference
    for block in [result["latency_ms"][name] for name in result["latency_ms"]] + [storage["read_latency_ms"]]:
        assert "p9999" in block
