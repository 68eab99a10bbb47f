"""The human-readable summary of a result, printed by `kvcache run` and `kvcache report`: headline, then details."""

from typing import List

from kvcache.headline import headline_figures, headline_lines
from kvcache.metrics import OPS
from kvcache.units import GIB


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _count(value) -> str:
    return "-" if value is None else str(value)  # results written before op counts were kept lack them


def _gib(value) -> str:
    return f"{value / GIB:.3f}"


def _step_classes(result: dict, steps: List[dict]) -> List[str]:
    """The QoS classes any step measured: in the workload's order, then any other by name."""
    seen = {name for step in steps for name in step["p95_ms"]}
    known = list((result["config"].get("workload") or {}).get("qos_classes") or {})
    return [name for name in known if name in seen] + sorted(seen - set(known))


def _judged(step: dict, qos: bool, classes: List[str]) -> List[str]:
    """What a step was judged by: each class's p95 and whether it held (qos), or its bandwidth gain (capacity)."""
    if not qos:
        return ["-" if step["gain"] is None else f"{step['gain']:+.1%}"]
    held = "-" if step["holds"] is None else "yes" if step["holds"] else "no"
    return [_ms(step["p95_ms"].get(name)) for name in classes] + [held]


def _action(step: dict) -> str:
    return "stop" if step["action"] == "stop" else f"{step['action']} -> {step['next_users_per_rank']}"


def autoscaling_lines(result: dict) -> List[str]:
    """The search's answer, its condition and one row per step ([] when the run did not autoscale)."""
    block = result.get("autoscaling")
    if not block:
        return []
    steps = block["steps"]
    qos = block["mode"] == "qos"
    classes = _step_classes(result, steps) if qos else []
    judged = [f"{name} p95" for name in classes] + (["holds"] if qos else ["gain"])
    widths = [max(7, len(title)) for title in judged]
    lines = [
        f"autoscaling ({block['mode']}): {len(steps)} step(s) of {block['step_s']:g} s in "
        f"{block['search_s']:.1f} s, ended: {block['ended_because']}",
        f"answer: {block['summary']}",
    ]
    if block["condition"] not in block["summary"]:  # a summary without an answer may not state it
        lines.append(f"condition: {block['condition']}")
    lines += [
        f"{'step':>4} {'t s':>13} {'users/rank':>10} {'users':>7} {'read GiB/s':>10} {'write GiB/s':>11} "
        + " ".join(f"{title:>{width}}" for title, width in zip(judged, widths))
        + "  action"
        + ("  (p95: end-to-end ms)" if qos else ""),
    ]
    for step in steps:
        lines.append(
            f"{step['step']:>4} {step['t_start_s']:>6.1f}-{step['t_end_s']:<6.1f} {step['users_per_rank']:>10} "
            f"{step['users_total']:>7} {_gib(step['read_bytes_per_s']):>10} {_gib(step['write_bytes_per_s']):>11} "
            + " ".join(f"{cell:>{width}}" for cell, width in zip(_judged(step, qos, classes), widths))
            + f"  {_action(step)}"
        )
    return lines


