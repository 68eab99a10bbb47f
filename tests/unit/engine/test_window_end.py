"""The window ends when the workers stop, not when the files of the writes it cut short are gone: unlinking
hundreds of MiB is filesystem work that a stretched window would count as time the storage moved no bytes."""

import os
import time

from kvcache import runner, tiers
from kvcache.models import BUILTIN_MODELS
from kvcache.mpi import LocalComm
from kvcache.run_config import make_config


def test_cut_short_files_are_unlinked_after_the_window_end_and_none_is_left(tmp_path, monkeypatch):
    unlinked = []  # (wall clock, path) of every unlink the tiers make
    real_unlink = tiers._unlink  # noqa: SLF001 - the one place the tiers unlink

    def recording_unlink(path):
        unlinked.append((time.time(), path))
        real_unlink(path)

    monkeypatch.setattr(tiers, "_unlink", recording_unlink)
    real_pwritev = os.pwritev

    def slow_pwritev(fd, buffers, offset):  # a slow device: every entry is still being written at the end
        time.sleep(0.01)
        return real_pwritev(fd, buffers, offset)

    monkeypatch.setattr(tiers.os, "pwritev", slow_pwritev)
    # Storage only, entries of many chunks: writes are in flight when the window closes.
    config = make_config(
        "run",
        model="tiny-1b",
        gpu_mem_gb=0,
        cpu_mem_gb=0,
        num_users=8,
        duration=1,
        io_chunk_mib=0.0625,
        io_depth=8,
        performance_profile="throughput",
        cache_dir=str(tmp_path),
    )
    run = runner.RankRun(
        config, BUILTIN_MODELS["tiny-1b"], LocalComm(), str(tmp_path), "buffered", 1 << 30, "simulated"
    )
    try:
        ended = []
        real_remove = run._remove_cut_short  # noqa: SLF001 - the unit under test

        def remove_after_the_end():
            assert run.window_end is not None  # measure() has closed the window
            ended.append(time.time())
            real_remove()

        monkeypatch.setattr(run, "_remove_cut_short", remove_after_the_end)
        run.measure(time.perf_counter())
    finally:
        run.close()
    storage = run.tiers[2]
    held = {entry.handle for entry in run.manager.entries.values() if entry.tier == 2}
    cut_short = [(when, path) for when, path in unlinked if path not in held and when >= ended[0]]
    assert cut_short, "no write was in flight at the window's end: the test shows nothing"
    assert sorted(os.path.join(tmp_path, name) for name in os.listdir(tmp_path)) == sorted(held)
    assert storage._cut_short == []  # noqa: SLF001
