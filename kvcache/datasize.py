"""`kvcache datasize`: what a run needs, from the same model registry and workload as `run`.

Model (documented in the README): a user's live working set is its current conversation: every turn of
it when later turns re-read all earlier ones (the expected conversation length), at most the current and the
previous turn with --multi-turn-reads previous, one entry without multi-turn. Each rank also holds its
shared system prompts and, with RAG, its ingested documents. Entries are 1/TP of the model's KV bytes.
Storage must hold what the GPU and CPU tiers cannot, with 25 % headroom and room for the largest single
entry. Host memory per rank is the CPU tier, the I/O buffers and a fixed engine overhead.
"""

import json
import math

from kvcache.errors import UsageError
from kvcache.models import Registry
from kvcache.units import GIB, MIB, align_up, mib_bytes
from kvcache.workload import (
    RagCorpus,
    entry_bytes,
    largest_entry_tokens,
    mean_context_tokens,
    mean_conversation_turns,
    rag_doc_tokens,
)

HEADROOM = 1.25
ENGINE_OVERHEAD_BYTES = 256 * MIB  # interpreter, numpy, threads, histograms
# `run --storage-capacity-gb 0` takes this share of the free space under --cache-dir (split among the
# host's ranks); the free-space check asks for the same, so datasize and run agree.
AUTO_STORAGE_SHARE = 0.8


def check_parallelism(config) -> None:
    """--tensor-parallel splits each entry over that many of the rank's GPUs, so it cannot exceed --num-gpus
    (kv-cache.py's rule). `run` (benchmark.validate_run) and `datasize` both refuse it through this."""
    if config.tensor_parallel > config.num_gpus:
        raise UsageError(
            "--tensor-parallel",
            f"{config.tensor_parallel} must be at most --num-gpus ({config.num_gpus}): each entry is split over "
            "that many of the rank's GPUs",
        )


def rag_chunk_tokens(config, model) -> int:
    return RagCorpus.chunk_tokens_for(config, model.bytes_per_token / config.tensor_parallel)


def largest_entry_bytes(config, model) -> int:
    """What the largest entry a run can write takes in a tier (whole 4 KiB blocks). `run` refuses a storage
    tier smaller than this: every entry that reaches storage must fit there."""
    chunk = rag_chunk_tokens(config, model) if config.enable_rag else None
    return align_up(entry_bytes(largest_entry_tokens(config, chunk), model.bytes_per_token, config.tensor_parallel))


def live_entries_per_user(config) -> float:
    """The entries of a user's current conversation that its requests read: all its turns, or at most the
    current and the previous one (fewer when conversations are shorter); one without multi-turn."""
    turns = mean_conversation_turns(config)  # 1 without multi-turn
    return turns if config.multi_turn_reads == "all" else min(2.0, turns)


def gpu_tier_bytes(config) -> int:
    """The GPU tier of one rank: --gpu-mem-gb on each of its --num-gpus GPUs."""
    return int(config.gpu_mem_gb * config.num_gpus * GIB)


