"""`kvcache run --baseline FILE`: the storage bandwidth of each host's ranks as a share of what fio got there.

Each host reads the file at the same path (`kvcache baseline` wrote it on that host). Reads and writes are stated
against fio's read and write jobs alone, and the two together against fio's mixed job: the engine's window mixes
reads and writes on one device, so a perfect engine scores 100 % on the mix, and less on each direction alone.
"""

import json
from typing import List, Optional

from kvcache.baseline import SCHEMA
from kvcache.errors import UsageError, shown_path
from kvcache.units import mib_bytes

MAX_FILE_BYTES = 1 << 20  # a baseline is a few hundred bytes


def load_baseline(path: str) -> dict:
    """The checked baseline of this host; UsageError (exit 2, before the run) for anything else."""
    where = shown_path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError("--baseline", f"cannot read {where}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError("--baseline", f"{where} is not UTF-8 text") from None
    try:
        baseline = json.loads(text) if len(text) <= MAX_FILE_BYTES else None
    except (ValueError, RecursionError):
        baseline = None
    if not isinstance(baseline, dict) or baseline.get("schema") != SCHEMA:
        raise UsageError("--baseline", f"{where} is not a baseline of `kvcache baseline` (schema {SCHEMA})")
    for name in ("read", "write"):
        if not _rate(baseline.get(name)):
            raise UsageError("--baseline", f"{where}: {name}.bytes_per_s must be a positive number")
    mixed = baseline.get("mixed")
    if not isinstance(mixed, dict) or _rate(mixed.get("read")) is None or _rate(mixed.get("write")) is None:
        raise UsageError("--baseline", f"{where}: mixed.read and mixed.write must hold bytes_per_s")
    return baseline


def _rate(block) -> Optional[float]:
    value = block.get("bytes_per_s") if isinstance(block, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return float(value)


def baseline_mismatches(baseline: dict, config, cache_dir: str, host: str) -> List[str]:
    """Warnings when the baseline was measured at another shape or place than this run."""
    lines = []
    chunk = mib_bytes(config.io_chunk_mib)
    if baseline.get("chunk_bytes") != chunk:
        lines.append(f"the baseline was measured with {baseline.get('chunk_bytes')}-byte chunks, this run uses {chunk}")
    if baseline.get("io_engine") != config.io_engine:
        lines.append(f"the baseline used {baseline.get('io_engine')} I/O, this run {config.io_engine}")
    if baseline.get("host") != host or baseline.get("cache_dir") != cache_dir:
        lines.append(
            f"the baseline was measured on {baseline.get('host')} in {baseline.get('cache_dir')}, "
            f"this run works on {host} in {cache_dir}"
        )
    return lines


def _percent(engine: float, device: float) -> Optional[float]:
    return round(100 * engine / device, 1) if device else None


def _shares(engine_read: float, engine_write: float, read: float, write: float, mixed: float) -> dict:
    return {
        "read_percent": _percent(engine_read, read),
        "write_percent": _percent(engine_write, write),
        "mixed_percent": _percent(engine_read + engine_write, mixed),
    }


def baseline_block(payloads: List[dict], seconds: float) -> Optional[dict]:
    """Per host and for all of them: the engine's bytes per second over the window against the baselines'."""
    hosts = []
    for payload in payloads:
        baseline = payload.get("baseline")
        if baseline is None:
            continue
        ranks = [p for p in payloads if p["host"] == payload["host"]]
        engine_read = sum(p["metrics"]["bytes"]["storage.read"] for p in ranks) / seconds if seconds else 0.0
        engine_write = sum(p["metrics"]["bytes"]["storage.write"] for p in ranks) / seconds if seconds else 0.0
        device = {
            "read_bytes_per_s": _rate(baseline["read"]),
            "write_bytes_per_s": _rate(baseline["write"]),
            "mixed_bytes_per_s": _rate(baseline["mixed"]["read"]) + _rate(baseline["mixed"]["write"]),
        }
        hosts.append(
            {
                "host": payload["host"],
                "baseline": baseline,
                "engine_read_bytes_per_s": round(engine_read),
                "engine_write_bytes_per_s": round(engine_write),
                **device,
                **_shares(engine_read, engine_write, *device.values()),
            }
        )
    if not hosts:
        return None
    total = {name: sum(h[name] for h in hosts) for name in ("engine_read_bytes_per_s", "engine_write_bytes_per_s")}
    device = {
        name: sum(h[name] for h in hosts) for name in ("read_bytes_per_s", "write_bytes_per_s", "mixed_bytes_per_s")
    }
    return {**total, **device, **_shares(*total.values(), *device.values()), "per_host": hosts}


def _shown(percent: Optional[float]) -> str:
    return "n/a" if percent is None else f"{percent:.0f} %"


def baseline_line(block: Optional[dict]) -> Optional[str]:
    """The headline's line; None without a baseline."""
    if not block:
        return None
    hosts = block["per_host"]
    where = hosts[0]["baseline"].get("device") if len(hosts) == 1 else None
    of = where or (f"the devices of {len(hosts)} hosts" if len(hosts) > 1 else "the device")
    return (
        f"share of {of} (fio baseline): read {_shown(block['read_percent'])}, write "
        f"{_shown(block['write_percent'])} of fio's read and write alone; together {_shown(block['mixed_percent'])} "
        "of fio's mix"
    )
