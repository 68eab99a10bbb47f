"""`kvcache_mlperf.yml` against the namespace fleet: an OPEN option, one rank on each of the three hosts, short."""

import json
import os
import subprocess

from playbook_helpers import BIN, REPO, ansible_environment, read_json, write_inventory

from kvcache.mlperf import layout, rules

PLAYBOOK = os.path.join(REPO, "playbooks", "kvcache_mlperf.yml")


def test_mlperf_playbook_open_option_on_three_hosts(fleet, collections, tmp_path):
    inventory = write_inventory(fleet, tmp_path / "hosts.ini", kvcache_processes_per_host=1, kvcache_duration=2)
    results = tmp_path / "results"
    variables = {"kvcache_results_dir": str(results), "run_mlperf_category": "open", "run_mlperf_option": "1",
                 "run_mlperf_trials": 2, "run_mlperf_delay_s": 0}  # fmt: skip
    env = ansible_environment(fleet, collections)

    def playbook(*extra):
        argv = [os.path.join(BIN, "ansible-playbook"), "-i", str(inventory), PLAYBOOK, "-e", json.dumps(variables)]
        return subprocess.run(argv + list(extra), env=env, capture_output=True, text=True, timeout=600, check=False,
                              cwd=REPO)  # fmt: skip

    # The namespace hosts share one root filesystem, so one engine venv: the deps role installs it from one of them.
    done = playbook()
    assert done.returncode == 0, done.stdout[-4000:]
    (run,) = [path for path in results.iterdir() if not path.is_symlink()]
    (tree,) = layout.find_run_dirs(str(run / "mlperf"))
    summary = read_json(layout.summary_file(tree, os.path.basename(tree)))
    assert summary["total_ranks"] == 3
    metadata = read_json(layout.metadata_file(tree, os.path.basename(tree)))
    assert sorted(set(metadata["hosts"])) == sorted(fleet.names)
    for trial in (1, 2):
        trial_directory = layout.trial_dir(tree, "1", trial)
        assert read_json(os.path.join(trial_directory, layout.TRIAL_FILE))["status"] == "ok"
        for rank in range(3):  # every rank's file, written by rank 0 on the launcher and fetched
            assert os.path.isfile(layout.rank_file(trial_directory, rank, os.path.basename(tree)))
    assert read_json(run / "verdict.json")["verdict"] == rules.OPEN
    headline = (run / "headline.txt").read_text(encoding="utf-8")
    assert "2 of 2 trials x 3 ranks" in headline and "verdict: OPEN" in headline
    print("\nfleet MLPerf headline:\n" + headline)  # `make test-fleet` shows it (pytest -s)
    for index in range(fleet.count):
        assert fleet.private_cache_files(index) == [], f"{fleet.names[index]}'s cache dir was left dirty"
        left = os.listdir(fleet.private_results(index))
        assert left == [], f"{fleet.names[index]} kept {left}"  # the tree was fetched, then removed
