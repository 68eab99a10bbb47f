"""The HTML report of a real run (one rank, and two runs compared) opens in headless Chromium with no console
error and no request outside the page, and its screenshot is not blank."""

import json
import shutil
import subprocess

import pytest
from engine_helpers import SHORT_RUN, kvcache

CHROMIUM = shutil.which("chromium")
# As root Chromium needs --no-sandbox; the background-networking flags keep it from calling out (the machine's
# network is closed); a fresh profile per test.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0", "--window-size=1200,2400",
)  # fmt: skip
# What Chromium logs for a page's own failures: console messages (errors included) and failed loads.
PAGE_TROUBLE = ("CONSOLE", "Uncaught", "Failed to load resource", "net::ERR_")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (make test installs it as root: install-system-deps.sh --browser)"
)


def screenshot(page, tmp_path):
    shot = tmp_path / "shot.png"
    argv = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", page.as_uri()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    trouble = [line for line in done.stderr.splitlines() if any(mark in line for mark in PAGE_TROUBLE)]
    assert trouble == []
    return shot


def assert_not_blank(shot):
    from matplotlib.image import imread  # noqa: PLC0415 - the [report] extra, as the report itself

    pixels = imread(str(shot))[:, :, :3]
    assert pixels.shape[:2] == (2400, 1200)
    drawn = (pixels < 0.9).any(axis=2).mean()  # share of pixels that are not (near) white
    assert drawn > 0.02
    colours = {tuple(pixel) for pixel in (pixels[::7, ::7] * 255).astype(int).reshape(-1, 3)}
    assert len(colours) > 50  # plots and text, not a flat page


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    where = tmp_path_factory.mktemp("html")
    results = []
    for name, users in (("a", 2), ("b", 3)):
        cache = where / f"cache-{name}"
        cache.mkdir()
        out = where / f"{name}.json"
        run = kvcache("run", *SHORT_RUN, "--num-users", users, "--duration", 4, "--cache-dir", cache, "--output", out)
        assert run.returncode == 0, run.stderr
        results.append(out)
    return where, results


def test_one_run_page_opens_clean(two_runs, tmp_path):
    where, (first, _second) = two_runs
    page = tmp_path / "one.html"
    made = kvcache("report", first, "--html", page)
    assert made.returncode == 0, made.stderr
    assert_not_blank(screenshot(page, tmp_path))
    text = page.read_text(encoding="utf-8")
    # time series, percentiles, QoS, per rank: all measured; and the device's series where it was sampled
    device = json.loads(first.read_text(encoding="utf-8")).get("device") or {}
    sampled = any(host.get("timeseries") for host in device.get("per_host", []))
    assert sampled == (text.count('alt="device counters over the window"') == 1)
    assert text.count("data:image/png;base64,") == 4 + sampled


def test_comparison_page_opens_clean(two_runs, tmp_path):
    where, (first, second) = two_runs
    page = tmp_path / "two.html"
    made = kvcache("report", first, second, "--html", page)
    assert made.returncode == 0, made.stderr
    assert_not_blank(screenshot(page, tmp_path))
    text = page.read_text(encoding="utf-8")
    assert "<h2>Comparison</h2>" in text and "R2 vs R1" in text
