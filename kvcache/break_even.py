"""Break-even against recompute: the context length above which loading a context's KV cache from the storage
under test is faster than recomputing it (the prefill) on the GPU.

Loading L tokens takes L x bytes per token at the speed one load saw in this run: the storage's mean entry read
latency over its mean entry size (queueing under the run's concurrency included, as a request sees it).
Recomputing them takes the prefill's FLOPs at the GPUs' peak x utilisation: 2 x active parameters x L for the
weights, plus 2 x layers x attention width x L^2 for causal attention (QK^T and AV, each half of an L x L
product). Loading grows with L and recompute with L^2, so above one length loading wins:
L = (load seconds per token - 2 x active parameters / FLOP/s) / (2 x layers x width / FLOP/s).
"""

import math
from typing import Optional

# Dense FP16/BF16 tensor peaks in TFLOP/s, from the vendors' datasheets (without structured sparsity).
GPU_PEAK_TFLOPS = {
    "a100": 312.0,
    "h100-pcie": 756.0,
    "h100": 989.0,
    "h200": 989.0,
    "b200": 2250.0,
    "l40s": 362.0,
    "mi300x": 1307.0,
}
DEFAULT_GPU_PROFILE = "h100"
# Prefill reaches about half the peak on these GPUs (model FLOPs utilisation); --gpu-utilization overrides it.
DEFAULT_UTILIZATION = 0.5
EXAMPLE_CONTEXT_TOKENS = 8192  # the summary's worked example: load and recompute times at this length


def prefill_flops(model, tokens: float) -> float:
    width = model.attention_dim or model.hidden_dim
    return 2.0 * model.active_params * tokens + 2.0 * model.layers * width * tokens * tokens


def crossing_tokens(model, load_s_per_token: float, flops_per_s: float) -> float:
    """The context length (tokens) above which loading is faster than recomputing: 0 when it is at any length."""
    per_token_weights = 2.0 * model.active_params / flops_per_s
    per_token_squared = 2.0 * model.layers * (model.attention_dim or model.hidden_dim) / flops_per_s
    if load_s_per_token <= per_token_weights:
        return 0.0
    return (load_s_per_token - per_token_weights) / per_token_squared


def break_even_block(config, model, storage: dict) -> dict:
    """The result's break_even block from the storage tier's figures: the inputs, the crossing length (or why
    there is none) and an example."""
    peak = config.gpu_peak_tflops or GPU_PEAK_TFLOPS[config.gpu_profile]
    # One rank stands for one model instance on tensor_parallel GPUs, which recompute together; the instance loads
    # the whole context (each GPU its 1/TP share), as the rank's entry reads did.
    flops_per_s = peak * 1e12 * config.gpu_utilization * config.tensor_parallel
    mean_ms = storage["read_latency_ms"]["mean"]
    mean_bytes = storage["bytes_read"] / storage["read_ops"] if storage["read_ops"] else 0.0
    block = {
        "gpu_profile": "custom" if config.gpu_peak_tflops else config.gpu_profile,
        "gpu_peak_tflops": peak,
        "gpu_utilization": config.gpu_utilization,
        "tensor_parallel": config.tensor_parallel,
        "active_params": model.active_params or None,
        "bytes_per_token": model.bytes_per_token,
        "read_latency_mean_ms": mean_ms,
        "read_mean_bytes": round(mean_bytes, 3),
        "context_tokens": None,
        "reason": None,
        "example": None,
    }
    if not model.active_params:
        block["reason"] = f"the model's parameter count is not known (give models.{model.name}.active_params)"
    elif not mean_bytes or not mean_ms:
        block["reason"] = "no storage read was measured"
    if block["reason"]:
        return block
    load_s_per_token = model.bytes_per_token * (mean_ms / 1000.0) / mean_bytes
    block["context_tokens"] = math.ceil(crossing_tokens(model, load_s_per_token, flops_per_s))
    block["example"] = {
        "context_tokens": EXAMPLE_CONTEXT_TOKENS,
        "load_s": round(EXAMPLE_CONTEXT_TOKENS * load_s_per_token, 6),
        "recompute_s": round(prefill_flops(model, EXAMPLE_CONTEXT_TOKENS) / flops_per_s, 6),
    }
    return block


def break_even_line(block: Optional[dict]) -> Optional[str]:
    """The headline's line; None for a result without the block (written before it existed)."""
    if not block:
        return None
    gpus = f"{block['gpu_profile']} x{block['tensor_parallel']} at {block['gpu_utilization']:.0%}"
    example = block.get("example")
    if block["context_tokens"] is None or not example:
        return f"break-even vs recompute ({gpus}): n/a ({block.get('reason') or 'not computed'})"
    above = f"above {block['context_tokens']:,} tokens" if block["context_tokens"] else "at any length"
    return (
        f"break-even vs recompute ({gpus}): loading a context from this storage is faster {above} "
        f"(at {example['context_tokens']:,} tokens: load {example['load_s']:.3f} s, recompute "
        f"{example['recompute_s']:.3f} s)"
    )
