"""Calling the collection through the `ansible` command line, as a user would (shared by the module's tests)."""

import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def open_mpi_mpirun():
    """mpirun on PATH when it is Open MPI's (the module's mpi_flavor=auto asks it), else None."""
    mpirun = shutil.which("mpirun")
    if not mpirun:
        return None
    try:
        version = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return mpirun if "Open MPI" in version.stdout + version.stderr else None


def ansible_binary():
    candidate = os.path.join(os.path.dirname(sys.executable), "ansible")
    return candidate if os.access(candidate, os.X_OK) else shutil.which("ansible")


def collections_path(tmp_path):
    """A collections path that holds this checkout as storagebench.kvcache (a link, unless it already is one)."""
    parts = ROOT.split(os.sep)
    if parts[-3:] == ["ansible_collections", "storagebench", "kvcache"]:
        return os.sep.join(parts[:-3])
    namespace = tmp_path / "collections" / "ansible_collections" / "storagebench"
    namespace.mkdir(parents=True, exist_ok=True)
    if not (namespace / "kvcache").is_symlink():
        os.symlink(ROOT, str(namespace / "kvcache"))
    return str(tmp_path / "collections")


def playbook_binary():
    """ansible-playbook beside this interpreter (the venv's), else the one on PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    return candidate if os.access(candidate, os.X_OK) else shutil.which("ansible-playbook")


def clean_environment(home):
    """What a new user's shell has: PATH with this venv's bin first, a HOME of its own, no ANSIBLE_* variable."""
    return {
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"]),
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }


def run_playbook(playbook, variables, home, *extra, timeout=600):
    """A playbook of this checkout on inventory/localhost.ini, as a new user's shell runs it (clean_environment),
    with `variables` as one JSON -e; returns the CompletedProcess (stdout and stderr as text)."""
    command = [playbook_binary(), "-i", "inventory/localhost.ini", f"playbooks/{playbook}", *extra]
    return subprocess.run(
        [*command, "-e", json.dumps(variables)],
        cwd=ROOT,
        env=clean_environment(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_with_this_engine(playbook, tmp_path, variables, *extra, timeout=600):
    """run_playbook with this checkout's engine (its venv: nothing to install, the setup tag skipped) and the
    cache, results, work and home directories under tmp_path; `variables` are given on top."""
    variables = {
        "kvcache_cache_dir": str(tmp_path / "cache"),
        "kvcache_results_dir": str(tmp_path / "results"),
        "kvcache_venv": os.path.dirname(os.path.dirname(sys.executable)),
        "run_work_dir": str(tmp_path / "work"),
        **variables,
    }
    return run_playbook(playbook, variables, tmp_path / "home", "--skip-tags", "setup", *extra, timeout=timeout)


def the_run(results):
    """(directory, result) of the one run under a results directory (not the `latest` link, not `cluster`)."""
    (run,) = [path for path in results.iterdir() if not path.is_symlink() and path.name != "cluster"]
    return run, json.loads((run / "result.json").read_text(encoding="utf-8"))


def failed_task_messages(output):
    """The `msg` of every `fatal: [host]: FAILED! => {...}` line of ansible-playbook's default output."""
    messages = []
    for line in output.splitlines():
        marker, payload = line.partition("FAILED! => ")[1:]
        if marker and line.startswith("fatal: "):
            try:
                messages.append(str(json.loads(payload).get("msg", "")))
            except ValueError:
                messages.append(payload)
    return messages
