"""The headline of a result, built once: its figures (`kvcache report --json`) and its lines (`report --headline`,
the top of the summary `kvcache run` and `kvcache report` print, and the report role's headline.txt).

It takes a result that result_reader checked (or that build_result just made): the fields it reads are the
ones the result/v1 schema requires, the dropped-entries block that older results lack, and the autoscaling
block that only --enable-autoscaling runs have.
"""

from typing import List

from kvcache.baseline_result import baseline_line
from kvcache.break_even import break_even_line
from kvcache.device_result import device_line
from kvcache.tracing_result import tracing_line
from kvcache.units import GIB

HOSTS_SHOWN = 8  # names in the headline; the rest are counted


def headline_figures(result: dict) -> dict:
    """The figures of the headline: None where nothing was measured (no I/O, no request, an older result)."""
    storage = result["tiers"]["storage"]
    dropped = result.get("dropped_entries") or {}
    autoscaling = result.get("autoscaling") or {}
    launcher = result["environment"].get("launcher") or {}
    return {
        "status": result["status"],
        "error": result.get("error"),
        "model": result["config"].get("model"),
        "ranks": result["ranks"],
        "hosts": result["hosts"],
        "host_count": result.get("host_count", len(result["hosts"])),
        "window_s": result["window"]["seconds"],
        "storage_read_bytes_per_s": storage["read_bandwidth_bytes_per_s"],
        "storage_write_bytes_per_s": storage["write_bandwidth_bytes_per_s"],
        "storage_read_p95_ms": storage["read_latency_ms"]["p95"],
        "storage_write_p95_ms": storage["write_latency_ms"]["p95"],
        "ttft_p95_ms": result["latency_ms"]["ttft"]["p95"],
        "generated_tokens_per_s": result["tokens"]["generated_per_second"],
        "hit_rate": result["hit_rate"]["overall"],
        "dropped_entries": dropped.get("count"),
        "dropped_share_of_writes": dropped.get("share_of_writes"),
        "sla": sla_verdict(result),
        # The search's one-line answer (or why there is none); None when the run did not autoscale.
        "autoscaling": autoscaling.get("summary"),
        "autoscaling_mode": autoscaling.get("mode"),
        "break_even": break_even_line(result.get("break_even")),
        # What the devices under the cache dirs saw, beside the engine's bytes; None for an older result.
        "device": device_line(result.get("device")),
        # The storage bandwidth as a share of what fio got on the same device (run --baseline); None without.
        "device_share": baseline_line(result.get("baseline")),
        # The block-layer time per request that bpftrace saw (--enable-latency-tracing); None without.
        "block_latency": tracing_line(result.get("latency_tracing")),
        # Older results have no launcher block.
        "launcher": launcher.get("kind"),
        "slurm_job_id": launcher.get("job_id") if launcher.get("kind") == "slurm" else None,
    }


def sla_verdict(result: dict) -> str:
    """PASS, FAIL with the failed criteria, or no verdict and why (a failed run never passes)."""
    sla = result.get("sla") or {}
    # The status is checked here too: a result written before failed runs lost their verdict says PASS.
    if result["status"] != "ok":
        return "no verdict (the run failed)"
    if sla.get("passed") is None:
        return f"no verdict ({sla.get('no_verdict_reason') or 'nothing to judge'})"
    if sla["passed"]:
        return "PASS"
    return "FAIL: " + ", ".join(c["name"] for c in sla["criteria"] if not c["passed"])


def _or_na(value, form: str) -> str:
    return "n/a" if value is None else format(value, form)


def _percent(fraction) -> str:
    # Two decimals at most, as the share of writes is read (12.25 %, 0.0 %).
    return "n/a" if fraction is None else f"{round(fraction * 100, 2)} %"


def _hosts(names: List[str], count: int) -> str:
    shown = ", ".join(names[:HOSTS_SHOWN])
    return shown if count <= HOSTS_SHOWN else f"{shown} and {count - HOSTS_SHOWN} more"


def _launched_by(figures: dict) -> str:
    if figures["launcher"] == "slurm":
        return f", launched by slurm job {figures['slurm_job_id'] or '(no job id)'}"
    return ", launched by mpirun" if figures["launcher"] == "mpirun" else ""


def headline_lines(figures: dict) -> List[str]:
    """The headline as text, one line per subject."""
    # A failed run's figures cover only the part of the window before it failed.
    error = f"  ({figures['error']}; the figures below are partial)" if figures["error"] else ""
    read_gib, write_gib = figures["storage_read_bytes_per_s"] / GIB, figures["storage_write_bytes_per_s"] / GIB
    hosts = _hosts(figures["hosts"], figures["host_count"])
    lines = [
        f"storagebench.kvcache  status: {figures['status'].upper()}{error}",
        f"{figures['ranks']} rank(s) on {figures['host_count']} host(s) ({hosts}), "
        f"{figures['window_s']:.1f} s window, model {figures['model']}{_launched_by(figures)}",
        f"storage read {read_gib:.3f} GiB/s, p95 {_or_na(figures['storage_read_p95_ms'], '.2f')} ms | "
        f"write {write_gib:.3f} GiB/s, p95 {_or_na(figures['storage_write_p95_ms'], '.2f')} ms",
        f"TTFT p95 {_or_na(figures['ttft_p95_ms'], '.2f')} ms, {_or_na(figures['generated_tokens_per_s'], '.1f')} "
        f"generated tokens/s, hit rate {_percent(figures['hit_rate'])}",
        # An entry no tier had room for was never stored: the figures above did not serve the whole workload.
        f"dropped entries {_or_na(figures['dropped_entries'], '')} "
        f"({_percent(figures['dropped_share_of_writes'])} of entry writes)",
        f"SLA (latency profile): {figures['sla']}",
    ]
    if figures["device"] is not None:
        lines.append(figures["device"])
    if figures["device_share"] is not None:
        lines.append(figures["device_share"])
    if figures["block_latency"] is not None:
        lines.append(figures["block_latency"])
    if figures["break_even"] is not None:
        lines.append(figures["break_even"])
    if figures["autoscaling"] is not None:
        lines.append(f"autoscaling ({figures['autoscaling_mode']}): {figures['autoscaling']}")
    return lines


def headline(result: dict) -> str:
    return "\n".join(headline_lines(headline_figures(result)))
