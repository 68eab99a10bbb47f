"""Every engine option, declared once: argparse flags, YAML config keys and validation all come from here."""

import argparse
import difflib
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from kvcache import value_rules
from kvcache.config_file import read_config_file
from kvcache.errors import UsageError, shown, shown_path

RUN = "run"
DATASIZE = "datasize"
CLEAN = "clean"
REPORT = "report"
DESCRIBE = "describe"
BOTH = (RUN, DATASIZE)

# Every subcommand with its one-line help; `report` and `describe` read files or nothing, so no option of the
# table belongs to them (report's RESULT.json arguments are declared in cli.py).
COMMANDS: Dict[str, str] = {
    RUN: "run the benchmark (one rank, or every rank under mpirun)",
    DATASIZE: "what a run needs: working set, tier sizes, storage capacity",
    REPORT: "print the summary of result JSON files",
    DESCRIBE: "the option contract as JSON: every option, the models, the result schema",
    CLEAN: "remove run directories left under a cache dir by runs that are no longer running",
}

# Every number has an upper bound, so that no value can overflow the arithmetic that uses it.
MAX_USERS = 100_000
MAX_CAPACITY_GIB = 4 << 20  # 4 PiB: beyond any single host's memory or a cache dir's storage
MAX_BYTES = 2**63 - 1  # the largest file offset


@dataclass(frozen=True)
class Option:
    name: str  # attribute and config key, e.g. num_users (the flag is --num-users)
    kind: type  # int, float, str or bool (a bool is a bare flag)
    default: Any
    help: str
    commands: Tuple[str, ...] = BOTH
    choices: Optional[Tuple[str, ...]] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusive_minimum: bool = False
    # 0 switches the feature off; any other value must be at least this (a rate of 1e-300/s is not a rate).
    nonzero_minimum: Optional[float] = None
    unit: Optional[str] = None  # what a number counts: GiB, s, MiB, users, requests, ...

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: Tuple[Option, ...] = (
    Option("model", str, "llama3.1-8b", "model whose KV-cache geometry sets bytes per token"),
    Option("num_users", int, 100, "simulated users (per rank under MPI)", minimum=1, maximum=MAX_USERS, unit="users"),
    Option(
        "ranks",
        int,
        1,
        "MPI ranks on the host being sized (the checks are per host)",
        commands=(DATASIZE,),
        minimum=1,
        maximum=1_000_000,
        unit="ranks",
    ),
    Option(
        "duration",
        float,
        60.0,
        "measurement window in seconds",
        commands=(RUN,),
        minimum=0,
        exclusive_minimum=True,
        maximum=7 * 24 * 3600,
        unit="s",
    ),
    Option(
        "max_requests",
        int,
        0,
        "stop after this many requests per rank (0: no limit)",
        commands=(RUN,),
        minimum=0,
        maximum=10**12,
        unit="requests",
    ),
    Option("seed", int, 42, "random seed; rank N uses seed + N", commands=(RUN,), minimum=0, maximum=2**62),
    Option(
        "gpu_mem_gb",
        float,
        16.0,
        "GPU tier budget in GiB (0 disables the tier)",
        minimum=0,
        maximum=MAX_CAPACITY_GIB,
        unit="GiB",
    ),
    Option(
        "cpu_mem_gb",
        float,
        4.0,
        "CPU (host memory) tier budget in GiB (0 disables the tier)",
        minimum=0,
        maximum=MAX_CAPACITY_GIB,
        unit="GiB",
    ),
    Option(
        "storage_capacity_gb",
        float,
        0.0,
        "storage tier budget in GiB (0: 80% of the free space under --cache-dir)",
        commands=(RUN,),
        minimum=0,
        maximum=MAX_CAPACITY_GIB,
        unit="GiB",
    ),
    Option(
        "cache_dir",
        str,
        None,
        "directory on the storage under test; the run works in a subdirectory it creates",
        commands=(RUN, CLEAN),
    ),
    Option("keep_cache", bool, False, "leave the run's cache files in place at the end", commands=(RUN,)),
    Option(
        "io_engine",
        str,
        "direct",
        "storage I/O: direct (O_DIRECT) or buffered (fsync + fadvise DONTNEED)",
        commands=(RUN,),
        choices=("direct", "buffered"),
    ),
    Option("io_chunk_mib", int, 16, "storage I/O size in MiB", minimum=1, maximum=1024, unit="MiB"),
    Option(
        "io_depth",
        int,
        8,
        "storage operations in flight at once (buffers of --io-chunk-mib each)",
        minimum=1,
        maximum=1024,
    ),
    Option(
        "generation_mode",
        str,
        "none",
        "decode time per generated token: none 0, fast 2 ms, realistic 30 ms",
        commands=(RUN,),
        choices=("none", "fast", "realistic"),
    ),
    Option(
        "performance_profile",
        str,
        "latency",
        "latency: users think between requests and the SLA verdict applies; throughput: back-to-back requests",
        commands=(RUN,),
        choices=("latency", "throughput"),
    ),
    Option("disable_multi_turn", bool, False, "every request starts a new conversation"),
    Option("disable_prefix_caching", bool, False, "no shared system-prompt prefix"),
    Option("promote", bool, False, "move an entry read from a lower tier back to the top", commands=(RUN,)),
    Option(
        "request_rate",
        float,
        0.0,
        "open loop: Poisson arrivals per second per rank (0: closed-loop users)",
        commands=(RUN,),
        minimum=0,
        nonzero_minimum=0.001,
        maximum=1_000_000,
        unit="requests/s",
    ),
    Option(
        "max_concurrent_requests",
        int,
        0,
        "requests served at once (0: one per user); others queue",
        commands=(RUN,),
        minimum=0,
        maximum=MAX_USERS,  # one worker thread each in the open loop
        unit="requests",
    ),
    Option(
        "stats_interval",
        float,
        1.0,
        "seconds between time-series samples",
        commands=(RUN,),
        minimum=0.05,
        maximum=3600,
        unit="s",
    ),
    Option(
        "gpu_backend",
        str,
        "auto",
        "auto: real CUDA memory through torch or cupy when present, else simulated",
        commands=(RUN,),
        choices=("auto", "simulated", "torch", "cupy"),
    ),
    Option(
        "mpi",
        str,
        "auto",
        "auto: use MPI when launched by mpirun/mpiexec; on: require it; off: never",
        commands=(RUN,),
        choices=("auto", "on", "off"),
    ),
    Option(
        "straggler_fraction",
        float,
        0.5,
        "flag ranks whose storage bandwidth is below this share of the median",
        commands=(RUN,),
        minimum=0,
        maximum=1,
        unit="fraction",
    ),
    Option("output", str, None, "write the result JSON here", commands=(RUN,)),
    Option("quiet", bool, False, "no progress line", commands=(RUN,)),
    Option("json", bool, False, "print JSON instead of a table", commands=(DATASIZE,)),
    Option(
        "check_free_bytes",
        int,
        None,
        "exit 1 when the storage needed exceeds this many free bytes",
        commands=(DATASIZE,),
        minimum=0,
        maximum=MAX_BYTES,
        unit="bytes",
    ),
    Option(
        "check_mem_bytes",
        int,
        None,
        "exit 1 when the host memory needed exceeds this many bytes",
        commands=(DATASIZE,),
        minimum=0,
        maximum=MAX_BYTES,
        unit="bytes",
    ),
    Option("dry_run", bool, False, "say what would be removed, remove nothing", commands=(CLEAN,)),
)


