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

from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import OptionError, env_pairs

OPENMPI = "openmpi"
MPICH = "mpich"
FLAVORS = (OPENMPI, MPICH)

# A hostfile replaces the host list on the command line above this many hosts ...
HOSTFILE_HOST_THRESHOLD = 64
# ... or when the whole command would be longer than this many characters (Linux caps one argument
# at 128 KiB and the whole environment + argv at ARG_MAX; ssh to each node adds its own limits).
SAFE_COMMAND_CHARS = 32768
# Where a hostfile goes when the caller names none: not the roles' cache directory
# (/var/tmp/storagebench-kvcache, kvcache_cache_dir), which is the storage under test.
DEFAULT_HOSTFILE_DIR = "/var/tmp/storagebench-kvcache-hostfiles"

# RFC 1123 labels (letters, digits, hyphens; underscores tolerated as in many internal DNS zones);
# a name never starts with "-", so it cannot turn into an mpirun option.
_LABEL_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_BRACKETED_RE = re.compile(r"^\[([^\]]+)\](?::([^:]*))?$")

# Flags each launcher spells several ways, mapped to the key of the option the module generates.
# A flag of mpi_params with the same key replaces the generated option.
_OPENMPI_KEYS = {
    "n": "np",
    "np": "np",
    "c": "np",
    "host": "hosts",
    "H": "hosts",
    "hostfile": "hosts",
    "machinefile": "hosts",
    "default-hostfile": "hosts",
    "bind-to": "bind-to",
    "map-by": "map-by",
    "oversubscribe": "oversubscribe",
    "allow-run-as-root": "allow-run-as-root",
}
_MPICH_KEYS = {
    "n": "np",
    "np": "np",
    "host": "hosts",
    "hosts": "hosts",
    "f": "hosts",
    "hostfile": "hosts",
    "machinefile": "hosts",
    "ppn": "ppn",
    "launcher": "launcher",
    "bootstrap": "launcher",
    "launcher-exec": "launcher-exec",
    "bootstrap-exec": "launcher-exec",
}
# Keys whose flag takes a value, so that the value is not read as a flag.
_TAKES_VALUE = {"np", "hosts", "bind-to", "map-by", "ppn", "launcher", "launcher-exec"}
# Both spellings of Open MPI's ssh agent parameter (rsh: 4.x, ssh: 5.x) are one setting.
_MCA_SYNONYMS = {"plm_rsh_agent": "plm_ssh_agent"}


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
            raise OptionError("hosts", f"{text!r}: only an IPv6 address may be written in brackets") from None
        return name, _parse_slots(text, count)
    try:
        return str(ipaddress.ip_address(text)), None
    except ValueError:
        pass
    name, count = text, None
    if ":" in text:
        name, _sep, count = text.rpartition(":")
    if not _valid_host_name(name):
        raise OptionError("hosts", f"{text!r} is not a hostname or IP address (optionally followed by :N)")
    return name, _parse_slots(text, count)


def _parse_slots(text, count):
    if count is None:
        return None
    if not count.isdigit():
        raise OptionError("hosts", f"{text!r}: the process count after ':' must be a positive integer")
    slots = int(count)
    if slots < 1:
        raise OptionError("hosts", f"{text!r}: a host needs at least 1 process slot (host:0 is not allowed)")
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
    if np_ > total and not oversubscribe:
        raise OptionError(
            "num_processes",
            f"{np_} processes but only {total} slots on {len(slots)} hosts; add slots (host:N or "
            "processes_per_host) or set oversubscribe=true",
        )
    return np_, slots


def parse_mpi_params(mpi_params):
    """`mpi_params` as an argv list: a list is taken item by item, a string is split with shlex."""
    if mpi_params is None:
        return []
    if isinstance(mpi_params, (list, tuple)):
        return [str(item) for item in mpi_params]
    if isinstance(mpi_params, str):
        try:
            return shlex.split(mpi_params)
        except ValueError as exc:
            raise OptionError("mpi_params", f"cannot split {mpi_params!r}: {exc}") from None
    raise OptionError("mpi_params", f"must be a list or a string, got {type(mpi_params).__name__}")


def detect_flavor(version_text):
    """Read `mpirun --version` output: returns (flavor, (major, minor)) or (None, None)."""
    text = version_text or ""
    match = re.search(r"\(Open(?: |-)?(?:MPI|RTE)\)\s*v?(\d+)\.(\d+)", text, re.IGNORECASE)
    if match:
        return OPENMPI, (int(match.group(1)), int(match.group(2)))
    if re.search(r"Open ?MPI|OpenRTE|prterun|PRRTE", text, re.IGNORECASE):
        match = re.search(r"(\d+)\.(\d+)", text)
        return OPENMPI, ((int(match.group(1)), int(match.group(2))) if match else None)
    if re.search(r"HYDRA|MPICH|Intel\(R\) MPI|MVAPICH", text, re.IGNORECASE):
        match = re.search(r"Version:\s*(\d+)\.(\d+)", text) or re.search(r"(\d+)\.(\d+)", text)
        return MPICH, ((int(match.group(1)), int(match.group(2))) if match else None)
    return None, None


