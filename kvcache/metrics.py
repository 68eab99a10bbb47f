"""Latency histograms (HdrHistogram, mergeable across ranks) and byte/request counters.

One lock guards everything, held only for dictionary updates: a worker takes it after every chunk, so the
samples swap in fresh histograms under it and read the old ones outside it. A single lock keeps the time
series' snapshots consistent.
"""

import threading
from typing import Dict, Iterable, List, Optional

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: a multi-GB entry on slow storage must still fit
SIGNIFICANT_DIGITS = 3
PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9), ("p9999", 99.99))

TIERS = ("gpu", "cpu", "storage")
OPS = ("read", "write")
# The storage tier's single I/O calls (one --io-chunk-mib preadv/pwritev each): what fio calls completion latency.
CHUNK_LATENCIES = {op: f"storage.{op}_chunk" for op in OPS}
# storage_per_request: the summed storage-tier op time of one request (the reference's "storage latency").
REQUEST_LATENCIES = ("end_to_end", "ttft", "queue_wait", "storage_per_request")
# The time series' per-tier fields: bytes/s and p95 since the previous sample, for each tier and op.
SERIES = tuple((f"{tier}.{op}", f"{tier}_{op}_bytes_per_s", f"{tier}_{op}_p95_ms") for tier in TIERS for op in OPS)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def encode(hist: HdrHistogram) -> str:
    raw = hist.encode()
    return raw.decode("ascii") if isinstance(raw, bytes) else raw


def decode(text: str) -> HdrHistogram:
    hist = new_histogram()
    if text:
        hist.add(HdrHistogram.decode(text))
    return hist


def merge(hists: Iterable[HdrHistogram]) -> HdrHistogram:
    total = new_histogram()
    for hist in hists:
        total.add(hist)
    return total


def percentile_block(hist: HdrHistogram) -> Dict[str, Optional[float]]:
    """p50 p95 p99 p999 p9999 max mean count in milliseconds (None when nothing was recorded).

    Same values as hdrh's get_value_at_percentile / get_mean_value, computed with numpy over the
    counts array: hdrh walks all ~23,000 buckets in Python for each call, which made writing a
    many-rank result take seconds.
    """
    count = hist.get_total_count()
    if count == 0:
        block = {name: None for name, _q in PERCENTILES}
        block.update(max=None, mean=None, count=0)
        return block
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    block = dict(zip((name for name, _q in PERCENTILES), values_at_percentiles(hist, [q for _n, q in PERCENTILES])))
    total = 0
    for index in np.flatnonzero(counts):
        value = hist.get_value_from_index(int(index))
        lowest = hist.get_lowest_equivalent_value(value)
        median = lowest + (hist.get_highest_equivalent_value(value) - lowest + 1) // 2
        total += int(counts[index]) * median
    block.update(max=hist.get_max_value() / 1000.0, mean=round(total / count / 1000.0, 3), count=count)
    return block


def values_at_percentiles(hist: HdrHistogram, percentiles: Iterable[float]) -> List[float]:
    """The latency in milliseconds at each percentile (0-100) of a histogram that holds values (hdrh's
    get_value_at_percentile, with one numpy pass over the counts for all of them)."""
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    cumulative = np.cumsum(counts, dtype=np.int64)
    values = []
    for q in percentiles:
        index = int(np.searchsorted(cumulative, hist.get_target_count_at_percentile(q)))
        values.append(hist.get_highest_equivalent_value(hist.get_value_from_index(index)) / 1000.0)
    return values


