"""`kvcache_run.yml` with kvcache_autoscale=qos on the namespace fleet: one rank on each of three hosts search
together (rank 0 decides, every rank applies the same count at the same step), one result, one answer."""

import json

from playbook_helpers import result_files, run_playbook, write_inventory

RANKS = 3
STEP_S = 2.0


def test_qos_autoscaling_on_three_hosts_gives_one_answer(fleet, collections, tmp_path):
    inventory = write_inventory(
        fleet, tmp_path / "hosts.ini", kvcache_processes_per_host=1, kvcache_duration=8, kvcache_autoscale="qos",
        kvcache_autoscale_step_s=STEP_S, kvcache_autoscale_max_users=8,
    )  # fmt: skip
    done = run_playbook(fleet, collections, inventory, tmp_path / "results")
    assert done.returncode == 0, done.stdout[-4000:]
    [result_path] = result_files(tmp_path / "results")
    with open(result_path, encoding="utf-8") as handle:
        result = json.load(handle)
    assert result["status"] == "ok" and result["ranks"] == RANKS
    block = result["autoscaling"]
    assert (block["mode"], block["ranks"], block["step_s"]) == ("qos", RANKS, STEP_S)
    assert all(step["users_total"] == step["users_per_rank"] * RANKS for step in block["steps"])
    timelines = [rank["users_timeline"] for rank in result["per_rank"]]
    assert timelines[0] and timelines[0][0] == [0.0, 2]  # from kvcache_num_users, at the window start
    # Every rank ran the same counts, changed at the same steps (each rank stamps the change with its own clock).
    assert [[users for _t, users in timeline] for timeline in timelines] == [[u for _t, u in timelines[0]]] * RANKS
    for changes in zip(*timelines):
        stamps = [at for at, _users in changes]
        assert max(stamps) - min(stamps) < STEP_S / 4, changes
    line = f"autoscaling (qos): {block['summary']}"
    with open(result_path.replace("result.json", "headline.txt"), encoding="utf-8") as handle:
        headline = handle.read()
    assert line in headline.splitlines() and json.dumps(line) in done.stdout
    print("\nfleet autoscaling headline:\n" + headline)  # `make test-fleet` shows it (pytest -s)
