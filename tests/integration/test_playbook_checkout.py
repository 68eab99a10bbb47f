"""kvcache_run.yml from a plain checkout, as a new user runs it, and the collection built from it.

A copy of the checkout's files (what a clone holds: no .venv, no collection link made by make)
and a clean environment: PATH, a HOME of its own, no ANSIBLE_* variable and no installed
collection. The run from the root also finds the cache, result and results directories already
there, with modes and owners of their own, and must leave them as they were; the run from inside
playbooks/ reads one engine config file with run-only keys in both datasize and run.
"""

import json
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile

import pytest
from ansible_cli import ROOT, clean_environment, failed_task_messages, playbook_binary

pytestmark = pytest.mark.slow
BIN = os.path.dirname(playbook_binary())
# A short workload for every run here; -e beats the inventory's values.
WORKLOAD = {"kvcache_num_users": 2, "kvcache_duration": 1, "kvcache_cpu_mem_gb": 0.125}


def git_files():
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    return [name for name in listed.stdout.decode().split("\0") if name]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """The checkout's tracked and not-ignored files, links kept as links."""
    copy = tmp_path_factory.mktemp("plain") / "kvcache"
    for name in git_files():
        source, target = os.path.join(ROOT, name), copy / name
        if not os.path.lexists(source):
            continue  # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    return copy


def run(argv, cwd, home, timeout=600):
    env = clean_environment(home)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def result_of(results_dir):
    runs = [d for d in results_dir.iterdir() if not d.is_symlink()]
    assert len(runs) == 1, runs
    return json.loads((runs[0] / "result.json").read_text()), (runs[0] / "headline.txt").read_text()


def owned_dir(path, mode, owner):
    path.mkdir()
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def mode_and_owner(path):
    info = os.stat(path)
    return stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid


def test_run_from_the_root_keeps_existing_directories_as_they_are(checkout, tmp_path):
    nobody = 65534 if os.geteuid() == 0 else None  # another owner only where we may give one
    existing = {
        "kvcache_cache_dir": owned_dir(tmp_path / "cache", 0o700, nobody),
        "kvcache_results_dir": owned_dir(tmp_path / "results", 0o777, nobody),
        "run_work_dir": owned_dir(tmp_path / "work", 0o750, nobody),
    }
    before = {name: mode_and_owner(path) for name, path in existing.items()}
    variables = dict(WORKLOAD, **{name: str(path) for name, path in existing.items()})
    proc = run(
        [playbook_binary(), "playbooks/kvcache_run.yml", "-i", "inventory/localhost.ini", "-e", json.dumps(variables)],
        cwd=checkout,
        home=tmp_path / "home",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert {name: mode_and_owner(path) for name, path in existing.items()} == before
    result, headline = result_of(existing["kvcache_results_dir"])
    assert result["status"] == "ok" and result["config"]["model"] == "tiny-1b"
    assert "dropped entries " in headline and "of entry writes" in headline, headline
    assert os.listdir(existing["kvcache_cache_dir"]) == []  # the engine removed its run directory
    assert os.listdir(existing["run_work_dir"]) == []  # the launcher's copy of the result, fetched and removed


def test_run_from_inside_playbooks_with_one_config_for_datasize_and_run(checkout, tmp_path):
    config = tmp_path / "engine.yaml"
    # Run-only keys (duration, max_requests, stats_interval) that datasize must accept too.
    config.write_text("duration: 1\nio_depth: 2\nmax_requests: 100000\nstats_interval: 0.5\n", encoding="utf-8")
    inventory = checkout / "playbooks" / "hosts.ini"
    shutil.copy(checkout / "inventory" / "localhost.ini", inventory)
    results = tmp_path / "results"
    variables = dict(WORKLOAD, kvcache_cache_dir=str(tmp_path / "cache"), kvcache_results_dir=str(results))
    variables["kvcache_config"] = str(config)
    proc = run(
        [playbook_binary(), "kvcache_run.yml", "-i", "hosts.ini", "-e", json.dumps(variables)],
        cwd=checkout / "playbooks",
        home=tmp_path / "home",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "TASK [storagebench.kvcache.datasize : Ask the engine what the run needs]" in proc.stdout
    result = result_of(results)[0]
    assert result["status"] == "ok"
    assert (result["config"]["io_depth"], result["config"]["max_requests"]) == (2, 100000)
    assert result["config"]["stats_interval"] == 0.5
    assert (tmp_path / "cache").is_dir()  # missing, so the run role made it


def _inside_collection(name, target):
    """Whether the link `name` -> `target` of a collection tarball stays inside the collection."""
    if posixpath.isabs(target):
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    return resolved != ".." and not resolved.startswith("../")


def test_built_collection_is_clean_and_works_installed(checkout, tmp_path):
    home = tmp_path / "home"
    build = run(
        [os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path)], checkout, home
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (tarball,) = tmp_path.glob("storagebench-kvcache-*.tar.gz")
    with tarfile.open(tarball) as archive:
        members = archive.getmembers()
    names = [member.name for member in members]
    # A link inside the collection (module_utils/host_probe.py -> kvcache/host_probe.py) is kept by galaxy; none may
    # lead out of it, as the checkout's own link (playbooks/collections) would.
    links = {member.name: member.linkname for member in members if member.issym() or member.islnk()}
    escaping = [name for name, target in links.items() if not _inside_collection(name, target)]
    assert not escaping, links
    assert not [name for name in names if name.startswith("playbooks/collections")]
    assert "kvcache/options.py" in names and "plugins/filter/shared_variables.py" in names

    install = run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", str(tarball)], tmp_path, home)
    assert install.returncode == 0, install.stdout + install.stderr
    installed_root = home / ".ansible" / "collections" / "ansible_collections" / "storagebench" / "kvcache"
    assert installed_root.is_dir()
    for name in links:  # each link resolves to a file of the installed copy
        target = os.path.realpath(installed_root / name)
        assert os.path.commonpath([target, os.path.realpath(installed_root)]) == os.path.realpath(installed_root), name
        assert (installed_root / name).is_file(), name
    inventory = tmp_path / "hosts.ini"
    shutil.copy(checkout / "inventory" / "localhost.ini", inventory)
    # Installed: the collection's own check play runs, with the engine's rules from the installed copy.
    installed = run(
        [playbook_binary(), "-i", str(inventory), "storagebench.kvcache.kvcache_run", "-e", "kvcache_num_users=0"],
        tmp_path,
        home,
    )
    assert installed.returncode == 2, installed.stdout + installed.stderr
    assert failed_task_messages(installed.stdout) == ["kvcache_num_users: must be >= 1, got 0"]
    # The checkout's playbooks still resolve beside an installed copy.
    listed = run([playbook_binary(), "-i", str(inventory), "playbooks/kvcache_run.yml", "--list-tasks"], checkout, home)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "storagebench.kvcache.report : Headline" in listed.stdout
