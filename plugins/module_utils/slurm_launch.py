# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""Pure functions that build a Slurm launch: the `srun` prefix, its node-list file and an sbatch script.

The host and process inputs are read as for MPI (mpi_launch.normalize_hosts and plan_slots). Every
generated flag is one argv element, `--flag=value`. `slurm_params` come last; a flag there that the
module also generates replaces the generated one. Nothing here runs a command or touches a file.
Every error is an OptionError naming the module option at fault.
"""

import re
import shlex

from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import (
    OptionError,
    launcher_flags,
    quote,
    split_launcher_params,
)
from ansible_collections.storagebench.kvcache.plugins.module_utils.mpi_launch import (
    DEFAULT_HOSTFILE_DIR,
    HOSTFILE_HOST_THRESHOLD,
    SAFE_COMMAND_CHARS,
    default_hostfile_path,
    normalize_hosts,
    plan_slots,
)
from ansible_collections.storagebench.kvcache.plugins.module_utils.mpi_params import MAX_PROCESSES

DEFAULT_SLURM_MPI = "pmix"

# srun flags that take a value, without their dashes (a flag not listed takes none: give its value as
# --flag=value). Only flags known to need one: listing one that takes none would let a bare word after
# it through as the program srun runs.
SRUN_VALUE_FLAGS = frozenset(
    (
        "N", "nodes", "n", "ntasks", "ntasks-per-node", "w", "nodelist", "mpi", "cpu-bind", "p", "partition",
        "A", "account", "t", "time", "x", "exclude", "C", "constraint", "c", "cpus-per-task", "gres", "G",
        "gpus", "gpus-per-node", "gpus-per-task", "mem", "mem-per-cpu", "mem-per-gpu", "q", "qos",
        "reservation", "J", "job-name", "o", "output", "e", "error", "i", "input", "D", "chdir", "export",
        "m", "distribution", "network", "M", "clusters", "dependency", "d", "begin", "b",
    ),
)  # fmt: skip
_VALUE_COUNTS = dict.fromkeys(SRUN_VALUE_FLAGS, 1)
# Flags after which srun would not run the engine as built.
_REFUSED = {
    "h": "makes srun print and exit without running the engine",
    "help": "makes srun print and exit without running the engine",
    "usage": "makes srun print and exit without running the engine",
    "V": "makes srun print and exit without running the engine",
    "version": "makes srun print and exit without running the engine",
    "test-only": "makes srun check the job without running the engine",
    "multi-prog": "replaces the program: srun would not run the engine",
}
# A flag of slurm_params (any spelling) -> the key of the generated option it replaces.
_KEYS = {
    "N": "nodes",
    "nodes": "nodes",
    "n": "ntasks",
    "ntasks": "ntasks",
    "ntasks-per-node": "ntasks-per-node",
    "w": "nodelist",
    "nodelist": "nodelist",
    "mpi": "mpi",
    "cpu-bind": "cpu-bind",
    "p": "partition",
    "partition": "partition",
    "A": "account",
    "account": "account",
    "t": "time",
    "time": "time",
}
# The generated options that an sbatch script also states as #SBATCH lines, in this order.
_SBATCH_KEYS = ("nodes", "ntasks", "ntasks-per-node", "nodelist", "partition", "account", "time")

# Slurm's time formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds.
_TIME_RE = re.compile(
    r"^(?:(\d+)|(\d+):(\d+)|(\d+):(\d+):(\d+)|(\d+)-(\d+)|(\d+)-(\d+):(\d+)|(\d+)-(\d+):(\d+):(\d+))$"
)
# A value in an #SBATCH line or a Slurm name: no blanks, quotes, '#' or backslash (sbatch splits those lines itself).
_PLAIN_RE = re.compile(r"^[^\s'\"#\\]+$")


def check_time_limit(value, option="slurm_time_limit"):
    """A Slurm time limit as a string: whole minutes (an int) or one of Slurm's time formats."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise OptionError(option, f"must be minutes or a Slurm time such as 2-12:30:00, got {quote(value)}")
    text = str(value).strip()
    match = _TIME_RE.match(text) if text.isascii() else None
    if match is None:
        raise OptionError(
            option,
            f"{quote(value)} is not a Slurm time: give minutes, minutes:seconds, hours:minutes:seconds, "
            "days-hours, days-hours:minutes or days-hours:minutes:seconds",
        )
    groups = [group for group in match.groups() if group is not None]
    # Every part after the first is bounded: seconds and minutes below 60, hours after days below 24.
    limits = {2: (60,), 3: (60, 60)}.get(len(groups), ())
    if "-" in text:
        limits = (24, 60, 60)[: len(groups) - 1]
    for part, limit in zip(groups[1:], limits):
        if int(part) >= limit:
            raise OptionError(option, f"{quote(value)}: {part} is out of range (below {limit})")
    return text


