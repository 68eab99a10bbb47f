"""Several results side by side: each headline figure per result and its change against the first, and, for
trials of one configuration, their median and spread (`kvcache report A.json B.json ...`, in the terminal and
in the HTML report).

Trials are results whose settings are equal but for those that differ between trials by nature (the seed, the
cache directory, the output paths, how much is printed); a group of two or more gets a median row per figure.
"""

import json
import statistics
from typing import Dict, List, Optional, Tuple

from kvcache.headline import headline_figures
from kvcache.units import GIB

# (figure key in headline_figures, label, unit, scale applied to the figure for showing it)
FIGURES = (
    ("storage_read_bytes_per_s", "storage read", "GiB/s", 1 / GIB),
    ("storage_write_bytes_per_s", "storage write", "GiB/s", 1 / GIB),
    ("storage_read_p95_ms", "storage read p95", "ms", 1),
    ("storage_write_p95_ms", "storage write p95", "ms", 1),
    ("ttft_p95_ms", "TTFT p95", "ms", 1),
    ("generated_tokens_per_s", "generated tokens/s", "tok/s", 1),
    ("hit_rate", "hit rate", "%", 100),
    ("dropped_share_of_writes", "dropped entries", "% of writes", 100),
    ("window_s", "window", "s", 1),
)
NOT_A_TRIAL_SETTING = (
    "seed",
    "seeds_per_rank",
    "cache_dir",
    "keep_cache",
    "output",
    "io_trace_log",
    "config",
    "quiet",
    "progress",
    "log_level",
)


def figure_values(result: dict) -> Dict[str, Optional[float]]:
    """Each compared figure of one result, scaled for showing (None where nothing was measured)."""
    figures = headline_figures(result)
    return {key: None if figures[key] is None else figures[key] * scale for key, _label, _unit, scale in FIGURES}


def change_percent(value: Optional[float], base: Optional[float]) -> Optional[float]:
    """(value - base) / base in %; None when either is missing or the base is 0 (no ratio to state)."""
    if value is None or base is None or base == 0:
        return None
    return (value - base) / base * 100


def trial_key(result: dict) -> str:
    settings = {key: value for key, value in result.get("config", {}).items() if key not in NOT_A_TRIAL_SETTING}
    return json.dumps(settings, sort_keys=True, default=str)


def trial_groups(results: List[Tuple[str, dict]]) -> List[List[int]]:
    """Indexes of the results that are trials of one configuration, for each configuration met twice or more."""
    groups: Dict[str, List[int]] = {}
    for index, (_path, result) in enumerate(results):
        groups.setdefault(trial_key(result), []).append(index)
    return [members for members in groups.values() if len(members) > 1]


def spread(values: List[Optional[float]]) -> Optional[Tuple[float, float, float]]:
    """(median, min, max) of the values measured; None if none was."""
    measured = [value for value in values if value is not None]
    if not measured:
        return None
    return statistics.median(measured), min(measured), max(measured)


def comparison(results: List[Tuple[str, dict]]) -> dict:
    """The figures of every result, their change against the first, and the trial groups' median and spread."""
    values = [figure_values(result) for _path, result in results]
    base = values[0]
    rows = []
    for key, label, unit, _scale in FIGURES:
        rows.append(
            {
                "key": key,
                "label": label,
                "unit": unit,
                "values": [one[key] for one in values],
                "change_percent": [change_percent(one[key], base[key]) for one in values],
            }
        )
    groups = []
    for members in trial_groups(results):
        groups.append(
            {
                "results": members,
                "spread": {key: spread([values[index][key] for index in members]) for key, *_rest in FIGURES},
            }
        )
    return {"paths": [path for path, _result in results], "rows": rows, "trials": groups}


def _number(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"


def _change(value: Optional[float]) -> str:
    return "" if value is None else f"{value:+.1f} %"


def format_comparison(compared: dict) -> str:
    """The comparison as a text table: one column per result (R1 = the first path, ...), changes against R1."""
    paths = compared["paths"]
    lines = [f"R{index + 1} = {path}" for index, path in enumerate(paths)]
    names = [f"R{index + 1}" for index in range(len(paths))]
    header = f"{'figure':<22}{'unit':<13}" + "".join(f"{name:>22}" for name in names)
    lines += ["", "comparison (change against R1)", header]
    for row in compared["rows"]:
        cells = [
            f"{_number(value)} {_change(change) if index else ''}".rstrip()
            for index, (value, change) in enumerate(zip(row["values"], row["change_percent"]))
        ]
        lines.append(f"{row['label']:<22}{row['unit']:<13}" + "".join(f"{cell:>22}" for cell in cells))
    for group in compared["trials"]:
        members = ", ".join(names[index] for index in group["results"])
        lines += ["", f"trials of one configuration ({members}): median (min .. max)"]
        for key, label, unit, _scale in FIGURES:
            found = group["spread"][key]
            shown = "n/a" if found is None else f"{_number(found[0])} ({_number(found[1])} .. {_number(found[2])})"
            lines.append(f"{label:<22}{unit:<13}{shown}")
    return "\n".join(lines)
