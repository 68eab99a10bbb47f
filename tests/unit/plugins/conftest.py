"""Shared test data: what `python -m kvcache describe` prints (flags as the engine declares them)."""

import copy

import pytest

RUN_FLAGS = [
    "--model", "--num-users", "--duration", "--max-requests", "--seed", "--gpu-mem-gb", "--cpu-mem-gb",
    "--storage-capacity-gb", "--cache-dir", "--keep-cache", "--io-engine", "--io-chunk-mib", "--io-depth",
    "--generation-mode", "--performance-profile", "--disable-multi-turn", "--disable-prefix-caching", "--promote",
    "--request-rate", "--max-concurrent-requests", "--stats-interval", "--gpu-backend", "--mpi",
    "--straggler-fraction", "--output", "--quiet", "--config",
]  # fmt: skip
DATASIZE_FLAGS = [
    "--model", "--num-users", "--ranks", "--gpu-mem-gb", "--cpu-mem-gb", "--io-chunk-mib", "--io-depth",
    "--disable-multi-turn", "--disable-prefix-caching", "--json", "--check-free-bytes", "--check-mem-bytes",
    "--config",
]  # fmt: skip
DESCRIPTION = {
    "version": "0.1.0",
    "models": ["tiny-1b", "mistral-7b", "llama2-7b", "llama3.1-8b", "llama3.1-70b-instruct", "deepseek-v3"],
    "commands": {"run": RUN_FLAGS, "datasize": DATASIZE_FLAGS},
}


@pytest.fixture
def description():
    """A fresh copy of the engine description for each test."""
    return copy.deepcopy(DESCRIPTION)