def _check_name(option, value):
    if not value or not _PLAIN_RE.match(str(value)) or str(value).startswith("-"):
        raise OptionError(option, f"must be a Slurm name without blanks, quotes or '#', not starting with '-', "
                                  f"got {quote(value)}")  # fmt: skip
    return str(value)


def check_srun_path(srun_path):
    """srun must be named by a program name or a path, never a word that starts with '-' like an option."""
    if not srun_path or str(srun_path).startswith("-"):
        raise OptionError("srun_path", f"must name srun or a path to it, got {quote(srun_path)}")


def read_slurm_params(argv):
    """Check slurm_params; returns ({key: (flag, value)} of the generated options it replaces, its argv)."""
    replaced = {}
    for flag, name, values in launcher_flags("slurm_params", list(argv), _VALUE_COUNTS, _REFUSED, "srun"):
        if name in _KEYS:
            key = _KEYS[name]
            replaced[key] = (flag, _check_param_value(key, flag, values[0] if values else None))
    return replaced, list(argv)


def _check_param_value(key, flag, value):
    """A flag that replaces a generated option is checked as that option is."""
    if value is None or value == "" or value.startswith("-"):
        raise OptionError("slurm_params", f"{flag} needs a value, got {quote(value)}")
    if key == "ntasks" or key == "ntasks-per-node":
        if not (value.isascii() and value.isdigit()) or len(value) > len(str(MAX_PROCESSES)):
            raise OptionError("slurm_params", f"{flag} {quote(value)}: the task count must be a whole number")
        if not 1 <= int(value) <= MAX_PROCESSES:
            raise OptionError("slurm_params", f"{flag} {value}: must be between 1 and {MAX_PROCESSES}")
        return int(value)
    if key == "time":
        try:
            return check_time_limit(value, "slurm_params")
        except OptionError as exc:
            raise OptionError("slurm_params", f"{flag} {str(exc).partition(': ')[2]}") from None
    return value


def nodelist_content(slots):
    """The node-list file srun reads with --nodelist=FILE: one host a line."""
    return "".join(f"{name}\n" for name, _count in slots)


