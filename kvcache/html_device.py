"""The HTML report's section on what the devices saw: each host's device counters beside the engine's bytes, their
time series (bandwidth, utilisation, queue depth, page cache) and, for a traced run, the block-layer histograms."""

import html
from typing import List, Optional

from kvcache.html_parts import COLORS, DPI, png_image, table
from kvcache.tracing_result import OP_CLASSES, pooled_buckets
from kvcache.units import GIB

HOSTS_DRAWN = len(COLORS)  # one colour per host; a larger fleet's plot names how many it leaves out
ENGINE_COLOR = "black"


def device_table(block: dict) -> str:
    """Each host's device counters beside its ranks' storage bytes."""
    rows = []
    for host in block["per_host"]:
        counted = host["read_bytes"] is not None
        rows.append(
            [
                host["host"],
                host["device"] or host["mount_point"] or "",
                host["read_bytes"] / GIB if counted else host["why_none"],
                host["write_bytes"] / GIB if counted else "",
                host["read_ratio"],
                host["write_ratio"],
                host["utilisation"],
                host["avg_queue_depth"],
            ]
        )
    header = ["host", "device", "device read GiB", "device write GiB", "read / engine", "write / engine"]
    return table(header + ["utilisation", "queue depth"], rows)


def _values(series: List[dict], name: str, scale: float = 1.0) -> List[float]:
    return [float("nan") if point.get(name) is None else point[name] / scale for point in series]


def device_figure(figure_class, result: dict):
    """Over the window, per host: the device's read and write GiB/s (the engine's, all ranks, in black), its
    utilisation, its average queue depth and the page cache's dirty and writeback GiB. None without samples."""
    hosts = [h for h in (result.get("device") or {}).get("per_host", []) if h.get("timeseries")]
    if not hosts:
        return None
    figure = figure_class(figsize=(10, 6.2), dpi=DPI, layout="constrained")
    (bandwidth, busy), (depth, cache) = figure.subplots(2, 2, sharex=True)
    engine = result.get("timeseries") or []
    engine_times = [point["t_s"] for point in engine]
    for op, style in (("read", "-"), ("write", "--")):
        gib = _values(engine, f"storage_{op}_bytes_per_s", GIB)
        bandwidth.plot(engine_times, gib, color=ENGINE_COLOR, linestyle=style, linewidth=1, label=f"engine {op}")
    for index, host in enumerate(hosts[:HOSTS_DRAWN]):
        series, color, name = host["timeseries"], COLORS[index], host["host"]
        times = [point["t_s"] for point in series]
        for op, style in (("read", "-"), ("write", "--")):
            gib = _values(series, f"{op}_bytes_per_s", GIB)
            bandwidth.plot(times, gib, color=color, linestyle=style, marker=".", label=f"{name} {op}")
        busy.plot(times, [v * 100 for v in _values(series, "utilisation")], color=color, marker=".", label=name)
        depth.plot(times, _values(series, "avg_queue_depth"), color=color, marker=".", label=name)
        for state, style in (("dirty", "-"), ("writeback", ":")):
            gib = _values(series, f"{state}_bytes", GIB)
            cache.plot(times, gib, color=color, linestyle=style, label=f"{name} {state}")
    left_out = len(hosts) - HOSTS_DRAWN
    if left_out > 0:
        figure.suptitle(f"{HOSTS_DRAWN} of {len(hosts)} hosts drawn", fontsize="small")
    for axis, label in ((bandwidth, "device GiB/s"), (busy, "% of the time busy"), (depth, "average queue depth"),
                        (cache, "page cache GiB")):  # fmt: skip
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="x-small", loc="upper right", ncol=2)
    busy.set_ylim(0, 105)
    for axis in (depth, cache):
        axis.set_xlabel("seconds into the window")
    return figure


def _bucket_label(low: int, unit: str) -> str:
    for size, name in ((1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")):
        if unit == "B" and low >= size:
            return f"{low // size}{name}"
    return f"{low}"


def tracing_figure(figure_class, block: Optional[dict]):
    """The traced requests of every host, pooled: how long the device took (D2C) and how large they were, for
    reads and for writes, as bpftrace's log2 buckets. None without a histogram."""
    histograms = (("d2c_us", "µs on the device (D2C)", "µs"), ("request_bytes", "request size", "B"))
    pooled = {name: pooled_buckets(block, name) for name, _title, _unit in histograms}
    if not any(pooled.values()):
        return None
    figure = figure_class(figsize=(10, 5.6), dpi=DPI, layout="constrained")
    rows = figure.subplots(2, 2)
    for row, (name, title, unit) in zip(rows, histograms):
        for axis, (op, _letter), color in zip(row, OP_CLASSES, COLORS):
            buckets = pooled[name].get(op, [])
            axis.set_title(f"{op}: {title}", fontsize="medium")
            axis.grid(axis="y", alpha=0.3)
            if not any(b["count"] for b in buckets):
                axis.text(0.5, 0.5, "no request traced", ha="center", va="center", transform=axis.transAxes)
                continue
            positions = range(len(buckets))
            axis.bar(positions, [b["count"] for b in buckets], color=color)
            axis.set_xticks(positions, [_bucket_label(b["min"], unit) for b in buckets], fontsize="x-small",
                            rotation=45)  # fmt: skip
            axis.set_ylabel("requests")
            axis.set_xlabel(f"{unit}, from (log2 buckets)")
    return figure


def device_section(figure_class, result: dict, suffix: str) -> List[str]:
    """The section's headings and bodies; nothing for a result without device counters or tracing."""
    parts = []
    block = result.get("device")
    if block:
        parts.append(f"<h2>What the devices saw{html.escape(suffix)}</h2>")
        figure = device_figure(figure_class, result)
        if figure:
            parts.append(png_image(figure, f"device counters over the window{suffix}"))
        parts.append(device_table(block))
    figure = tracing_figure(figure_class, result.get("latency_tracing"))
    if figure:
        parts.append(f"<h2>Block-layer latency and request sizes (bpftrace){html.escape(suffix)}</h2>")
        parts.append(png_image(figure, f"block-layer histograms{suffix}"))
    return parts
