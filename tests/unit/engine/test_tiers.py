"""The waterfall LRU across GPU (simulated), CPU and storage tiers, on a real directory."""

import itertools
import os
import random
import threading

import pytest

from kvcache.storage_io import Interrupted
from kvcache.tiers import ENTRY_FILE, choose_gpu_backend
from kvcache.workload import User

E = 32 << 10  # one entry: two I/O chunks of the conftest's stack


def keys_on_disk(stack):
    """Keys whose storage files exist; fails on any file that no entry of the manager owns."""
    owners = {os.path.basename(e.handle): k for k, e in stack.manager.entries.items() if e.tier == 2}
    files = stack.files()
    unknown = [name for name in files if name not in owners]
    assert unknown == [], f"files the manager does not know: {unknown}"
    assert all(name.endswith(".kv") for name in files)
    return sorted(owners[name] for name in files)


def counters(stack):
    return stack.metrics.export()["counters"]


def latency_count(stack, name):
    return stack.metrics.latency[name].get_total_count()


def check_consistent(stack):
    """Every tier's `used` is the sum of its entries; LRUs, entries and files agree."""
    manager = stack.manager
    assert [t.name for t in manager.tiers] == ["gpu", "cpu", "storage"]
    for index, tier in enumerate(manager.tiers):
        held = {k: e for k, e in manager.entries.items() if e.tier == index}
        assert tier.used == sum(e.size for e in held.values()), tier.name
        assert set(tier.lru) == set(held), tier.name
        assert all(tier.lru[k] is e for k, e in held.items()), tier.name
        assert tier.used <= tier.capacity, tier.name
    assert all(e.tier is not None and e.ready.is_set() for e in manager.entries.values())
    on_storage = sorted(k for k, e in manager.entries.items() if e.tier == 2)
    assert keys_on_disk(stack) == on_storage
    for key in on_storage:
        assert os.path.getsize(manager.entries[key].handle) == manager.entries[key].size


def test_placement_order_gpu_then_cpu_then_storage(make_stack):
    stack = make_stack(gpu_bytes=2 * E, cpu_bytes=2 * E, storage_bytes=2 * E)
    assert stack.pool.chunk * 2 == E
    for i in range(6):
        assert stack.manager.write_new(f"k{i}", E, stack.pattern) == "gpu"  # new entries always land on top
    assert stack.lru_keys(stack.gpu) == ["k4", "k5"]
    assert stack.lru_keys(stack.cpu) == ["k2", "k3"]
    assert stack.lru_keys(stack.storage) == ["k0", "k1"]
    assert keys_on_disk(stack) == ["k0", "k1"]
    check_consistent(stack)
    c = counters(stack)
    assert c["demotions.gpu"] == 4 and c["demotions.cpu"] == 2 and c["evictions.storage"] == 0

    # one more: the whole waterfall moves and the storage LRU entry is evicted
    assert stack.manager.write_new("k6", E, stack.pattern) == "gpu"
    assert [stack.tier_of(f"k{i}") for i in range(7)] == [None, "storage", "storage", "cpu", "cpu", "gpu", "gpu"]
    assert keys_on_disk(stack) == ["k1", "k2"]
    assert counters(stack)["evictions.storage"] == 1
    check_consistent(stack)


def test_gpu_disabled_places_in_cpu_first(make_stack):
    stack = make_stack(gpu_bytes=0, cpu_bytes=3 * E, storage_bytes=10 * E)
    assert [stack.manager.write_new(k, E, stack.pattern) for k in "abc"] == ["cpu"] * 3
    assert stack.files() == []
    assert stack.manager.write_new("d", E, stack.pattern) == "cpu"
    assert stack.tier_of("a") == "storage"
    assert stack.metrics.bytes["gpu.write"] == 0
    check_consistent(stack)


