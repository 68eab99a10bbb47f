"""`kvcache report R.json... --html OUT.html`: one self-contained page (no script, no link, the plots inlined
as PNG data) to read a run at a glance, or to compare several (their plots overlaid, their figures side by
side with the change against the first: kvcache.compare).

The page holds: the headline; each tier's read and write bandwidth and p95 over the window; the
latency percentile curves from the histograms pooled over the ranks (decoded from the result's per-rank
encodings); per-rank bandwidth bars with the stragglers marked; each QoS class's compliance against its
target; the tiers; the warnings; the settings and the environment. Made with matplotlib (the [report] extra)
through its object API, so no display and no pyplot state are involved.
"""

import html
import math
from typing import Dict, List, Optional, Tuple

from kvcache import export
from kvcache.compare import comparison
from kvcache.errors import UsageError
from kvcache.headline import headline
from kvcache.html_device import device_section
from kvcache.html_parts import COLORS, DPI, png_image, table
from kvcache.metrics import OPS, TIERS, decode, merge, values_at_percentiles
from kvcache.units import GIB
from kvcache.workload import QOS_COMPLIANCE

HTML_OPTION = "--html"
HTML_HINT = "needs matplotlib: pip install 'storagebench-kvcache[report]'"
# The latency curves' x axis, as the "nines" of each percentile (90 -> 1, 99 -> 2, 99.9 -> 3 ...).
CURVE_PERCENTILES = (0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999)
CURVES = (
    ("storage.read", "storage read"),
    ("storage.write", "storage write"),
    ("ttft", "TTFT"),
    ("end_to_end", "end to end"),
)
RANK_LABELS_SHOWN = 48  # more ranks than this: every n-th rank is labelled
STRAGGLER_COLOR = "#d62728"
STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
pre { background: #f4f4f4; padding: 0.8em; white-space: pre-wrap; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ccc; padding: 2px 8px; }
td { overflow-wrap: anywhere; } th { background: #eee; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.differs td { background: #fff4d6; } .failed { background: #fde0e0; padding: 0.6em; border: 1px solid #d62728; }
.warning { background: #fff4d6; padding: 0.4em 0.6em; margin: 0.3em 0; } img { max-width: 100%; }
"""


def figure_class():
    """matplotlib's Figure, or exit 2 naming the extra that brings it (checked before anything is read)."""
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415 - an optional extra, imported only for --html
    except ImportError:
        raise UsageError(HTML_OPTION, HTML_HINT) from None
    return Figure


def pooled_histograms(result: dict) -> Dict[str, object]:
    """Each curve's histogram pooled over the ranks that recorded it (a failed rank's may be absent)."""
    ranks = [rank.get("histograms") or {} for rank in result.get("per_rank", [])]
    return {name: merge(decode(rank[name]) for rank in ranks if rank.get(name)) for name, _label in CURVES}


def percentile_curve(hist) -> Optional[Tuple[List[float], List[float]]]:
    """(nines, latency ms) over CURVE_PERCENTILES; None for an empty histogram."""
    if hist.get_total_count() == 0:
        return None
    nines = [_nines(q) for q in CURVE_PERCENTILES]
    return nines, values_at_percentiles(hist, CURVE_PERCENTILES)


def _nines(percentile: float) -> float:
    return -math.log10(1 - percentile / 100)


def _labels(results: List[Tuple[str, dict]]) -> List[str]:
    return ["run"] if len(results) == 1 else [f"R{index + 1}" for index in range(len(results))]


def series_tiers(results) -> List[str]:
    """The tiers that moved bytes in any sample of any result, in tier order (a simulated GPU moves none)."""
    samples = [point for _path, result in results for point in result.get("timeseries") or []]
    return [tier for tier in TIERS if any(point.get(f"{tier}_{op}_bytes_per_s") for point in samples for op in OPS)]


def timeseries_figure(figure_class, results, labels):
    """For each tier that moved bytes: its read and write GiB/s (left) and the worst rank's read and write p95
    (right) over the window; one colour per result, reads solid, writes dashed."""
    tiers = series_tiers(results)
    if not tiers:
        return None
    figure = figure_class(figsize=(10, 2.8 * len(tiers) + 0.6), dpi=DPI, layout="constrained")
    rows = figure.subplots(len(tiers), 2, sharex=True, squeeze=False)
    for (bandwidth, latency), tier in zip(rows, tiers):
        for index, ((_path, result), label) in enumerate(zip(results, labels)):
            series = result.get("timeseries") or []
            times = [point["t_s"] for point in series]
            for op, style in zip(OPS, ("-", "--")):
                color = COLORS[index % len(COLORS)]
                gib = [point.get(f"{tier}_{op}_bytes_per_s", 0) / GIB for point in series]
                bandwidth.plot(times, gib, color=color, linestyle=style, label=f"{label} {op}")
                p95 = [point.get(f"{tier}_{op}_p95_ms_max_rank") for point in series]
                shown = [float("nan") if value is None else value for value in p95]
                latency.plot(times, shown, color=color, linestyle=style, marker=".", label=f"{label} {op}")
        bandwidth.set_ylabel(f"{tier} GiB/s")
        latency.set_ylabel(f"{tier} p95 ms (worst rank)")
        for axis in (bandwidth, latency):
            axis.set_ylim(bottom=0)
            axis.grid(alpha=0.3)
        bandwidth.legend(loc="upper right", fontsize="x-small", ncol=2)
    for axis in rows[-1]:
        axis.set_xlabel("seconds into the window")
    return figure


def latency_figure(figure_class, results, labels):
    """Latency against percentile for each curve, one line per result (log scale: the tail is what matters)."""
    pooled = [pooled_histograms(result) for _path, result in results]
    if not any(percentile_curve(hists[name]) for hists in pooled for name, _label in CURVES):
        return None
    figure = figure_class(figsize=(10, 6.5), dpi=DPI, layout="constrained")
    axes = figure.subplots(2, 2).flatten()
    ticks = [_nines(q) for q in (50.0, 90.0, 99.0, 99.9, 99.99, 99.999)]
    for axis, (name, title) in zip(axes, CURVES):
        drawn = False
        for index, (hists, label) in enumerate(zip(pooled, labels)):
            curve = percentile_curve(hists[name])
            if curve:
                axis.plot(*curve, color=COLORS[index % len(COLORS)], marker=".", label=label)
                drawn = True
        axis.set_title(title, fontsize="medium")
        axis.set_xticks(ticks, ["p50", "p90", "p99", "p99.9", "p99.99", "p99.999"], fontsize="small")
        axis.grid(alpha=0.3)
        axis.set_ylabel("ms")
        if drawn:
            axis.set_yscale("log")
            if len(labels) > 1:
                axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, "nothing recorded", ha="center", va="center", transform=axis.transAxes)
    return figure


def per_rank_figure(figure_class, result):
    """Each rank's storage read and write bandwidth; stragglers (kvcache.result) in red and named."""
    ranks = result.get("per_rank") or []
    if not ranks:
        return None
    stragglers = set((result.get("aggregate") or {}).get("stragglers") or [])
    figure = figure_class(figsize=(10, 3.6), dpi=DPI, layout="constrained")
    axis = figure.subplots()
    positions = list(range(len(ranks)))
    reads = [r["tiers"]["storage"]["read_bandwidth_bytes_per_s"] / GIB for r in ranks]
    writes = [r["tiers"]["storage"]["write_bandwidth_bytes_per_s"] / GIB for r in ranks]
    edge = [STRAGGLER_COLOR if r["rank"] in stragglers else "none" for r in ranks]
    axis.bar(positions, reads, color=COLORS[0], edgecolor=edge, linewidth=2, label="read")
    axis.bar(positions, writes, bottom=reads, color=COLORS[2], edgecolor=edge, linewidth=2, label="write")
    for position, rank in zip(positions, ranks):
        if rank["rank"] in stragglers:
            top = reads[position] + writes[position]
            axis.annotate("straggler", (position, top), ha="center", va="bottom", color=STRAGGLER_COLOR)
    step = max(1, len(ranks) // RANK_LABELS_SHOWN)
    shown = positions[::step]
    axis.set_xticks(shown, [f"{ranks[i]['rank']}\n{ranks[i]['host']}" for i in shown], fontsize="x-small")
    axis.set_ylabel("storage GiB/s")
    axis.set_xlabel("rank / host")
    axis.legend(fontsize="small")
    axis.grid(axis="y", alpha=0.3)
    return figure


def qos_figure(figure_class, results, labels):
    """Each QoS class's share of requests within its p95 target, one bar per result; the line is the target."""
    classes = []
    for _path, result in results:
        classes += [name for name in (result.get("qos") or {}) if name not in classes]
    if not classes:
        return None
    figure = figure_class(figsize=(10, 3.4), dpi=DPI, layout="constrained")
    axis = figure.subplots()
    width = 0.8 / len(results)
    for index, ((_path, result), label) in enumerate(zip(results, labels)):
        qos = result.get("qos") or {}
        shares = [_share(qos.get(name)) for name in classes]
        offsets = [position + (index - (len(results) - 1) / 2) * width for position in range(len(classes))]
        axis.bar(offsets, shares, width=width, color=COLORS[index % len(COLORS)], label=label)
    axis.axhline(QOS_COMPLIANCE * 100, color="black", linestyle=":", label=f"{QOS_COMPLIANCE:.0%} within target")
    names = [f"{name}\np95 target {_target(results, name)} ms" for name in classes]
    axis.set_xticks(range(len(classes)), names, fontsize="small")
    axis.set_ylabel("% of requests within p95 target")
    axis.set_ylim(0, 105)
    axis.legend(fontsize="small", loc="upper right")
    axis.grid(axis="y", alpha=0.3)
    return figure


def _share(block: Optional[dict]) -> float:
    if not block or block.get("p95_target_compliance") is None:
        return 0.0
    return block["p95_target_compliance"] * 100


def _target(results, name: str) -> str:
    for _path, result in results:
        block = (result.get("qos") or {}).get(name)
        if block:
            return f"{block['targets_ms']['p95']:g}"
    return "?"


def tiers_table(result: dict) -> str:
    rows = []
    for tier in TIERS:
        block = result["tiers"][tier]
        read, write = block["read_latency_ms"], block["write_latency_ms"]
        rows.append(
            [
                tier + (" (simulated)" if block.get("simulated") else ""),
                block["bytes_read"] / GIB,
                block["bytes_written"] / GIB,
                block["read_bandwidth_bytes_per_s"] / GIB,
                block["write_bandwidth_bytes_per_s"] / GIB,
                read["p50"],
                read["p95"],
                read["p99"],
                write["p95"],
            ]
        )
    header = ["tier", "read GiB", "write GiB", "read GiB/s", "write GiB/s", "read p50 ms", "read p95 ms"]
    return table(header + ["read p99 ms", "write p95 ms"], rows)


def comparison_table(results: List[Tuple[str, dict]], labels: List[str]) -> str:
    compared = comparison(results)
    rows = []
    for row in compared["rows"]:
        cells = [row["label"], row["unit"]]
        for index, (value, change) in enumerate(zip(row["values"], row["change_percent"])):
            cells.append(value)
            if index:
                cells.append("" if change is None else f"{change:+.1f} %")
        rows.append(cells)
    header = ["figure", "unit", labels[0]]
    for label in labels[1:]:
        header += [label, f"{label} vs {labels[0]}"]
    parts = [table(header, rows)]
    for group in compared["trials"]:
        members = ", ".join(labels[index] for index in group["results"])
        spread_rows = []
        for row in compared["rows"]:
            found = group["spread"][row["key"]]
            spread_rows.append([row["label"], row["unit"], *(found if found else ("n/a", "n/a", "n/a"))])
        parts.append(f"<p>Trials of one configuration ({html.escape(members)}): median and spread</p>")
        parts.append(table(["figure", "unit", "median", "min", "max"], spread_rows))
    return "".join(parts)


def settings_table(results: List[Tuple[str, dict]], labels: List[str], block: str) -> str:
    """config or environment, flattened: one row per setting, one column per result; differing rows marked."""
    flat = [export.flatten(result.get(block) or {}) for _path, result in results]
    keys: Dict[str, None] = {}
    for one in flat:
        keys.update(dict.fromkeys(one))
    rows = [[key, *(one.get(key) for one in flat)] for key in keys]
    differs = [len({export.cell_text(value) for value in row[1:]}) > 1 for row in rows] if len(results) > 1 else None
    return table(["setting", *labels], rows, differs)


def page(figure_class, results: List[Tuple[str, dict]]) -> str:
    labels = _labels(results)
    parts = [f"<h1>storagebench.kvcache: {html.escape(_title(results))}</h1>"]
    for (path, result), label in zip(results, labels):
        heading = html.escape(path if len(results) == 1 else f"{label}: {path}")
        parts.append(f"<h2>Headline, {heading}</h2><pre>{html.escape(headline(result))}</pre>")
        if result["status"] != "ok":
            parts.append(f'<p class="failed">The run failed: {html.escape(str(result.get("error")))}</p>')
        parts += [f'<p class="warning">{html.escape(str(warning))}</p>' for warning in result.get("warnings") or []]
    if len(results) > 1:
        parts.append(f"<h2>Comparison</h2>{comparison_table(results, labels)}")
    plots = (
        ("Tiers over the window", timeseries_figure(figure_class, results, labels)),
        ("Latency percentiles (pooled over the ranks)", latency_figure(figure_class, results, labels)),
        ("QoS: requests within each class's p95 target", qos_figure(figure_class, results, labels)),
    )
    for title, figure in plots:
        body = png_image(figure, title) if figure else "<p>Nothing was recorded for this plot.</p>"
        parts.append(f"<h2>{html.escape(title)}</h2>{body}")
    for (_path, result), label in zip(results, labels):
        suffix = "" if len(results) == 1 else f", {label}"
        figure = per_rank_figure(figure_class, result)
        body = png_image(figure, f"per-rank bandwidth{suffix}") if figure else "<p>No rank finished.</p>"
        parts.append(f"<h2>Per rank{html.escape(suffix)}</h2>{body}")
        parts.append(f"<h2>Tiers{html.escape(suffix)}</h2>{tiers_table(result)}")
        parts += device_section(figure_class, result, suffix)
    parts.append(f"<h2>Settings</h2>{settings_table(results, labels, 'config')}")
    parts.append(f"<h2>Environment</h2>{settings_table(results, labels, 'environment')}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(_title(results))}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )


def _title(results: List[Tuple[str, dict]]) -> str:
    if len(results) > 1:
        return f"{len(results)} runs compared"
    config = results[0][1]["config"]
    return f"{config.get('model')}, {results[0][1]['ranks']} rank(s), {results[0][1]['window']['seconds']:.1f} s"


def write_html(path: str, results: List[Tuple[str, dict]], figure_class) -> None:
    text = page(figure_class, results)

    def write(temp: str) -> None:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(text)

    export.write_new_file(HTML_OPTION, path, write)
