"""The live view (kvcache/live_view.py): how it pools the fleet's samples, what a frame shows, when a run gets one
(kvcache.progress.for_rank) and what --progress refuses."""

import io
import re

import pytest

from kvcache import live_view, progress
from kvcache.cli import main
from kvcache.errors import UsageError
from kvcache.metrics import SERIES
from kvcache.run_config import make_config
from kvcache.units import GIB

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def point(t_s, requests, read_gib=0.0, write_gib=0.0, read_p95=None, write_p95=None, **extra):
    """A time-series sample as RankRun._sample makes it: storage figures given, the other tiers idle."""
    sample = {"t_s": t_s, "requests": requests, "requests_per_s": requests / max(t_s, 1.0)}
    for _name, bandwidth, p95 in SERIES:
        sample[bandwidth], sample[p95] = 0, None
    sample.update(storage_read_bytes_per_s=int(read_gib * GIB), storage_write_bytes_per_s=int(write_gib * GIB))
    sample.update(storage_read_p95_ms=read_p95, storage_write_p95_ms=write_p95, **extra)
    return sample


def screen(stream):
    return ANSI.sub("", stream.getvalue())


def test_the_fleet_sums_bandwidth_and_takes_the_worst_p95_of_the_fresh_ranks():
    points = {
        0: point(10.0, 100, read_gib=1.0, write_gib=0.5, read_p95=2.0, write_p95=1.0),
        1: point(10.0, 80, read_gib=0.5, write_gib=0.25, read_p95=6.0),
        2: point(9.0, 90, read_gib=2.0, write_gib=0.0, read_p95=1.0, write_p95=3.0),
        3: point(1.0, 5, read_gib=9.0, read_p95=99.0),  # silent for 9 s: not reporting
    }
    fleet = live_view.pooled(points, elapsed=10.0, stale_after=3.0)
    assert fleet["ranks_reporting"] == 3
    assert fleet["requests"] == 100 + 80 + 90 + 5  # counts so far: every rank's latest
    assert fleet["storage_read_bytes_per_s"] == int(1.0 * GIB) + int(0.5 * GIB) + int(2.0 * GIB)
    assert fleet["storage_write_bytes_per_s"] == int(0.5 * GIB) + int(0.25 * GIB)
    assert (fleet["storage_read_p95_ms"], fleet["storage_write_p95_ms"]) == (6.0, 3.0)
    assert fleet["gpu_read_p95_ms"] is None and fleet["cpu_write_bytes_per_s"] == 0
    assert fleet["slowest"] == (1, int(0.5 * GIB) + int(0.25 * GIB))
    assert fleet["users"] is None  # fixed users: the view knows them from the config
    users = {rank: dict(sample, users=8) for rank, sample in points.items()}
    assert live_view.pooled(users, 10.0, 3.0)["users"] == 32
    assert live_view.pooled({0: points[0]}, 10.0, 3.0)["slowest"] is None  # one rank is nobody's straggler


def test_a_frame_shows_time_users_requests_and_each_tier():
    stream = Terminal()
    view = live_view.LiveView(stream, duration=60.0, ranks=1, users_per_rank=16, stats_interval=1.0)
    view.update(12.0, point(12.0, 240, read_gib=1.5, write_gib=0.25, read_p95=3.25))
    view.done()
    shown = screen(stream)
    assert "kvcache run  12 / 60 s, 48 s left   users 16   requests 240 (20.0/s)" in shown
    storage = next(line for line in shown.splitlines() if line.startswith("storage"))
    assert storage.split() == ["storage", "1.50", "3.2", "ms", "0.25", "-"]
    assert "fleet" not in shown  # one rank


def test_the_fleet_line_counts_reporting_ranks_and_names_the_slowest():
    stream = Terminal()
    view = live_view.LiveView(stream, duration=30.0, ranks=3, users_per_rank=4, stats_interval=1.0)
    view.fleet_point(1, point(5.0, 10, read_gib=0.25))
    view.fleet_point(2, point(0.5, 1, read_gib=4.0))  # late
    view.update(5.0, point(5.0, 20, read_gib=1.0))
    view.done()
    shown = screen(stream)
    assert "users 12   requests 31" in shown
    assert "fleet: 3 ranks, 2 reporting; slowest storage: rank 1 at 0.25 GiB/s" in shown
    storage = next(line for line in reversed(shown.splitlines()) if line.startswith("storage"))
    assert storage.split()[1] == "1.25"


