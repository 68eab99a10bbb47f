"""The human-readable summary of a result, printed by `kvcache run` and `kvcache report`: headline, then details."""

from typing import List

from kvcache.headline import headline_figures, headline_lines
from kvcache.units import GIB


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _count(value) -> str:
    return "-" if value is None else str(value)  # results written before op counts were kept lack them


def _gib(value) -> str:
    return f"{value / GIB:.3f}"


def format_summary(result: dict) -> str:
    """The headline, then the details: every tier, every latency, QoS, the ranks' aggregate, SLA, warnings."""
    lines: List[str] = headline_lines(headline_figures(result))
    config = result["config"]
    env = result["environment"]
    lines.append(
        f"users/rank {config.get('num_users')}  io engine {env.get('io_engine')}  gpu {env.get('gpu_backend')}"
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
    for name, block in result["latency_ms"].items():
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
    for warning in result.get("warnings", []):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
