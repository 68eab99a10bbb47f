"""`kvcache clean --cache-dir DIR`: remove the run directories that runs no longer running left behind.

Only a run directory whose every rank has ended on this host (see cachedir.inspect_run_dir) is
touched, and inside it only the names the engine makes: the marker, the owner records, rank-N
directories and, in them, entry files and the O_DIRECT probe. Anything else stays where it is, and
so do the directories holding it; the report says what was removed, what was kept and why.
"""

import os
from typing import List

from kvcache.cachedir import MARKER, OWNER_FILE, RANK_DIR, STALE, OtherRun, other_runs, validate_cache_dir
from kvcache.precondition import PRECONDITION_FILE
from kvcache.storage_io import DIRECT_IO_PROBE
from kvcache.tiers import ENTRY_FILE


def _is_file(path: str) -> bool:
    return os.path.isfile(path) and not os.path.islink(path)


def _is_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _remove_rank_dir(path: str, dry_run: bool) -> List[str]:
    """Remove our files in one rank-N directory, then the directory if nothing else is in it.
    Returns the names kept."""
    kept = []
    for name in sorted(os.listdir(path)):
        child = os.path.join(path, name)
        if _is_file(child) and (
            ENTRY_FILE.fullmatch(name) or PRECONDITION_FILE.fullmatch(name) or name == DIRECT_IO_PROBE
        ):
            if not dry_run:
                os.unlink(child)
        else:
            kept.append(name)
    if not kept and not dry_run:
        os.rmdir(path)
    return kept


def clean_run_dir(run: OtherRun, dry_run: bool = False) -> List[str]:
    """Remove what the engine made in a stale run directory. Returns the names it kept (empty: all gone)."""
    kept: List[str] = []
    owners = []
    for name in sorted(os.listdir(run.path)):
        child = os.path.join(run.path, name)
        if name == MARKER and _is_file(child):
            continue  # last: it is what makes the directory ours
        if OWNER_FILE.fullmatch(name) and _is_file(child):
            owners.append(name)
        elif RANK_DIR.fullmatch(name) and _is_dir(child):
            kept += [f"{name}/{n}" for n in _remove_rank_dir(child, dry_run)]
        else:
            kept.append(name)
    if kept:
        return kept  # the marker and owner records stay, so the directory is still known as ours
    if not dry_run:
        for name in owners:
            os.unlink(os.path.join(run.path, name))
        os.unlink(os.path.join(run.path, MARKER))
        os.rmdir(run.path)
    return []


def run_clean(cache_dir: str, dry_run: bool, stdout) -> int:
    real = validate_cache_dir(cache_dir)
    runs = other_runs(real)
    removed = 0
    verb = "would remove" if dry_run else "removed"
    for run in runs:
        if run.state != STALE:
            stdout.write(f"kept {run.name}: {run.why} ({run.owners_text()})\n")
            continue
        try:
            kept = clean_run_dir(run, dry_run)
        except OSError as exc:  # changed or taken away while we cleaned: say so, go on with the others
            stdout.write(f"kept {run.name}: {exc.strerror or exc}\n")
            continue
        if kept:
            shown = ", ".join(kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
            stdout.write(
                f"{verb} the engine's files in {run.name} ({run.why}); kept the directory, "
                f"which holds files the engine did not make: {shown}\n"
            )
        else:
            stdout.write(f"{verb} {run.name} ({run.why}; {run.owners_text()})\n")
            removed += 1
    outcome = "would be removed" if dry_run else "removed"
    stdout.write(
        f"{real}: {removed} run director{'y' if removed == 1 else 'ies'} {outcome}, {len(runs) - removed} kept\n"
    )
    return 0