def compute(config, models) -> dict:
    check_parallelism(config)
    model = Registry(models).get(config.model)
    bpt, tp = model.bytes_per_token, config.tensor_parallel
    mean_tokens = mean_context_tokens(config.workload)
    per_user = math.ceil(entry_bytes(mean_tokens, bpt, tp) * live_entries_per_user(config))
    largest_entry = largest_entry_bytes(config, model)
    prompts = 0 if config.disable_prefix_caching else config.system_prompts  # each written once per rank
    prefix = prompts * entry_bytes(config.system_prompt_tokens, bpt, tp)
    rag = 0
    if config.enable_rag:
        low, high = rag_doc_tokens(config, model)
        rag = entry_bytes(config.rag_num_docs * (low + high) / 2, bpt, tp)
    ranks, users = config.ranks, config.num_users
    per_rank = per_user * users + prefix + rag
    gpu, cpu = gpu_tier_bytes(config), int(config.cpu_mem_gb * GIB)
    storage_per_rank = math.ceil(max(per_rank - gpu - cpu, 0) * HEADROOM) + largest_entry
    memory_per_rank = cpu + config.io_depth * mib_bytes(config.io_chunk_mib) + ENGINE_OVERHEAD_BYTES
    return {
        "model": model.name,
        "bytes_per_token": bpt,
        "num_gpus_per_rank": config.num_gpus,
        "tensor_parallel": tp,
        "num_users_per_rank": users,
        "ranks": ranks,
        "mean_entry_tokens": round(mean_tokens, 1),
        "live_entries_per_user": round(live_entries_per_user(config), 3),
        "largest_entry_bytes": largest_entry,
        "per_user_working_set_bytes": per_user,
        "prefix_bytes_per_rank": prefix,
        "rag_bytes_per_rank": rag,
        "working_set_bytes_per_rank": per_rank,
        "total_working_set_bytes": per_rank * ranks,
        "recommended": {
            "gpu_mem_bytes_per_rank": per_rank,
            "cpu_mem_bytes_per_rank": per_rank,
            "storage_capacity_bytes_per_rank": math.ceil(per_rank * HEADROOM) + largest_entry,
        },
        "tiers_bytes_per_rank": {"gpu": gpu, "cpu": cpu},
        "storage_bytes_needed_per_rank": storage_per_rank,
        "storage_bytes_needed": storage_per_rank * ranks,
        "host_memory_bytes_needed_per_rank": memory_per_rank,
        "host_memory_bytes_needed": memory_per_rank * ranks,
    }


def _gib(nbytes: int) -> str:
    return f"{nbytes / GIB:,.2f} GiB"


def format_table(report: dict) -> str:
    rows = [
        ("model", report["model"]),
        ("bytes per token", f"{report['bytes_per_token']:,}"),
        ("users per rank x ranks", f"{report['num_users_per_rank']} x {report['ranks']}"),
        ("GPUs per rank, tensor parallel", f"{report['num_gpus_per_rank']}, {report['tensor_parallel']}"),
        ("per-user working set", _gib(report["per_user_working_set_bytes"])),
        ("system prompts per rank", _gib(report["prefix_bytes_per_rank"])),
        ("RAG documents per rank", _gib(report["rag_bytes_per_rank"])),
        ("working set per rank", _gib(report["working_set_bytes_per_rank"])),
        ("total working set", _gib(report["total_working_set_bytes"])),
        ("storage needed (all ranks)", _gib(report["storage_bytes_needed"])),
        ("host memory needed (all ranks)", _gib(report["host_memory_bytes_needed"])),
        ("recommended storage per rank", _gib(report["recommended"]["storage_capacity_bytes_per_rank"])),
    ]
    width = max(len(name) for name, _value in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def run_datasize(config, models, stdout, stderr) -> int:
    report = compute(config, models)
    problems = []
    free = config.check_free_bytes
    if free is not None and report["storage_bytes_needed"] > free * AUTO_STORAGE_SHARE:
        problems.append(
            f"storage: needs {report['storage_bytes_needed']:,} bytes "
            f"({_gib(report['storage_bytes_needed'])}), but a run uses at most {AUTO_STORAGE_SHARE:.0%} of the "
            f"{free:,} bytes free (--check-free-bytes)"
        )
    if config.check_mem_bytes is not None and report["host_memory_bytes_needed"] > config.check_mem_bytes:
        problems.append(
            f"memory: needs {report['host_memory_bytes_needed']:,} bytes "
            f"({_gib(report['host_memory_bytes_needed'])}), only {config.check_mem_bytes:,} available "
            f"(--check-mem-bytes)"
        )
    report["fits"] = not problems
    report["problems"] = problems
    stdout.write((json.dumps(report, indent=2) if config.json else format_table(report)) + "\n")
    for problem in problems:
        stderr.write(f"kvcache datasize: will not fit: {problem}\n")
    return 1 if problems else 0
