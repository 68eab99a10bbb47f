"""kvcache report --html: the page's content and self-containment, the comparison's figures, refusals."""

import html
import json
import math
import re

import pytest
from built_results import two_rank_result

from kvcache import html_device, html_report
from kvcache.cli import main
from kvcache.compare import change_percent, comparison, format_comparison, trial_groups
from kvcache.units import GIB


def write_result(path, result):
    path.write_text(json.dumps(result), encoding="utf-8")
    return str(path)


def test_page_is_self_contained_and_holds_the_plots_and_tables(tmp_path, capsys):
    result_file = write_result(tmp_path / "r.json", two_rank_result())
    out = tmp_path / "r.html"
    assert main(["report", result_file, "--html", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out} (html, 1 run(s))\n"
    text = out.read_text(encoding="utf-8")
    # Nothing to fetch: no script, no link, no source outside the page.
    assert not re.search(r"<script|<link|(src|href)=\"(?!data:)", text)
    images = [html.unescape(alt) for alt in re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', text)]
    assert images == ["Latency percentiles (pooled over the ranks)", "QoS: requests within each class's p95 target",
                      "per-rank bandwidth"]  # fmt: skip
    # The result has no time series: said so, not drawn empty.
    assert "<h2>Tiers over the window</h2><p>Nothing was recorded for this plot.</p>" in text
    assert "storagebench.kvcache  status: OK" in text
    assert '<td>storage</td><td class="number">0.195</td>' in text  # 200 MiB read over both ranks
    assert (out.stat().st_mode & 0o777) == 0o644 & ~current_umask()


def current_umask():
    import os  # noqa: PLC0415

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_pooled_curve_is_the_ranks_histograms_merged():
    result = two_rank_result(requests=7)
    pooled = html_report.pooled_histograms(result)
    assert pooled["storage.read"].get_total_count() == 14
    nines, values = html_report.percentile_curve(pooled["storage.read"])
    assert nines[html_report.CURVE_PERCENTILES.index(99.0)] == pytest.approx(2.0)
    assert values == sorted(values) and values[-1] == pytest.approx(2.0, rel=0.01)  # every op took 2 ms
    assert html_report.percentile_curve(pooled["storage.write"]) is None  # nothing written through record_op


def test_straggler_is_marked_on_the_per_rank_plot():
    result = two_rank_result()
    result["aggregate"]["stragglers"] = [1]  # as kvcache.result marks a rank well below the median
    figure = html_report.per_rank_figure(html_report.figure_class(), result)
    labels = [text.get_text() for text in figure.axes[0].texts]
    assert labels == ["straggler"]


def test_comparison_of_a_result_with_itself_is_zero_everywhere(tmp_path, capsys):
    result = two_rank_result()
    first = write_result(tmp_path / "a.json", result)
    second = write_result(tmp_path / "b.json", result)
    compared = comparison([(first, result), (second, result)])
    changes = [row["change_percent"][1] for row in compared["rows"]]
    measured = [change for change in changes if change is not None]
    assert measured and all(change == 0.0 for change in measured)
    out = tmp_path / "ab.html"
    assert main(["report", first, second, "--html", str(out)]) == 0
    assert main(["report", first, second]) == 0
    printed = capsys.readouterr().out
    assert "comparison (change against R1)" in printed
    row = next(line for line in printed.splitlines() if line.startswith("storage read  "))
    assert row.split()[-2:] == ["+0.0", "%"]
    assert "trials of one configuration (R1, R2): median (min .. max)" in printed
    page = out.read_text(encoding="utf-8")
    assert "<h2>Comparison</h2>" in page and page.count("+0.0 %") >= len(measured)


def test_comparison_change_and_trial_spread_by_hand():
    faster = two_rank_result(window_s=30.0)  # the same bytes in half the time: twice the bandwidth
    slower = two_rank_result(window_s=60.0)
    other = two_rank_result()
    other["config"] = {**other["config"], "num_users": 16}
    results = [("slow", slower), ("fast", faster), ("other", other)]
    compared = comparison(results)
    read = next(row for row in compared["rows"] if row["key"] == "storage_read_bytes_per_s")
    assert read["values"][0] == pytest.approx(200 * 2**20 / 60 / GIB, rel=1e-3)
    assert read["change_percent"][1] == pytest.approx(100.0, rel=1e-3)
    assert trial_groups(results) == [[0, 1]]  # `other` has another setting: not a trial of them
    median, low, high = compared["trials"][0]["spread"]["storage_read_bytes_per_s"]
    assert (low, high) == (read["values"][0], read["values"][1]) and median == pytest.approx((low + high) / 2)
    assert change_percent(1.0, 0.0) is None and change_percent(None, 1.0) is None
    assert "n/a" not in format_comparison(compared).split("storage read ")[1].splitlines()[0]


def test_existing_target_or_missing_matplotlib_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch):
    result_file = write_result(tmp_path / "r.json", two_rank_result())
    taken = tmp_path / "taken.html"
    taken.write_text("mine", encoding="utf-8")
    assert main(["report", result_file, "--html", str(taken)]) == 2
    assert "--html" in capsys.readouterr().err and taken.read_text(encoding="utf-8") == "mine"
    same = tmp_path / "same"
    assert main(["report", result_file, "--csv", str(same), "--html", str(same)]) == 2
    assert "--html: is the same file as --csv" in capsys.readouterr().err and not same.exists()
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)
    fresh = tmp_path / "fresh.html"
    assert main(["report", result_file, "--html", str(fresh)]) == 2
    assert html_report.HTML_HINT in capsys.readouterr().err and not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "taken.html"]