class Metrics:
    """Everything one rank measures. record_* are called from worker threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self._request = threading.local()  # the storage seconds of the request this thread serves
        self.latency = {f"{tier}.{op}": new_histogram() for tier in TIERS for op in OPS}
        self.latency.update({name: new_histogram() for name in (*CHUNK_LATENCIES.values(), *REQUEST_LATENCIES)})
        # Per QoS class: the end-to-end latency, and how many requests ended within the class's p95 target.
        self.qos_e2e: Dict[str, HdrHistogram] = {}
        self.qos_within_target: Dict[str, int] = {}
        self.bytes = {f"{tier}.{op}": 0 for tier in TIERS for op in OPS}
        self.counters = {
            "requests": 0,
            "prefill_tokens": 0,
            "generated_tokens": 0,
            "lookups": 0,
            "misses": 0,
            "hits.gpu": 0,
            "hits.cpu": 0,
            "hits.storage": 0,
            "demotions.gpu": 0,
            "demotions.cpu": 0,
            "evictions.storage": 0,
            "promotions": 0,
            "entry_writes": 0,  # new entries the workload tried to write
            "dropped_entries": 0,  # of those, entries that no tier could hold (on writing or on demotion)
            "storage_io_us": 0,  # summed storage time of the completed requests (storage_per_request's total)
            "rag_chunks_ingested": 0,  # document chunks written by RAG ingest
            "allocation_waits": 0,  # new entries that waited for one of the --max-concurrent-allocs slots
        }
        for tier in TIERS:
            # Whole-entry operations (not chunks), and the entries a tier holds now and at most.
            self.counters.update({f"ops.{tier}.read": 0, f"ops.{tier}.write": 0})
            self.counters.update({f"entries.{tier}": 0, f"peak_entries.{tier}": 0})
        self.interval = {name: new_histogram() for name, _bytes, _p95 in SERIES}  # since the last sample
        # Since the last autoscaling step (step_snapshot): per QoS class end-to-end latency, bytes and requests.
        self.step_qos_e2e: Dict[str, HdrHistogram] = {}
        self._step_bytes = dict(self.bytes)
        self._step_requests = 0

    def add_bytes(self, tier: str, op: str, nbytes: int) -> None:
        with self.lock:
            self.bytes[f"{tier}.{op}"] += nbytes

    def add_storage_chunk(self, op: str, nbytes: int, seconds: float) -> None:
        """One storage I/O call of `nbytes` that took `seconds`: its bytes and its latency, under one lock."""
        micros = max(LOWEST_US, int(seconds * 1e6))
        with self.lock:
            self.bytes[f"storage.{op}"] += nbytes
            self.latency[CHUNK_LATENCIES[op]].record_value(micros)

    def record_op(self, tier: str, op: str, seconds: float) -> None:
        """A completed, timed whole-entry read or write (also counted as an operation)."""
        micros = max(LOWEST_US, int(seconds * 1e6))
        if tier == "storage":
            self._request.storage_s = getattr(self._request, "storage_s", 0.0) + seconds
        with self.lock:
            self.latency[f"{tier}.{op}"].record_value(micros)
            self.counters[f"ops.{tier}.{op}"] += 1
            self.interval[f"{tier}.{op}"].record_value(micros)

    def begin_request(self) -> None:
        """The calling thread starts serving a request: its storage time counts from zero."""
        self._request.storage_s = 0.0

    def entry_moved(self, source: Optional[str], destination: Optional[str]) -> None:
        """An entry left `source` and/or arrived in `destination` (tier names; None for neither)."""
        with self.lock:
            if source is not None:
                self.counters[f"entries.{source}"] -= 1
            if destination is not None:
                held = self.counters[f"entries.{destination}"] + 1
                self.counters[f"entries.{destination}"] = held
                peak = f"peak_entries.{destination}"
                self.counters[peak] = max(self.counters[peak], held)

    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] += 1

    def record_request(
        self,
        qos: str,
        target_ms: float,
        queue_s: float,
        ttft_s: float,
        e2e_s: float,
        prefill_tokens: int,
        generated_tokens: int,
    ) -> None:
        storage_us = int(round(getattr(self._request, "storage_s", 0.0) * 1e6))
        self._request.storage_s = 0.0  # consumed: the thread's next request starts from zero
        with self.lock:
            self.latency["storage_per_request"].record_value(max(LOWEST_US, storage_us))
            self.counters["storage_io_us"] += storage_us
            self.latency["queue_wait"].record_value(max(LOWEST_US, int(queue_s * 1e6)))
            self.latency["ttft"].record_value(max(LOWEST_US, int(ttft_s * 1e6)))
            self.latency["end_to_end"].record_value(max(LOWEST_US, int(e2e_s * 1e6)))
            if qos not in self.qos_e2e:
                self.qos_e2e[qos] = new_histogram()
                self.qos_within_target[qos] = 0
            self.qos_e2e[qos].record_value(max(LOWEST_US, int(e2e_s * 1e6)))
            if qos not in self.step_qos_e2e:
                self.step_qos_e2e[qos] = new_histogram()
            self.step_qos_e2e[qos].record_value(max(LOWEST_US, int(e2e_s * 1e6)))
            if e2e_s * 1000.0 <= target_ms:
                self.qos_within_target[qos] += 1
            self.counters["requests"] += 1
            self.counters["prefill_tokens"] += prefill_tokens
            self.counters["generated_tokens"] += generated_tokens

    def sample(self):
        """Counters now, and each tier and op's p95 since the previous sample (None where there was no operation),
        for progress and the time series."""
        # Fresh histograms swap in under the lock and the old ones are read after it: hdrh's reset() and its
        # percentiles walk ~23,000 buckets in Python, and every worker waits for this lock after each chunk.
        fresh = {name: new_histogram() for name in self.interval}
        with self.lock:
            since, self.interval = self.interval, fresh
            counted, requests = dict(self.bytes), self.counters["requests"]
        p95 = {
            name: values_at_percentiles(hist, [95.0])[0] if hist.get_total_count() else None
            for name, hist in since.items()
        }
        return counted, requests, p95

    def step_snapshot(self) -> dict:
        """What happened since the previous call (an autoscaling step): bytes per tier and op, completed requests,
        and each QoS class's end-to-end histogram (encoded; classes with no completed request absent). Starts the
        next step."""
        fresh = {name: new_histogram() for name in list(self.step_qos_e2e)}  # as in sample(): swapped, not reset
        with self.lock:
            step = {
                "bytes": {name: count - self._step_bytes[name] for name, count in self.bytes.items()},
                "requests": self.counters["requests"] - self._step_requests,
            }
            self._step_bytes, self._step_requests = dict(self.bytes), self.counters["requests"]
            since, self.step_qos_e2e = self.step_qos_e2e, fresh
        step["qos_e2e"] = {name: encode(h) for name, h in since.items() if h.get_total_count()}
        return step

    def export(self) -> dict:
        """Plain data for the result and for sending to rank 0 (histograms encoded)."""
        with self.lock:
            return {
                "latency": {name: encode(h) for name, h in self.latency.items()},
                "qos_e2e": {name: encode(h) for name, h in self.qos_e2e.items()},
                "qos_within_target": dict(self.qos_within_target),
                "bytes": dict(self.bytes),
                "counters": dict(self.counters),
            }
