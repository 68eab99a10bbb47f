# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""Reading `mpi_params`, the extra launcher arguments: which element is a flag and which is its value.

Every element is a flag (it starts with '-') or a value of the flag before it. How many values a
flag takes comes from the tables below (Open MPI's mpirun/prterun, MPICH's Hydra mpiexec); a flag
not listed takes none, so a bare word after it is refused instead of becoming the program the
launcher starts. `--flag=value` carries its value in the same element. A flag the module also
generates is checked as the module option it stands for would be.
Nothing here runs a command or touches a file.
"""

import re

from ansible_collections.storagebench.kvcache.plugins.module_utils.host_probe import MPICH, OPENMPI
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import (
    OptionError,
    check_env_name,
    launcher_flags,
    quote,
)

FLAVORS = (OPENMPI, MPICH)
# An MPI rank is a C int: no launch can have more processes, on one host or in all.
MAX_PROCESSES = 2**31 - 1

# Flags (without their leading dashes; both launchers take one or two) that are followed by values,
# and how many. Open MPI 4.x (mpirun) and 5.x (prterun). Only flags known to take a value: listing
# one that takes none would let a bare word after it through as the program.
OPENMPI_VALUE_COUNTS = dict.fromkeys(
    (
        "n", "np", "c", "H", "host", "hostfile", "machinefile", "default-hostfile", "rankfile", "map-by",
        "rank-by", "bind-to", "x", "wdir", "wd", "path", "prefix", "preload-files", "output-filename",
        "output", "timeout", "cpus-per-proc", "cpus-per-rank", "cpu-set", "cpu-list", "report-uri",
        "report-pid", "ompi-server", "launch-agent", "am", "tune", "display", "runtime-options", "rtos",
        "personality", "stdin", "forward-signals", "max-vm-size", "tmpdir", "debugger", "xterm",
    ),
    1,
)  # fmt: skip
OPENMPI_VALUE_COUNTS.update(dict.fromkeys(("mca", "gmca", "prtemca", "pmixmca"), 2))
# MPICH, Intel MPI and MVAPICH (the Hydra launcher).
MPICH_VALUE_COUNTS = dict.fromkeys(
    (
        "n", "np", "f", "hostfile", "machinefile", "machine", "hosts", "host", "ppn", "perhost", "grr",
        "genvlist", "envlist", "wdir", "gwdir", "path", "gpath", "umask", "launcher", "bootstrap",
        "launcher-exec", "bootstrap-exec", "bootstrap-exec-args", "rmk", "iface", "bind-to", "binding",
        "map-by", "membind", "topolib", "demux", "prepend-pattern", "outfile-pattern", "errfile-pattern",
        "nameserver", "localhost", "usize", "gpus-per-proc", "gpu-subdevs-per-proc", "ckpoint-interval",
        "ckpoint-prefix", "ckpoint-num", "ckpointlib", "hostos",
    ),
    1,
)  # fmt: skip
MPICH_VALUE_COUNTS.update(dict.fromkeys(("genv", "env"), 2))

# Flags after which the launcher would not run the engine, or would run more processes than the
# module can check; the reason is the rest of the message.
_PRINTS_AND_EXITS = "makes the launcher print and exit without running the engine"
_REPLACES_PROGRAM = "replaces the program: the launcher would not run the engine"
_PER_HOST_COUNT = "sets the processes per host, which the module cannot check; use processes_per_host"
OPENMPI_REFUSED = {
    "h": _PRINTS_AND_EXITS,
    "help": _PRINTS_AND_EXITS,
    "V": _PRINTS_AND_EXITS,
    "version": _PRINTS_AND_EXITS,
    "app": _REPLACES_PROGRAM,
    "do-not-launch": "maps the processes without launching the engine",
    "N": _PER_HOST_COUNT,
    "npernode": _PER_HOST_COUNT,
    "npersocket": _PER_HOST_COUNT,
    "pernode": _PER_HOST_COUNT,
    "ppr": _PER_HOST_COUNT,
}
MPICH_REFUSED = {
    "h": _PRINTS_AND_EXITS,
    "help": _PRINTS_AND_EXITS,
    "V": _PRINTS_AND_EXITS,
    "version": _PRINTS_AND_EXITS,
    "info": _PRINTS_AND_EXITS,
    "configfile": _REPLACES_PROGRAM,
}

# Flags each launcher spells several ways, mapped to (the key of the option the module generates,
# how the value is checked). A flag of mpi_params with the same key replaces the generated option.
_OPENMPI_KEYS = {
    "n": ("np", "count"),
    "np": ("np", "count"),
    "c": ("np", "count"),
    "host": ("hosts", "host-list"),
    "H": ("hosts", "host-list"),
    "hostfile": ("hosts", "path"),
    "machinefile": ("hosts", "path"),
    "default-hostfile": ("hosts", "path"),
    "bind-to": ("bind-to", "word"),
    "map-by": ("map-by", "word"),
    "oversubscribe": ("oversubscribe", None),
    "allow-run-as-root": ("allow-run-as-root", None),
}
_MPICH_KEYS = {
    "n": ("np", "count"),
    "np": ("np", "count"),
    "host": ("hosts", "host-list"),
    "hosts": ("hosts", "host-list"),
    "f": ("hosts", "path"),
    "hostfile": ("hosts", "path"),
    "machinefile": ("hosts", "path"),
    "machine": ("hosts", "path"),
    "ppn": ("ppn", "count"),
    "perhost": ("ppn", "count"),
    "launcher": ("launcher", "word"),
    "bootstrap": ("launcher", "word"),
    "launcher-exec": ("launcher-exec", "word"),
    "bootstrap-exec": ("launcher-exec", "word"),
}
_ENV_FLAGS = {OPENMPI: ("x",), MPICH: ("genv", "env")}
_MCA_FLAGS = ("mca", "gmca", "prtemca")
# Both spellings of Open MPI's ssh agent parameter (rsh: 4.x, ssh: 5.x) are one setting.
_MCA_SYNONYMS = {"plm_rsh_agent": "plm_ssh_agent"}
_TABLES = {
    OPENMPI: (OPENMPI_VALUE_COUNTS, OPENMPI_REFUSED, _OPENMPI_KEYS),
    MPICH: (MPICH_VALUE_COUNTS, MPICH_REFUSED, _MPICH_KEYS),
}


class UserParams:
    """What mpi_params sets: its argv, the generated options it replaces, and the settings the checks need.

    `np`, `ppn` and `host_list` are None or (flag, value) as given; `oversubscribe` is whether the
    params themselves allow more processes than slots.
    """

    def __init__(self, argv):
        self.argv = argv
        self.replaced = set()
        self.np = None
        self.ppn = None
        self.host_list = None
        self.oversubscribe = False


def _check_value(flag, check, value):
    """Check the value of a flag the module also generates, as the module option would be checked."""
    if check == "count":
        if not (value.isascii() and value.isdigit()):  # "²" is a digit to isdigit, not to int
            raise OptionError("mpi_params", f"{flag} {quote(value)}: the process count must be a whole number")
        if len(value) > len(str(MAX_PROCESSES)) or int(value) > MAX_PROCESSES:
            raise OptionError("mpi_params", f"{flag} {quote(value)}: must be at most {MAX_PROCESSES}")
        if int(value) < 1:
            raise OptionError("mpi_params", f"{flag} {value}: must be at least 1")
        return int(value)
    if check == "path" and not value.startswith("/"):
        raise OptionError("mpi_params", f"{flag} {quote(value)}: the hostfile must be an absolute path")
    if check in ("word", "host-list") and (not value or value.startswith("-")):
        raise OptionError("mpi_params", f"{flag} needs a value, got {quote(value)}")
    return value


def _oversubscribes(map_by):
    """Whether an Open MPI --map-by value carries the OVERSUBSCRIBE modifier (node:OVERSUBSCRIBE)."""
    return "oversubscribe" in re.split(r"[:,]", map_by.lower())[1:]


def read_mpi_params(argv, flavor):
    """Check the elements of mpi_params for `flavor`; returns a UserParams (OptionError when invalid)."""
    value_counts, refused, keys = _TABLES[flavor]
    user = UserParams(list(argv))
    for flag, name, values in launcher_flags("mpi_params", list(argv), value_counts, refused, "the launcher"):
        _note_setting(user, flavor, keys, flag, name, values)
    return user


def _note_setting(user, flavor, keys, flag, name, values):
    """Record what a flag replaces among the generated options, checking its value like the option's."""
    if name in _ENV_FLAGS[flavor]:
        variable = values[0].split("=", 1)[0] if flavor == OPENMPI else values[0]
        check_env_name("mpi_params", variable)
        user.replaced.add(("env", variable))
        return
    if flavor == OPENMPI and name in _MCA_FLAGS:
        param = _MCA_SYNONYMS.get(values[0], values[0])
        if param == "plm_ssh_agent" and not values[1].strip():
            raise OptionError("mpi_params", f"{flag} {values[0]} needs the ssh command, got {quote(values[1])}")
        user.replaced.add(("mca", param))
        return
    if name not in keys:
        return
    key, check = keys[name]
    user.replaced.add(key)
    value = _check_value(flag, check, values[0]) if check else None
    if key == "np":
        user.np = (flag, value)
    elif key == "ppn":
        user.ppn = (flag, value)
    elif check == "host-list":
        user.host_list = (flag, value)
    elif key == "oversubscribe":
        user.oversubscribe = True
    elif key == "map-by" and _oversubscribes(value):
        user.oversubscribe = True