def build_srun_prefix(
    hosts,
    srun_path="srun",
    num_processes=None,
    processes_per_host=None,
    slurm_mpi=DEFAULT_SLURM_MPI,
    partition=None,
    account=None,
    time_limit=None,
    slurm_params=None,
    hostfile=None,
    hostfile_dir=DEFAULT_HOSTFILE_DIR,
    command_chars=0,
):
    """Build the srun prefix for the given hosts (none: Slurm picks the nodes).

    Returns a dict: prefix (argv list), num_processes, slots (list of (host, N)), hostfile (None or
    {"path", "content"}), sbatch (list of the #SBATCH options, `--name=value`), warnings.
    """
    check_srun_path(srun_path)
    if hostfile is not None and not str(hostfile).startswith("/"):
        raise OptionError("hostfile", f"must be an absolute path, got {quote(hostfile)}")
    if not slurm_mpi or not re.match(r"^[A-Za-z0-9_]+$", str(slurm_mpi)):
        raise OptionError("slurm_mpi", f"must be the name of a Slurm MPI plugin such as pmix, got {quote(slurm_mpi)}")
    if partition is not None:
        _check_name("slurm_partition", partition)
    if account is not None:
        _check_name("slurm_account", account)
    time_text = check_time_limit(time_limit) if time_limit is not None else None
    replaced, params = read_slurm_params(split_launcher_params("slurm_params", slurm_params))

    entries, warnings = normalize_hosts(hosts)
    addresses = [name for name, _count in entries if ":" in name]
    if addresses:
        raise OptionError("hosts", f"Slurm takes node names, not IPv6 addresses ({addresses[0]})")
    ntasks_override = replaced["ntasks"][1] if "ntasks" in replaced else None
    if entries:
        try:
            np_, slots = plan_slots(entries, ntasks_override or num_processes, processes_per_host)
        except OptionError as exc:
            if ntasks_override is None or exc.option != "num_processes":
                raise
            raise OptionError("slurm_params", f"{replaced['ntasks'][0]} {str(exc).partition(': ')[2]}") from None
    else:
        if processes_per_host is not None and processes_per_host < 1:
            raise OptionError("processes_per_host", f"must be at least 1, got {processes_per_host}")
        np_ = ntasks_override or num_processes or processes_per_host or 1
        if np_ < 1 or np_ > MAX_PROCESSES:
            raise OptionError("num_processes", f"must be between 1 and {MAX_PROCESSES}, got {np_}")
        slots = []

    options = []  # (key, value), in the order srun gets them
    if slots:
        options.append(("nodes", str(len(slots))))
    options.append(("ntasks", str(np_)))
    counts = set(count for _name, count in slots)
    if len(counts) == 1:
        options.append(("ntasks-per-node", str(counts.pop())))
    elif not slots and processes_per_host is not None:
        options.append(("ntasks-per-node", str(processes_per_host)))
    elif slots:
        warnings.append(
            "hosts: the hosts have different slot counts; srun places the tasks itself (no --ntasks-per-node)"
        )
    hostfile_info = None
    if slots and "nodelist" not in replaced:
        host_arg = ",".join(name for name, _count in slots)
        estimate = command_chars + len(host_arg) + 200
        if hostfile is not None or len(slots) > HOSTFILE_HOST_THRESHOLD or estimate > SAFE_COMMAND_CHARS:
            content = nodelist_content(slots)
            path = hostfile if hostfile is not None else default_hostfile_path(hostfile_dir, content)
            if "/" not in path:  # srun reads the value as a file only when it holds a "/"
                raise OptionError("hostfile", f"must be an absolute path, got {quote(path)}")
            hostfile_info = {"path": path, "content": content}
            host_arg = path
        options.append(("nodelist", host_arg))
    options.append(("mpi", str(slurm_mpi)))
    options.append(("cpu-bind", "none"))
    for key, value in (("partition", partition), ("account", account), ("time", time_text)):
        if value is not None:
            options.append((key, value))

    prefix = [str(srun_path)] + [f"--{key}={value}" for key, value in options if key not in replaced] + params
    sbatch = []
    generated = dict(options)
    for key in _SBATCH_KEYS:
        value = replaced[key][1] if key in replaced else generated.get(key)
        if value is not None:
            sbatch.append(f"--{key}={value}")
    return {
        "prefix": prefix,
        "num_processes": np_,
        "slots": slots,
        "hostfile": hostfile_info,
        "sbatch": sbatch,
        "warnings": warnings,
    }


def sbatch_script(sbatch_options, argv):
    """The batch script: #!/bin/bash, one #SBATCH line an option, then the srun line (shlex.join of argv)."""
    for option in sbatch_options:
        if not _PLAIN_RE.match(option):
            raise OptionError("slurm_batch", f"{quote(option)} cannot go on an #SBATCH line (blanks or quotes)")
    lines = ["#!/bin/bash"] + [f"#SBATCH {option}" for option in sbatch_options] + [shlex.join(argv)]
    return "\n".join(lines) + "\n"