def test_the_view_redraws_once_a_second_whatever_the_ticks():
    stream = Terminal()
    view = live_view.LiveView(stream, duration=10.0, ranks=1, users_per_rank=1, stats_interval=5.0)
    for tick in range(31):  # 3 s of 0.1 s control ticks
        view.tick(tick / 10)
    view.done()
    frames = [line for line in screen(stream).splitlines() if line.startswith("kvcache run")]
    assert [frame.split(",")[0] for frame in frames] == [f"kvcache run  {s} / 10 s" for s in (0, 1, 2, 3, 3)]


def test_the_users_of_an_autoscaling_run_come_from_its_samples():
    stream = Terminal()
    view = live_view.LiveView(stream, duration=60.0, ranks=2, users_per_rank=4, stats_interval=1.0)
    view.fleet_point(1, point(5.0, 10, users=16))
    view.update(5.0, point(5.0, 10, users=16))
    view.done()
    assert "users 32" in screen(stream)


def config(**values):
    return make_config("run", cache_dir="/var/tmp", **values)


@pytest.mark.parametrize(
    ("values", "stream", "shown"),
    [
        ({}, Terminal(), live_view.LiveView),
        ({}, io.StringIO(), None),  # auto and a pipe
        ({"progress": "live"}, io.StringIO(), live_view.LiveView),  # mpirun's pipe to a terminal
        ({"progress": "off"}, Terminal(), None),
        ({"quiet": True}, Terminal(), None),
        ({"log_level": "WARNING"}, Terminal(), None),
        ({"log_level": "DEBUG"}, io.StringIO(), progress.SampleLines),
        ({"log_level": "DEBUG", "progress": "off"}, io.StringIO(), progress.SampleLines),  # logs, not a view
    ],
)
def test_what_rank_0_shows(values, stream, shown):
    made = progress.for_rank(config(**values), 0, 1, stream)
    assert (made is None) if shown is None else isinstance(made, shown)


def test_other_ranks_show_no_view_and_debug_lines_on_every_rank():
    assert progress.for_rank(config(progress="live"), 1, 2, Terminal()) is None
    lines = progress.for_rank(config(log_level="DEBUG"), 1, 2, io.StringIO())
    assert isinstance(lines, progress.SampleLines) and lines.label == "kvcache: debug: rank 1: "


def test_without_rich_a_terminal_gets_a_note_and_no_view(monkeypatch):
    monkeypatch.setattr(live_view, "available", lambda: False)
    stream = Terminal()
    assert progress.for_rank(config(), 0, 1, stream) is None
    assert stream.getvalue() == f"kvcache: no live progress: it needs the rich package ({live_view.INSTALL_HINT})\n"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"quiet": True}, "live contradicts --quiet"),
        ({"log_level": "DEBUG"}, "live is shown at --log-level INFO, not DEBUG"),
        ({"log_level": "ERROR"}, "live is shown at --log-level INFO, not ERROR"),
    ],
)
def test_progress_live_refuses_what_contradicts_it(values, message):
    with pytest.raises(UsageError, match=f"^--progress: {message}"):
        live_view.check(config(progress="live", **values))
    live_view.check(config(progress="auto", **values))  # auto simply shows nothing there


def test_progress_live_without_rich_exits_2_creating_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(live_view, "available", lambda: False)
    cache = tmp_path / "cache"
    cache.mkdir()
    argv = ["run", "--model", "tiny-1b", "--duration", "1", "--cache-dir", str(cache), "--progress", "live"]
    assert main(argv + ["--output", str(tmp_path / "R.json")]) == 2
    err = capsys.readouterr().err
    assert "--progress: live needs the rich package" in err and "[live]" in err
    assert list(cache.iterdir()) == [] and not (tmp_path / "R.json").exists()


def test_progress_takes_only_its_choices(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "--cache-dir", "/var/tmp", "--progress", "sometimes"])
    assert exited.value.code == 2
    assert "argument --progress: must be one of auto, live, off, got 'sometimes'" in capsys.readouterr().err
