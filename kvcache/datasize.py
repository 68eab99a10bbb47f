"""`kvcache datasize`: what a run needs, from the same model registry and workload as `run`.

Model (documented in the README): a user's live working set is its current turn's entry plus,
with multi-turn, the previous turn it re-reads; each rank also holds one shared system-prompt
prefix per template. Storage must hold what the GPU and CPU tiers cannot, with 25 % headroom
and room for the largest single entry. Host memory per rank is the CPU tier, the I/O buffers
and a fixed engine overhead.
"""

import json
import math

from kvcache.models import Registry
from kvcache.storage_io import align_up
from kvcache.units import GIB, MIB
from kvcache.workload import TEMPLATES, largest_entry_tokens, mean_entry_tokens

HEADROOM = 1.25
ENGINE_OVERHEAD_BYTES = 256 * MIB  # interpreter, numpy, threads, histograms
# `run --storage-capacity-gb 0` takes this share of the free space under --cache-dir (split among the
# host's ranks); the free-space check asks for the same, so datasize and run agree.
AUTO_STORAGE_SHARE = 0.8


def largest_entry_bytes(bytes_per_token: int, prefix_caching: bool = True) -> int:
    """What the largest entry a run can write takes in a tier (whole 4 KiB blocks). `run` refuses a storage
    tier smaller than this: every entry that reaches storage must fit there."""
    return align_up(largest_entry_tokens(prefix_caching) * bytes_per_token)


def compute(config, models) -> dict:
    model = Registry(models).get(config.model)
    bpt = model.bytes_per_token
    entries_per_user = 1 if config.disable_multi_turn else 2
    per_user = math.ceil(mean_entry_tokens() * bpt * entries_per_user)
    largest_entry = largest_entry_bytes(bpt, not config.disable_prefix_caching)
    prefix = 0 if config.disable_prefix_caching else sum(t.system_prompt_tokens for t in TEMPLATES) * bpt
    ranks, users = config.ranks, config.num_users
    per_rank = per_user * users + prefix
    gpu, cpu = int(config.gpu_mem_gb * GIB), int(config.cpu_mem_gb * GIB)
    storage_per_rank = math.ceil(max(per_rank - gpu - cpu, 0) * HEADROOM) + largest_entry
    memory_per_rank = cpu + config.io_depth * config.io_chunk_mib * MIB + ENGINE_OVERHEAD_BYTES
    return {
        "model": model.name,
        "bytes_per_token": bpt,
        "num_users_per_rank": users,
        "ranks": ranks,
        "mean_entry_tokens": round(mean_entry_tokens(), 1),
        "largest_entry_bytes": largest_entry,
        "per_user_working_set_bytes": per_user,
        "prefix_bytes_per_rank": prefix,
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
        ("per-user working set", _gib(report["per_user_working_set_bytes"])),
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