def test_the_page_shows_what_each_hosts_device_saw(tmp_path):
    result = two_rank_result()
    assert "What the devices saw" not in html_report.page(html_report.figure_class(), [("r.json", result)])
    host = {
        "host": "a",
        "device": "nvme0n1",
        "mount_point": "/m",
        "why_none": None,
        "read_bytes": GIB,
        "write_bytes": GIB // 2,
        "read_ratio": 0.5,
        "write_ratio": 1.02,
        "utilisation": 0.9,
        "avg_queue_depth": 7.5,
    }
    none = dict(
        host,
        host="b",
        device=None,
        mount_point="/t",
        why_none="tmpfs has no block device",
        read_bytes=None,
        write_bytes=None,
        read_ratio=None,
        write_ratio=None,
        utilisation=None,
        avg_queue_depth=None,
    )
    result["device"] = {"per_host": [host, none], "read_ratio": 0.5, "write_ratio": 1.02, "hosts_counted": 1}
    text = html_report.page(html_report.figure_class(), [("r.json", result)])
    assert "<h2>What the devices saw</h2>" in text
    assert (
        '<td>a</td><td>nvme0n1</td><td class="number">1.000</td><td class="number">0.500</td>'
        '<td class="number">0.500</td><td class="number">1.020</td>'
    ) in text
    assert "<td>b</td><td>/t</td><td>tmpfs has no block device</td>" in text


def test_the_devices_time_series_and_the_traced_histograms_are_drawn():
    result = two_rank_result()
    series = [
        {"t_s": 1.0, "read_bytes_per_s": GIB, "write_bytes_per_s": GIB // 4, "utilisation": 0.5,
         "avg_queue_depth": 3.0, "dirty_bytes": GIB, "writeback_bytes": 0, "cached_bytes": 2 * GIB},
        {"t_s": 2.0, "read_bytes_per_s": 2 * GIB, "write_bytes_per_s": 0, "utilisation": None,
         "avg_queue_depth": None, "dirty_bytes": 0, "writeback_bytes": GIB // 2, "cached_bytes": 2 * GIB},
    ]  # fmt: skip
    host = {"host": "a", "device": "sda", "mount_point": "/m", "why_none": None, "read_bytes": GIB,
            "write_bytes": GIB, "read_ratio": 1.0, "write_ratio": 1.0, "utilisation": 0.5, "avg_queue_depth": 3.0,
            "timeseries": series}  # fmt: skip
    result["device"] = {"per_host": [host], "read_ratio": 1.0, "write_ratio": 1.0, "hosts_counted": 1}
    figure = html_device.device_figure(html_report.figure_class(), result)
    bandwidth, busy, _depth, cache = figure.axes
    lines = {line.get_label(): list(line.get_ydata()) for line in bandwidth.get_lines()}
    assert lines["a read"] == [1.0, 2.0] and lines["a write"] == [0.25, 0.0]
    assert busy.get_lines()[0].get_ydata()[0] == 50.0 and math.isnan(busy.get_lines()[0].get_ydata()[1])
    assert [list(line.get_ydata()) for line in cache.get_lines()] == [[1.0, 0.0], [0.0, 0.5]]
    buckets = [
        {"min": 16, "max": 31, "count": 3},
        {"min": 32, "max": 63, "count": 0},
        {"min": 64, "max": 127, "count": 1},
    ]
    traced = {"host": "a", "tool": "bpftrace", "disks": ["sda"], "error": None, "request_bytes": {},
              "d2c_us": {"RA": {"buckets": buckets}}}  # fmt: skip
    result["latency_tracing"] = {"per_host": [traced]}
    figure = html_device.tracing_figure(html_report.figure_class(), result["latency_tracing"])
    read_d2c = figure.axes[0]
    assert [patch.get_height() for patch in read_d2c.patches] == [3, 0, 1]
    assert [tick.get_text() for tick in read_d2c.get_xticklabels()] == ["16", "32", "64"]
    text = html_report.page(html_report.figure_class(), [("r.json", result)])
    assert 'alt="device counters over the window"' in text and 'alt="block-layer histograms"' in text
    assert "<h2>Block-layer latency and request sizes (bpftrace)</h2>" in text