class _ByName(Mapping):
    """The options by name, read from OPTIONS at each lookup.

    Everything here reads the module's OPTIONS when it is called, never a copy made at import, so a
    test may add an option with `monkeypatch.setattr(options, "OPTIONS", options.OPTIONS + (Option(...),))`
    and the parser, config files, run_config.resolve() and describe all accept it.
    """

    def __getitem__(self, name: str) -> Option:
        for opt in OPTIONS:
            if opt.name == name:
                return opt
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter([o.name for o in OPTIONS])

    def __len__(self) -> int:
        return len(OPTIONS)


BY_NAME: Mapping[str, Option] = _ByName()


def options_for(command: str) -> List[Option]:
    return [o for o in OPTIONS if command in o.commands]


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Flags default to SUPPRESS so that a config file value is only overridden by what was typed."""
    for opt in options_for(command):
        text = opt.help.replace("%", "%%")  # argparse formats help with %
        if opt.default is not None and opt.kind is not bool:
            text += f" (default: {opt.default})"
        if opt.kind is bool:
            parser.add_argument(opt.flag, dest=opt.name, action="store_true", default=argparse.SUPPRESS, help=text)
        else:
            # Choices are checked by the converter, not by argparse, whose message would quote the whole value.
            parser.add_argument(
                opt.flag,
                dest=opt.name,
                default=argparse.SUPPRESS,
                type=_argparse_type(opt),
                help=text,
                metavar="{" + ",".join(opt.choices) + "}" if opt.choices else opt.kind.__name__.upper(),
            )
    parser.add_argument(
        "--config",
        dest="config",
        default=None,
        metavar="FILE.yaml",
        help="YAML file setting any of these options (underscores or dashes) and a `models:` mapping",
    )


def _argparse_type(opt: Option):
    def convert(text):
        try:
            value = opt.kind(text)
        except ValueError:  # also int() of more digits than Python converts
            raise argparse.ArgumentTypeError(f"expected {opt.kind.__name__}, got {shown(text)}") from None
        if opt.choices and value not in opt.choices:
            raise argparse.ArgumentTypeError(value_rules.choices_problem(opt.choices, value))
        return value

    convert.__name__ = opt.kind.__name__
    return convert


def check_value(opt: Option, value: Any, where: str) -> Any:
    """A value from a config file or a flag, checked against the option; errors start with `where`.

    The rules are value_rules.check, which the plugins apply to the same fields of `kvcache describe`."""
    checked, problem = value_rules.check(
        opt.kind.__name__,
        value,
        choices=opt.choices,
        minimum=opt.minimum,
        maximum=opt.maximum,
        exclusive_minimum=opt.exclusive_minimum,
        nonzero_minimum=opt.nonzero_minimum,
        default=opt.default,
    )
    if problem is not None:
        raise UsageError(where, problem)
    return checked


def load_config(path: str, command: str) -> Tuple[Dict[str, Any], Mapping]:
    """Read a YAML config strictly: unknown keys and wrong types are errors naming the key.

    One file serves every step (datasize, then run): a key of another command is checked like any
    other, then left out of this command's values.
    """
    where = shown_path(path)
    data = read_config_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError("--config", f"{where} must hold a mapping of option: value")
    mine = {o.name for o in options_for(command)}
    values: Dict[str, Any] = {}
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise UsageError("--config", f"{where}: models must be a mapping of name: {{layers, kv_heads, head_dim}}")
    for key, value in data.items():
        if key == "models":
            continue
        name = str(key).replace("-", "_")
        if name not in BY_NAME:
            raise UsageError("--config", f"{where}: unknown key {shown(key)}{_did_you_mean(name)}; {ALLOWED_KEYS}")
        checked = check_value(BY_NAME[name], value, f"--config {where}: {key}")
        if name in mine:
            values[name] = checked
    return values, models


ALLOWED_KEYS = "keys are the long options of `kvcache run`, `datasize` and `clean` (see their --help), and models"


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, list(BY_NAME), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