def hostfile_content(slots, flavor):
    """Open MPI: `host slots=N` lines; MPICH/Hydra: `host:N` lines (a `slots=` line is an error there)."""
    if flavor == OPENMPI:
        lines = [f"{name} slots={count}" for name, count in slots]
    else:
        lines = [f"{name}:{count}" for name, count in slots]
    return "\n".join(lines) + "\n"


def default_hostfile_path(directory, content):
    """A path named after the content, so that equal host lists share a file and differing ones never collide."""
    digest = hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]
    return "{}/hostfile-{}".format(directory.rstrip("/") or "", digest)


def _param_key(token, flavor, following):
    """The generated-option key a user flag stands for, or None; `following` is the rest of the params."""
    if not token.startswith("-") or len(token) < 2 or token[1:2].isdigit():
        return None, 0
    name = token.lstrip("-")
    value = None
    if "=" in name:
        name, value = name.split("=", 1)
    if flavor == OPENMPI:
        if name in ("x",):
            var = value if value is not None else (following[0] if following else "")
            return ("env", var.split("=", 1)[0]), 0 if value is not None else 1
        if name in ("mca", "gmca", "prtemca"):
            param = following[0] if following else ""
            return ("mca", _MCA_SYNONYMS.get(param, param)), 2
        key = _OPENMPI_KEYS.get(name)
    else:
        if name in ("genv", "env"):
            return ("env", following[0] if following else ""), 2
        key = _MPICH_KEYS.get(name)
    if key is None:
        return None, 0
    return key, (1 if key in _TAKES_VALUE and value is None else 0)


def user_param_keys(params, flavor):
    """Keys of the generated options that mpi_params replaces, and the -n value it sets (or None)."""
    keys = set()
    np_ = None
    index = 0
    while index < len(params):
        key, arity = _param_key(params[index], flavor, params[index + 1 :])
        if key is not None:
            keys.add(key)
            if key == "np":
                text = (
                    params[index].split("=", 1)[1]
                    if "=" in params[index]
                    else (params[index + 1] if index + 1 < len(params) else "")
                )
                np_ = int(text) if text.isdigit() else np_
        index += 1 + arity
    return keys, np_


def _ssh_options(flavor, version, ssh_command):
    if not ssh_command:
        return []
    if flavor == OPENMPI:
        param = "plm_ssh_agent" if version and version[0] >= 5 else "plm_rsh_agent"
        return [(("mca", "plm_ssh_agent"), ["--mca", param, ssh_command])]
    words = shlex.split(ssh_command)
    if len(words) != 1:
        raise OptionError(
            "ssh_command",
            "MPICH/Hydra runs -launcher-exec as one program without arguments; "
            f"put {ssh_command!r} in a wrapper script and give its path",
        )
    return [("launcher", ["-launcher", "ssh"]), ("launcher-exec", ["-launcher-exec", words[0]])]


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
    hostfile_threshold=HOSTFILE_HOST_THRESHOLD,
):
    """Build the MPI launch prefix for the given hosts.

    `command_chars` is the length of the command the prefix will precede, so that a prefix that
    would make the whole line longer than SAFE_COMMAND_CHARS moves its hosts to a hostfile.
    Returns a dict: prefix (argv list), num_processes, slots (list of (host, N)), hostfile (None or
    {"path", "content"}), flavor, warnings. Nothing is written: the caller writes the hostfile.
    """
    if flavor not in FLAVORS:
        raise OptionError("mpi_flavor", "must be one of {}, got {!r}".format(", ".join(FLAVORS), flavor))
    if not mpi_bin or str(mpi_bin).startswith("-"):
        raise OptionError("mpi_bin", f"must name mpirun, mpiexec or a path to one, got {mpi_bin!r}")
    if hostfile is not None and not str(hostfile).startswith("/"):
        raise OptionError("hostfile", f"must be an absolute path, got {hostfile!r}")
    entries, warnings = normalize_hosts(hosts)
    np_, slots = plan_slots(entries, num_processes, processes_per_host, oversubscribe)
    params = parse_mpi_params(mpi_params)
    pairs = env_pairs(env)
    replaced, np_override = user_param_keys(params, flavor)
    if np_override is not None:
        np_ = np_override

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
        if hostfile is not None or len(slots) > hostfile_threshold or estimate > SAFE_COMMAND_CHARS or ipv6:
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
        "slots": slots,
        "hostfile": hostfile_info,
        "flavor": flavor,
        "warnings": warnings,
    }