def test_entry_too_big_for_a_tier_goes_to_the_next(make_stack):
    stack = make_stack(gpu_bytes=E, cpu_bytes=4 * E, storage_bytes=10 * E)
    assert stack.manager.write_new("small", E, stack.pattern) == "gpu"
    assert stack.manager.write_new("big", 3 * E, stack.pattern) == "cpu"
    assert stack.manager.write_new("bigger", 6 * E, stack.pattern) == "storage"
    assert stack.tier_of("small") == "gpu"  # nothing was demoted for entries that never fit above
    assert counters(stack)["demotions.gpu"] == 0
    check_consistent(stack)


def test_sizes_are_rounded_up_to_4k(make_stack):
    stack = make_stack(cpu_bytes=10 * E, storage_bytes=10 * E)
    stack.manager.write_new("odd", 5000, stack.pattern)
    assert stack.cpu.used == 8192
    assert stack.metrics.bytes["cpu.write"] == 8192


def test_lru_demotion_moves_the_least_recently_used(make_stack):
    stack = make_stack(gpu_bytes=0, cpu_bytes=3 * E, storage_bytes=10 * E)
    manager = stack.manager
    for key in "abc":
        manager.write_new(key, E, stack.pattern)
    assert manager.read("a") == "cpu"  # a becomes the most recently used
    before = dict(stack.metrics.bytes)
    assert manager.write_new("d", E, stack.pattern) == "cpu"
    assert stack.tier_of("b") == "storage"
    assert {k: stack.tier_of(k) for k in "acd"} == {"a": "cpu", "c": "cpu", "d": "cpu"}
    assert keys_on_disk(stack) == ["b"]
    assert os.path.getsize(stack.manager.entries["b"].handle) == E
    # the demotion is counted and timed: read out of CPU memory, written to storage
    assert counters(stack)["demotions.cpu"] == 1
    assert stack.metrics.bytes["storage.write"] - before["storage.write"] == E
    assert stack.metrics.bytes["cpu.read"] - before["cpu.read"] == E
    assert latency_count(stack, "storage.write") == 1
    assert latency_count(stack, "cpu.write") == 4
    # operations are whole entries: a demotion is one read of its tier and one write of the next
    ops = {name: value for name, value in counters(stack).items() if name.startswith(("ops.", "entries.", "peak_"))}
    assert ops == {
        "ops.gpu.read": 0, "ops.gpu.write": 0, "ops.cpu.read": 2, "ops.cpu.write": 4,
        "ops.storage.read": 0, "ops.storage.write": 1,
        "entries.gpu": 0, "entries.cpu": 3, "entries.storage": 1,
        "peak_entries.gpu": 0, "peak_entries.cpu": 3, "peak_entries.storage": 1,
    }  # fmt: skip
    check_consistent(stack)


def test_demotion_out_of_the_simulated_gpu_is_counted(make_stack):
    stack = make_stack(gpu_bytes=E, cpu_bytes=3 * E, storage_bytes=10 * E)
    stack.manager.write_new("a", E, stack.pattern)
    stack.manager.write_new("b", E, stack.pattern)
    assert stack.tier_of("a") == "cpu"
    assert counters(stack)["demotions.gpu"] == 1
    assert stack.metrics.bytes["gpu.write"] == 2 * E
    assert stack.metrics.bytes["gpu.read"] == E  # the demoted entry was read out of the GPU
    assert stack.metrics.bytes["cpu.write"] == E
    assert latency_count(stack, "cpu.write") == 1


def test_an_evicted_entry_leaves_the_entry_count(make_stack):
    stack = make_stack(gpu_bytes=0, cpu_bytes=0, storage_bytes=2 * E)
    for key in "abc":
        stack.manager.write_new(key, E, stack.pattern)
    assert counters(stack)["evictions.storage"] == 1
    assert counters(stack)["entries.storage"] == 2 == len(stack.storage.lru)
    assert counters(stack)["peak_entries.storage"] == 2
    assert counters(stack)["ops.storage.write"] == 3 and counters(stack)["ops.storage.read"] == 0


