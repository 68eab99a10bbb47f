"""kv-cache.py's options that shape more than one request's I/O, each asserted on a real run: GPUs and
tensor parallelism, RAG ingest and retrieval, the open user loop and its priority queue, and
--max-concurrent-allocs. (The per-request steps are checked op by op in test_engine_reference_metrics.)"""

from engine_helpers import kvcache, load

from kvcache.units import GIB
from kvcache.workload import RagCorpus

SEED = 14  # user 0 is a chatbot user: small entries (see test_engine_reference_metrics)
STORAGE_ONLY = ["--model", "tiny-1b", "--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--quiet", "--seed", SEED]


def run(tmp_path, *args):
    tmp_path.mkdir(exist_ok=True)
    done = kvcache("run", *args, "--cache-dir", tmp_path, "--output", tmp_path / "R.json")
    assert done.returncode == 0, done.stderr
    return load(tmp_path / "R.json")


def test_the_gpu_tier_is_the_budget_on_each_gpu(tmp_path):
    result = run(tmp_path, "--model", "tiny-1b", "--num-users", "1", "--max-requests", "2", "--quiet",
                 "--gpu-mem-gb", "0.5", "--num-gpus", "4", "--gpu-backend", "simulated")  # fmt: skip
    assert result["config"]["num_gpus"] == 4
    assert result["tiers"]["gpu"]["capacity_bytes_per_rank"] == 2 * GIB


def test_tensor_parallel_beyond_the_gpus_is_refused_before_anything_is_created(tmp_path):
    done = kvcache("run", *STORAGE_ONLY, "--tensor-parallel", "4", "--num-gpus", "2", "--cache-dir", tmp_path)
    assert done.returncode == 2
    assert "--tensor-parallel: 4 must be at most --num-gpus (2)" in done.stderr
    assert list(tmp_path.iterdir()) == []


def rag_run(tmp_path, *extra):
    return run(
        tmp_path, *STORAGE_ONLY, "--num-users", "1", "--max-requests", "6", "--performance-profile", "throughput",
        "--disable-multi-turn", "--disable-prefix-caching", "--decode-batch-size", "0",
        "--enable-rag", "--rag-num-docs", "3", "--rag-request-probability", "1.0", "--rag-top-k", "2",
        "--rag-small-model-doc-tokens-min", "500", "--rag-small-model-doc-tokens-max", "1000", *extra,
    )  # fmt: skip


def test_rag_ingests_every_chunk_and_each_request_reads_top_k_of_them(tmp_path):
    result = rag_run(tmp_path, "--rag-chunk-tokens", "256")
    corpus = RagCorpus(SEED, 3, (500, 1000), 256)  # rank 0's corpus: tiny-1b is not a large model
    chunks = sum(corpus.chunk_count(doc) for doc in range(3))
    assert chunks > 3  # documents of several chunks
    assert result["events"]["rag_chunks_ingested"] == chunks
    storage = result["tiers"]["storage"]
    assert storage["peak_entries"] == chunks + 6  # the chunks and the six requests' own entries
    assert storage["bytes_written"] >= corpus.total_tokens() * 24576
    # Each request: two chunk reads (a chunk not yet ingested is a miss) and the decode read of its entry.
    assert result["hit_rate"]["lookups"] == 6 * (2 + 1)
    assert result["config"]["rag_top_k"] == 2 and result["config"]["enable_rag"] is True


def test_the_chunk_byte_limit_cuts_chunks_smaller(tmp_path):
    result = rag_run(tmp_path, "--rag-chunk-tokens", "512", "--rag-max-chunk-bytes", 100 * 24576)
    corpus = RagCorpus(SEED, 3, (500, 1000), 100)  # 100 tokens of tiny-1b's 24,576 bytes each
    assert result["events"]["rag_chunks_ingested"] == sum(corpus.chunk_count(doc) for doc in range(3))


def test_without_rag_nothing_is_ingested(tmp_path):
    result = run(tmp_path, *STORAGE_ONLY, "--num-users", "1", "--max-requests", "2")
    assert result["events"]["rag_chunks_ingested"] == 0 and result["config"]["enable_rag"] is False


def test_open_users_do_not_wait_for_their_replies(tmp_path):
    """kv-cache.py's users: one user asking back to back, one worker. Its requests queue behind each other,
    which the closed loop never does."""
    common = [*STORAGE_ONLY, "--num-users", "1", "--duration", "3", "--performance-profile", "throughput",
              "--max-concurrent-requests", "1"]  # fmt: skip
    opened = run(tmp_path / "open", *common, "--user-loop", "open")
    closed = run(tmp_path / "closed", *common)
    assert opened["config"]["user_loop"] == "open" and closed["config"]["user_loop"] == "closed"
    assert opened["latency_ms"]["queue_wait"]["max"] > 50
    assert closed["latency_ms"]["queue_wait"]["max"] < 10
    # The queue wait is part of the end-to-end latency, as in kv-cache.py.
    assert opened["latency_ms"]["end_to_end"]["max"] >= opened["latency_ms"]["queue_wait"]["max"]


def test_max_concurrent_allocs_holds_writes_back(tmp_path):
    common = [*STORAGE_ONLY, "--num-users", "6", "--duration", "2", "--performance-profile", "throughput"]
    limited = run(tmp_path / "limited", *common, "--max-concurrent-allocs", "1")
    free = run(tmp_path / "free", *common)
    assert limited["config"]["max_concurrent_allocs"] == 1
    assert limited["events"]["allocation_waits"] > 0
    assert free["events"]["allocation_waits"] == 0
