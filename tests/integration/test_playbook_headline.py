"""The report role's headline says how many entries were dropped and what share of writes they were.

One real result from the engine, then copies as the report role may meet them: entries dropped, no
entry written (a null share), and an older result without the block. One of the results
directories already holds a file named `latest` that the role did not make: it stays as it was.
"""

import copy
import json
import os
import subprocess
import sys

from ansible_cli import clean_environment, collections_path, playbook_binary

PLAYBOOK = """
- name: Report each result
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Report
      ansible.builtin.include_role:
        name: storagebench.kvcache.report
      vars:
        report_result_file: "{{ item }}"
      loop: {files}
"""


def engine_result(tmp_path):
    cache, output = tmp_path / "cache", tmp_path / "engine.json"
    cache.mkdir()
    argv = [sys.executable, "-m", "kvcache", "run", "--model", "tiny-1b", "--num-users", "2", "--duration", "1"]
    argv += ["--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--cache-dir", str(cache), "--output", str(output), "--quiet"]
    subprocess.run(argv, check=True, timeout=120, capture_output=True)
    return json.loads(output.read_text())


def test_headline_counts_dropped_entries(tmp_path):
    result = engine_result(tmp_path)
    assert {"count", "share_of_writes"} <= set(result["dropped_entries"])
    variants = {
        "as-run": result,
        "dropped": dict(result, dropped_entries={"count": 49, "entry_writes": 400, "share_of_writes": 0.1225}),
        "no-writes": dict(result, dropped_entries={"count": 0, "entry_writes": 0, "share_of_writes": None}),
        "older": {key: value for key, value in copy.deepcopy(result).items() if key != "dropped_entries"},
    }
    files = []
    for name, content in variants.items():
        run_dir = tmp_path / name / "run-1"
        run_dir.mkdir(parents=True)
        (run_dir / "result.json").write_text(json.dumps(content))
        files.append(str(run_dir / "result.json"))
    (tmp_path / "dropped" / "latest").write_text("mine\n")
    (tmp_path / "older-page" / "run-1").mkdir(parents=True)
    (tmp_path / "older-page" / "run-1" / "result.json").write_text(json.dumps(result))
    (tmp_path / "older-page" / "run-1" / "report.html").write_text("mine\n")
    files.append(str(tmp_path / "older-page" / "run-1" / "result.json"))
    playbook = tmp_path / "report.yml"
    playbook.write_text(PLAYBOOK.replace("{files}", json.dumps(files)))
    env = clean_environment(tmp_path / "home")
    env["ANSIBLE_COLLECTIONS_PATH"] = collections_path(tmp_path)
    proc = subprocess.run(
        [playbook_binary(), "-i", "localhost,", "-c", "local", str(playbook)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]

    def headline(name):
        return (tmp_path / name / "run-1" / "headline.txt").read_text()

    assert f"dropped entries {result['dropped_entries']['count']} (" in headline("as-run")
    assert "dropped entries 49 (12.25 % of entry writes)" in headline("dropped")
    assert "dropped entries 0 (n/a of entry writes)" in headline("no-writes")
    assert "dropped entries n/a (n/a of entry writes)" in headline("older")
    # Our link is made or moved; a file of someone else's by that name is left as it was, with a warning.
    assert os.readlink(tmp_path / "as-run" / "latest") == "run-1"
    assert (tmp_path / "dropped" / "latest").read_text() == "mine\n"
    assert f"WARNING: {tmp_path / 'dropped' / 'latest'} is not a link this role made" in proc.stdout
    # The HTML report beside each result, named in its headline; one that exists is left alone, with a warning.
    page = tmp_path / "as-run" / "run-1" / "report.html"
    assert f"html report: {page}\n" in headline("as-run")
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "html report:" not in headline("older-page")
    assert (tmp_path / "older-page" / "run-1" / "report.html").read_text() == "mine\n"
    assert "WARNING: no HTML report: kvcache report: error: --html: " in proc.stdout