def test_storage_eviction_deletes_the_file_and_the_entry_misses(make_stack):
    stack = make_stack(gpu_bytes=0, cpu_bytes=0, storage_bytes=2 * E)
    manager = stack.manager
    for key in "abc":
        assert manager.write_new(key, E, stack.pattern) == "storage"
    assert keys_on_disk(stack) == ["b", "c"]
    assert counters(stack)["evictions.storage"] == 1
    assert "a" not in manager.entries
    assert len(stack.files()) == 2  # a's file was deleted
    assert manager.read("a") is None
    c = counters(stack)
    assert c["lookups"] == 1 and c["misses"] == 1
    assert manager.read("c") == "storage"
    assert counters(stack)["hits.storage"] == 1
    assert stack.metrics.bytes["storage.read"] == E
    # an evicted key may be written again
    assert manager.write_new("a", E, stack.pattern) == "storage"
    check_consistent(stack)


def test_entry_larger_than_every_tier_is_dropped(make_stack):
    stack = make_stack(gpu_bytes=E, cpu_bytes=2 * E, storage_bytes=3 * E)
    manager = stack.manager
    manager.write_new("keep", E, stack.pattern)
    assert manager.write_new("huge", 4 * E, stack.pattern) is None
    assert counters(stack)["dropped_entries"] == 1
    assert "huge" not in manager.entries
    assert stack.files() == []
    assert stack.tier_of("keep") == "gpu"  # nothing was demoted to make room for it
    assert manager.read("huge") is None
    assert stack.metrics.bytes["storage.write"] == 0
    check_consistent(stack)


def test_victim_that_fits_nowhere_below_is_dropped(make_stack):
    stack = make_stack(gpu_bytes=0, cpu_bytes=4 * E, storage_bytes=E)
    manager = stack.manager
    manager.write_new("big", 3 * E, stack.pattern)  # fits the CPU tier, never the storage tier
    manager.write_new("next", 2 * E, stack.pattern)
    assert "big" not in manager.entries and stack.tier_of("next") == "cpu"
    assert counters(stack)["dropped_entries"] == 1
    check_consistent(stack)


def test_write_once(make_stack):
    stack = make_stack(gpu_bytes=0, cpu_bytes=3 * E, storage_bytes=3 * E)
    assert stack.manager.write_new("k", E, stack.pattern) == "cpu"
    written = stack.metrics.bytes["cpu.write"]
    assert stack.manager.write_new("k", E, stack.pattern) is None
    assert stack.manager.write_new("k", 2 * E, stack.pattern) is None
    assert stack.metrics.bytes["cpu.write"] == written
    assert counters(stack)["dropped_entries"] == 0
    assert stack.cpu.used == E
    check_consistent(stack)


def test_promote_moves_a_storage_hit_back_up(make_stack):
    stack = make_stack(gpu_bytes=0, cpu_bytes=2 * E, storage_bytes=4 * E, promote=True)
    manager = stack.manager
    for key in "abc":
        manager.write_new(key, E, stack.pattern)
    assert stack.tier_of("a") == "storage"
    assert manager.read("a") == "storage"  # served from where it was found
    assert stack.tier_of("a") == "cpu"
    assert stack.tier_of("b") == "storage"  # made room: the CPU LRU went down
    assert keys_on_disk(stack) == ["b"]  # a's file is gone
    c = counters(stack)
    assert c["promotions"] == 1 and c["hits.storage"] == 1
    assert manager.read("a") == "cpu"
    assert counters(stack)["hits.cpu"] == 1
    check_consistent(stack)


def test_without_promote_a_storage_hit_stays(make_stack):
    stack = make_stack(gpu_bytes=0, cpu_bytes=2 * E, storage_bytes=4 * E, promote=False)
    manager = stack.manager
    for key in "abc":
        manager.write_new(key, E, stack.pattern)
    assert manager.read("a") == "storage"
    assert manager.read("a") == "storage"
    assert stack.tier_of("a") == "storage"
    assert counters(stack)["promotions"] == 0
    check_consistent(stack)


