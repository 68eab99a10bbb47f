"""`kvcache_run.yml` against the namespace fleet: the whole path a user takes, and its failures."""

import json
import os
import signal
import subprocess
import time

from fleet import SHARED_CACHE
from playbook_helpers import (
    ENGINE_PYTHON,
    ansible_environment,
    playbook_argv,
    result_files,
    run_playbook,
    write_inventory,
)


def results_left(fleet, index):
    """What is in a host's private run_work_dir (/var/tmp/storagebench-kvcache-results on that host)."""
    return sorted(os.listdir(fleet.private_results(index)))


def test_run_playbook_six_ranks_on_three_hosts(fleet, collections, tmp_path):
    inventory = write_inventory(fleet, tmp_path / "hosts.ini")
    done = run_playbook(fleet, collections, inventory, tmp_path / "results")
    assert done.returncode == 0, done.stdout[-4000:]
    [result_path] = result_files(tmp_path / "results")
    result = json.loads(open(result_path, encoding="utf-8").read())
    assert result["status"] == "ok"
    assert result["ranks"] == 6
    hosts = [r["host"] for r in result["per_rank"]]
    assert sorted(set(hosts)) == sorted(fleet.names)
    assert all(hosts.count(name) == 2 for name in fleet.names)
    assert all(r["tiers"]["storage"]["bytes_written"] > 0 for r in result["per_rank"])
    # One sampler and one audit per host, each beside that host's two ranks.
    for block in (result["device"]["per_host"], result["audit"]["per_host"]):
        assert sorted(h["host"] for h in block) == sorted(fleet.names)
        assert all(h["ranks"] == [r["rank"] for r in result["per_rank"] if r["host"] == h["host"]] for h in block)
    assert all(h["engine_write_bytes"] > 0 and h["source"] != "none" for h in result["device"]["per_host"])
    assert all(h["start"]["kernel"] == os.uname().release for h in result["audit"]["per_host"])
    run_dir = os.path.dirname(result_path)
    assert os.path.exists(os.path.join(run_dir, "engine.log"))
    assert os.path.exists(os.path.join(run_dir, "cluster_information.json"))
    assert "6 rank(s) on 3 host(s)" in done.stdout  # the report's headline
    with open(os.path.join(run_dir, "headline.txt"), encoding="utf-8") as handle:
        print("\nfleet run headline:\n" + handle.read())  # `make test-fleet` shows it (pytest -s)
    for index in range(fleet.count):
        assert fleet.private_cache_files(index) == [], f"{fleet.names[index]}'s cache dir was left dirty"
        # Fetched, then removed from the launcher; nothing was ever written on the other hosts.
        assert results_left(fleet, index) == [], f"{fleet.names[index]} kept {results_left(fleet, index)}"


def test_mpi_hosts_not_starting_with_the_launcher_are_refused(fleet, collections, tmp_path):
    # Rank 0 would run (and write the result) on kvfleet1 while kvfleet0 launches and fetches.
    hosts = "{{ (ansible_play_hosts | map('extract', hostvars, 'ansible_host') | list)[1:] + [ansible_host] }}"
    inventory = write_inventory(fleet, tmp_path / "hosts.ini", run_mpi_hosts=hosts)
    done = run_playbook(fleet, collections, inventory, tmp_path / "results", "--tags", "run")
    assert done.returncode != 0
    assert "run_mpi_hosts must list the hosts in launch order with the launcher first" in done.stdout
    assert f"'{fleet.addresses[1]}'" in done.stdout and fleet.names[0] in done.stdout
    # Refused before anything was created, built or launched.
    for task in ("Create the cache directory", "Build the benchmark command", "Run the benchmark, with a timeout"):
        assert task not in done.stdout
    assert result_files(tmp_path / "results") == []


def test_limit_to_two_hosts_runs_on_two(fleet, collections, tmp_path):
    inventory = write_inventory(fleet, tmp_path / "hosts.ini")
    done = run_playbook(
        fleet,
        collections,
        inventory,
        tmp_path / "results",
        "--limit",
        f"{fleet.names[0]},{fleet.names[1]}",
        "--skip-tags",
        "setup",
    )
    assert done.returncode == 0, done.stdout[-4000:]
    [result_path] = result_files(tmp_path / "results")
    result = json.loads(open(result_path, encoding="utf-8").read())
    assert result["ranks"] == 4
    assert sorted(result["hosts"]) == sorted(fleet.names[:2])


def test_unreachable_host_stops_the_play_before_launch(fleet, collections, tmp_path):
    # An address on the test bridge where no host answers: inside the subnet the safety route guards.
    ghost = ("kvfleet-ghost", "10.77.0.99")
    inventory = write_inventory(fleet, tmp_path / "hosts.ini", extra_hosts=[ghost])
    started = time.monotonic()
    done = run_playbook(fleet, collections, inventory, tmp_path / "results", "--skip-tags", "setup")
    assert done.returncode != 0
    assert "kvfleet-ghost" in done.stdout and "UNREACHABLE" in done.stdout
    assert "Run the benchmark" not in done.stdout  # nothing was launched
    assert result_files(tmp_path / "results") == []
    assert time.monotonic() - started < 300
    for index in range(fleet.count):
        assert fleet.private_cache_files(index) == []


def _engine_pids(namespace):
    pids = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
    ).stdout.split()
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if b"kvcache" in argv and b"run" in argv:
            found.append(int(pid))
    return found


def test_a_rank_killed_mid_run_fails_the_play_with_logs(fleet, collections, tmp_path):
    inventory = write_inventory(fleet, tmp_path / "hosts.ini", kvcache_duration=120)
    results = tmp_path / "results"
    process = subprocess.Popen(
        playbook_argv(inventory, results, "--skip-tags", "setup"),
        env=ansible_environment(fleet, collections),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    victim = fleet.names[2]
    try:
        killed = False
        for _attempt in range(1200):  # up to 120 s for the ranks on the last host to be running
            pids = _engine_pids(victim)
            if pids:
                time.sleep(1.0)  # let it get into the measurement window
                for pid in _engine_pids(victim)[:1]:
                    os.kill(pid, signal.SIGKILL)
                    killed = True
                break
            time.sleep(0.1)
        assert killed, f"no engine rank ever ran on {victim}"
        output = process.communicate(timeout=240)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode != 0, output[-4000:]
    assert "the benchmark failed" in output
    logs = [os.path.join(root, f) for root, _d, files in os.walk(results) for f in files if f == "engine.log"]
    assert logs, "the rescue must fetch the logs to the controller"
    for path in result_files(results):
        assert json.loads(open(path, encoding="utf-8").read())["status"] != "ok"
    assert results_left(fleet, 0) == [], "the rescue must remove the launcher's copy of the result"
    for index in range(fleet.count):
        for _attempt in range(100):  # orphaned ranks are being killed by mpirun; give them 10 s
            if not _engine_pids(fleet.names[index]):
                break
            time.sleep(0.1)
        assert not _engine_pids(fleet.names[index]), f"ranks left running on {fleet.names[index]}"
    # A SIGKILLed rank leaves its files; the ranks mpirun stopped removed theirs. `kvcache clean` on each host, as a
    # user would run it, removes the rest, so that the tests after this one find empty cache directories.
    for index in range(fleet.count):
        cleaned = fleet.ssh(index, ENGINE_PYTHON, "-m", "kvcache", "clean", "--cache-dir", SHARED_CACHE)
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        assert fleet.private_cache_files(index) == [], cleaned.stdout