def format_summary(result: dict) -> str:
    """The headline, then the details: every tier, every latency, QoS, the ranks' aggregate, SLA, the
    autoscaling search (when the run had one), warnings."""
    lines: List[str] = headline_lines(headline_figures(result))
    config = result["config"]
    env = result["environment"]
    # With autoscaling, --num-users is only where the search started.
    start = " at the start (autoscaling, below)" if result.get("autoscaling") else ""
    lines.append(
        f"users/rank {config.get('num_users')}{start}  io engine {env.get('io_engine')}  gpu {env.get('gpu_backend')}"
    )
    lines.append("")
    lines.append(
        f"{'tier':<8} {'read GiB':>10} {'write GiB':>10} {'read GiB/s':>11} {'write GiB/s':>12} "
        f"{'read p50':>9} {'read p95':>9} {'read p99':>9} {'write p95':>10} {'reads':>9} {'writes':>9} "
        f"{'entries':>8}  (latency ms; reads/writes: whole entries)"
    )
    for name, tier in result["tiers"].items():
        lines.append(
            f"{name:<8} {_gib(tier['bytes_read']):>10} {_gib(tier['bytes_written']):>10} "
            f"{_gib(tier['read_bandwidth_bytes_per_s']):>11} {_gib(tier['write_bandwidth_bytes_per_s']):>12} "
            f"{_ms(tier['read_latency_ms']['p50']):>9} {_ms(tier['read_latency_ms']['p95']):>9} "
            f"{_ms(tier['read_latency_ms']['p99']):>9} {_ms(tier['write_latency_ms']['p95']):>10} "
            f"{_count(tier.get('read_ops')):>9} {_count(tier.get('write_ops')):>9} {_count(tier.get('entries')):>8}"
            + ("  (simulated)" if tier.get("simulated") else "")
        )
    lines.append("")
    lines.append(
        f"{'latency ms':<20} {'p50':>9} {'p95':>9} {'p99':>9} {'p99.9':>9} {'p99.99':>9} {'max':>9} {'count':>8}"
    )
    storage = result["tiers"]["storage"]
    # Each I/O call of the storage tier (results before these fields have none).
    chunks = {f"storage {op} chunk": storage[f"{op}_chunk_latency_ms"] for op in OPS
              if f"{op}_chunk_latency_ms" in storage}  # fmt: skip
    for name, block in {**result["latency_ms"], **chunks}.items():
        lines.append(
            f"{name:<20} {_ms(block['p50']):>9} {_ms(block['p95']):>9} {_ms(block['p99']):>9} "
            f"{_ms(block['p999']):>9} {_ms(block.get('p9999')):>9} {_ms(block['max']):>9} {block['count']:>8}"
        )
    lines.append("")
    requests, tokens = result["requests"], result["tokens"]
    lines.append(
        f"requests {requests['completed']} ({requests['per_second'] or 0:.2f}/s)  "
        f"prefill tokens/s {tokens['prefill_per_second'] or 0:.0f}  "
        f"generated tokens/s {tokens['generated_per_second'] or 0:.0f}"
    )
    reference = result.get("reference_metrics")
    if reference and reference["storage_throughput_tokens_per_sec"] is not None:
        lines.append(
            f"kv-cache.py storage throughput {reference['storage_throughput_tokens_per_sec']:.1f} tokens/s "
            f"({reference['tokens']} generated tokens / {reference['storage_io_seconds']:.3f} s summed storage I/O; "
            "not a bandwidth)"
        )
    qos = result.get("qos", {})
    if qos:
        lines.append(
            "QoS end-to-end p95 vs target (met: >= 95 % within it): "
            + "  ".join(
                f"{name} {_ms(q['end_to_end_ms']['p95'])}/{q['targets_ms']['p95']:.0f} ms"
                f" {'met' if q['met'] else 'not met'}"
                for name, q in qos.items()
                if q["requests"]
            )
        )
    aggregate = result.get("aggregate")
    if result["ranks"] > 1 and aggregate:
        p95 = aggregate["max_rank_p95_ms"]
        lines.append(
            f"sum of rank bandwidths: read {_gib(aggregate['sum_of_rank_storage_read_bandwidth_bytes_per_s'])}"
            f" GiB/s, write {_gib(aggregate['sum_of_rank_storage_write_bandwidth_bytes_per_s'])} GiB/s;  "
            f"first done {aggregate['first_done_s']:.2f} s, last done {aggregate['last_done_s']:.2f} s;  "
            f"max rank p95 read {_ms(p95['storage.read'])} ms, write {_ms(p95['storage.write'])} ms"
        )
        if aggregate.get("stragglers"):
            lines.append(
                f"stragglers (storage bandwidth < {aggregate['straggler_fraction']:.0%} of the median): "
                f"ranks {', '.join(map(str, aggregate['stragglers']))}"
            )
    autoscaling = autoscaling_lines(result)
    if autoscaling:
        lines.append("")
        lines.extend(autoscaling)
    for warning in result.get("warnings", []):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