def test_read_without_counting_a_lookup(make_stack):
    stack = make_stack(cpu_bytes=2 * E, storage_bytes=2 * E)
    stack.manager.write_new("a", E, stack.pattern)
    assert stack.manager.read("a", count_lookup=False) == "cpu"
    assert stack.manager.read("zz", count_lookup=False) is None
    c = counters(stack)
    assert c["lookups"] == 0 and c["misses"] == 0 and c["hits.cpu"] == 0
    assert stack.metrics.bytes["cpu.read"] == E  # the read itself still happened


def test_interrupted_write_leaves_nothing_once_its_file_is_removed(make_stack):
    stack = make_stack(gpu_bytes=0, cpu_bytes=0, storage_bytes=4 * E)
    stack.stop.set()
    with pytest.raises(Interrupted):
        stack.manager.write_new("a", E, stack.pattern)
    assert stack.manager.entries == {}
    assert stack.storage.used == 0
    # The cut-short file waits for the window to close (its unlink is no part of the measurement).
    assert len(stack.files()) == 1
    stack.storage.remove_cut_short()
    assert stack.files() == []
    stack.stop.clear()
    assert stack.manager.write_new("a", E, stack.pattern) == "storage"  # the key is free again


def test_a_failed_write_removes_its_file_at_once(make_stack):
    stack = make_stack(gpu_bytes=0, cpu_bytes=0, storage_bytes=4 * E)

    def fail(offset, nbytes, buf):
        raise OSError(5, "injected")

    stack.pattern.chunk = fail
    with pytest.raises(OSError, match="injected"):
        stack.manager.write_new("a", E, stack.pattern)
    assert stack.files() == [] and stack.storage.used == 0


def test_stale_unlink_of_an_evicted_copy_spares_a_rewritten_key(make_stack):
    """Eviction unlinks outside the lock; the same key may be stored again before that unlink runs."""
    stack = make_stack(gpu_bytes=0, cpu_bytes=0, storage_bytes=2 * E)
    manager = stack.manager
    real_release = stack.storage.release
    armed = [True]

    def release(handle):
        if armed[0]:  # first eviction (of "a"): another thread writes "a" again before the unlink
            armed[0] = False
            assert manager.write_new("a", E, stack.pattern) == "storage"
        real_release(handle)

    stack.storage.release = release
    manager.write_new("a", E, stack.pattern)
    manager.write_new("b", E, stack.pattern)
    manager.write_new("c", E, stack.pattern)  # evicts a; the re-write of a evicts b
    assert armed == [False]
    assert sorted(manager.entries) == ["a", "c"]
    check_consistent(stack)  # the new copy of "a" still has its file
    assert manager.read("a") == "storage"


def test_reader_of_an_evicted_copy_does_not_see_the_rewrite(make_stack):
    """A reader holds the open file of an entry that is evicted and written again while it reads."""
    stack = make_stack(gpu_bytes=0, cpu_bytes=0, storage_bytes=2 * E)
    manager = stack.manager
    real_release = stack.storage.release
    real_run = stack.mover.run
    state = {"reading": False, "rewritten": False}

    def release(handle):
        if state["reading"] and not state["rewritten"]:
            state["rewritten"] = True
            manager.write_new("a", E, stack.pattern)  # before the old copy is unlinked
        real_release(handle)

    def run(size, source, sink):
        if sink is None and not state["reading"]:  # the storage read of "a" has its file open
            state["reading"] = True
            manager.write_new("b", E, stack.pattern)
            manager.write_new("c", E, stack.pattern)  # evicts a
        real_run(size, source, sink)

    stack.storage.release = release
    stack.mover.run = run
    manager.write_new("a", E, stack.pattern)
    assert manager.read("a") == "storage"  # no short read of a truncated file
    assert state == {"reading": True, "rewritten": True}
    assert stack.metrics.bytes["storage.read"] == E
    check_consistent(stack)


