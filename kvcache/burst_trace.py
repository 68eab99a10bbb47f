"""BurstGPT trace replay (--use-burst-trace): each row of the trace is one request, sent at its timestamp.

A row's `Request tokens` are the request's context and its `Response tokens` its generation; a failed
request (0 response tokens) still replays, with generation 0 (so decode reads its entry once), as in
kv-cache.py. The replay keeps the trace's gaps: a row arrives (its Timestamp - the previous row's) /
--trace-speedup seconds after the previous one, and a row not later than the previous one (a file that
starts again at 0) arrives with it, so the trace's clock never runs back (kv-cache.py's rule too).
--trace-speedup 0 sends the rows as fast as the workers take them. A cycle (--replay-cycles) begins where
the previous one ended. A row whose Timestamp is not a finite number, or whose Request tokens (at least 1)
or Response tokens (at least 0) are not whole numbers, is skipped and counted.

Under MPI, data row i (counted over every file, skipped rows too) is rank i % ranks's, so the fleet
replays the trace once per cycle, every rank on the trace's one clock. A row is its own user with its own
key (u<row>c<cycle>t1: no earlier turns to re-read); its QoS class and shared system prompt come from the
row's own seeded draw, the same on any number of ranks. The CSV is streamed, never held in memory.
"""

import csv
import glob
import math
import os
import random
import time
from typing import Iterator, List, Optional, Sequence, Tuple

from kvcache.errors import UsageError
from kvcache.workload import Request, Settings, draw_qos, system_prompt

OPTION = "--burst-trace-path"
# BurstGPT's columns are Timestamp, Model, Request tokens, Response tokens, Total tokens, Log Type; these
# are the ones the replay uses.
COLUMNS = ("Timestamp", "Request tokens", "Response tokens")
TEMPLATE = "burstgpt"  # Request.template of a replayed row
GLOB_CHARACTERS = "*?["

Row = Tuple[float, int, int]  # timestamp, context tokens, generation tokens


def trace_files(path: str) -> List[str]:
    """The CSV files of --burst-trace-path in replay order: the file itself, a directory's *.csv files,
    or the regular files a glob matches (both sorted by name)."""
    if os.path.isdir(path):
        return sorted(glob.glob(os.path.join(glob.escape(path), "*.csv")))
    if any(c in path for c in GLOB_CHARACTERS):
        return [f for f in sorted(glob.glob(path)) if os.path.isfile(f)]
    return [path]


def _open(path: str):
    # utf-8-sig drops a byte-order mark before "Timestamp"; a byte that is not UTF-8 only spoils its row.
    return open(path, encoding="utf-8-sig", errors="replace", newline="")


def _columns(header: Optional[Sequence[str]], path: str) -> Tuple[int, ...]:
    """Where each of COLUMNS is in a file's header row."""
    names = [name.strip() for name in header or ()]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        found = "is empty" if not names else f"has no column {', '.join(repr(c) for c in missing)}"
        raise UsageError(OPTION, f"{path} {found}: a BurstGPT CSV has the columns {', '.join(COLUMNS)}")
    return tuple(names.index(c) for c in COLUMNS)


def parse_row(fields: Sequence[str], columns: Tuple[int, ...]) -> Optional[Row]:
    """(timestamp, context, generation) of a data row, or None when it is malformed."""
    try:
        timestamp, context, generation = (fields[i] for i in columns)
        row = float(timestamp), int(context), int(generation)
    except (ValueError, IndexError):
        return None
    if not math.isfinite(row[0]) or row[1] < 1 or row[2] < 0:
        return None
    return row


def rows(files: Sequence[str]) -> Iterator[Optional[Row]]:
    """Every data row of the files, in order: a Row, or None for a malformed one. Blank lines are no rows."""
    for path in files:
        with _open(path) as handle:
            reader = csv.reader(handle)
            columns = _columns(next(reader, None), path)
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    break
                except csv.Error:  # e.g. a field beyond csv's size limit: that row is malformed
                    yield None
                    continue
                if fields:
                    yield parse_row(fields, columns)


def check(config) -> None:
    """--use-burst-trace needs a readable BurstGPT CSV with at least one row to replay."""
    path = config.burst_trace_path
    if not path:
        raise UsageError(
            OPTION, "--use-burst-trace replays a BurstGPT CSV: give its file, a directory of *.csv or a glob"
        )
    files = trace_files(path)
    if not files:
        what = "the directory has no *.csv file" if os.path.isdir(path) else "the glob matches no file"
        raise UsageError(OPTION, f"{what}: {path}")
    for name in files:
        if not os.path.exists(name):
            raise UsageError(OPTION, f"no such file: {name}")
        if not os.path.isfile(name):  # a FIFO or device would block or never end
            raise UsageError(OPTION, f"not a regular file: {name}")
        try:
            with _open(name) as handle:
                _columns(next(csv.reader(handle), None), name)
        except (OSError, csv.Error) as exc:
            raise UsageError(OPTION, f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}") from None
    if not any(row is not None for row in rows(files)):  # stops at the first good row
        raise UsageError(OPTION, f"no row of {path} has a numeric Timestamp and whole Request and Response tokens")


def arrivals(config, rank: int, ranks: int, settings: Settings, report: dict):
    """This rank's (offset in seconds from the window start, or None for at once; Request) pairs."""
    files = trace_files(config.burst_trace_path)
    report.update(files=files, rows_replayed=0, rows_skipped=0, completed_cycles=0)
    return _replay(config, rank, ranks, settings, files, report)


def _replay(config, rank: int, ranks: int, settings: Settings, files: List[str], report: dict):
    speedup = config.trace_speedup
    clock = 0.0  # the trace's seconds since its first row, over every cycle
    begun = time.perf_counter()  # the dispatcher's origin: it asks for the first row as it starts
    cycle = 0
    while not config.replay_cycles or cycle < config.replay_cycles:
        cycle += 1
        previous = None
        mine = 0
        for index, row in enumerate(rows(files)):
            if row is None:
                if index % ranks == rank:
                    report["rows_skipped"] += 1
                continue
            if previous is not None:
                clock += max(0.0, row[0] - previous)
            previous = row[0]
            if index % ranks != rank:
                continue
            at = clock / speedup if speedup else None
            yield at, _request(config.seed, settings, cycle, index, row)
            # Back here, the dispatcher has queued the row (or held it behind its user's turn).
            mine += 1
            report["rows_replayed"] += 1
            if at is not None:
                report["last_arrival_s"] = at
                lag = time.perf_counter() - begun - at
                report["max_arrival_lag_s"] = round(max(report.get("max_arrival_lag_s", 0.0), lag), 6)
        report["completed_cycles"] = cycle
        if not mine:  # fewer rows than ranks: this rank has none, in any cycle
            return


def _request(seed: int, settings: Settings, cycle: int, index: int, row: Row) -> Request:
    _timestamp, context, generation = row
    rng = random.Random(f"kvcache:{seed}:burst:{cycle}:{index}")
    qos = draw_qos(rng, settings.profile)
    prefix_key, prefix_tokens, context = system_prompt(rng, settings, context)
    return Request(
        user=index,
        conversation=cycle,
        turn=1,
        template=TEMPLATE,
        qos=qos.name,
        priority=qos.priority,
        context_tokens=context,
        generation_tokens=generation,
        think_seconds=0.0,
        key=f"u{index}c{cycle}t1",
        earlier_keys=(),
        prefix_key=prefix_key,
        prefix_tokens=prefix_tokens,
        rag_keys=(),
    )
