# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""Pure functions that build an MPI launch prefix (Open MPI or MPICH/Hydra) and its hostfile.

Nothing here runs a command or touches a file: the caller gets argv lists and file content back.
Every error is an OptionError naming the module option at fault.
"""

import hashlib
import ipaddress
import re
import shlex

from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import (
    OptionError,
    env_pairs,
    quote,
    split_launcher_params,
)
from ansible_collections.storagebench.kvcache.plugins.module_utils.mpi_params import (
    FLAVORS,
    MAX_PROCESSES,
    MPICH,
    OPENMPI,
    read_mpi_params,
)

# A hostfile replaces the host list on the command line above this many hosts ...
HOSTFILE_HOST_THRESHOLD = 64
# ... or when the whole command would be longer than this many characters (Linux caps one argument
# at 128 KiB and the whole environment + argv at ARG_MAX; ssh to each node adds its own limits).
SAFE_COMMAND_CHARS = 32768
# Where a hostfile goes when the caller names none: not the roles' cache directory
# (/var/tmp/storagebench-kvcache, kvcache_cache_dir), which is the storage under test.
DEFAULT_HOSTFILE_DIR = "/var/tmp/storagebench-kvcache-hostfiles"
# The first line of every hostfile the module writes: the mark that lets it rewrite that file and
# no other. Open MPI and Hydra both skip lines that start with '#'.
HOSTFILE_MARKER = "# written by storagebench.kvcache.kvcache_command"
# At most this many host names in a warning.
_NAMED_HOSTS = 5

# RFC 1123 labels (letters, digits, hyphens; underscores tolerated as in many internal DNS zones);
# a name never starts with "-", so it cannot turn into an mpirun option.
_LABEL_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_BRACKETED_RE = re.compile(r"^\[([^\]]+)\](?::([^:]*))?$")


def parse_host(entry):
    """Split one `hosts` entry into (name, slots or None).

    Accepts a hostname, an IPv4 or IPv6 address, `name:N`, `1.2.3.4:N` and `[v6addr]:N`.
    """
    text = str(entry).strip()
    if not text:
        raise OptionError("hosts", "an entry is empty")
    bracketed = _BRACKETED_RE.match(text)
    if bracketed:
        name, count = bracketed.group(1), bracketed.group(2)
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            raise OptionError("hosts", f"{quote(text)}: only an IPv6 address may be written in brackets") from None
        return name, _parse_slots(text, count)
    try:
        return str(ipaddress.ip_address(text)), None
    except ValueError:
        pass
    name, count = text, None
    if ":" in text:
        name, _sep, count = text.rpartition(":")
    if not _valid_host_name(name):
        raise OptionError("hosts", f"{quote(text)} is not a hostname or IP address (optionally followed by :N)")
    return name, _parse_slots(text, count)


def _parse_slots(text, count):
    if count is None:
        return None
    if not (count.isascii() and count.isdigit()):  # "²" is a digit to isdigit, not to int
        raise OptionError("hosts", f"{quote(text)}: the process count after ':' must be a positive integer")
    if len(count) > len(str(MAX_PROCESSES)) or int(count) > MAX_PROCESSES:
        raise OptionError("hosts", f"{quote(text)}: at most {MAX_PROCESSES} process slots on a host")
    slots = int(count)
    if slots < 1:
        raise OptionError("hosts", f"{quote(text)}: a host needs at least 1 process slot (host:0 is not allowed)")
    return slots


def _valid_host_name(name):
    if not name or len(name) > 253:
        return False
    if re.match(r"^[0-9.]+$", name):
        try:
            ipaddress.IPv4Address(name)
            return True
        except ValueError:
            return False
    return all(_LABEL_RE.match(label) for label in name.rstrip(".").split("."))


def normalize_hosts(hosts):
    """Parse and validate `hosts`; merge duplicates (case-insensitive names).

    Returns (entries, warnings): entries is a list of (name, slots or None), all with slots or all
    without; warnings lists what was merged.
    """
    entries = []
    seen = {}
    warnings = []
    for raw in hosts or []:
        name, slots = parse_host(raw)
        key = name.lower()
        if key in seen:
            index = seen[key]
            previous = entries[index][1]
            if previous != slots and previous is not None and slots is not None:
                raise OptionError(
                    "hosts", f"{name} is listed twice with different process counts ({previous} and {slots})"
                )
            if (previous is None) != (slots is None):
                raise OptionError("hosts", f"{name} is listed both with and without :N")
            warnings.append(f"hosts: {name} is listed more than once; it is used once")
            continue
        seen[key] = len(entries)
        entries.append((name, slots))
    explicit = [name for name, slots in entries if slots is not None]
    if explicit and len(explicit) != len(entries):
        bare = [name for name, slots in entries if slots is None]
        raise OptionError(
            "hosts",
            "give host:N on every host or on none (with :N: {}; without: {})".format(
                ", ".join(explicit[:3]), ", ".join(bare[:3])
            ),
        )
    return entries, warnings


def plan_slots(entries, num_processes=None, processes_per_host=None, oversubscribe=False):
    """Decide the process count and the slots of each host.

    Bare hosts: num_processes defaults to the number of hosts (or processes_per_host times it);
    each host gets num_processes // hosts slots, plus one for the first num_processes % hosts hosts
    (hosts left with 0 slots are dropped). `host:N` on every host: N slots each, num_processes
    defaults to their sum. Returns (num_processes, [(host, slots), ...]).
    """
    if not entries:
        raise OptionError("hosts", "no hosts to launch on")
    if num_processes is not None and num_processes < 1:
        raise OptionError("num_processes", f"must be at least 1, got {num_processes}")
    if processes_per_host is not None and processes_per_host < 1:
        raise OptionError("processes_per_host", f"must be at least 1, got {processes_per_host}")
    for option, count in (("num_processes", num_processes), ("processes_per_host", processes_per_host)):
        if count is not None and count > MAX_PROCESSES:
            raise OptionError(option, f"must be at most {MAX_PROCESSES} (an MPI rank is a C int), got {quote(count)}")
    explicit = entries[0][1] is not None
    if explicit and processes_per_host is not None:
        raise OptionError("processes_per_host", "cannot be combined with host:N entries in hosts")
    if explicit:
        slots = list(entries)
        np_ = num_processes if num_processes is not None else sum(count for _name, count in slots)
    elif processes_per_host is not None:
        slots = [(name, processes_per_host) for name, _count in entries]
        np_ = num_processes if num_processes is not None else processes_per_host * len(entries)
    else:
        np_ = num_processes if num_processes is not None else len(entries)
        base, extra = divmod(np_, len(entries))
        slots = [(name, base + (1 if index < extra else 0)) for index, (name, _count) in enumerate(entries)]
        slots = [(name, count) for name, count in slots if count > 0]
    total = sum(count for _name, count in slots)
    if np_ > MAX_PROCESSES:
        raise OptionError(
            "num_processes", f"{quote(np_)} processes in all is more than {MAX_PROCESSES} (MPI ranks are C ints)"
        )
    if np_ > total and not oversubscribe:
        raise OptionError(
            "num_processes",
            f"{np_} processes but only {total} slots on {len(slots)} hosts; add slots (host:N or "
            "processes_per_host) or set oversubscribe=true",
        )
    return np_, slots


def hostfile_content(slots, flavor):
    """The marker line, then Open MPI `host slots=N` or MPICH/Hydra `host:N` lines (`slots=` is an error there)."""
    if flavor == OPENMPI:
        lines = [f"{name} slots={count}" for name, count in slots]
    else:
        lines = [f"{name}:{count}" for name, count in slots]
    return "\n".join([HOSTFILE_MARKER] + lines) + "\n"


def default_hostfile_path(directory, content):
    """A path named after the content, so that equal host lists share a file and differing ones never collide."""
    digest = hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]
    return "{}/hostfile-{}".format(directory.rstrip("/") or "", digest)


def _ssh_options(flavor, version, ssh_command):
    if not ssh_command:
        return []
    try:
        words = shlex.split(ssh_command)
    except ValueError as exc:
        raise OptionError("ssh_command", f"cannot split {quote(ssh_command)}: {exc}") from None
    if not words or words[0].startswith("-"):
        raise OptionError("ssh_command", f"must start with the ssh program, got {quote(ssh_command)}")
    if flavor == OPENMPI:
        param = "plm_ssh_agent" if version and version[0] >= 5 else "plm_rsh_agent"
        return [(("mca", "plm_ssh_agent"), ["--mca", param, ssh_command])]
    if len(words) != 1:
        raise OptionError(
            "ssh_command",
            "MPICH/Hydra runs -launcher-exec as one program without arguments; "
            f"put {quote(ssh_command)} in a wrapper script and give its path",
        )
    return [("launcher", ["-launcher", "ssh"]), ("launcher-exec", ["-launcher-exec", words[0]])]


def check_mpi_bin(mpi_bin):
    """The launcher must be a program name or path, never a word that starts with '-' like an option."""
    if not mpi_bin or str(mpi_bin).startswith("-"):
        raise OptionError("mpi_bin", f"must name mpirun, mpiexec or a path to one, got {quote(mpi_bin)}")


def _as_mpi_params(settings, check, *args):
    """Run `check`; when it fails on an option that a flag of mpi_params set, name that flag instead.

    `settings` maps an option name to the (flag, value) of mpi_params that stands for it, or None.
    """
    try:
        return check(*args)
    except OptionError as exc:
        setting = settings.get(exc.option)
        if setting is None:
            raise
        flag, value = setting
        shown = value if isinstance(value, int) else quote(value)
        problem = str(exc).partition(": ")[2]  # the message without the option's name, which the flag replaces
        raise OptionError("mpi_params", f"{flag} {shown}: {problem}") from None


def _user_host_slots(host_list, num_processes, oversubscribe):
    """The slots of a host list given in mpi_params (a bare host is one slot, as both launchers count it)."""
    slots = {}
    for entry in host_list.split(","):
        name, count = parse_host(entry)
        slots[name] = slots.get(name, 0) + (count or 1)
    return plan_slots(list(slots.items()), num_processes, None, oversubscribe)[1]


def _left_out_warnings(entries, slots, num_processes):
    """Bare hosts left with 0 slots (more hosts than processes) are named, not dropped silently."""
    planned = set(name for name, _count in slots)
    left_out = [name for name, _count in entries if name not in planned]
    if not left_out:
        return []
    named = ", ".join(left_out[:_NAMED_HOSTS])
    if len(left_out) > _NAMED_HOSTS:
        named += f" and {len(left_out) - _NAMED_HOSTS} more"
    return [
        f"hosts: only {len(slots)} of {len(entries)} hosts get a process ({num_processes} in all); left out: {named}"
    ]


def build_mpi_prefix(
    hosts,
    flavor=OPENMPI,
    flavor_version=None,
    mpi_bin="mpirun",
    num_processes=None,
    processes_per_host=None,
    oversubscribe=False,
    allow_run_as_root=False,
    mpi_params=None,
    env=None,
    ssh_command=None,
    hostfile=None,
    hostfile_dir=DEFAULT_HOSTFILE_DIR,
    command_chars=0,
):
    """Build the MPI launch prefix for the given hosts.

    `command_chars` is the length of the command the prefix will precede, so that a prefix that
    would make the whole line longer than SAFE_COMMAND_CHARS moves its hosts to a hostfile.
    Returns a dict: prefix (argv list), num_processes, slots (list of (host, N)), hostfile (None or
    {"path", "content"}), flavor, warnings. Nothing is written: the caller writes the hostfile.
    `mpi_params` is checked element by element (mpi_params.read_mpi_params); a process count, slots
    per host or host list given there replaces the option's and is checked as the option would be.
    """
    if flavor not in FLAVORS:
        raise OptionError("mpi_flavor", "must be one of {}, got {}".format(", ".join(FLAVORS), quote(flavor)))
    check_mpi_bin(mpi_bin)
    if hostfile is not None and not str(hostfile).startswith("/"):
        raise OptionError("hostfile", f"must be an absolute path, got {quote(hostfile)}")
    entries, warnings = normalize_hosts(hosts)
    user = read_mpi_params(split_launcher_params("mpi_params", mpi_params), flavor)
    params, replaced = user.argv, user.replaced
    may_oversubscribe = oversubscribe or user.oversubscribe
    # A process count in mpi_params replaces the option's and is checked as the option would be.
    np_, slots = _as_mpi_params(
        {"num_processes": user.np, "processes_per_host": user.ppn},
        plan_slots,
        entries,
        user.np[1] if user.np else num_processes,
        user.ppn[1] if user.ppn else processes_per_host,
        may_oversubscribe,
    )
    if "hosts" not in replaced:
        warnings.extend(_left_out_warnings(entries, slots, np_))
    launch_slots = slots
    if user.host_list is not None:
        launch_slots = _as_mpi_params(
            {"num_processes": user.host_list, "hosts": user.host_list},
            _user_host_slots,
            user.host_list[1],
            np_,
            may_oversubscribe,
        )
    pairs = env_pairs(env)

    ipv6 = [name for name, _count in slots if ":" in name]
    if ipv6 and flavor == MPICH:
        raise OptionError(
            "hosts", f"MPICH/Hydra's host:N syntax cannot carry an IPv6 address ({ipv6[0]}); use a hostname"
        )
    host_arg = ",".join(f"{name}:{count}" for name, count in slots)

    # (key, tokens) in the seed's order; user mpi_params come last and replace options with the same key.
    options = [("np", ["-n", str(np_)]), ("hosts", None)]
    if flavor == OPENMPI:
        options.append(("bind-to", ["--bind-to", "none"]))
        options.append(("map-by", ["--map-by", "socket" if len(slots) == 1 else "node"]))
        if oversubscribe:
            options.append(("oversubscribe", ["--oversubscribe"]))
        if allow_run_as_root:
            options.append(("allow-run-as-root", ["--allow-run-as-root"]))
        options.extend(_ssh_options(flavor, flavor_version, ssh_command))
        options.extend((("env", name), ["-x", f"{name}={value}"]) for name, value in pairs)
    else:
        if processes_per_host is not None:
            options.append(("ppn", ["-ppn", str(processes_per_host)]))
        options.extend(_ssh_options(flavor, flavor_version, ssh_command))
        options.extend((("env", name), ["-genv", name, value]) for name, value in pairs)
        if oversubscribe:
            warnings.append("oversubscribe: MPICH/Hydra needs no flag to run more processes than slots")
        if allow_run_as_root:
            warnings.append("allow_run_as_root: MPICH/Hydra needs no flag to run as root")

    hostfile_info = None
    if "hosts" in replaced:
        warnings.append("mpi_params sets the hosts itself; the hosts option only sized num_processes")
    else:
        estimate = command_chars + len(host_arg) + sum(len(t) + 1 for _k, ts in options if ts for t in ts)
        if hostfile is not None or len(slots) > HOSTFILE_HOST_THRESHOLD or estimate > SAFE_COMMAND_CHARS or ipv6:
            content = hostfile_content(slots, flavor)
            path = hostfile if hostfile is not None else default_hostfile_path(hostfile_dir, content)
            hostfile_info = {"path": path, "content": content}
            host_tokens = ["--hostfile", path] if flavor == OPENMPI else ["-f", path]
        else:
            host_tokens = ["-host", host_arg] if flavor == OPENMPI else ["-hosts", host_arg]
        options[1] = ("hosts", host_tokens)

    prefix = [str(mpi_bin)]
    for key, tokens in options:
        if tokens and key not in replaced:
            prefix.extend(tokens)
    prefix.extend(params)
    return {
        "prefix": prefix,
        "num_processes": np_,
        "slots": launch_slots,
        "hostfile": hostfile_info,
        "flavor": flavor,
        "warnings": warnings,
    }