def test_promote_of_an_evicted_entry_leaves_the_new_copy_alone(make_stack):
    """A reader that found a storage entry promotes it after the read; by then it may have been evicted
    and its key written again as a new entry."""
    stack = make_stack(gpu_bytes=0, cpu_bytes=E, storage_bytes=2 * E, promote=True)
    manager = stack.manager
    real_run = stack.mover.run
    armed = [False]

    def run(size, source, sink):
        real_run(size, source, sink)
        if sink is None and armed[0]:  # the storage read of "a" is done, its promotion not started
            armed[0] = False
            manager.write_new("c", E, stack.pattern)  # b -> storage
            manager.write_new("d", E, stack.pattern)  # c -> storage, evicting a
            assert "a" not in manager.entries
            manager.write_new("a", E, stack.pattern)  # a new "a" in CPU; d -> storage, evicting b
            manager.write_new("e", E, stack.pattern)  # the new "a" -> storage, evicting c

    stack.mover.run = run
    manager.write_new("a", E, stack.pattern)
    manager.write_new("b", E, stack.pattern)  # a -> storage
    assert stack.tier_of("a") == "storage"
    armed[0] = True
    assert manager.read("a") == "storage"
    assert armed == [False]
    assert stack.tier_of("a") == "storage" and stack.tier_of("e") == "cpu"
    assert sorted(stack.manager.entries) == ["a", "d", "e"]
    assert counters(stack)["promotions"] == 0
    check_consistent(stack)


def test_concurrent_writes_and_reads_stay_consistent(make_stack):
    stack = make_stack(gpu_bytes=3 * E, cpu_bytes=4 * E, storage_bytes=8 * E, promote=True)
    manager = stack.manager
    keys = [f"key{i}" for i in range(30)]
    errors = []

    def worker(seed):
        rng = random.Random(seed)
        try:
            for _step in range(80):
                key = rng.choice(keys)
                if rng.random() < 0.5:
                    manager.write_new(key, rng.randint(1, 3 * E), stack.pattern)
                else:
                    manager.read(key)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    check_consistent(stack)
    c = counters(stack)
    assert c["lookups"] == c["misses"] + c["hits.gpu"] + c["hits.cpu"] + c["hits.storage"]
    assert c["demotions.gpu"] > 0  # the test did exercise the waterfall


def test_gpu_backend_simulated_and_unavailable_library():
    assert choose_gpu_backend("simulated") == "simulated"
    assert choose_gpu_backend("auto") in ("simulated", "torch", "cupy")


def test_every_new_entry_is_a_write_attempt_and_dropped_ones_are_counted(make_stack):
    stack = make_stack(cpu_bytes=E, storage_bytes=E)
    manager = stack.manager
    assert manager.write_new("a", E, stack.pattern) == "cpu"
    assert manager.write_new("a", E, stack.pattern) is None  # already there: written once, not an attempt
    assert manager.write_new("b", E, stack.pattern) == "cpu"  # a -> storage
    assert manager.write_new("huge", 2 * E, stack.pattern) is None  # fits no tier
    assert counters(stack)["entry_writes"] == 3
    assert counters(stack)["dropped_entries"] == 1
    assert counters(stack)["evictions.storage"] == 0
    check_consistent(stack)


def test_storage_file_names_match_what_clean_recognises(make_stack):
    stack = make_stack(storage_bytes=8 * E)
    user = User(7, 3)
    keys = set()
    for request in itertools.islice(user.requests(), 6):
        keys.update(k for k in (request.key, request.previous_key, request.prefix_key) if k)
    for key in sorted(keys):
        assert stack.manager.write_new(key, E, stack.pattern) == "storage"
    assert len(stack.files()) == len(keys)
    assert all(ENTRY_FILE.fullmatch(name) for name in stack.files()), stack.files()
    for foreign in ("notes.txt", "u1c1t1.kv", "u1c1t1.1.kv.bak", "../u1c1t1.1.kv", "prefix-chatbot.x.kv"):
        assert not ENTRY_FILE.fullmatch(foreign), foreign
